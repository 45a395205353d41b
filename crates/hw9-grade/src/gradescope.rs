//! Gradescope's autograder: `run_autograder` calls `hw9-grade gradescope --notebook <nb>`, which
//! finds the student's upload in `/autograder/submission/`, grades it, and writes
//! `/autograder/results/results.json` in Gradescope's format (a test per graded item with its
//! score, maximum and output). Every outcome — a correct, wrong, tampered, foreign, `quick`-profile
//! or empty upload — gives a results file that tells the student what happened.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::grade::{grade, grade_log, Assets, Status};
use crate::spec::GradingSpec;
use crate::{write_atomic, Result};

/// One Gradescope test (a graded item).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestResult {
    /// The item, e.g. `unpatchify (check)`.
    pub name: String,
    /// Points given.
    pub score: f64,
    /// Points possible.
    pub max_score: f64,
    /// `passed` or `failed` (Gradescope colours the test with it).
    pub status: String,
    /// What happened, in one line.
    pub output: String,
    /// Always `visible`: students see every item.
    pub visibility: String,
}

/// `results.json`, as Gradescope's autograder specification describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// The total score.
    pub score: f64,
    /// Shown above the tests: the upload graded, the profile, or why nothing could be graded.
    pub output: String,
    /// Always `visible`.
    pub visibility: String,
    /// Always `visible`.
    pub stdout_visibility: String,
    /// One per graded item.
    pub tests: Vec<TestResult>,
}

/// Where Gradescope puts the upload and expects the results.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// The student's upload, as a folder (`/autograder/submission`).
    pub submission: PathBuf,
    /// The results file (`/autograder/results/results.json`).
    pub results: PathBuf,
    /// Gradescope's `submission_metadata.json` (due dates, earlier submissions).
    pub metadata: PathBuf,
}

impl Layout {
    /// Gradescope's layout under `root` (`/autograder` on Gradescope).
    pub fn under(root: &Path) -> Self {
        Layout {
            submission: root.join("submission"),
            results: root.join("results/results.json"),
            metadata: root.join("submission_metadata.json"),
        }
    }
}

/// The upload to grade: `hw9_submission.zip` if there is one, else another `.zip`, else a
/// `submission_log.json` (at most 4 folders deep, 10,000 entries looked at; links not followed).
fn find_upload(dir: &Path) -> Option<PathBuf> {
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .max_depth(5)
        .into_iter()
        .filter_map(|e| e.ok())
        .take(10_000)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    files.sort();
    let named = |n: &str| files.iter().find(|p| p.file_name().is_some_and(|f| f == n)).cloned();
    named("hw9_submission.zip")
        .or_else(|| files.iter().find(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("zip"))).cloned())
        .or_else(|| named("submission_log.json"))
}

/// Every item of the spec at 0 points with `why`: what the student would have been graded on.
fn nothing_graded(spec: &GradingSpec, why: &str) -> Vec<TestResult> {
    let checks = spec.checks.iter().map(|(n, p)| (format!("{n} (check)"), *p));
    let thresholds = spec.thresholds.iter().map(|(n, t)| (format!("{n} (threshold)"), t.points));
    checks
        .chain(thresholds)
        .map(|(name, max)| TestResult {
            name,
            score: 0.0,
            max_score: max,
            status: "failed".into(),
            output: why.to_string(),
            visibility: "visible".into(),
        })
        .collect()
}

/// An assignment's policy on Gradescope, from `<assets>/grading/gradescope.json` when the course
/// writes one (every field optional), else these defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Policy {
    /// Share of the score taken per day (or part of one) after the due date, until the late due
    /// date (Gradescope's "late submissions"); after it, nothing is graded. Default 0.10.
    pub late_penalty_per_day: f64,
    /// Uploads graded per student in any 24 hours; more are answered with the last score and a
    /// message (the grader re-runs code, which costs minutes). Default 10.
    pub max_per_day: usize,
    /// Visibility of the check tests (their inputs are the hidden cases): Gradescope's `visible`,
    /// `after_due_date`, `after_published` or `hidden`. Default `after_due_date`; the thresholds
    /// and the total stay visible.
    pub checks_visibility: String,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { late_penalty_per_day: 0.10, max_per_day: 10, checks_visibility: "after_due_date".into() }
    }
}

impl Policy {
    /// The course's policy under `assets` (`grading/gradescope.json`), or the defaults.
    pub fn load(assets: &Path) -> Result<Self> {
        let path = assets.join("grading").join("gradescope.json");
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| crate::Error::corrupt("Gradescope policy", path, e.to_string())),
            Err(_) => Ok(Policy::default()),
        }
    }
}

fn parse_time(v: &serde_json::Value) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(v.as_str()?, &time::format_description::well_known::Rfc3339).ok()
}

/// What Gradescope's metadata says about this upload: how late it is and whether the student is
/// over the rate limit (then the last score to keep).
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    /// Days (or parts of one) after the due date; 0 when on time or unknown.
    pub late_days: u32,
    /// After the late due date: not graded.
    pub too_late: bool,
    /// Over the rate limit: the previous score, if any.
    pub rate_limited: Option<f64>,
}

/// Reads `submission_metadata.json` (missing or unreadable: on time, no limit).
pub fn timing(metadata: &Path, policy: &Policy) -> Timing {
    let none = Timing { late_days: 0, too_late: false, rate_limited: None };
    let Ok(bytes) = std::fs::read(metadata) else { return none };
    let Ok(m) = serde_json::from_slice::<serde_json::Value>(&bytes) else { return none };
    let Some(created) = parse_time(&m["created_at"]) else { return none };
    let due = parse_time(&m["assignment"]["due_date"]);
    let late_due = parse_time(&m["assignment"]["late_due_date"]);
    let late_days = match due {
        Some(d) if created > d => ((created - d).whole_seconds() as f64 / 86_400.0).ceil() as u32,
        _ => 0,
    };
    let too_late = match (due, late_due) {
        (_, Some(l)) => created > l,
        (Some(d), None) => created > d && policy.late_penalty_per_day >= 1.0,
        _ => false,
    };
    let earlier: Vec<&serde_json::Value> =
        m["previous_submissions"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
    let recent = earlier
        .iter()
        .filter(|s| parse_time(&s["submission_time"]).is_some_and(|t| created - t < time::Duration::days(1)))
        .count();
    let rate_limited = (recent >= policy.max_per_day).then(|| {
        earlier.last().and_then(|s| s["score"].as_f64().or_else(|| s["score"].as_str()?.parse().ok())).unwrap_or(0.0)
    });
    Timing { late_days, too_late, rate_limited }
}

/// Grades the upload in `layout` as a submission of `notebook` and writes `results.json`.
pub fn run(layout: &Layout, notebook: &str, assets: &Assets) -> Result<Results> {
    let spec = GradingSpec::load(&assets.dir, notebook)?;
    let results = |output: String, tests: Vec<TestResult>| Results {
        score: tests.iter().map(|t| t.score).fold(0.0, |a, b| a + b),
        output,
        visibility: "visible".into(),
        stdout_visibility: "visible".into(),
        tests,
    };
    let expected = format!("submission/{notebook}/hw9_submission.zip");
    let res = match find_upload(&layout.submission) {
        None => {
            let why = format!("No upload to grade: upload {expected}, which the notebook's last cell writes.");
            results(why.clone(), nothing_graded(&spec, "not graded: nothing was uploaded"))
        }
        Some(upload) => {
            let name = upload.strip_prefix(&layout.submission).unwrap_or(&upload).display().to_string();
            let graded = if upload.extension().is_some_and(|x| x == "json") {
                grade_log(&upload, assets)
            } else {
                grade(&upload, assets)
            };
            match graded {
                Err(e) => {
                    let why = format!("{name} could not be graded: {e}");
                    results(why, nothing_graded(&spec, "not graded: the upload was rejected (see above)"))
                }
                Ok(report) if report.notebook != notebook => {
                    let why = format!(
                        "{name} is a submission of {}, but this assignment grades {notebook}: upload {expected}.",
                        report.notebook
                    );
                    results(why, nothing_graded(&spec, "not graded: a submission of another notebook"))
                }
                Ok(report) => {
                    let tests = report
                        .items
                        .iter()
                        .map(|i| TestResult {
                            name: format!("{} ({})", i.name, i.kind),
                            score: i.points,
                            max_score: i.max_points,
                            status: if i.status == Status::Passed { "passed" } else { "failed" }.into(),
                            output: i.to_string(),
                            visibility: "visible".into(),
                        })
                        .collect();
                    let (got, max) = report.points();
                    results(format!("Graded {name} ({} profile): {got}/{max} points.", report.profile), tests)
                }
            }
        }
    };
    write_atomic(&layout.results, &serde_json::to_vec_pretty(&res)?)?;
    Ok(res)
}

/// [`run`] under the course's [`Policy`] and Gradescope's metadata: an upload over the rate limit
/// is not graded (the last score stands), one after the late due date scores 0, a late one loses
/// the policy's share per day, and the check tests get the policy's visibility.
pub fn run_with_policy(layout: &Layout, notebook: &str, assets: &Assets) -> Result<Results> {
    let policy = Policy::load(&assets.dir)?;
    let when = timing(&layout.metadata, &policy);
    let limited = |why: String, score: f64| -> Result<Results> {
        let res = Results {
            score,
            output: why,
            visibility: "visible".into(),
            stdout_visibility: "visible".into(),
            tests: Vec::new(),
        };
        write_atomic(&layout.results, &serde_json::to_vec_pretty(&res)?)?;
        Ok(res)
    };
    if let Some(last) = when.rate_limited {
        return limited(
            format!(
                "Not graded: {} uploads in the last 24 hours is this assignment's limit (it re-runs your code). \
                 Your last score, {last}, stands; upload again later.",
                policy.max_per_day
            ),
            last,
        );
    }
    if when.too_late {
        return limited("Not graded: uploaded after the late due date.".into(), 0.0);
    }
    let mut res = run(layout, notebook, assets)?;
    for t in &mut res.tests {
        if t.name.ends_with("(check)") {
            t.visibility = policy.checks_visibility.clone();
        }
    }
    if when.late_days > 0 {
        let keep = (1.0 - policy.late_penalty_per_day * when.late_days as f64).max(0.0);
        res.output += &format!(
            "\nLate by {} day(s): {:.0} % of the score is kept ({} → {}).",
            when.late_days,
            keep * 100.0,
            res.score,
            res.score * keep
        );
        res.score *= keep;
    }
    write_atomic(&layout.results, &serde_json::to_vec_pretty(&res)?)?;
    Ok(res)
}

/// A Gradescope assignment hw9 grades: its title and the notebook it grades.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assignment {
    /// The assignment's name on Gradescope.
    pub title: &'static str,
    /// The notebook whose submission it grades.
    pub notebook: &'static str,
    /// The bundle's file name.
    pub bundle: &'static str,
}

/// The assignments with auto-graded points: the original homework's two, FaceNet (notebook 4, new
/// here) and the setup check. (Notebook 3 has written answers only, graded with the written part.)
pub const ASSIGNMENTS: [Assignment; 4] = [
    Assignment { title: "Homework 9 (Code) (MAE)", notebook: "01_vit_mae", bundle: "hw9-code-mae.zip" },
    Assignment {
        title: "Homework 9 (Code) (Summarization)",
        notebook: "02_summarization",
        bundle: "hw9-code-summarization.zip",
    },
    Assignment { title: "Homework 9 (Code) (FaceNet)", notebook: "04_facenet", bundle: "hw9-code-facenet.zip" },
    Assignment { title: "Homework 9 (Setup check)", notebook: "00_setup_check", bundle: "hw9-setup-check.zip" },
];

/// `setup.sh`: Gradescope runs it once when it builds the autograder image. The bundle carries a
/// prebuilt `hw9-grade`; when the image cannot run it, the grader is built from the bundled
/// sources (a pure-Rust crate: no libtorch, about a minute).
const SETUP_SH: &str = r#"#!/usr/bin/env bash
# Gradescope autograder setup for hw9 (runs once, as root, when the image is built).
set -euo pipefail
cd /autograder/source
chmod +x run_autograder bin/hw9-grade
if ./bin/hw9-grade --version >/dev/null 2>&1; then
  echo "hw9-grade: the prebuilt binary runs here"
  exit 0
fi
echo "hw9-grade: building from source (the prebuilt binary does not run on this image)"
apt-get update -q && apt-get install -y -q curl ca-certificates build-essential
curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
. "$HOME/.cargo/env"
(cd grader && cargo build --release --locked -p hw9-grade)
cp grader/target/release/hw9-grade bin/hw9-grade
"#;

/// `run_autograder`: Gradescope runs it for every upload.
fn run_autograder(notebook: &str) -> String {
    format!(
        r#"#!/usr/bin/env bash
# Gradescope autograder for hw9's {notebook}: grades the upload in $GRADESCOPE_ROOT/submission
# (/autograder/submission on Gradescope) and writes $GRADESCOPE_ROOT/results/results.json.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export GRADESCOPE_ROOT="${{GRADESCOPE_ROOT:-/autograder}}"
exec "$here/bin/hw9-grade" gradescope --notebook {notebook} --assets "$here/assets"
"#
    )
}

/// The files of the grader's sources that a bundle carries (relative to the repository root).
const GRADER_SOURCES: [&str; 5] = [
    "Cargo.lock",
    "crates/hw9-env/Cargo.toml",
    "crates/hw9-env/src",
    "crates/hw9-grade/Cargo.toml",
    "crates/hw9-grade/src",
];

fn add_file(zip: &mut zip::ZipWriter<std::fs::File>, name: &str, bytes: &[u8], executable: bool) -> Result<()> {
    let mode = if executable { 0o755 } else { 0o644 };
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(mode);
    let zerr = |e: zip::result::ZipError| crate::Error::Input(format!("writing the bundle: {e}"));
    zip.start_file(name, opts).map_err(zerr)?;
    std::io::Write::write_all(zip, bytes).map_err(|e| crate::Error::io(name, e))
}

fn add_tree(zip: &mut zip::ZipWriter<std::fs::File>, root: &Path, rel: &Path, prefix: &str) -> Result<()> {
    let top = root.join(rel);
    for entry in walkdir::WalkDir::new(&top).follow_links(true).sort_by_file_name() {
        let entry = entry.map_err(|e| crate::Error::walk(&top, e))?;
        if entry.file_type().is_dir() {
            continue;
        }
        let inside = entry.path().strip_prefix(root).unwrap_or(entry.path());
        let bytes = std::fs::read(entry.path()).map_err(|e| crate::Error::io(entry.path(), e))?;
        add_file(zip, &format!("{prefix}{}", inside.display()), &bytes, false)?;
    }
    Ok(())
}

/// Writes one autograder zip per [`ASSIGNMENTS`] entry into `out`: `setup.sh`, `run_autograder`,
/// the `hw9-grade` binary `grader_exe`, the notebook's fixtures and grading spec from `assets`,
/// and the grader's sources from `repo` (with a workspace manifest) to build it where the binary
/// cannot run. Returns the zips' paths.
pub fn write_bundles(repo: &Path, assets: &Path, grader_exe: &Path, out: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).map_err(|e| crate::Error::io(out, e))?;
    let exe = std::fs::read(grader_exe).map_err(|e| crate::Error::io(grader_exe, e))?;
    let workspace = "[workspace]\nmembers = [\"crates/hw9-env\", \"crates/hw9-grade\"]\nresolver = \"2\"\n";
    let mut written = Vec::new();
    for a in ASSIGNMENTS {
        let path = out.join(a.bundle);
        let file = std::fs::File::create(&path).map_err(|e| crate::Error::io(&path, e))?;
        let mut zip = zip::ZipWriter::new(file);
        add_file(&mut zip, "setup.sh", SETUP_SH.as_bytes(), true)?;
        add_file(&mut zip, "run_autograder", run_autograder(a.notebook).as_bytes(), true)?;
        add_file(&mut zip, "bin/hw9-grade", &exe, true)?;
        for (dir, ext) in [("fixtures", "safetensors"), ("grading", "json")] {
            let rel = format!("{dir}/{}.{ext}", a.notebook);
            let bytes = std::fs::read(assets.join(&rel)).map_err(|e| crate::Error::io(assets.join(&rel), e))?;
            add_file(&mut zip, &format!("assets/{rel}"), &bytes, false)?;
        }
        add_file(&mut zip, "grader/Cargo.toml", workspace.as_bytes(), false)?;
        for src in GRADER_SOURCES {
            add_tree(&mut zip, repo, Path::new(src), "grader/")?;
        }
        let readme = format!(
            "Gradescope autograder for \"{}\" (hw9 notebook {}).\nUpload this zip as the assignment's autograder; students upload submission/{}/hw9_submission.zip.\n",
            a.title, a.notebook, a.notebook
        );
        add_file(&mut zip, "README.txt", readme.as_bytes(), false)?;
        zip.finish().map_err(|e| crate::Error::Input(format!("writing {}: {e}", path.display())))?;
        written.push(path);
    }
    Ok(written)
}
