//! What a submission holds besides the notebook: `submission_log.json` and `manifest.json`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::compare::CheckResult;

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

/// A threshold item as the notebook recorded it (`Recorder::at_least`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdRecord {
    /// What the number is, as printed.
    pub title: String,
    /// The number reached.
    pub value: f64,
    /// The threshold the notebook checked it against (the grader uses its own).
    pub threshold: f64,
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
    /// Each recorded output's shape, dtype and values (the tensors are also in the zip).
    pub outputs: BTreeMap<String, OutputRecord>,
    /// Checks whose autograder outputs could not be computed, and why.
    pub not_submitted: BTreeMap<String, String>,
    /// Recorded numbers: accuracies, losses, ROUGE.
    pub values: BTreeMap<String, serde_json::Value>,
    /// Graded thresholds (accuracies, losses) with the number reached.
    #[serde(default)]
    pub thresholds: BTreeMap<String, ThresholdRecord>,
    /// The notebook's written questions with the answers as saved (images left out; they are in
    /// the notebook), graded with the written part.
    #[serde(default)]
    pub written: Vec<crate::written::Answer>,
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

/// The SHA-256 of `bytes`, as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}
