//! Grading by re-running: the submission's TODO cells built into a harness ([`crate::harness`])
//! against the crate as the handout ships it, run in a sandbox ([`crate::sandbox`]) on graded
//! cases the student never saw, and compared with answers the student's machine never had.
//!
//! The graded cases are a **hidden** fixture file per notebook (`<hidden>/<notebook>.safetensors`,
//! written by `tools/gen_fixtures.py --hidden SEED`, never in the handout). The sandbox gets a
//! copy without the expected outputs (only their shapes and dtypes, as the handout's graded
//! cases have); the expected outputs stay with the grader. Nothing the student's machine wrote
//! is compared: the outputs come from the harness's stdout, in this run.
//!
//! One run of the harness runs every check; a check that panics fails alone (the recorder catches
//! it); one that crashes the process (a stack overflow, an abort) or never ends (an endless loop,
//! past the wall-clock or CPU limit) fails with what happened, and the harness runs again for the
//! checks after it. A TODO cell that does not compile is replaced by the release's (its `todo!`)
//! and costs its own checks only; the compiler's message is the feedback.
//!
//! With the submission's weights ([`Submitted`]), the same run measures its trained models
//! (`hw9::tasks::measure`): the grader's own program (`measure`, built beside the harness, with no
//! student code in it) writes held-out inputs for the sandbox and keeps their labels; the harness
//! loads the weights into the student's model code and prints what the models compute; the
//! grader's program scores it. Those figures are what the thresholds are graded on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde_json::Value;

use crate::compare::{compare_all, CheckResult, Values};
use crate::fixtures::{parse_safetensors, Fixtures};
use crate::harness::{Harness, PartKind, Source};
use crate::sandbox::{self, Ended, Limits, Mounts};
use crate::{Error, FileError, Result};

/// What re-running needs: where the crate, the release, the hidden cases and the toolchain are.
#[derive(Debug, Clone, PartialEq)]
pub struct RerunConfig {
    /// The hw9 crate the harness builds against (a handout's root, or the repository built
    /// without the `reference` feature).
    pub crate_dir: PathBuf,
    /// The released student notebooks (`<notebook>.ipynb`): where the TODO and check cells are.
    pub release_dir: PathBuf,
    /// The hidden cases with their expected outputs (`<notebook>.safetensors`).
    pub hidden_dir: PathBuf,
    /// The grader's measurement code per notebook (`<notebook>.rs`, `assets/grading/measure/`).
    pub measure_dir: PathBuf,
    /// The grader's build folder: the harness crate and the cases the sandbox reads.
    pub work_dir: PathBuf,
    /// The harness's target folder, kept warm: a submission then compiles in seconds. The
    /// repository's own `target/` shares its dependencies' builds (tch, torch-sys).
    pub target_dir: PathBuf,
    /// libtorch's folder (`LIBTORCH`): built against and loaded from, as the crate was built.
    pub libtorch: PathBuf,
    /// `CARGO_HOME` (its registry is read-only inside) and `RUSTUP_HOME`, when not the defaults.
    pub cargo_home: PathBuf,
    /// `RUSTUP_HOME`.
    pub rustup_home: PathBuf,
    /// Limits of a build.
    pub build_limits: Limits,
    /// Limits of one run of the harness.
    pub run_limits: Limits,
}

impl RerunConfig {
    /// The configuration for the repository (or a grader bundle) at `root`: the crate there,
    /// `notebooks/` as the release, `assets/hidden/` for the hidden cases, `build/rerun` to work
    /// in, libtorch from `LIBTORCH` (or `.venv`'s torch), the toolchain from `CARGO_HOME` /
    /// `RUSTUP_HOME` (or `~/.cargo`, `~/.rustup`).
    pub fn for_root(root: &Path) -> Self {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
        let env_or = |k: &str, d: PathBuf| std::env::var_os(k).map(PathBuf::from).unwrap_or(d);
        RerunConfig {
            crate_dir: root.to_path_buf(),
            release_dir: root.join("notebooks"),
            hidden_dir: env_or("HW9_HIDDEN_CASES", root.join("assets").join("hidden")),
            measure_dir: root.join("assets").join("grading").join("measure"),
            work_dir: env_or("HW9_RERUN_DIR", root.join("build").join("rerun")),
            target_dir: env_or("CARGO_TARGET_DIR", root.join("target")),
            libtorch: env_or("LIBTORCH", root.join(".venv/lib/python3.11/site-packages/torch")),
            cargo_home: env_or("CARGO_HOME", home.join(".cargo")),
            rustup_home: env_or("RUSTUP_HOME", home.join(".rustup")),
            build_limits: Limits {
                cpu_seconds: 1800,
                wall: Duration::from_secs(1200),
                drop_privileges: false,
                ..Limits::default()
            },
            run_limits: Limits::default(),
        }
    }

    /// The configuration inside an unpacked Gradescope bundle (`/autograder/source`, see
    /// [`crate::gradescope::write_bundles`]): the handout's crate and released notebooks in
    /// `hw9/`, the hidden cases and the measurement code in `assets/`, libtorch where `setup.sh`
    /// put it (`libtorch/torch`), the warm build in `target/`; `LIBTORCH`, `CARGO_TARGET_DIR`
    /// and `HW9_RERUN_DIR` override them (the bundle's `env.sh` sets what `setup.sh` chose).
    pub fn for_bundle(source: &Path) -> Self {
        let env_or = |k: &str, d: PathBuf| std::env::var_os(k).map(PathBuf::from).unwrap_or(d);
        let crate_dir = source.join("hw9");
        RerunConfig {
            release_dir: crate_dir.join("notebooks"),
            hidden_dir: source.join("assets").join("hidden"),
            measure_dir: source.join("assets").join("grading").join("measure"),
            work_dir: env_or("HW9_RERUN_DIR", source.join("work")),
            target_dir: env_or("CARGO_TARGET_DIR", source.join("target")),
            libtorch: env_or("LIBTORCH", source.join("libtorch").join("torch")),
            ..RerunConfig::for_root(&crate_dir)
        }
    }
}

/// How re-running one submission went.
#[derive(Debug, Clone, PartialEq)]
pub struct RerunReport {
    /// One result per check of the hidden cases, in their order.
    pub results: Vec<CheckResult>,
    /// Where each TODO cell's code came from, and the cells replaced because they did not compile.
    pub notes: Vec<String>,
    /// Seconds spent building.
    pub build_seconds: f64,
    /// Seconds spent running.
    pub run_seconds: f64,
    /// The largest resident set of a build or a run so far (see [`sandbox::Outcome::peak_rss_bytes`]).
    pub peak_rss_bytes: u64,
    /// The figures measured on the submitted models (by threshold name), or why one could not
    /// be; empty when nothing was measured.
    pub measured: BTreeMap<String, std::result::Result<f64, String>>,
    /// Why the submitted models could not be measured at all (the grader could not build them
    /// from the notebook's code), when so.
    pub measure_error: Option<String>,
    /// Seconds spent measuring (preparing the held-out inputs and scoring; the models' own
    /// evaluation is in `run_seconds`).
    pub measure_seconds: f64,
}

/// Notebooks whose graded figure the grader measures without submitted weights: the setup
/// check's line fit is trained again in the harness with the notebook's own loss.
pub const MEASURED_WITHOUT_WEIGHTS: [&str; 1] = ["00_setup_check"];

/// What a submission hands the grader beside its notebook for measuring its models.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Submitted {
    /// The profile it ran in (its plan sizes the models).
    pub profile: String,
    /// `weights/<model>.safetensors` by model name.
    pub weights: BTreeMap<String, Vec<u8>>,
}

/// The harness package's name for a work folder: one name per folder. Cargo identifies a path
/// package by its name and its path *relative to its workspace*, so two work folders with one
/// name would share a fingerprint in the shared target folder and one would run the other's
/// build (the nonce check caught it: [`crate::harness::lines::HARNESS`]).
fn package_name(cfg: &RerunConfig) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(cfg.work_dir.display().to_string().as_bytes());
    format!("hw9-harness-{}", h.iter().take(4).map(|b| format!("{b:02x}")).collect::<String>())
}

/// The cases the sandbox reads: the hidden file without any expected output (each becomes its
/// shape, `expected_shape[.i]`, and dtype, `expected_dtype[.i]`, as in the handout).
pub fn cases_for_sandbox(hidden: &[u8]) -> Result<Vec<u8>> {
    let st = SafeTensors::deserialize(hidden).map_err(|e| Error::Input(format!("hidden cases: {e:?}")))?;
    let mut shapes: Vec<(String, Vec<u8>, usize)> = Vec::new();
    let mut dtypes: Vec<(String, Dtype)> = Vec::new();
    let mut kept: Vec<(String, TensorView<'_>)> = Vec::new();
    for (name, view) in st.tensors() {
        let Some((head, last)) = name.rsplit_once('/') else {
            kept.push((name, view));
            continue;
        };
        if let Some(suffix) = last.strip_prefix("expected") {
            let shape: Vec<u8> = view.shape().iter().flat_map(|&d| (d as i64).to_le_bytes()).collect();
            shapes.push((format!("{head}/expected_shape{suffix}"), shape, view.shape().len()));
            dtypes.push((format!("{head}/expected_dtype{suffix}"), view.dtype()));
        } else {
            kept.push((name, view));
        }
    }
    let mut all: Vec<(String, TensorView<'_>)> = kept;
    for (name, bytes, n) in &shapes {
        let v = TensorView::new(Dtype::I64, vec![*n], bytes).map_err(|e| Error::Input(format!("{name}: {e:?}")))?;
        all.push((name.clone(), v));
    }
    for (name, dtype) in &dtypes {
        let v = TensorView::new(*dtype, vec![0], &[]).map_err(|e| Error::Input(format!("{name}: {e:?}")))?;
        all.push((name.clone(), v));
    }
    safetensors::tensor::serialize(all, &None).map_err(|e| Error::Input(format!("writing the sandbox's cases: {e:?}")))
}

fn read_json(path: &Path, what: &str) -> Result<Value> {
    let bytes = std::fs::read(path).map_err(|_| {
        Error::File(FileError::Missing {
            what: what.into(),
            path: path.to_path_buf(),
            fix: "make release (the student notebooks) or point --release at them".into(),
        })
    })?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Input(format!("{} is not a notebook ({e})", path.display())))
}

/// Writes the harness crate for `main_rs` under `work/hw9-harness/` (once: the manifest and the
/// lock file; each time: `src/main.rs`).
fn write_crate(cfg: &RerunConfig, main_rs: &str) -> Result<PathBuf> {
    let name = package_name(cfg);
    let dir = cfg.work_dir.join(&name);
    std::fs::create_dir_all(dir.join("src")).map_err(|e| Error::io(&dir, e))?;
    let manifest = format!(
        "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n\n\
         [[bin]]\nname = \"{name}\"\npath = \"src/main.rs\"\n\n\
         # The grader's own program (no student code): held-out inputs and scores.\n\
         [[bin]]\nname = \"{name}-measure\"\npath = \"src/measure.rs\"\n\n\
         [dependencies]\nhw9 = {{ path = {:?}, default-features = false }}\ntch = \"0.26.0\"\n\n\
         [workspace]\n\n\
         # The repository's dev profile, package by package, so its build of the crate without\n\
         # `reference` (make test's api_probe) is this one: the same target folder builds it once.\n\
         [profile.dev]\nopt-level = 1\ndebug = \"line-tables-only\"\n\n\
         [profile.dev.package.\"*\"]\ndebug = false\n\n\
         [profile.dev.package.hw9]\ndebug = \"line-tables-only\"\n\n\
         [profile.dev.package.hw9-env]\ndebug = \"line-tables-only\"\n\n\
         [profile.dev.package.hw9-grade]\ndebug = \"line-tables-only\"\n\n\
         [profile.dev.package.{name}]\ndebug = false\n",
        cfg.crate_dir.display().to_string()
    );
    crate::write_atomic(&dir.join("Cargo.toml"), manifest.as_bytes())?;
    let lock = dir.join("Cargo.lock");
    if !lock.exists() {
        let from = cfg.crate_dir.join("Cargo.lock");
        if from.exists() {
            std::fs::copy(&from, &lock).map_err(|e| Error::io(&from, e))?;
        }
    }
    crate::write_atomic(&dir.join("src").join("main.rs"), main_rs.as_bytes())?;
    crate::write_atomic(
        &dir.join("src").join("measure.rs"),
        b"// The grader's measurement program (hw9-grade): no student code.\n\
          fn main() -> hw9::Result<()> {\n    hw9::tasks::measure::trusted_main()\n}\n",
    )?;
    Ok(dir)
}

fn toolchain_env(cfg: &RerunConfig) -> Vec<(String, String)> {
    let lib = cfg.libtorch.join("lib");
    let cargo_bin = cfg.cargo_home.join("bin");
    vec![
        ("LIBTORCH".into(), cfg.libtorch.display().to_string()),
        ("LIBTORCH_BYPASS_VERSION_CHECK".into(), std::env::var("LIBTORCH_BYPASS_VERSION_CHECK").unwrap_or_default()),
        ("LD_LIBRARY_PATH".into(), lib.display().to_string()),
        ("RUSTUP_HOME".into(), cfg.rustup_home.display().to_string()),
        ("PATH".into(), format!("{}:/usr/local/bin:/usr/bin:/bin", cargo_bin.display())),
        ("CARGO_TARGET_DIR".into(), cfg.target_dir.display().to_string()),
        // The grader's own CARGO_HOME, at its own path: the registry's sources keep the paths the
        // warm build's fingerprints name (another path rebuilds every dependency).
        ("CARGO_HOME".into(), cfg.cargo_home.display().to_string()),
        ("CARGO_NET_OFFLINE".into(), "true".into()),
    ]
    .into_iter()
    .filter(|(k, v)| !(k == "LIBTORCH_BYPASS_VERSION_CHECK" && v.is_empty()))
    .collect()
}

/// What a build and a run may see: the crate's sources, libtorch, the toolchain; the work
/// folder read-write. Never the hidden cases' folder or the submissions.
fn mounts(cfg: &RerunConfig) -> Mounts {
    let c = &cfg.crate_dir;
    let mut ro: Vec<PathBuf> =
        ["Cargo.toml", "Cargo.lock", "build.rs", "src", "crates", "assets/fonts"].iter().map(|p| c.join(p)).collect();
    ro.retain(|p| p.exists());
    ro.push(cfg.libtorch.clone());
    // What libtorch's own RUNPATH reaches beside it (`../../nvidia/cu13/lib`: the CUDA runtime
    // libraries the PyPI wheel links against, loaded even on a CPU).
    if let Some(site) = cfg.libtorch.parent() {
        if let Ok(entries) = std::fs::read_dir(site) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name == "nvidia" || name.ends_with(".libs") {
                    ro.push(e.path());
                }
            }
        }
    }
    ro.push(cfg.rustup_home.clone());
    ro.push(cfg.cargo_home.join("bin"));
    // A toolchain outside rustup's folders (cargo in /usr/local/bin, say): its folder too.
    if let Some(dir) = cargo_program(cfg).parent() {
        ro.push(dir.to_path_buf());
    }
    ro.retain(|p| p.exists() && !p.starts_with("/usr"));
    ro.dedup();
    Mounts { ro, rw: vec![cfg.work_dir.clone(), cfg.target_dir.clone()], ro_at: Vec::new(), scratch: Vec::new() }
}

/// The cargo to build with: `CARGO_HOME/bin/cargo` (rustup's), else the first `cargo` on PATH.
fn cargo_program(cfg: &RerunConfig) -> PathBuf {
    let own = cfg.cargo_home.join("bin").join("cargo");
    if own.exists() {
        return own;
    }
    std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).map(|d| d.join("cargo")).find(|p| p.exists()))
        .unwrap_or(own)
}

/// CARGO_HOME inside the sandbox: a scratch folder at its own path (cargo writes its lock files
/// there) with the registry and the binaries bound read-only inside.
fn cargo_home(cfg: &RerunConfig, m: &mut Mounts) {
    m.scratch.push(cfg.cargo_home.clone());
    m.ro.retain(|p| !p.starts_with(&cfg.cargo_home));
    for sub in ["registry", "bin", "git"] {
        let p = cfg.cargo_home.join(sub);
        if p.exists() {
            m.ro.push(p);
        }
    }
}

/// Builds the harness; returns the compiler's errors and the part of the harness the first is in
/// when it fails.
fn build(cfg: &RerunConfig, harness: &Harness) -> Result<std::result::Result<PathBuf, (Option<PartKind>, String)>> {
    let (main_rs, _) = harness.source();
    let dir = write_crate(cfg, &main_rs)?;
    let mut m = mounts(cfg);
    cargo_home(cfg, &mut m);
    let cargo = cargo_program(cfg);
    let args: Vec<String> =
        ["build", "--offline", "--quiet", "--message-format=short"].iter().map(|s| s.to_string()).collect();
    let out = sandbox::run(&cargo, &args, &m, &dir, &toolchain_env(cfg), &cfg.build_limits)?;
    if out.ended == Ended::Exited(0) {
        return Ok(Ok(cfg.target_dir.join("debug").join(package_name(cfg))));
    }
    let errors: Vec<&str> = out.stderr.lines().filter(|l| l.contains("error")).collect();
    // `src/main.rs:LINE:COL: error[E…]: …` (short messages): the first error's line names the cell.
    let cell = errors.iter().find_map(|l| {
        let rest = l.split("src/main.rs:").nth(1)?;
        let line: usize = rest.split(':').next()?.parse().ok()?;
        harness.cell_at_line(line)
    });
    let text = if errors.is_empty() {
        format!("{} ({})", out.describe(&cfg.build_limits), tail(&out.stderr, 1500))
    } else {
        errors.iter().take(5).copied().collect::<Vec<_>>().join("\n")
    };
    Ok(Err((cell, text)))
}

fn tail(s: &str, n: usize) -> String {
    let start = s.len().saturating_sub(n);
    let start = (start..s.len()).find(|&i| s.is_char_boundary(i)).unwrap_or(s.len());
    s[start..].trim().to_string()
}

/// Runs the built harness until every check has an output or a failure.
fn run_checks(
    cfg: &RerunConfig,
    binary: &Path,
    cases: &Path,
    checks: &[String],
    nonce: &str,
    measuring: &[(String, String)],
    extra_ro: &[PathBuf],
) -> Result<(BTreeMap<String, Values>, BTreeMap<String, String>)> {
    let mut outputs = BTreeMap::new();
    let mut failed: BTreeMap<String, String> = BTreeMap::new();
    let mut m = mounts(cfg);
    m.rw.clear();
    m.ro.retain(|p| p != &cfg.rustup_home && p != &cfg.cargo_home.join("bin"));
    m.ro.push(binary.to_path_buf());
    m.ro.push(cases.to_path_buf());
    m.ro.extend(extra_ro.iter().cloned());
    for _attempt in 0..=checks.len() {
        // Done: an output came (marked `<check>#done`: a check of several outputs names them
        // `<check>.0`, …) or it failed.
        let done: Vec<String> = checks
            .iter()
            .filter(|c| outputs.contains_key(&format!("{c}#done")) || failed.contains_key(*c))
            .cloned()
            .collect();
        if done.len() == checks.len() {
            break;
        }
        let mut env = toolchain_env(cfg);
        env.push(("HW9_GRADE_CASES".into(), cases.display().to_string()));
        env.push(("HW9_GRADE_SKIP".into(), done.join(",")));
        env.push(("HW9_THREADS".into(), "1".into()));
        env.push(("OMP_NUM_THREADS".into(), "1".into()));
        env.extend(measuring.iter().cloned());
        let out = sandbox::run(binary, &[], &m, Path::new("/tmp"), &env, &cfg.run_limits)?;
        let mut pending: Option<String> = None;
        let mut ended = false;
        use crate::harness::lines as g;
        // The program just built from this submission, or a stale build? (Nothing printed at all
        // is a crash before `main`, which the loop below charges to the first check.)
        let said = out.stdout.lines().find_map(|l| l.strip_prefix(g::HARNESS)).map(str::trim);
        match said {
            Some(n) if n != nonce => {
                return Err(Error::Input(format!("the harness that ran was built for another submission ({n})")))
            }
            None if out.ended == Ended::Exited(0) => {
                return Err(Error::Input("the harness that ran did not say which build it is".into()))
            }
            _ => {}
        }
        for line in out.stdout.lines() {
            let mut words = line.splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some(g::BEGIN), Some(c), None) => pending = Some(c.to_string()),
                (Some(g::OUTPUT), Some(c), Some(b64)) if checks.iter().any(|k| k == c) => {
                    use base64::Engine;
                    let parsed = base64::engine::general_purpose::STANDARD
                        .decode(b64.trim())
                        .map_err(|e| e.to_string())
                        .and_then(|bytes| parse_safetensors(&bytes, "the harness's output").map_err(|e| e.to_string()));
                    match parsed {
                        Ok(values) => outputs.extend(values),
                        Err(e) => {
                            failed.insert(c.to_string(), format!("its output was unreadable ({e})"));
                        }
                    }
                    // Marks the check done even when its outputs were named otherwise.
                    outputs.entry(format!("{c}#done")).or_insert(Values {
                        shape: vec![],
                        dtype: "Float".into(),
                        data: vec![],
                    });
                    pending = None;
                }
                (Some(g::FAILED), Some(c), why) if checks.iter().any(|k| k == c) => {
                    failed
                        .insert(c.to_string(), format!("your code failed on the graded input: {}", why.unwrap_or("")));
                    pending = None;
                }
                (Some(g::END), None, None) => ended = true,
                _ => {}
            }
        }
        if ended && out.ended == Ended::Exited(0) {
            // Every check not skipped printed something, or did not run (its cell was not reached).
            for c in checks {
                if !outputs.contains_key(&format!("{c}#done")) && !failed.contains_key(c) {
                    failed.insert(c.clone(), "its check did not run".into());
                }
            }
            break;
        }
        if out.stderr.contains("error while loading shared libraries") {
            // The grader's installation, not the student's code: no points are taken for it.
            return Err(Error::Input(format!("the harness cannot start in the sandbox: {}", tail(&out.stderr, 400))));
        }
        let why = out.describe(&cfg.run_limits);
        let stderr = tail(&out.stderr, 600);
        let culprit = pending.or_else(|| {
            checks.iter().find(|c| !outputs.contains_key(&format!("{c}#done")) && !failed.contains_key(*c)).cloned()
        });
        match culprit {
            Some(c) => {
                let msg = if stderr.is_empty() { why } else { format!("{why}; stderr: {stderr}") };
                failed.insert(c, format!("the program {msg}"));
            }
            None => break,
        }
    }
    outputs.retain(|k, _| !k.ends_with("#done"));
    Ok((outputs, failed))
}

/// Re-runs the TODO cells of `student` (a submitted notebook's JSON) for `notebook` and grades
/// each check on the hidden cases.
pub fn rerun(notebook: &str, student: &Value, cfg: &RerunConfig) -> Result<RerunReport> {
    rerun_submission(notebook, student, None, cfg)
}

/// The grader's measuring program, built beside the harness.
fn measure_program(cfg: &RerunConfig) -> PathBuf {
    cfg.target_dir.join("debug").join(format!("{}-measure", package_name(cfg)))
}

/// Runs the grader's measuring program (outside the sandbox: it holds no student code).
fn run_measure(cfg: &RerunConfig, args: &[String]) -> Result<String> {
    let program = measure_program(cfg);
    let mut cmd = std::process::Command::new(&program);
    cmd.args(args).envs(toolchain_env(cfg));
    if std::env::var_os("HW9_ROOT").is_none() {
        cmd.env("HW9_ROOT", &cfg.crate_dir);
    }
    let out = cmd.output().map_err(|e| Error::io(&program, e))?;
    if !out.status.success() {
        return Err(Error::Input(format!(
            "the grader's measurement ({}) failed: {}",
            args.first().map(String::as_str).unwrap_or(""),
            tail(&String::from_utf8_lossy(&out.stderr), 800)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A file the sandbox's uid may read (it holds nothing secret).
fn world_readable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = if path.is_dir() { 0o755 } else { 0o644 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| Error::io(path, e))
}

/// A seed no one can guess before the grading run: the held-out inputs' order.
fn fresh_seed(nonce: &str) -> u64 {
    use sha2::Digest;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let h = sha2::Sha256::digest(format!("{nonce}{now:?}{}", std::process::id()).as_bytes());
    u64::from_le_bytes(h[..8].try_into().unwrap_or([0; 8])) >> 1
}

/// Writes `values` as a safetensors file of F64 tensors (what the measuring program reads).
fn write_values(path: &Path, values: &BTreeMap<String, Values>) -> Result<()> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = values
        .iter()
        .map(|(n, v)| {
            (
                n.clone(),
                v.data.iter().flat_map(|x| x.to_le_bytes()).collect(),
                v.shape.iter().map(|&d| d.max(0) as usize).collect(),
            )
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(n, b, shape)| {
            TensorView::new(Dtype::F64, shape.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::Input(format!("{n}: {e:?}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let out = safetensors::tensor::serialize(views, &None).map_err(|e| Error::Input(format!("{e:?}")))?;
    crate::write_atomic(path, &out)
}

/// Where a measurement stands before the harness runs.
struct Measuring {
    /// The environment that tells the harness to measure.
    env: Vec<(String, String)>,
    /// What the sandbox may read for it: the inputs and the weights' folder.
    ro: Vec<PathBuf>,
    /// The key (labels) that stays outside.
    key: PathBuf,
    profile: String,
}

/// Writes the submitted weights and the held-out inputs for the harness.
fn prepare_measure(cfg: &RerunConfig, notebook: &str, submitted: &Submitted, nonce: &str) -> Result<Measuring> {
    let weights = cfg.work_dir.join("weights");
    if weights.exists() {
        std::fs::remove_dir_all(&weights).map_err(|e| Error::io(&weights, e))?;
    }
    std::fs::create_dir_all(&weights).map_err(|e| Error::io(&weights, e))?;
    world_readable(&weights)?;
    for (model, bytes) in &submitted.weights {
        if model.is_empty() || !model.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue; // not a model the measurement names
        }
        let path = weights.join(format!("{model}.safetensors"));
        crate::write_atomic(&path, bytes)?;
        world_readable(&path)?;
    }
    let inputs = cfg.work_dir.join(format!("measure-{notebook}.safetensors"));
    let private = cfg.work_dir.join("private");
    std::fs::create_dir_all(&private).map_err(|e| Error::io(&private, e))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io(&private, e))?;
    }
    let key = private.join(format!("key-{notebook}.safetensors"));
    let seed = fresh_seed(nonce).to_string();
    let args: Vec<String> = ["prepare", notebook, &submitted.profile, &seed].iter().map(|s| s.to_string()).collect();
    let mut args = args;
    args.push(inputs.display().to_string());
    args.push(key.display().to_string());
    run_measure(cfg, &args)?;
    world_readable(&inputs)?;
    Ok(Measuring {
        env: vec![
            ("HW9_GRADE_MEASURE".into(), inputs.display().to_string()),
            ("HW9_GRADE_WEIGHTS".into(), weights.display().to_string()),
            ("HW9_GRADE_PROFILE".into(), submitted.profile.clone()),
        ],
        ro: vec![inputs, weights],
        key,
        profile: submitted.profile.clone(),
    })
}

/// The figures from the measurement's outputs, scored by the grader's program.
fn score_measure(
    cfg: &RerunConfig,
    notebook: &str,
    m: &Measuring,
    outputs: &BTreeMap<String, Values>,
    failed: &BTreeMap<String, String>,
    measures: &[String],
) -> Result<BTreeMap<String, std::result::Result<f64, String>>> {
    let mine: BTreeMap<String, Values> =
        outputs.iter().filter(|(k, _)| k.starts_with("measure.")).map(|(k, v)| (k.clone(), v.clone())).collect();
    let path = cfg.work_dir.join("private").join(format!("outputs-{notebook}.safetensors"));
    write_values(&path, &mine)?;
    let args: Vec<String> = vec![
        "score".into(),
        notebook.into(),
        m.profile.clone(),
        path.display().to_string(),
        m.key.display().to_string(),
    ];
    let line = run_measure(cfg, &args)?;
    let v: Value = serde_json::from_str(line.trim())
        .map_err(|e| Error::Input(format!("the grader's measurement printed no figures ({e})")))?;
    let mut figures = BTreeMap::new();
    if let Some(ok) = v["figures"].as_object() {
        for (k, x) in ok {
            if let Some(x) = x.as_f64() {
                figures.insert(k.clone(), Ok(x));
            }
        }
    }
    if let Some(errors) = v["errors"].as_object() {
        for (k, why) in errors {
            let why = why.as_str().unwrap_or("").to_string();
            figures.insert(k.clone(), Err(why));
        }
    }
    // Why a model printed nothing: its own failure line, said in each figure it gives.
    for fig in figures.values_mut() {
        if let Err(why) = fig {
            if let Some(missing) = why.strip_prefix("no output ") {
                let own = measures.iter().filter(|n| missing.starts_with(n.as_str())).find_map(|n| failed.get(n));
                if let Some(reason) = own {
                    *why = reason.clone();
                }
            }
        }
    }
    Ok(figures)
}

/// Re-runs the TODO cells of `student` for `notebook`, grades each check on the hidden cases and,
/// given the submission's weights, measures its models (`assets/grading/measure/<notebook>.rs`).
pub fn rerun_submission(
    notebook: &str,
    student: &Value,
    submitted: Option<&Submitted>,
    cfg: &RerunConfig,
) -> Result<RerunReport> {
    let release = read_json(&cfg.release_dir.join(format!("{notebook}.ipynb")), "the released notebook")?;
    let hidden_path = cfg.hidden_dir.join(format!("{notebook}.safetensors"));
    let hidden = Fixtures::from_file(&hidden_path)?;
    let hidden_bytes = std::fs::read(&hidden_path).map_err(|e| Error::io(&hidden_path, e))?;
    std::fs::create_dir_all(&cfg.work_dir).map_err(|e| Error::io(&cfg.work_dir, e))?;
    // One grader at a time in a work folder (two would overwrite each other's harness).
    let lock_path = cfg.work_dir.join(".lock");
    let lock = std::fs::File::create(&lock_path).map_err(|e| Error::io(&lock_path, e))?;
    {
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a file descriptor we own; released when `lock` is dropped.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(Error::io(&lock_path, std::io::Error::last_os_error()));
        }
    }
    let cases = cfg.work_dir.join(format!("cases-{notebook}.safetensors"));
    crate::write_atomic(&cases, &cases_for_sandbox(&hidden_bytes)?)?;
    // Readable by the sandbox's uid (the file holds no answers).
    world_readable(&cases)?;

    let mut measure_failed: Option<String> = None;
    let measure_code = match submitted {
        Some(s) if s.weights.is_empty() && !MEASURED_WITHOUT_WEIGHTS.contains(&notebook) => {
            measure_failed = Some(
                "the submission has no trained weights (weights/<model>.safetensors): run the cells that train \
                 the models and record their weights (rec.weights), then the notebook's last cell"
                    .into(),
            );
            None
        }
        Some(_) => std::fs::read_to_string(cfg.measure_dir.join(format!("{notebook}.rs"))).ok(),
        None => None,
    };
    let mut harness = Harness::new(notebook, &release, student)?.with_measure(measure_code);
    let mut notes: Vec<String> = harness
        .todos
        .iter()
        .filter_map(|t| match t.source {
            Source::SameId => None,
            Source::SameItems => Some(format!("TODO cell {}: found by what it defines (its cell id changed)", t.id)),
            Source::Missing => Some(format!("TODO cell {}: not in your notebook; its checks fail", t.id)),
        })
        .collect();
    let started = Instant::now();
    let binary = loop {
        match build(cfg, &harness)? {
            Ok(b) => break b,
            Err((Some(PartKind::Todo(i)), errors)) if !harness.replaced.iter().any(|(j, _)| *j == i) => {
                notes.push(format!("TODO cell {} does not compile; its checks fail:\n{errors}", harness.todos[i].id));
                harness = harness.without(i, &errors);
            }
            Err((Some(PartKind::Measure), errors)) if harness.measure.is_some() => {
                let why = format!("the grader could not build your models for measuring them: {errors}");
                notes.push(why.clone());
                measure_failed = Some(why);
                harness = harness.with_measure(None);
            }
            Err((_, errors)) => {
                return Err(Error::Input(format!("the grader's harness for {notebook} does not build: {errors}")))
            }
        }
    };
    let build_seconds = started.elapsed().as_secs_f64();
    let measure_started = Instant::now();
    let measuring = match (submitted, harness.measure.is_some()) {
        (Some(s), true) => Some(prepare_measure(cfg, notebook, s, &harness.nonce)?),
        _ => None,
    };
    let mut measure_seconds = measure_started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut names = harness.checks.clone();
    names.extend(harness.measures.iter().cloned());
    let (env, ro) = measuring.as_ref().map(|m| (m.env.clone(), m.ro.clone())).unwrap_or_default();
    let (outputs, failed) = run_checks(cfg, &binary, &cases, &names, &harness.nonce, &env, &ro)?;
    let run_seconds = started.elapsed().as_secs_f64();
    let measure_started = Instant::now();
    let measured = match &measuring {
        Some(m) => score_measure(cfg, notebook, m, &outputs, &failed, &harness.measures)?,
        None => BTreeMap::new(),
    };
    measure_seconds += measure_started.elapsed().as_secs_f64();
    let peak_rss_bytes = sandbox::peak_children_rss();
    let mut results = Vec::new();
    for check in hidden.checks() {
        let tolerance = hidden.tolerance(&check)?;
        let expected = hidden.expected(&check, "autograder");
        if expected.is_empty() {
            return Err(Error::Input(format!("{} has no expected output for {check}", hidden_path.display())));
        }
        if let Some(why) = failed.get(&check) {
            results.push(CheckResult::failed(&check, Some(tolerance), why.clone()));
            continue;
        }
        let names: Vec<String> = if expected.len() == 1 {
            vec![check.clone()]
        } else {
            (0..expected.len()).map(|i| format!("{check}.{i}")).collect()
        };
        let got: Option<Vec<&Values>> = names.iter().map(|n| outputs.get(n)).collect();
        results.push(match got {
            Some(got) => compare_all(&check, &got, &expected, tolerance),
            None => CheckResult::failed(&check, Some(tolerance), "no output on the graded input".into()),
        });
    }
    Ok(RerunReport {
        results,
        notes,
        build_seconds,
        run_seconds,
        peak_rss_bytes,
        measured,
        measure_error: measure_failed,
        measure_seconds,
    })
}
