//! `hw9 doctor`: checks what `make setup` installs and prints the fix for each problem.
//!
//! This module does not touch libtorch, so the `hw9-doctor` binary runs (and reports) even when
//! libtorch is missing, where `hw9` itself could not start.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::paths;

/// The pinned versions that setup installs and doctor expects.
pub const TORCH_VERSION: &str = "2.13.0";
/// evcxr_jupyter, installed with `cargo install --locked` into `.tools/`.
pub const EVCXR_VERSION: &str = "0.22.0";
/// The kernelspec's name (its folder under `jupyter/kernels/`) and display name.
pub const KERNEL_NAME: &str = "hw9-rust";
/// The display name students pick in JupyterLab.
pub const KERNEL_DISPLAY_NAME: &str = "Rust (hw9)";

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Works.
    Ok,
    /// Works, but something is worth knowing (no GPU, a cold build cache).
    Note,
    /// Broken: the check's `fix` says what to do.
    Fail,
}

/// One line of the doctor's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked, e.g. `libtorch`.
    pub name: &'static str,
    /// How it came out.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do about it, for a failure.
    pub fix: Option<String>,
}

impl Check {
    /// A check that passed.
    pub fn ok(name: &'static str, detail: impl Into<String>) -> Self {
        Check { name, status: Status::Ok, detail: detail.into(), fix: None }
    }
    /// A check that passed with something worth knowing.
    pub fn note(name: &'static str, detail: impl Into<String>) -> Self {
        Check { name, status: Status::Note, detail: detail.into(), fix: None }
    }
    /// A check that failed, with what to do about it.
    pub fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Check { name, status: Status::Fail, detail: detail.into(), fix: Some(fix.into()) }
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tag = match self.status {
            Status::Ok => "ok  ",
            Status::Note => "note",
            Status::Fail => "FAIL",
        };
        write!(f, "{tag} {:<11} {}", self.name, self.detail)?;
        if let Some(fix) = &self.fix {
            write!(f, "\n     fix: {fix}")?;
        }
        Ok(())
    }
}

/// Runs every check that does not need libtorch loaded.
pub fn checks() -> Vec<Check> {
    let root = paths::root();
    vec![
        check_toolchain(),
        check_venv(&root),
        check_libtorch(&paths::libtorch()),
        check_evcxr(&root),
        check_kernelspec(&root),
        check_data(&paths::assets()),
    ]
}

/// Prints the report; returns whether nothing failed.
pub fn report(checks: &[Check]) -> bool {
    for c in checks {
        println!("{c}");
    }
    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    if failed == 0 {
        println!("doctor: all {} checks passed", checks.len());
    } else {
        println!("doctor: {failed} of {} checks failed (fixes above)", checks.len());
    }
    failed == 0
}

fn command_version(cmd: &str, arg: &str) -> Option<String> {
    let out = Command::new(cmd).arg(arg).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn check_toolchain() -> Check {
    match (command_version("cargo", "--version"), command_version("rustc", "--version")) {
        (Some(c), Some(r)) => Check::ok("toolchain", format!("{c}; {r}")),
        _ => Check::fail(
            "toolchain",
            "cargo or rustc is not on PATH",
            "install Rust with rustup (https://rustup.rs), then open a new shell",
        ),
    }
}

/// The version a `*.dist-info` folder in the venv names for `package`, if installed.
fn venv_package_version(root: &Path, package: &str) -> Option<String> {
    let site = root.join(".venv/lib/python3.11/site-packages");
    let prefix = format!("{}-", package.replace('-', "_"));
    std::fs::read_dir(site).ok()?.flatten().find_map(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        let rest = name.strip_prefix(&prefix)?.strip_suffix(".dist-info")?;
        Some(rest.to_string())
    })
}

/// `name==version` pins of a requirements file.
fn pins(file: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split('#').next())
        .filter_map(|l| l.trim().split_once("=="))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn check_venv(root: &Path) -> Check {
    let python = root.join(".venv/bin/python");
    if !python.exists() {
        return Check::fail("venv", format!("{} is missing", python.display()), "make setup");
    }
    let mut wrong = Vec::new();
    let mut found = Vec::new();
    for file in ["requirements.txt", "requirements-nodeps.txt"] {
        for (name, want) in pins(&root.join(file)) {
            match venv_package_version(root, &name) {
                Some(v) if v == want => found.push(format!("{name} {v}")),
                Some(v) => wrong.push(format!("{name} {v} (expected {want})")),
                None => wrong.push(format!("{name} missing (expected {want})")),
            }
        }
    }
    if wrong.is_empty() {
        Check::ok("venv", format!(".venv: {}", found.join(", ")))
    } else {
        Check::fail("venv", format!(".venv: {}", wrong.join("; ")), "rm -rf .venv && make setup")
    }
}

/// Checks the libtorch folder: the shared libraries and the torch version tch 0.26 needs.
pub fn check_libtorch(dir: &Path) -> Check {
    let lib = dir.join("lib/libtorch_cpu.so");
    if !lib.exists() {
        return Check::fail(
            "libtorch",
            format!("{} is missing (LIBTORCH={})", lib.display(), dir.display()),
            "make setup (installs torch==2.13.0 into .venv with --no-deps); keep LIBTORCH unset or pointing there",
        );
    }
    let version = std::fs::read_to_string(dir.join("version.py")).unwrap_or_default();
    let found =
        version.lines().find_map(|l| l.strip_prefix("__version__ = ").map(|v| v.trim_matches(['\'', '"']).to_string()));
    match found {
        Some(v) if v.split('+').next() == Some(TORCH_VERSION) => {
            Check::ok("libtorch", format!("torch {v} at {}", dir.display()))
        }
        Some(v) => Check::fail(
            "libtorch",
            format!("torch {v} at {}, but tch 0.26 needs {TORCH_VERSION}", dir.display()),
            "rm -rf .venv && make setup",
        ),
        None => Check::fail(
            "libtorch",
            format!("cannot read the torch version from {}", dir.join("version.py").display()),
            "rm -rf .venv && make setup",
        ),
    }
}

/// Where setup installs evcxr_jupyter.
pub fn evcxr_binary(root: &Path) -> PathBuf {
    root.join(format!(".tools/evcxr-{EVCXR_VERSION}/bin/evcxr_jupyter"))
}

fn check_evcxr(root: &Path) -> Check {
    let bin = evcxr_binary(root);
    if !bin.exists() {
        return Check::fail("evcxr", format!("{} is missing", bin.display()), "make setup (builds it in ~13 min)");
    }
    // `cargo install` records what it installed in .crates.toml beside bin/.
    let record =
        std::fs::read_to_string(root.join(format!(".tools/evcxr-{EVCXR_VERSION}/.crates.toml"))).unwrap_or_default();
    if record.contains(&format!("evcxr_jupyter {EVCXR_VERSION} ")) {
        Check::ok("evcxr", format!("evcxr_jupyter {EVCXR_VERSION} at {}", bin.display()))
    } else {
        Check::fail(
            "evcxr",
            format!("{} is not evcxr_jupyter {EVCXR_VERSION}", bin.display()),
            format!("rm -rf .tools/evcxr-{EVCXR_VERSION} && make setup"),
        )
    }
}

/// Checks the kernelspec that setup writes: JSON, display name, launcher, and the env it carries.
pub fn check_kernelspec(root: &Path) -> Check {
    let dir = root.join("jupyter/kernels").join(KERNEL_NAME);
    let file = dir.join("kernel.json");
    let fix = "make setup (rewrites jupyter/kernels/hw9-rust/kernel.json)";
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(_) => return Check::fail("kernelspec", format!("{} is missing", file.display()), fix),
    };
    let spec: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => return Check::fail("kernelspec", format!("{} is not valid JSON: {e}", file.display()), fix),
    };
    let mut problems = Vec::new();
    if spec["display_name"] != KERNEL_DISPLAY_NAME {
        problems.push(format!("display_name is {}, expected {KERNEL_DISPLAY_NAME:?}", spec["display_name"]));
    }
    let argv: Vec<&str> =
        spec["argv"].as_array().map(|a| a.iter().filter_map(|v| v.as_str()).collect()).unwrap_or_default();
    if !argv.iter().any(|a| a.contains("{connection_file}")) {
        problems.push("argv does not pass {connection_file}".to_string());
    }
    let launcher = argv.first().map(|a| PathBuf::from(a.replace("{resource_dir}", &dir.to_string_lossy())));
    match &launcher {
        Some(l) if l.exists() => {}
        Some(l) => problems.push(format!("argv[0] {} does not exist", l.display())),
        None => problems.push("argv is empty".to_string()),
    }
    let env = &spec["env"];
    let expect_env = [
        ("LIBTORCH", paths::libtorch()),
        ("EVCXR_TMPDIR", root.join(".cache/evcxr")),
        ("HW9_ROOT", root.to_path_buf()),
    ];
    for (key, want) in expect_env {
        match env[key].as_str() {
            Some(v) if Path::new(v) == want => {}
            Some(v) => problems.push(format!("env {key} is {v}, expected {}", want.display())),
            None => problems.push(format!("env has no {key}")),
        }
    }
    if !env["LD_LIBRARY_PATH"].as_str().is_some_and(|v| v.contains(&*paths::libtorch().join("lib").to_string_lossy())) {
        problems.push("env LD_LIBRARY_PATH does not include libtorch's lib folder".to_string());
    }
    if problems.is_empty() {
        Check::ok("kernelspec", format!("{KERNEL_DISPLAY_NAME:?} at {}", dir.display()))
    } else {
        Check::fail("kernelspec", format!("{}: {}", file.display(), problems.join("; ")), fix)
    }
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(format!("{:x}", hasher.finalize()))
}

/// Checks every file listed in `assets/checksums.sha256` against its committed checksum.
pub fn check_data(assets: &Path) -> Check {
    let list = assets.join("checksums.sha256");
    let text = match std::fs::read_to_string(&list) {
        Ok(t) => t,
        Err(e) => return Check::fail("data", format!("{}: {e}", list.display()), "git checkout -- assets"),
    };
    let mut problems = Vec::new();
    let mut n = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Some((want, rel)) = line.split_once("  ") else {
            problems.push(format!("malformed line in {}: {line:?}", list.display()));
            continue;
        };
        n += 1;
        let path = assets.join(rel.trim());
        match sha256_file(&path) {
            Ok(got) if got == want => {}
            Ok(got) => problems.push(format!("{rel}: checksum {got}, expected {want}")),
            Err(_) => problems.push(format!("{rel}: missing")),
        }
    }
    if problems.is_empty() {
        Check::ok("data", format!("{n} files match assets/checksums.sha256 (Fashion-MNIST, MiniLM, SmolLM2)"))
    } else {
        Check::fail("data", problems.join("; "), "make setup (reinstalls the data under assets/)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("hw9-doctor-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn missing_libtorch_is_a_failure_with_a_fix() {
        let c = check_libtorch(Path::new("/nonexistent/torch"));
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("/nonexistent/torch/lib/libtorch_cpu.so is missing"), "{c}");
        assert!(c.fix.unwrap().contains("make setup"));
    }

    #[test]
    fn wrong_torch_version_is_named() {
        let d = temp("torchver");
        std::fs::create_dir_all(d.join("lib")).unwrap();
        std::fs::write(d.join("lib/libtorch_cpu.so"), b"").unwrap();
        std::fs::write(d.join("version.py"), "__version__ = '2.5.1+cpu'\n").unwrap();
        let c = check_libtorch(&d);
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("torch 2.5.1+cpu") && c.detail.contains("needs 2.13.0"), "{c}");
        std::fs::write(d.join("version.py"), "__version__ = '2.13.0+cu130'\n").unwrap();
        assert_eq!(check_libtorch(&d).status, Status::Ok);
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn broken_kernelspec_is_detected() {
        let d = temp("kernel");
        let kdir = d.join("jupyter/kernels").join(KERNEL_NAME);
        std::fs::create_dir_all(&kdir).unwrap();
        assert!(check_kernelspec(&d).detail.contains("is missing"));
        std::fs::write(kdir.join("kernel.json"), "{ not json").unwrap();
        let c = check_kernelspec(&d);
        assert!(c.status == Status::Fail && c.detail.contains("not valid JSON"), "{c}");
        std::fs::write(
            kdir.join("kernel.json"),
            r#"{"argv": ["/gone/launch", "{connection_file}"], "display_name": "Rust", "env": {}}"#,
        )
        .unwrap();
        let c = check_kernelspec(&d);
        assert_eq!(c.status, Status::Fail);
        for needle in ["display_name", "/gone/launch does not exist", "env has no LIBTORCH", "LD_LIBRARY_PATH"] {
            assert!(c.detail.contains(needle), "{needle} not in {c}");
        }
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn data_checksums_catch_missing_and_corrupt_files() {
        let d = temp("data");
        std::fs::write(d.join("a.bin"), b"hello").unwrap();
        let good = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        std::fs::write(d.join("checksums.sha256"), format!("{good}  a.bin\n{good}  b.bin\n")).unwrap();
        let c = check_data(&d);
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("b.bin: missing") && !c.detail.contains("a.bin"), "{c}");
        std::fs::write(d.join("b.bin"), b"hellO").unwrap();
        assert!(check_data(&d).detail.contains("b.bin: checksum"));
        std::fs::write(d.join("b.bin"), b"hello").unwrap();
        assert_eq!(check_data(&d).status, Status::Ok);
        std::fs::remove_dir_all(d).unwrap();
    }
}
