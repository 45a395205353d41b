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
                Err(e @ crate::Error::Rejected { .. }) => {
                    let why = format!("{name} could not be graded: {e}");
                    results(why, nothing_graded(&spec, "not graded: the upload was rejected (see above)"))
                }
                // The grader's own failure (its harness does not build, the sandbox cannot start, a
                // file of the bundle is missing): no results, so Gradescope shows that the
                // autograder failed rather than a zero the student did not earn.
                Err(e) => return Err(e),
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
                    let mut output = format!("Graded {name} ({} profile): {got}/{max} points.", report.profile);
                    for note in &report.notes {
                        output += &format!("\n{note}");
                    }
                    results(output, tests)
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

/// Warms a re-running bundle's build (`setup.sh` calls it once): the released notebook of
/// `notebook` (its TODOs unanswered) re-run as an upload would be, with a weights file that is not
/// one so the grader's measurement program is built too. Builds the harness's dependencies (tch,
/// torch-sys, the handout's crate) into `cfg.target_dir`; an error means the chain does not work
/// in this image. Returns what it did, in a line.
pub fn warm(notebook: &str, cfg: &crate::rerun::RerunConfig) -> Result<String> {
    let path = cfg.release_dir.join(format!("{notebook}.ipynb"));
    let bytes = std::fs::read(&path).map_err(|e| crate::Error::io(&path, e))?;
    let release: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| crate::Error::corrupt("the released notebook", &path, e.to_string()))?;
    // The first build compiles libtorch's bindings (torch-sys's C++) and every crate: give it the
    // time a cold image builder needs, not a submission's build limit.
    let mut cfg = cfg.clone();
    cfg.build_limits.wall = std::time::Duration::from_secs(3600);
    cfg.build_limits.cpu_seconds = 4 * 3600;
    let cfg = &cfg;
    let measures = cfg.measure_dir.join(format!("{notebook}.rs")).exists();
    let submitted = measures.then(|| crate::rerun::Submitted {
        profile: "quick".into(),
        weights: [("warm-up".to_string(), b"not a safetensors file".to_vec())].into(),
    });
    let report = crate::rerun::rerun_submission(notebook, &release, submitted.as_ref(), cfg)?;
    if report.results.is_empty() {
        return Err(crate::Error::Input(format!(
            "warming {notebook}: the harness ran no check ({})",
            report.notes.join("; ")
        )));
    }
    if let Some(why) = report.measure_error.as_deref().filter(|w| w.contains("could not build")) {
        return Err(crate::Error::Input(format!("warming {notebook}: {why}")));
    }
    Ok(format!(
        "ok: {notebook}'s harness{} built in {:.0} s and ran {} checks in {:.1} s (the release's TODOs fail them, as they should)",
        if measures { " and measurement" } else { "" },
        report.build_seconds,
        report.results.len(),
        report.run_seconds
    ))
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

/// `setup.sh` of a bundle that only reads the outputs a submission carries (no handout given to
/// [`write_bundles`]): the prebuilt `hw9-grade`, or one built from the bundled sources.
const SETUP_SH_READING: &str = r#"#!/usr/bin/env bash
# Gradescope autograder setup for hw9 (runs once, as root, when the image is built).
# This bundle grades the outputs the student's machine recorded: it cannot tell an edited
# submission from a real one. `make gradescope` writes bundles that re-run the student's code.
set -euo pipefail
cd "$(dirname "$0")"
# Gradescope may run a copy of this script from /autograder: the bundle is unpacked in source/.
if [ -d source/bin ] && [ ! -d bin ]; then cd source; fi
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

/// The Rust toolchain `setup.sh` installs where the image has none (the one hw9 is tested with).
pub const RUST_VERSION: &str = "1.95.0";

/// `setup.sh` of a re-running bundle: provisions what re-running a submission needs and warms the
/// build, so each upload compiles only its own cells. Steps print one line each; a failing step
/// names itself and stops, so a problem shows when the autograder is uploaded, not on a student's
/// submission. What is already there is kept (an image with Rust, a `LIBTORCH` given, a
/// `CARGO_TARGET_DIR` given): the tests run it that way on this machine.
fn setup_sh_rerun(notebook: &str) -> String {
    format!(
        r#"#!/usr/bin/env bash
# Gradescope autograder setup for hw9's {notebook} (runs once, as root, when Gradescope builds
# the autograder image). Re-running a submission needs: bubblewrap (the sandbox), a C compiler,
# Rust {rust}, libtorch (torch 2.13.0's wheel from PyPI, as hw9's own setup installs it, without
# the CUDA libraries), the crates of hw9/Cargo.lock, and a warm build of the handout's crate.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# Gradescope may run a copy of this script from /autograder: the bundle is unpacked in source/.
if [ -d "$here/source/hw9" ] && [ ! -d "$here/hw9" ]; then here="$here/source"; fi
cd "$here"
step() {{ printf '%-10s %s\n' "$1" "$2"; }}
fail() {{ printf '%-10s FAILED: %s\n' "$1" "$2" >&2; exit 1; }}
t0=$(date +%s)
chmod +x run_autograder bin/hw9-grade

# 1. System packages (Debian or Ubuntu, as Gradescope's images are).
need=()
command -v bwrap >/dev/null || need+=(bubblewrap)
command -v cc >/dev/null && command -v c++ >/dev/null || need+=(build-essential)
command -v cargo >/dev/null || [ -x "${{CARGO_HOME:-$HOME/.cargo}}/bin/cargo" ] || command -v curl >/dev/null ||
  need+=(curl ca-certificates)
[ -n "${{LIBTORCH:-}}" ] || python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
if [ "${{#need[@]}}" -gt 0 ]; then
  {{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${{need[@]}}"; }} \
    >/tmp/hw9-apt.log 2>&1 || {{ tail -n 5 /tmp/hw9-apt.log >&2; fail packages "apt-get install ${{need[*]}}"; }}
fi
step packages "ok: ${{need[*]:+installed }}${{need[*]:-bwrap, cc and what else is needed are there}}"

# 2. Rust (rustup, minimal profile) unless the image has cargo.
export CARGO_HOME="${{CARGO_HOME:-$HOME/.cargo}}" RUSTUP_HOME="${{RUSTUP_HOME:-$HOME/.rustup}}"
if ! command -v cargo >/dev/null && [ -f "$CARGO_HOME/env" ]; then . "$CARGO_HOME/env"; fi
if ! command -v cargo >/dev/null; then
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
    sh -s -- -y -q --profile minimal --default-toolchain {rust} >/tmp/hw9-rustup.log 2>&1 ||
    {{ tail -n 5 /tmp/hw9-rustup.log >&2; fail rust "rustup could not install Rust {rust}"; }}
  . "$CARGO_HOME/env"
fi
step rust "ok: $(cargo --version)"

# The bundled grader binary, or one built from the handout's copy of its sources (a pure-Rust
# crate: about a minute) where this image cannot run it.
if ! ./bin/hw9-grade --version >/dev/null 2>&1; then
  (cd hw9 && cargo build -q --release --locked -p hw9-grade --target-dir "$here/grader-target") >/tmp/hw9-grader.log 2>&1 ||
    {{ tail -n 5 /tmp/hw9-grader.log >&2; fail grader "hw9-grade could not be built"; }}
  cp "$here/grader-target/release/hw9-grade" bin/hw9-grade
fi
step grader "ok: $(./bin/hw9-grade --version)"

# 3. libtorch: the torch wheel's files, whatever Python the image has (the wheel's libraries do
#    not depend on it), into libtorch/ — unless LIBTORCH names one already.
if [ -z "${{LIBTORCH:-}}" ]; then
  LIBTORCH="$here/libtorch/torch"
  if [ ! -f "$LIBTORCH/lib/libtorch_cpu.so" ] || [ ! -d "$here/libtorch/nvidia" ]; then
    python3 -m pip install -q --upgrade --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.11 \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --target "$here/libtorch" \
      $(grep -E '^(torch|nvidia-)' hw9/requirements-nodeps.txt) >/tmp/hw9-pip.log 2>&1 ||
      {{ tail -n 5 /tmp/hw9-pip.log >&2; fail libtorch "pip could not fetch the torch wheel from PyPI"; }}
  fi
fi
[ -f "$LIBTORCH/lib/libtorch_cpu.so" ] || fail libtorch "$LIBTORCH/lib/libtorch_cpu.so is missing"
step libtorch "ok: $LIBTORCH"

# 4. The sandbox must work in this container: student code never runs without it.
bwrap --ro-bind / / --unshare-net --unshare-pid --dev /dev --proc /proc -- true 2>/tmp/hw9-bwrap.log ||
  fail sandbox "bubblewrap cannot make namespaces here ($(head -c 300 /tmp/hw9-bwrap.log)); hw9 re-runs student code only inside it"
step sandbox "ok: bubblewrap makes its namespaces here"

# 5. What run_autograder needs to find again.
{{
  echo "export PATH=\"$(dirname "$(command -v cargo)"):\$PATH\""
  echo "export CARGO_HOME=\"$CARGO_HOME\" RUSTUP_HOME=\"$RUSTUP_HOME\""
  echo "export LIBTORCH=\"$LIBTORCH\" LD_LIBRARY_PATH=\"$LIBTORCH/lib\" HW9_ROOT=\"$here/hw9\""
  if [ -n "${{CARGO_TARGET_DIR:-}}" ]; then echo "export CARGO_TARGET_DIR=\"$CARGO_TARGET_DIR\""; fi
  if [ -n "${{HW9_RERUN_DIR:-}}" ]; then echo "export HW9_RERUN_DIR=\"$HW9_RERUN_DIR\""; fi
}} >env.sh
. ./env.sh

# 6. The crates, then a warm build: the released notebook (TODOs unanswered) built and run as a
#    submission would be, which also proves the whole chain works in this image.
(cd hw9 && cargo fetch --locked -q --target "$(rustc -vV | sed -n 's/^host: //p')") >/tmp/hw9-fetch.log 2>&1 ||
  {{ tail -n 5 /tmp/hw9-fetch.log >&2; fail crates "cargo fetch could not download hw9's crates"; }}
step crates "ok: hw9/Cargo.lock's crates are in $CARGO_HOME"
./bin/hw9-grade gradescope --notebook {notebook} --bundle "$here" --warm || fail warm "the warm build failed (above)"
step done "in $(( $(date +%s) - t0 )) s"
"#,
        rust = RUST_VERSION
    )
}

/// `run_autograder`: Gradescope runs it for every upload; `bundle` re-runs the submission's code
/// with the bundle's crate and hidden cases.
fn run_autograder(notebook: &str, rerun: bool) -> String {
    let (how, env, bundle) = if rerun {
        (
            "re-runs the student's code from the upload's notebook",
            "[ -f \"$here/env.sh\" ] && . \"$here/env.sh\"\nexport HW9_ROOT=\"$here/hw9\"\n",
            " --bundle \"$here\"",
        )
    } else {
        ("grades the outputs the upload recorded", "", "")
    };
    format!(
        r#"#!/usr/bin/env bash
# Gradescope autograder for hw9's {notebook}: {how}; grades the upload in
# $GRADESCOPE_ROOT/submission (/autograder/submission on Gradescope) and writes
# $GRADESCOPE_ROOT/results/results.json.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# Gradescope runs a copy of this script as /autograder/run_autograder: the bundle is in source/.
if [ -x "$here/source/bin/hw9-grade" ]; then here="$here/source"; fi
{env}export GRADESCOPE_ROOT="${{GRADESCOPE_ROOT:-/autograder}}"
exec "$here/bin/hw9-grade" gradescope --notebook {notebook} --assets "$here/assets"{bundle}
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
    let mut opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(mode);
    // The time of writing, not zip's default of 1980: cargo decides what to rebuild by comparing
    // mtimes, and a bundle unpacked over an older one must not look older than its build.
    let now = time::OffsetDateTime::now_utc();
    if let Ok(t) = zip::DateTime::from_date_and_time(
        now.year() as u16,
        now.month() as u8,
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
    ) {
        opts = opts.last_modified_time(t);
    }
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

/// Folders of a handout never bundled: builds, environments, the student's own runs.
const HANDOUT_SKIPPED: [&str; 12] = [
    "target",
    ".venv",
    "build",
    ".tools",
    ".cache",
    ".git",
    "submission",
    "notebooks/output",
    "notebooks/submission",
    "runs",
    // What `make setup` installs (the bundle adds the data the measurements need itself).
    "assets/data",
    "assets/models",
];

/// The handout's files (`handout`, `build/handout/hw9`) under `hw9/` in the zip: the crate the
/// harness builds against, its released notebooks (`notebooks/*.ipynb`), the corpus and fonts.
fn add_handout(zip: &mut zip::ZipWriter<std::fs::File>, handout: &Path) -> Result<()> {
    let skipped: Vec<PathBuf> = HANDOUT_SKIPPED.iter().map(|p| handout.join(p)).collect();
    let walk = walkdir::WalkDir::new(handout)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| !skipped.iter().any(|s| e.path() == s));
    for entry in walk {
        let entry = entry.map_err(|e| crate::Error::walk(handout, e))?;
        if entry.file_type().is_dir() {
            continue;
        }
        let inside = entry.path().strip_prefix(handout).unwrap_or(entry.path());
        let bytes = std::fs::read(entry.path()).map_err(|e| crate::Error::io(entry.path(), e))?;
        let executable = {
            use std::os::unix::fs::PermissionsExt;
            entry.metadata().map(|m| m.permissions().mode() & 0o111 != 0).unwrap_or(false)
        };
        add_file(zip, &format!("hw9/{}", inside.display()), &bytes, executable)?;
    }
    Ok(())
}

/// The notebooks whose measurement reads Fashion-MNIST (their plans load its train and test
/// files), which the handout does not ship (`make setup` installs it from Debian).
const NEEDS_FASHION_MNIST: [&str; 2] = ["01_vit_mae", "04_facenet"];

/// Writes one autograder zip per [`ASSIGNMENTS`] entry into `out`: `setup.sh`, `run_autograder`,
/// the `hw9-grade` binary `grader_exe`, the notebook's fixtures and grading spec from `assets`.
///
/// With `handout` (the student handout's crate, `build/handout/hw9`), the bundle **re-runs** each
/// upload's code ([`crate::rerun`]): it carries the handout under `hw9/`, the notebook's hidden
/// cases and measurement code, the course's `grading/gradescope.json` if any, and Fashion-MNIST
/// for the notebooks that measure on it; its `setup.sh` provisions Rust, libtorch and a warm
/// build. Without it the bundle only reads the outputs an upload recorded, and carries the
/// grader's sources from `repo` to build it where the binary cannot run. Returns the zips' paths.
pub fn write_bundles(
    repo: &Path,
    assets: &Path,
    grader_exe: &Path,
    handout: Option<&Path>,
    out: &Path,
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).map_err(|e| crate::Error::io(out, e))?;
    let exe = std::fs::read(grader_exe).map_err(|e| crate::Error::io(grader_exe, e))?;
    if let Some(h) = handout {
        for needed in ["Cargo.toml", "Cargo.lock", "src", "notebooks"] {
            if !h.join(needed).exists() {
                return Err(crate::Error::missing(
                    "the student handout's crate",
                    h.join(needed),
                    "make handout (it writes build/handout/hw9), then pass --handout build/handout/hw9",
                ));
            }
        }
    }
    let workspace = "[workspace]\nmembers = [\"crates/hw9-env\", \"crates/hw9-grade\"]\nresolver = \"2\"\n";
    let read = |rel: &str| std::fs::read(assets.join(rel)).map_err(|e| crate::Error::io(assets.join(rel), e));
    let mut written = Vec::new();
    for a in ASSIGNMENTS {
        let path = out.join(a.bundle);
        let file = std::fs::File::create(&path).map_err(|e| crate::Error::io(&path, e))?;
        let mut zip = zip::ZipWriter::new(file);
        add_file(&mut zip, "bin/hw9-grade", &exe, true)?;
        for rel in [format!("fixtures/{}.safetensors", a.notebook), format!("grading/{}.json", a.notebook)] {
            add_file(&mut zip, &format!("assets/{rel}"), &read(&rel)?, false)?;
        }
        let how = match handout {
            Some(h) => {
                add_file(&mut zip, "setup.sh", setup_sh_rerun(a.notebook).as_bytes(), true)?;
                add_file(&mut zip, "run_autograder", run_autograder(a.notebook, true).as_bytes(), true)?;
                let hidden = format!("hidden/{}.safetensors", a.notebook);
                add_file(&mut zip, &format!("assets/{hidden}"), &read(&hidden)?, false)?;
                let measure = format!("grading/measure/{}.rs", a.notebook);
                if assets.join(&measure).exists() {
                    add_file(&mut zip, &format!("assets/{measure}"), &read(&measure)?, false)?;
                }
                if assets.join("grading/gradescope.json").exists() {
                    add_file(&mut zip, "assets/grading/gradescope.json", &read("grading/gradescope.json")?, false)?;
                }
                add_handout(&mut zip, h)?;
                if NEEDS_FASHION_MNIST.contains(&a.notebook) {
                    let fm = assets.join("data/fashion-mnist");
                    let mut n = 0;
                    for entry in std::fs::read_dir(&fm).map_err(|e| crate::Error::io(&fm, e))?.flatten() {
                        let name = entry.file_name().to_string_lossy().into_owned();
                        if name.ends_with("-ubyte.gz") || name.ends_with("-ubyte") {
                            let bytes = std::fs::read(entry.path()).map_err(|e| crate::Error::io(entry.path(), e))?;
                            add_file(&mut zip, &format!("hw9/assets/data/fashion-mnist/{name}"), &bytes, false)?;
                            n += 1;
                        }
                    }
                    if n < 4 {
                        return Err(crate::Error::missing(
                            "Fashion-MNIST (train and test images and labels)",
                            fm,
                            "make setup (it installs Debian's dataset-fashion-mnist)",
                        ));
                    }
                }
                "It re-runs each upload's TODO cells on hidden cases and measures the submitted models \
                 (setup.sh provisions Rust, libtorch and a warm build, which compiles libtorch's bindings: \
                 several minutes on Gradescope's image builder, not measured there)."
            }
            None => {
                add_file(&mut zip, "setup.sh", SETUP_SH_READING.as_bytes(), true)?;
                add_file(&mut zip, "run_autograder", run_autograder(a.notebook, false).as_bytes(), true)?;
                add_file(&mut zip, "grader/Cargo.toml", workspace.as_bytes(), false)?;
                for src in GRADER_SOURCES {
                    add_tree(&mut zip, repo, Path::new(src), "grader/")?;
                }
                "It grades the outputs each upload recorded: it cannot tell an edited submission from a real \
                 one. `make gradescope` writes bundles that re-run the students' code."
            }
        };
        let readme = format!(
            "Gradescope autograder for \"{}\" (hw9 notebook {}).\nUpload this zip as the assignment's autograder; \
             students upload submission/{}/hw9_submission.zip.\n{how}\n",
            a.title, a.notebook, a.notebook
        );
        add_file(&mut zip, "README.txt", readme.as_bytes(), false)?;
        zip.finish().map_err(|e| crate::Error::Input(format!("writing {}: {e}", path.display())))?;
        written.push(path);
    }
    Ok(written)
}
