//! Submission files and grading: `submission_log.json`, `hw9_submission.zip`, `hw9 grade`.
//!
//! A notebook's last cell calls [`write_submission`]. It writes, each atomically (temporary file
//! then rename), into `submission/<notebook>/` beside the notebook:
//! - `submission_log.json`: the check results, the shape and values of every graded output (as
//!   the original homework's `TO_SAVE` records them), named values, a timestamp and the crate
//!   version;
//! - `hw9_submission.zip`: the notebook file, the graded outputs as `outputs.safetensors`, the
//!   log, and `manifest.json` with every member's SHA-256.
//!
//! `hw9 grade <zip>` (the TA's side) checks the manifest, then recomputes pass/fail of each graded
//! output against the reference fixtures.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::Tensor;

use crate::error::{Error, Result};
use crate::grading::check::{compare, CheckResult, Fixtures, Recorder};
use crate::io::write_atomic;

/// One graded output as the log records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputRecord {
    /// The output tensor's shape.
    pub shape: Vec<i64>,
    /// Its dtype, as libtorch names it.
    pub dtype: String,
    /// The values, flattened in row-major order.
    pub values: Vec<f64>,
}

/// `submission_log.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmissionLog {
    /// The notebook, e.g. `01_vit_mae`.
    pub notebook: String,
    /// The hw9 version that wrote it.
    pub crate_version: String,
    /// UTC, RFC 3339.
    pub timestamp: String,
    /// The compute profile the notebook ran in (`quick`, `cpu`, `full`).
    pub profile: String,
    /// What the notebook's checks printed.
    pub checks: Vec<CheckResult>,
    /// Each recorded output's shape and dtype (the tensors are in the zip).
    pub outputs: BTreeMap<String, OutputRecord>,
    /// Checks whose autograder outputs could not be computed, and why.
    pub not_submitted: BTreeMap<String, String>,
    /// Recorded numbers: accuracies, losses, ROUGE.
    pub values: BTreeMap<String, serde_json::Value>,
}

/// `manifest.json` inside the zip.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The notebook, e.g. `01_vit_mae`.
    pub notebook: String,
    /// The hw9 version that wrote it.
    pub crate_version: String,
    /// When it was written (RFC 3339, UTC).
    pub timestamp: String,
    /// Member name → SHA-256 (hex) of its bytes.
    pub files: BTreeMap<String, String>,
}

/// Where [`write_submission`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmissionPaths {
    /// `submission_log.json`.
    pub log: PathBuf,
    /// `hw9_submission.zip`.
    pub zip: PathBuf,
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn record_of(t: &Tensor) -> Result<OutputRecord> {
    let flat = t.detach().to_device(tch::Device::Cpu).to_kind(tch::Kind::Double).reshape([-1]);
    Ok(OutputRecord { shape: t.size(), dtype: format!("{:?}", t.kind()), values: Vec::<f64>::try_from(&flat)? })
}

fn temp_file() -> Result<tempfile::TempPath> {
    let file = tempfile::Builder::new().prefix("hw9-").suffix(".safetensors").tempfile();
    Ok(file.map_err(|e| Error::io(std::env::temp_dir(), e))?.into_temp_path())
}

/// Serialises tensors to safetensors bytes (through a temporary file: tch writes to paths).
fn safetensors_bytes(tensors: &[(String, Tensor)]) -> Result<Vec<u8>> {
    let tmp = temp_file()?;
    let named: Vec<(&str, Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t.contiguous())).collect();
    Tensor::write_safetensors(&named, &tmp)?;
    std::fs::read(&tmp).map_err(|e| Error::io(&*tmp, e))
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// Writes `submission_log.json` and `hw9_submission.zip` for `rec` into `dir`
/// (normally `submission/<notebook>/` beside the notebook). `notebook_file` is the saved notebook
/// to include. Prints what it wrote.
pub fn write_submission_to(rec: &Recorder, notebook_file: &Path, dir: &Path) -> Result<SubmissionPaths> {
    let notebook_bytes = std::fs::read(notebook_file).map_err(|_| Error::Missing {
        what: "notebook file to submit".into(),
        path: notebook_file.to_path_buf(),
        fix: "save the notebook (Ctrl-S) in its folder, then run this cell again".into(),
    })?;
    let timestamp = now_rfc3339();
    let mut outputs = BTreeMap::new();
    for (name, t) in &rec.outputs {
        outputs.insert(name.clone(), record_of(t)?);
    }
    let log = SubmissionLog {
        notebook: rec.notebook.clone(),
        crate_version: env!("CARGO_PKG_VERSION").to_string(),
        timestamp: timestamp.clone(),
        profile: crate::profile::Profile::from_env().map(|p| p.to_string()).unwrap_or_else(|e| e.to_string()),
        checks: rec.results.clone(),
        outputs,
        not_submitted: rec.missing.clone(),
        values: rec.values.clone(),
    };
    let log_bytes = serde_json::to_vec_pretty(&log)?;
    let outputs_bytes = safetensors_bytes(&rec.outputs)?;
    let nb_name = notebook_file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| format!("{}.ipynb", rec.notebook));
    let members: Vec<(String, &[u8])> = vec![
        (nb_name, &notebook_bytes),
        ("outputs.safetensors".to_string(), &outputs_bytes),
        ("submission_log.json".to_string(), &log_bytes),
    ];
    let manifest = Manifest {
        notebook: rec.notebook.clone(),
        crate_version: log.crate_version.clone(),
        timestamp,
        files: members.iter().map(|(n, b)| (n.clone(), sha256_hex(b))).collect(),
    };
    let mut zip_bytes = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut zip_bytes);
        let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        let zerr = |e: zip::result::ZipError| Error::Input(format!("could not write the zip: {e}"));
        let manifest_bytes = serde_json::to_vec_pretty(&manifest)?;
        for (name, bytes) in
            members.iter().map(|(n, b)| (n.as_str(), *b)).chain([("manifest.json", manifest_bytes.as_slice())])
        {
            zip.start_file(name, opts).map_err(zerr)?;
            zip.write_all(bytes).map_err(|e| Error::io(name, e))?;
        }
        zip.finish().map_err(zerr)?;
    }
    let paths = SubmissionPaths { log: dir.join("submission_log.json"), zip: dir.join("hw9_submission.zip") };
    write_atomic(&paths.log, &log_bytes)?;
    write_atomic(&paths.zip, zip_bytes.get_ref())?;
    println!(
        "wrote {} and {} ({}; {} graded outputs)",
        paths.log.display(),
        paths.zip.display(),
        rec.summary(),
        rec.outputs.len()
    );
    Ok(paths)
}

/// Writes the submission of notebook `rec.notebook()` from the notebook's folder (the current
/// directory in Jupyter): reads `<notebook>.ipynb`, writes into `submission/<notebook>/`.
pub fn write_submission(rec: &Recorder) -> Result<SubmissionPaths> {
    let nb = PathBuf::from(format!("{}.ipynb", rec.notebook()));
    write_submission_to(rec, &nb, &Path::new("submission").join(rec.notebook()))
}

/// The TA's report on one submission.
#[derive(Debug, Clone, PartialEq)]
pub struct GradeReport {
    /// The notebook the submission is from.
    pub notebook: String,
    /// One result per graded check, recomputed from the submitted outputs.
    pub results: Vec<CheckResult>,
}

impl GradeReport {
    /// `(passed, total)`.
    pub fn score(&self) -> (usize, usize) {
        (self.results.iter().filter(|r| r.passed).count(), self.results.len())
    }
}

fn rejected(zip: &Path, why: impl std::fmt::Display) -> Error {
    Error::Corrupt { what: "submission".into(), path: zip.to_path_buf(), detail: format!("rejected: {why}") }
}

/// Grades `hw9_submission.zip` against `fixtures` (or the notebook's own fixture file when
/// `None`): verifies the manifest, then recomputes each graded output's pass/fail.
pub fn grade(zip_path: &Path, fixtures: Option<&Fixtures>) -> Result<GradeReport> {
    let file = std::fs::File::open(zip_path).map_err(|e| Error::io(zip_path, e))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| rejected(zip_path, format!("not a zip archive ({e})")))?;
    let mut members = BTreeMap::new();
    for i in 0..archive.len() {
        let mut f = archive.by_index(i).map_err(|e| rejected(zip_path, format!("member {i} cannot be read ({e})")))?;
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).map_err(|e| rejected(zip_path, format!("{} cannot be read ({e})", f.name())))?;
        members.insert(f.name().to_string(), bytes);
    }
    let member = |name: &str| members.get(name).ok_or_else(|| rejected(zip_path, format!("it has no {name}")));
    let manifest: Manifest = serde_json::from_slice(member("manifest.json")?)
        .map_err(|e| rejected(zip_path, format!("manifest.json is malformed ({e})")))?;
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
    let tmp = temp_file()?;
    std::fs::write(&tmp, member("outputs.safetensors")?).map_err(|e| Error::io(&*tmp, e))?;
    let outputs = Tensor::read_safetensors(&tmp)
        .map_err(|e| rejected(zip_path, format!("outputs.safetensors is unreadable ({e})")))?;
    let outputs: BTreeMap<String, Tensor> = outputs.into_iter().collect();
    let own;
    let fixtures = match fixtures {
        Some(f) => f,
        None => match Fixtures::load(&manifest.notebook) {
            Ok(f) => {
                own = f;
                &own
            }
            // A notebook without graded code (written answers only) has no fixtures.
            Err(Error::Missing { .. }) if outputs.is_empty() => {
                return Ok(GradeReport { notebook: manifest.notebook, results: Vec::new() })
            }
            Err(e) => return Err(e),
        },
    };
    let mut results = Vec::new();
    for check in fixtures.checks() {
        let case = fixtures.case(&check, "autograder")?;
        let expected = case.expected();
        if expected.is_empty() {
            return Err(Error::Input(format!("the fixtures have no expected output for {check}/autograder")));
        }
        let got: Vec<Option<&Tensor>> = if expected.len() == 1 {
            vec![outputs.get(&check)]
        } else {
            (0..expected.len()).map(|i| outputs.get(&format!("{check}.{i}"))).collect()
        };
        let result = if got.iter().any(Option::is_none) {
            CheckResult {
                name: check.clone(),
                passed: false,
                rel_error: None,
                tolerance: case.tolerance(),
                message: "not submitted".into(),
            }
        } else {
            let each: Vec<CheckResult> =
                got.iter().flatten().zip(&expected).map(|(g, e)| compare(&check, g, e, case.tolerance())).collect();
            // The first failing output, or (all passed) the one with the largest error.
            match each.iter().find(|r| !r.passed) {
                Some(bad) => bad.clone(),
                None => each
                    .iter()
                    .max_by(|a, b| a.rel_error.partial_cmp(&b.rel_error).unwrap_or(std::cmp::Ordering::Equal))
                    .cloned()
                    .unwrap_or_else(|| each[0].clone()),
            }
        };
        results.push(result);
    }
    Ok(GradeReport { notebook: manifest.notebook, results })
}
