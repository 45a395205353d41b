//! Grading one submission: its manifest verified, each fixture check recomputed from the
//! submitted autograder outputs against the reference fixtures, each threshold item compared with
//! the grader's own threshold, and every item given its points from the notebook's
//! [`GradingSpec`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::compare::{compare_all, CheckResult, Values};
use crate::fixtures::{parse_safetensors, Fixtures};
use crate::log::{sha256_hex, Manifest, SubmissionLog};
use crate::spec::GradingSpec;
use crate::upload::{read_upload, rejected, Limits};
use crate::{Error, FileError, Result};

/// Where the grader's files are: `<dir>/fixtures/<notebook>.safetensors` (with the autograder
/// cases' expected outputs) and `<dir>/grading/<notebook>.json` (the points).
#[derive(Debug, Clone, PartialEq)]
pub struct Assets {
    /// The folder holding `fixtures/` and `grading/`.
    pub dir: PathBuf,
    /// A fixture file to use instead of the notebook's own (its checks get a point each).
    pub fixtures_file: Option<PathBuf>,
    /// What is read of an upload at most.
    pub limits: Limits,
    /// Grade the checks by re-running the submission's TODO cells ([`crate::rerun`]) instead of
    /// reading the outputs it carries.
    pub rerun: Option<crate::rerun::RerunConfig>,
}

impl Default for Assets {
    /// The repository's `assets/` (or `$HW9_ROOT/assets`).
    fn default() -> Self {
        Assets { dir: hw9_env::paths::assets(), fixtures_file: None, limits: Limits::default(), rerun: None }
    }
}

impl Assets {
    /// The grader files under `dir` (a grader bundle's root).
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Assets { dir: dir.into(), ..Assets::default() }
    }
}

/// How one graded item came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Full points.
    Passed,
    /// No points: the output or the number was wrong.
    Failed,
    /// No points: the item was not in the submission.
    NotSubmitted,
    /// No points, and not held against the student's code: the notebook ran in a profile that
    /// does not grade thresholds (`quick`).
    NotGraded,
}

/// One graded item of a submission.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GradeItem {
    /// The check's or threshold's name.
    pub name: String,
    /// `check` (recomputed against the fixtures) or `threshold` (a recorded number).
    pub kind: String,
    /// Points given.
    pub points: f64,
    /// Points possible.
    pub max_points: f64,
    /// How it came out.
    pub status: Status,
    /// Why, in one line.
    pub message: String,
}

impl std::fmt::Display for GradeItem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mark = match self.status {
            Status::Passed => "✓ PASS",
            Status::Failed => "✗ FAIL",
            Status::NotSubmitted => "✗ MISSING",
            Status::NotGraded => "– NOT GRADED",
        };
        write!(f, "{mark} {}: {} [{}/{}]", self.name, self.message, self.points, self.max_points)
    }
}

/// The TA's report on one submission.
#[derive(Debug, Clone, PartialEq)]
pub struct GradeReport {
    /// The notebook the submission is from.
    pub notebook: String,
    /// The compute profile it ran in.
    pub profile: String,
    /// One result per fixture check, recomputed from the submitted outputs.
    pub results: Vec<CheckResult>,
    /// Every graded item with its points: the fixture checks, then the thresholds.
    pub items: Vec<GradeItem>,
    /// What the grader noticed beside the items (a re-run: TODO cells not found or not compiling,
    /// the time it took).
    pub notes: Vec<String>,
}

impl GradeReport {
    /// Fixture checks `(passed, total)`.
    pub fn score(&self) -> (usize, usize) {
        (self.results.iter().filter(|r| r.passed).count(), self.results.len())
    }

    /// `(points, max_points)` over every item.
    pub fn points(&self) -> (f64, f64) {
        let sum = |f: fn(&GradeItem) -> f64| self.items.iter().map(f).fold(0.0, |a, b| a + b);
        (sum(|i| i.points), sum(|i| i.max_points))
    }
}

/// Grades the upload `hw9_submission.zip` with the grader's files in `assets`: the notebook's
/// fixtures (or `assets.fixtures_file`) and the points of its [`GradingSpec`] (a point per check
/// when it has none, as for fixtures given by hand).
pub fn grade(zip_path: &Path, assets: &Assets) -> Result<GradeReport> {
    let members = read_upload(zip_path, &assets.limits)?;
    let member = |name: &str| members.get(name).ok_or_else(|| rejected(zip_path, format!("it has no {name}")));
    let manifest: Manifest = serde_json::from_slice(member("manifest.json")?)
        .map_err(|e| rejected(zip_path, format!("manifest.json is malformed ({e})")))?;
    check_notebook_name(zip_path, &manifest.notebook)?;
    for (name, want) in &manifest.files {
        if &sha256_hex(member(name)?) != want {
            return Err(rejected(
                zip_path,
                format!("{name} does not match the manifest's SHA-256 (modified after submission, or corrupt)"),
            ));
        }
    }
    if let Some(extra) = members.keys().find(|n| *n != "manifest.json" && !manifest.files.contains_key(*n)) {
        return Err(rejected(zip_path, format!("{extra} is not listed in the manifest")));
    }
    let log: SubmissionLog = serde_json::from_slice(member("submission_log.json")?)
        .map_err(|e| rejected(zip_path, format!("submission_log.json is malformed ({e})")))?;
    if log.notebook != manifest.notebook {
        return Err(rejected(
            zip_path,
            format!("the log is of {} but the manifest of {}", log.notebook, manifest.notebook),
        ));
    }
    let outputs = parse_safetensors(member("outputs.safetensors")?, "outputs.safetensors")
        .map_err(|e| rejected(zip_path, format!("outputs.safetensors is unreadable ({e})")))?;
    let Some(cfg) = &assets.rerun else {
        return grade_parts(zip_path, &log, &outputs, assets, None);
    };
    // Re-running: the notebook is what counts, not the outputs the student's machine wrote.
    if !cfg.hidden_dir.join(format!("{}.safetensors", manifest.notebook)).is_file() {
        return Err(rejected(
            zip_path,
            format!("it is a submission of {}, which is not graded here", manifest.notebook),
        ));
    }
    let nb_name = format!("{}.ipynb", manifest.notebook);
    let notebook: serde_json::Value = serde_json::from_slice(member(&nb_name)?)
        .map_err(|e| rejected(zip_path, format!("{nb_name} is not a notebook ({e})")))?;
    // The trained models are measured when their thresholds count (a graded profile).
    let graded_profile = GradingSpec::load(&assets.dir, &manifest.notebook)
        .map(|s| s.graded_profiles.contains(&log.profile))
        .unwrap_or(false);
    let mut members = members;
    let submitted = graded_profile.then(|| crate::rerun::Submitted {
        profile: log.profile.clone(),
        // Moved, not copied: a `full` profile's weights are a few hundred MB.
        weights: std::mem::take(&mut members)
            .into_iter()
            .filter_map(|(n, b)| {
                let model = n.strip_prefix("weights/")?.strip_suffix(".safetensors")?.to_string();
                Some((model, b))
            })
            .collect(),
    });
    let report = crate::rerun::rerun_submission(&manifest.notebook, &notebook, submitted.as_ref(), cfg)?;
    let mut notes = report.notes.clone();
    notes.push(format!(
        "graded by re-running your TODO cells on inputs you have not seen (built in {:.1} s, ran in {:.1} s, \
         at most {:.0} MiB resident); the outputs your machine computed are not graded",
        report.build_seconds,
        report.run_seconds,
        report.peak_rss_bytes as f64 / (1u64 << 20) as f64
    ));
    if submitted.is_some() {
        notes.push(format!(
            "the thresholds are graded on what the grader measured: your submitted weights in your notebook's own \
             model code, on held-out data ({:.1} s besides the run); the figures your notebook recorded are shown \
             beside them and not scored",
            report.measure_seconds
        ));
    }
    let measured = Measured { figures: report.measured.clone(), error: report.measure_error.clone() };
    let mut graded = grade_parts(zip_path, &log, &outputs, assets, Some((report.results, measured)))?;
    graded.notes = notes;
    Ok(graded)
}

/// What the grader measured of a submission's models (by threshold name), and why nothing could
/// be measured, if so.
#[derive(Debug, Clone, Default, PartialEq)]
struct Measured {
    figures: BTreeMap<String, std::result::Result<f64, String>>,
    error: Option<String>,
}

/// How far a measured figure may be from the one the notebook recorded before it is flagged: the
/// same weights on the same held-out data differ only by the order of floating-point sums (and,
/// for k-means purity, by its random restarts), well under this.
pub const RECORDED_NOISE: f64 = 0.03;

/// Grades a lone `submission_log.json` (what the original homework's Summarization assignment
/// asked students to upload): the outputs come from the values it records. It has no manifest,
/// so nothing proves it unchanged; a zip is preferred.
pub fn grade_log(path: &Path, assets: &Assets) -> Result<GradeReport> {
    if assets.rerun.is_some() {
        return Err(rejected(
            path,
            "a submission_log.json alone holds no code to re-run: upload hw9_submission.zip, which the \
             notebook's last cell writes"
                .to_string(),
        ));
    }
    let len = std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
    if len > assets.limits.max_entry_bytes {
        return Err(rejected(
            path,
            format!("the log is {len} bytes, more than the {} allowed", assets.limits.max_entry_bytes),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let log: SubmissionLog =
        serde_json::from_slice(&bytes).map_err(|e| rejected(path, format!("not a submission_log.json ({e})")))?;
    check_notebook_name(path, &log.notebook)?;
    let mut outputs = BTreeMap::new();
    for (name, r) in &log.outputs {
        let n: i64 = r.shape.iter().product();
        if r.shape.iter().any(|&d| d < 0) || n as usize != r.values.len() {
            return Err(rejected(
                path,
                format!("output {name}: shape {:?} does not hold {} values", r.shape, r.values.len()),
            ));
        }
        outputs.insert(name.clone(), Values { shape: r.shape.clone(), dtype: r.dtype.clone(), data: r.values.clone() });
    }
    grade_parts(path, &log, &outputs, assets, None)
}

fn check_notebook_name(path: &Path, notebook: &str) -> Result<()> {
    let plain = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if notebook.is_empty() || !notebook.chars().all(plain) {
        return Err(rejected(path, format!("the notebook name {notebook:?} is not a notebook's")));
    }
    Ok(())
}

/// Grades what was read from an upload: its log and its outputs.
fn grade_parts(
    zip_path: &Path,
    log: &SubmissionLog,
    outputs: &BTreeMap<String, Values>,
    assets: &Assets,
    rerun: Option<(Vec<CheckResult>, Measured)>,
) -> Result<GradeReport> {
    let notebook = &log.notebook;
    let loaded = match &assets.fixtures_file {
        Some(file) => Fixtures::from_file(file).map(Some)?,
        None => match Fixtures::load(&assets.dir, notebook) {
            Ok(f) => Some(f),
            // A notebook without graded code (written answers only) has no fixtures.
            Err(Error::File(FileError::Missing { .. })) if outputs.is_empty() => None,
            Err(Error::File(FileError::Missing { .. })) => {
                return Err(rejected(zip_path, format!("no notebook {notebook:?} is graded here")))
            }
            Err(e) => return Err(e),
        },
    };
    let fixtures = loaded.as_ref();
    let own_spec = if assets.fixtures_file.is_none() { GradingSpec::load(&assets.dir, notebook).ok() } else { None };
    let spec = own_spec.unwrap_or_else(|| GradingSpec {
        checks: fixtures.map(|f| f.checks().into_iter().map(|c| (c, 1.0)).collect()).unwrap_or_default(),
        ..GradingSpec::default()
    });
    let (rerun, measured) = match rerun {
        Some((results, measured)) => (Some(results), Some(measured)),
        None => (None, None),
    };
    let results = match (rerun, fixtures) {
        (Some(results), _) => results,
        (None, Some(f)) => f.checks().iter().map(|check| grade_check(f, check, outputs)).collect::<Result<Vec<_>>>()?,
        (None, None) => Vec::new(),
    };
    let mut items: Vec<GradeItem> = results
        .iter()
        .map(|r| {
            let max_points = spec.checks.get(&r.name).copied().unwrap_or(1.0);
            let status = match (r.passed, r.message.as_str()) {
                (true, _) => Status::Passed,
                (false, "not submitted") => Status::NotSubmitted,
                (false, _) => Status::Failed,
            };
            let points = if r.passed { max_points } else { 0.0 };
            GradeItem {
                name: r.name.clone(),
                kind: "check".into(),
                points,
                max_points,
                status,
                message: r.message.clone(),
            }
        })
        .collect();
    let graded_profile = spec.graded_profiles.contains(&log.profile);
    for (name, t) in &spec.thresholds {
        let item = |status, points, message: String| GradeItem {
            name: name.clone(),
            kind: "threshold".into(),
            points,
            max_points: t.points,
            status,
            message,
        };
        let recorded = log.thresholds.get(name).map(|r| r.value);
        items.push(match (&measured, recorded) {
            (_, _) if !graded_profile => match recorded {
                None => item(Status::NotSubmitted, 0.0, "not recorded (the cell that records it did not run)".into()),
                Some(v) => item(
                    Status::NotGraded,
                    0.0,
                    format!(
                        "{v:.4} in the {} profile, which is not graded (run it in {})",
                        log.profile,
                        spec.graded_profiles.join(" or ")
                    ),
                ),
            },
            // Re-running: the grader's own measurement decides; the recorded figure is shown.
            (Some(m), _) => {
                let said = match recorded {
                    Some(r) => format!("your notebook recorded {r:.4}"),
                    None => "your notebook recorded none".to_string(),
                };
                match m.figures.get(name) {
                    Some(Ok(v)) => {
                        let flag = match recorded {
                            Some(r) if (r - v).abs() > RECORDED_NOISE => format!(
                                "; FLAGGED: the recorded figure differs from the measured one by {:.4}, more than \
                                 the {RECORDED_NOISE} two runs of the same weights differ by",
                                (r - v).abs()
                            ),
                            _ => String::new(),
                        };
                        let status = if t.passes(*v) { Status::Passed } else { Status::Failed };
                        let points = if t.passes(*v) { t.points } else { 0.0 };
                        item(status, points, format!("measured by the grader: {} ({said}){flag}", t.describe(*v)))
                    }
                    Some(Err(why)) => item(Status::Failed, 0.0, format!("could not be measured: {why} ({said})")),
                    None => {
                        let why = m.error.clone().unwrap_or_else(|| {
                            "the submission has no weights for it: run the cell that trains the model and \
                             records its weights (rec.weights), then the notebook's last cell"
                                .into()
                        });
                        item(Status::Failed, 0.0, format!("not measured: {why} ({said})"))
                    }
                }
            }
            (None, None) => {
                item(Status::NotSubmitted, 0.0, "not recorded (the cell that records it did not run)".into())
            }
            (None, Some(v)) if t.passes(v) => item(Status::Passed, t.points, t.describe(v)),
            (None, Some(v)) => item(Status::Failed, 0.0, t.describe(v)),
        });
    }
    Ok(GradeReport { notebook: notebook.clone(), profile: log.profile.clone(), results, items, notes: Vec::new() })
}

/// One fixture check recomputed from the submitted autograder outputs.
fn grade_check(fixtures: &Fixtures, check: &str, outputs: &BTreeMap<String, Values>) -> Result<CheckResult> {
    let tolerance = fixtures.tolerance(check)?;
    let expected = fixtures.expected(check, "autograder");
    if expected.is_empty() {
        return Err(Error::Input(format!("the fixtures have no expected output for {check}/autograder")));
    }
    let got: Vec<Option<&Values>> = if expected.len() == 1 {
        vec![outputs.get(check)]
    } else {
        (0..expected.len()).map(|i| outputs.get(&format!("{check}.{i}"))).collect()
    };
    if got.iter().any(Option::is_none) {
        return Ok(CheckResult::failed(check, Some(tolerance), "not submitted".into()));
    }
    let got: Vec<&Values> = got.into_iter().flatten().collect();
    Ok(compare_all(check, &got, &expected, tolerance))
}
