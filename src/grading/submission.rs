//! Submission files and grading: `submission_log.json`, `hw9_submission.zip`, `hw9 grade`.
//!
//! A notebook's last cell calls [`write_submission`]. It writes, each atomically (temporary file
//! then rename), into `submission/<notebook>/` beside the notebook:
//! - `submission_log.json`: the check results, the shape and values of every graded output (as
//!   the original homework's `TO_SAVE` records them), named values, the written answers, a
//!   timestamp and the crate version;
//! - `hw9_submission.zip`: the notebook file, the graded outputs as `outputs.safetensors`, the
//!   log, the written answers as `written_answers.md` (when the notebook has questions), the
//!   trained weights of each graded model as `weights/<model>.safetensors` (recorded with
//!   [`Recorder::weights`]: the grader measures the thresholds on them), and `manifest.json` with
//!   every member's SHA-256.
//!
//! `hw9 grade` and `hw9-grade` (the TA's side, the `hw9_grade` crate) read them back.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use tch::Tensor;

use crate::error::{Error, Result};
use crate::grading::check::Recorder;
use crate::io::write_atomic;

pub use hw9_grade::log::{sha256_hex, Manifest, OutputRecord, SubmissionLog};

/// Where [`write_submission`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmissionPaths {
    /// `submission_log.json`.
    pub log: PathBuf,
    /// `hw9_submission.zip`.
    pub zip: PathBuf,
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
pub(crate) fn safetensors_bytes(tensors: &[(String, Tensor)]) -> Result<Vec<u8>> {
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
    let notebook_bytes = std::fs::read(notebook_file).map_err(|_| {
        Error::missing(
            "notebook file to submit",
            notebook_file.to_path_buf(),
            "save the notebook (Ctrl-S) in its folder, then run this cell again",
        )
    })?;
    // The answers' text; their images stay in the notebook, which the zip holds (its links are
    // kept as written: the zip's entry count is bounded, so figures are not added one by one).
    let written: Vec<hw9_grade::written::Answer> =
        match hw9_grade::written::answers_of_notebook(&rec.notebook, &notebook_bytes) {
            Ok(w) => {
                w.into_iter().map(|a| hw9_grade::written::Answer { attachments: Default::default(), ..a }).collect()
            }
            Err(e) => {
                eprintln!("the written answers could not be read from {}: {e}", notebook_file.display());
                Vec::new()
            }
        };
    let written_md = hw9_grade::written::render(&written, None).markdown;
    let timestamp = now_rfc3339();
    let mut outputs = BTreeMap::new();
    for (name, t) in &rec.outputs {
        outputs.insert(name.clone(), record_of(t)?);
    }
    let log = SubmissionLog {
        notebook: rec.notebook.clone(),
        crate_version: env!("CARGO_PKG_VERSION").to_string(),
        timestamp: timestamp.clone(),
        profile: rec.profile.clone(),
        checks: rec.results.clone(),
        outputs,
        not_submitted: rec.missing.clone(),
        values: rec.values.clone(),
        thresholds: rec.thresholds.clone(),
        written: written.clone(),
    };
    let log_bytes = serde_json::to_vec_pretty(&log)?;
    let outputs_bytes = safetensors_bytes(&rec.outputs)?;
    let nb_name = notebook_file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| format!("{}.ipynb", rec.notebook));
    let mut members: Vec<(String, &[u8])> = vec![
        (nb_name, &notebook_bytes),
        ("outputs.safetensors".to_string(), &outputs_bytes),
        ("submission_log.json".to_string(), &log_bytes),
    ];
    if !written.is_empty() {
        members.push(("written_answers.md".to_string(), written_md.as_bytes()));
    }
    let weights: Vec<(String, Vec<u8>)> = rec
        .weights
        .iter()
        .map(|(model, tensors)| Ok((format!("weights/{model}.safetensors"), safetensors_bytes(tensors)?)))
        .collect::<Result<_>>()?;
    for (name, bytes) in &weights {
        members.push((name.clone(), bytes));
    }
    // What the grader reads of an upload at most: a submission it would refuse is not written.
    let limits = hw9_grade::upload::Limits::default();
    let total: u64 = members.iter().map(|(_, b)| b.len() as u64).sum();
    if let Some((name, b)) = members.iter().find(|(n, b)| b.len() as u64 > limits.entry_bytes(n)) {
        return Err(Error::Input(format!(
            "{name} is {} bytes, more than the {} the grader reads of this file",
            b.len(),
            limits.entry_bytes(name)
        )));
    }
    if total > limits.max_total_bytes {
        return Err(Error::Input(format!(
            "the submission's files are {total} bytes in all, more than the {} the grader reads",
            limits.max_total_bytes
        )));
    }
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
    let weight_bytes: usize = weights.iter().map(|(_, b)| b.len()).sum();
    println!(
        "wrote {} and {} ({}; {} graded outputs{})",
        paths.log.display(),
        paths.zip.display(),
        rec.summary(),
        rec.outputs.len(),
        if weights.is_empty() {
            String::new()
        } else {
            format!(
                "; weights of {} ({:.1} MB)",
                rec.weights.keys().cloned().collect::<Vec<_>>().join(", "),
                weight_bytes as f64 / 1e6
            )
        }
    );
    if !written.is_empty() {
        let missing: Vec<&str> = written.iter().filter(|a| !a.answered()).map(|a| a.id.as_str()).collect();
        println!(
            "written answers: {} of {} answered{}",
            written.len() - missing.len(),
            written.len(),
            if missing.is_empty() { String::new() } else { format!(" (unanswered: {})", missing.join(", ")) }
        );
    }
    Ok(paths)
}

/// Writes the submission of notebook `rec.notebook()` from the notebook's folder (the current
/// directory in Jupyter): reads `<notebook>.ipynb`, writes into `submission/<notebook>/`.
pub fn write_submission(rec: &Recorder) -> Result<SubmissionPaths> {
    let nb = PathBuf::from(format!("{}.ipynb", rec.notebook()));
    write_submission_to(rec, &nb, &Path::new("submission").join(rec.notebook()))
}
