//! The student handout (`hw9 handout`, `make handout`): a copy of the repository a student can be
//! given — the student notebooks, the assets they read, the public fixtures, setup, the kernel and
//! the crate **without the answers** — as a folder and a `.tar.gz`, and beside it the grader's
//! files (the full fixtures, with the autograder cases' expected outputs, and the points).
//!
//! Left out: the solution sources (`notebooks/solutions/`), the crate's reference answers
//! (`src/models/reference/`: the handout's `Cargo.toml` does not enable the `reference` feature),
//! the tests and commands that need them, the autograder cases' expected outputs, the fixture
//! generator and the benchmarks. [`secrets`] lists what must not appear in it, for the tests that
//! scan every file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tch::Tensor;

use crate::error::{Error, Result};
use crate::grading::release::{read_notebooks, release_notebook, secret_lines};
use crate::io::write_atomic;

/// Repository paths copied into the handout as they are (files, or folders copied whole).
const COPIED: &[&str] = &[
    "Cargo.lock",
    "build.rs",
    "rustfmt.toml",
    "ruff.toml",
    ".gitignore",
    ".cargo/config.toml",
    "Makefile",
    "requirements.txt",
    "requirements-nodeps.txt",
    "environment.md",
    "tools/setup.sh",
    "tools/evcxr",
    "tools/nbrun.py",
    "tools/convert_smollm2.py",
    "jupyter/kernels/hw9-rust/launch",
    "jupyter/evcxr/evcxr.toml",
    "jupyter/evcxr/cargo-config.toml",
    "crates/hw9-env",
    "crates/hw9-grade",
    "src",
    "tests",
    "assets/checksums.sha256",
    "assets/corpus",
    "assets/fonts",
    "assets/grading",
    "assets/fixtures",
];

/// Files of the repository's tests and examples that hold answers to TODOs written otherwise
/// (checked against PyTorch on every kernel selection, trained to measure the thresholds): never
/// in the handout, and scanned for ([`secrets`]).
const ANSWERING_TESTS: &[&str] =
    &["tests/variants/facenet.rs", "tests/checks_across_cpus.rs", "examples/threshold_spread.rs"];

/// Repository paths left out of what [`COPIED`] brings: answers, what needs them, and the
/// grader's tests (they grade against the autograder cases' expected outputs).
const LEFT_OUT: &[&str] = &[
    "src/models/reference",
    "tests/variants",
    "tests/checks_across_cpus.rs",
    "tests/release.rs",
    "tests/handout.rs",
    "tests/handout",
    "tests/grading.rs",
    "tests/submission.rs",
    // Re-runs the solutions on the hidden cases, which the handout has neither of.
    "tests/rerun.rs",
    "crates/hw9-grade/tests",
    "tests/notebooks/test_notebooks.py",
    "tests/notebooks/test_summarization.py",
    // The GPU check runs the solution sources (tools/gpu_check.py is not copied either).
    "tests/notebooks/test_gpu_check.py",
    "assets/fixtures/transformer_parity.safetensors",
];

/// What the handout holds and where the grader's files went.
#[derive(Debug, Clone, PartialEq)]
pub struct Handout {
    /// The handout folder (`<out>/hw9`).
    pub dir: PathBuf,
    /// The same as `<out>/hw9-handout.tar.gz`.
    pub archive: PathBuf,
    /// The grader's files (`<out>/grader`: `fixtures/` with the autograder cases' expected
    /// outputs, `grading/`), for `hw9-grade --assets`.
    pub grader: PathBuf,
    /// Files written into the handout.
    pub files: usize,
}

/// What stands in the handout for `src/models/reference/`: nothing to compile (the feature is off)
/// and no answers, only what rustfmt needs to find the module.
const REFERENCE_STUB: &str = "//! The reference answers to the TODO cells are not part of the student handout: the\n//! `reference` feature is off here. Your own code in the notebooks is what runs.\n";

/// The README a student reads first.
const STUDENT_README: &str = r#"# hw9 — ViT, MAE and Transformers, hands-on, in Rust notebooks

```sh
make lab     # set everything up, then open JupyterLab on notebooks/ (prints the URL with its token)
make test    # set everything up, then check the installation and the notebooks
```

`make setup` (run by both) installs what the notebooks need; the first run takes about 12 minutes
on 2 cores, later runs a second or two. It needs Python 3.11 with `python3-venv`, a Rust
toolchain (rustup) and access to the package registries (PyPI, crates.io, Debian). In JupyterLab,
open a notebook and pick the kernel **Rust (hw9)**. `make doctor` checks the installation and
prints a fix for each problem; `environment.md` explains every part.

## What to do
Open the notebooks in `notebooks/` in order (`00_setup_check` first), run the cells top to bottom,
and fill in each `todo!("TODO: …")`. The check cell under a TODO prints `✓ PASS` with the largest
difference from PyTorch's output, or `✗ FAIL` with what was expected and what came; it also runs
your code on a graded input you do not see and says at once if it panics there or returns another
shape. `HW9_PROFILE=cpu` (the default) is the profile that is graded; `quick` runs in seconds but
its accuracies are not graded.

`make test` checks the installation and runs your notebooks, each on a copy in a temporary folder:
it never changes your notebooks, your saved training runs (`notebooks/output/`) or your submissions.
It passes with your TODOs open (they fail only at their checks) and with them done (every check
must then pass).

## What to hand in
Each notebook's last cell writes `submission/<notebook>/hw9_submission.zip` beside it. Upload:

| notebook | Gradescope assignment | file |
|---|---|---|
| `00_setup_check` | Homework 9 (Setup check) | `notebooks/submission/00_setup_check/hw9_submission.zip` |
| `01_vit_mae` | Homework 9 (Code) (MAE) | `notebooks/submission/01_vit_mae/hw9_submission.zip` |
| `02_summarization` | Homework 9 (Code) (Summarization) | `notebooks/submission/02_summarization/hw9_submission.zip` |
| `03_visualizing_attention` | your written answers go into the written assignment | — |
| `04_facenet` | Homework 9 (Code) (FaceNet) | `notebooks/submission/04_facenet/hw9_submission.zip` |

## The written part
Every written question (FaceNet's reading questions, notebook 2's and 3's questions, and the
homework-process questions at the end of notebook 4) is a markdown cell with **Your answer:** in
it: write your answer there (paste or drag screenshots into the cell). `make written` gathers them,
in the homework's order, into `written/written.md` and `written/written.html` (open it in a browser
and print it to PDF for the written assignment) and lists the questions still unanswered.
"#;

/// Copies the files under `src` (or `src` itself, a file) to `dst`, leaving out what `skip` says,
/// build and cache folders, and links; counts the files copied.
fn copy_tree(src: &Path, dst: &Path, skip: &dyn Fn(&Path) -> bool, count: &mut usize) -> Result<()> {
    let junk = |e: &walkdir::DirEntry| {
        e.depth() > 0 && matches!(e.file_name().to_str(), Some("target" | "__pycache__" | ".ipynb_checkpoints"))
    };
    let walk = walkdir::WalkDir::new(src).sort_by_file_name().into_iter().filter_entry(|e| !skip(e.path()) && !junk(e));
    for entry in walk {
        let entry = entry.map_err(|e| hw9_grade::Error::walk(src, e))?;
        if !entry.file_type().is_file() {
            continue;
        }
        let to = match entry.path().strip_prefix(src) {
            Ok(rel) if !rel.as_os_str().is_empty() => dst.join(rel),
            _ => dst.to_path_buf(), // `src` is a file
        };
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        std::fs::copy(entry.path(), &to).map_err(|e| Error::io(&to, e))?;
        *count += 1;
    }
    Ok(())
}

/// Whether a fixture key is an autograder case's expected output (grader-only).
pub fn grader_only(key: &str) -> bool {
    let is_expected =
        |k: &str| k == "expected" || k.strip_prefix("expected.").is_some_and(|i| i.parse::<u32>().is_ok());
    key.split('/').nth(1) == Some("autograder") && key.split('/').nth(2).is_some_and(is_expected)
}

/// Writes `src` without its autograder cases' expected outputs to `dst`; each stands there as its
/// shape (`expected_shape[.i]`, int64 dims) and dtype (`expected_dtype[.i]`, an empty tensor), so
/// that a notebook's check can say at once when the student's code returns a wrong shape on the
/// graded input.
fn public_fixtures(src: &Path, dst: &Path) -> Result<()> {
    let mut kept: Vec<(String, Tensor)> = Vec::new();
    for (k, t) in Tensor::read_safetensors(src)? {
        if !grader_only(&k) {
            kept.push((k, t));
            continue;
        }
        let (case, name) = k.rsplit_once('/').unwrap_or(("", k.as_str()));
        let suffix = name.strip_prefix("expected").unwrap_or("");
        kept.push((format!("{case}/expected_shape{suffix}"), Tensor::from_slice(&t.size())));
        kept.push((format!("{case}/expected_dtype{suffix}"), Tensor::empty([0], (t.kind(), tch::Device::Cpu))));
    }
    Tensor::write_safetensors(&kept, dst)?;
    Ok(())
}

/// The handout's `Cargo.toml`: the repository's, with the `reference` feature off by default.
fn student_manifest(repo: &Path) -> Result<String> {
    let path = repo.join("Cargo.toml");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let from = "default = [\"reference\"]";
    if !text.contains(from) {
        return Err(Error::Input(format!("{}: expected the line {from:?}", path.display())));
    }
    Ok(text.replace(from, "# The student handout: the reference answers are not part of it.\ndefault = []"))
}

/// Writes the handout of the repository at `repo` into `out` (see the module doc).
pub fn write_handout(repo: &Path, out: &Path) -> Result<Handout> {
    let dir = out.join("hw9");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    }
    let left_out: Vec<PathBuf> = LEFT_OUT.iter().map(|p| repo.join(p)).collect();
    let fixtures = repo.join("assets/fixtures");
    let skip = |p: &Path| {
        left_out.iter().any(|l| p == l)
            || (p.parent() == Some(fixtures.as_path()) && p.extension().is_some_and(|x| x == "safetensors"))
            || p.extension().is_some_and(|x| x == "rs") && reference_only_test(p)
    };
    let mut files = 0;
    for rel in COPIED {
        copy_tree(&repo.join(rel), &dir.join(rel), &skip, &mut files)?;
    }
    for entry in std::fs::read_dir(&fixtures).map_err(|e| Error::io(&fixtures, e))?.flatten() {
        let p = entry.path();
        if p.extension().is_some_and(|x| x == "safetensors") && !left_out.contains(&p) {
            public_fixtures(&p, &dir.join("assets/fixtures").join(entry.file_name()))?;
            files += 1;
        }
    }
    write_atomic(&dir.join("Cargo.toml"), student_manifest(repo)?.as_bytes())?;
    // `mod reference;` is compiled out without the feature, but rustfmt still looks for its file.
    write_atomic(&dir.join("src/models/reference/mod.rs"), REFERENCE_STUB.as_bytes())?;
    write_atomic(&dir.join("README.md"), STUDENT_README.as_bytes())?;
    files += 2;
    // The student notebooks, from the solution sources (the same as the committed ones).
    let solutions = repo.join("notebooks/solutions");
    for (name, notebook) in solution_notebooks(&solutions)? {
        let (student, _) = release_notebook(&notebook, &name)?;
        write_atomic(
            &dir.join("notebooks").join(&name),
            crate::grading::release::to_nbformat_string(&student).as_bytes(),
        )?;
        files += 1;
    }
    let archive = out.join("hw9-handout.tar.gz");
    write_tar_gz(&dir, &archive)?;
    let grader = out.join("grader");
    if grader.exists() {
        std::fs::remove_dir_all(&grader).map_err(|e| Error::io(&grader, e))?;
    }
    let mut n = 0;
    copy_tree(&fixtures, &grader.join("fixtures"), &|_| false, &mut n)?;
    copy_tree(&repo.join("assets/grading"), &grader.join("grading"), &|_| false, &mut n)?;
    Ok(Handout { dir, archive, grader, files })
}

/// A cargo test that tests the reference answers (it starts with `#![cfg(feature = "reference")]`).
fn reference_only_test(p: &Path) -> bool {
    p.parent().is_some_and(|d| d.ends_with("tests"))
        && std::fs::read_to_string(p).is_ok_and(|t| t.contains("#![cfg(feature = \"reference\")]"))
}

/// The solution sources in `dir` as `(file name, notebook)`.
fn solution_notebooks(dir: &Path) -> Result<Vec<(String, serde_json::Value)>> {
    let named = read_notebooks(dir)?.into_iter();
    Ok(named.map(|(p, nb)| (p.file_name().unwrap_or_default().to_string_lossy().into_owned(), nb)).collect())
}

fn write_tar_gz(dir: &Path, archive: &Path) -> Result<()> {
    let tmp = archive.with_extension("tmp");
    let file = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(file, flate2::Compression::default()));
    tar.follow_symlinks(false);
    tar.append_dir_all("hw9", dir).map_err(|e| Error::io(dir, e))?;
    tar.into_inner().and_then(|gz| gz.finish()).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, archive).map_err(|e| Error::io(archive, e))
}

/// What must not appear anywhere in a handout, by kind: every line of a solution region (28
/// characters or more) that the crate does not give anyway, every
/// line of the reference answers' sources that the handout does not give anyway (elsewhere in the
/// crate, or in a student notebook's given code such as a constructor), and the bytes of
/// every autograder case's floating-point expected output of 16 bytes or more (smaller ones would
/// match by chance).
pub fn secrets(repo: &Path) -> Result<BTreeMap<&'static str, Vec<Vec<u8>>>> {
    let mut out: BTreeMap<&'static str, Vec<Vec<u8>>> = BTreeMap::new();
    let mut student_code = String::new();
    let mut solution_lines = Vec::new();
    for (name, nb) in solution_notebooks(&repo.join("notebooks/solutions"))? {
        let (student, regions) = release_notebook(&nb, &name)?;
        // Lines of 28 characters or more: shorter ones (`let h = self.n_heads;`) are boilerplate
        // that given code holds too.
        solution_lines.extend(secret_lines(&regions).into_iter().filter(|l| l.len() >= 28));
        for cell in student["cells"].as_array().into_iter().flatten() {
            student_code += &crate::grading::release::source_of(cell);
        }
    }
    let given: String = {
        let mut text = student_code;
        let src = repo.join("src");
        for entry in walkdir::WalkDir::new(&src).into_iter().filter_entry(|e| !e.path().ends_with("reference")) {
            let entry = entry.map_err(|e| hw9_grade::Error::walk(&src, e))?;
            if entry.file_type().is_file() && entry.path().extension().is_some_and(|x| x == "rs") {
                text += &std::fs::read_to_string(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
            }
        }
        text
    };
    // A solution line that the crate gives anyway (a helper such as `positive_pairs` holds the
    // same line) is no secret.
    let lines = solution_lines.into_iter().filter(|l| !given.contains(l.as_str()));
    out.entry("solution region line").or_default().extend(lines.map(String::into_bytes));
    let reference = repo.join("src/models/reference");
    for e in std::fs::read_dir(&reference).map_err(|e| Error::io(&reference, e))?.flatten() {
        let text = std::fs::read_to_string(e.path()).map_err(|err| Error::io(e.path(), err))?;
        let lines = text.lines().map(str::trim).filter(|l| {
            l.len() >= 24
                && !l.starts_with("//")
                && !l.starts_with("use ")
                && !l.starts_with("pub use")
                && !given.contains(*l)
        });
        out.entry("reference source line").or_default().extend(lines.map(|l| l.as_bytes().to_vec()));
    }
    // The tests' and examples' own, independently written answers (the kernel matrix's variants).
    for rel in ANSWERING_TESTS {
        let path = repo.join(rel);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let lines = text.lines().map(str::trim).filter(|l| {
            l.len() >= 32
                && !l.starts_with("//")
                && !l.starts_with("use ")
                && !l.starts_with("way(")
                && !given.contains(*l)
        });
        out.entry("test answer line").or_default().extend(lines.map(|l| l.as_bytes().to_vec()));
    }
    for e in std::fs::read_dir(repo.join("assets/fixtures"))
        .map_err(|e| Error::io(repo.join("assets/fixtures"), e))?
        .flatten()
    {
        if e.path().extension().is_none_or(|x| x != "safetensors") {
            continue;
        }
        for (k, t) in Tensor::read_safetensors(e.path())? {
            let bytes = t.numel() * t.kind().elt_size_in_bytes();
            // Integer outputs (index permutations such as ids_restore) are left out: they follow
            // from the inputs and reappear among other checks' public inputs.
            if grader_only(&k) && bytes >= 16 && t.is_floating_point() {
                let mut buf = vec![0u8; bytes];
                t.contiguous().copy_data_u8(&mut buf, t.numel());
                out.entry("grader-only expected output").or_default().push(buf);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_autograder_expected_outputs_are_grader_only() {
        assert!(grader_only("vit/autograder/expected"));
        assert!(grader_only("forward_encoder/autograder/expected.2"));
        assert!(!grader_only("vit/autograder/images"));
        assert!(!grader_only("vit/public/expected"));
        assert!(!grader_only("vit/atol"));
        assert!(!grader_only("vit/autograder/expected_shape"));
        assert!(!grader_only("forward_encoder/autograder/expected_dtype.1"));
    }
}
