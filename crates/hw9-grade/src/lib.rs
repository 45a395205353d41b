//! Grading hw9 submissions, without libtorch.
//!
//! A notebook's last cell writes `hw9_submission.zip` (see `hw9::grading::submission`): the
//! notebook, the outputs of its checks on the autograder inputs (`outputs.safetensors`), the log
//! (`submission_log.json`: checks, thresholds, profile), the trained models' weights
//! (`weights/<model>.safetensors`) and a manifest of SHA-256s. This crate reads it within fixed
//! bounds ([`upload`]) and grades it by re-running its code ([`rerun`]: the TODO cells built into
//! a [`harness`], run in a [`sandbox`] on hidden cases, the models measured on held-out data) — or,
//! asked to (`--read-outputs`, the reading bundles), by recomputing each check from the recorded
//! outputs ([`fixtures`], [`compare`]); it gives every item its points from the notebook's [`spec`]
//! ([`grade`]), and does so for a whole folder into a gradebook ([`batch`]) or for Gradescope's
//! autograder ([`gradescope`]).
//!
//! It has no libtorch on purpose: `hw9-grade` builds in about a minute with a bare Rust toolchain
//! (a Gradescope image) and starts in milliseconds; it reads an upload within fixed bounds
//! ([`upload::Limits`]: a zip bomb costs 36 MB, 164 MB named as weights); the programs it builds to
//! re-run a submission link libtorch.

#![warn(missing_docs)]

pub mod batch;
pub mod compare;
pub mod fixtures;
pub mod grade;
pub mod gradescope;
pub mod harness;
pub mod log;
pub mod rerun;
pub mod sandbox;
pub mod similarity;
pub mod spec;
pub mod upload;
pub mod written;

use std::path::PathBuf;

/// What can go wrong with a file, in the grader and in `hw9` alike (its `Error::File` holds this
/// same type, so a missing file is one thing wherever it was found).
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// A required file is not there; `fix` says how to get it.
    #[error("missing {what}: {} does not exist. Fix: {fix}", .path.display())]
    Missing {
        /// What is missing.
        what: String,
        /// Where it was looked for.
        path: PathBuf,
        /// How to get it.
        fix: String,
    },
    /// A file is there but its content is not what it should be.
    #[error("corrupt {what} {}: {detail}", .path.display())]
    Corrupt {
        /// What the file should be.
        what: String,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// An I/O error on a named path.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The path the operation was on.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Errors of the grader; each says what was expected and what came.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An upload that cannot be graded, and why (shown to the TA and the student).
    #[error("rejected submission {}: {why}", .path.display())]
    Rejected {
        /// The upload.
        path: PathBuf,
        /// Why it was rejected.
        why: String,
    },
    /// A file that is missing, unreadable or corrupt ([`FileError`]).
    #[error(transparent)]
    File(#[from] FileError),
    /// Bad input to a function.
    #[error("invalid input: {0}")]
    Input(String),
    /// A JSON (de)serialisation error.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// `Result` with the grader's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::File(FileError::Io { path: path.into(), source })
    }

    /// A required file that is not there, and how to get it.
    pub fn missing(what: impl Into<String>, path: impl Into<PathBuf>, fix: impl Into<String>) -> Self {
        Error::File(FileError::Missing { what: what.into(), path: path.into(), fix: fix.into() })
    }

    /// A directory walk's error, with the path it happened on (`root` when it has none).
    pub fn walk(root: &std::path::Path, e: walkdir::Error) -> Self {
        let path = e.path().unwrap_or(root).to_path_buf();
        Error::io(path, e.into())
    }

    /// A file whose content is not what it should be.
    pub fn corrupt(what: impl Into<String>, path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        Error::File(FileError::Corrupt { what: what.into(), path: path.into(), detail: detail.into() })
    }
}

/// Writes `bytes` to `path` atomically (see [`hw9_env::write_atomic`]).
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    hw9_env::write_atomic(path, bytes).map_err(|e| Error::io(path, e))
}

pub use grade::{grade, Assets, GradeReport};

/// What `hw9-grade <path>` and `hw9 grade <path>` take: one set of arguments for one job.
#[derive(Debug, Clone, clap::Args)]
pub struct GradeArgs {
    /// A hw9_submission.zip (or a submission_log.json), or a folder of zips at any depth.
    pub path: PathBuf,
    /// Where a folder's gradebook.csv and gradebook.json go (default: the folder).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The grader's files: `fixtures/` and `grading/` under this folder (default: the repository's
    /// assets, or a grader bundle's root).
    #[arg(long)]
    pub assets: Option<PathBuf>,
    /// A fixture file to grade against instead of the notebook's own (a point per check; with
    /// --read-outputs).
    #[arg(long, requires = "read_outputs")]
    pub fixtures: Option<PathBuf>,
    /// Read the outputs and figures the submission recorded instead of re-running its code: a
    /// check of one's own work (the student handout has no hidden cases to re-run on), never a
    /// grade — the student's machine computed them, and they can be edited.
    #[arg(long)]
    pub read_outputs: bool,
}

impl GradeArgs {
    /// Grades as [`grade_path`] does with these arguments; `Ok(false)` when a check failed. By
    /// default it re-runs each submission's code ([`rerun`]): that needs bubblewrap, the toolchain,
    /// libtorch and the hidden cases, and says which is missing.
    pub fn run(&self) -> Result<bool> {
        let mut assets = self.assets.clone().map_or_else(Assets::default, Assets::at);
        assets.fixtures_file = self.fixtures.clone();
        if !self.read_outputs {
            let cfg = rerun::RerunConfig::for_root(&hw9_env::paths::root());
            let instead = "--read-outputs grades the outputs the submission recorded instead: a check of your own \
                           work, not a grade";
            if !cfg.hidden_dir.is_dir() {
                return Err(Error::Input(format!(
                    "grading re-runs the submission's code on the hidden cases, which are not here ({}: the \
                     repository's assets/hidden, never in the student handout); {instead}",
                    cfg.hidden_dir.display()
                )));
            }
            if let Err(why) = sandbox::available() {
                return Err(Error::Input(format!(
                    "grading re-runs the submission's code in a bubblewrap sandbox: {why}; {instead}"
                )));
            }
            assets.rerun = Some(cfg);
        }
        grade_path(&self.path, self.out.as_deref(), &assets)
    }
}

/// What `hw9-grade <path>` and `hw9 grade <path>` do: a folder is graded into `gradebook.csv` and
/// `gradebook.json` (in `out`, default the folder); a zip or a log is graded and printed item by
/// item with its points.
pub fn grade_path(path: &std::path::Path, out: Option<&std::path::Path>, assets: &Assets) -> Result<bool> {
    if path.is_dir() {
        let start = std::time::Instant::now();
        let book = batch::grade_folder(path, assets)?;
        let (csv, json) = book.write(out.unwrap_or(path))?;
        let rejected = book.rows.iter().filter(|r| r.error.is_some()).count();
        println!(
            "{} submissions graded in {:.1} s ({rejected} rejected): {} and {}",
            book.rows.len(),
            start.elapsed().as_secs_f64(),
            csv.display(),
            json.display()
        );
        return Ok(true);
    }
    let report = if path.extension().is_some_and(|x| x == "json") {
        grade::grade_log(path, assets)?
    } else {
        grade::grade(path, assets)?
    };
    for item in &report.items {
        println!("{item}");
    }
    for note in &report.notes {
        println!("note: {note}");
    }
    let (passed, total) = report.score();
    let (points, max) = report.points();
    println!("{}: {passed}/{total} checks passed", report.notebook);
    println!("{} ({} profile): {points}/{max} points", report.notebook, report.profile);
    Ok(true)
}
