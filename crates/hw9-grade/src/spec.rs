//! What a notebook grades and for how many points.
//!
//! The one place this is written is the solution source: the notebook metadata `hw9.grading`
//! of `notebooks/solutions/<notebook>.ipynb`, for example
//!
//! ```json
//! "hw9": {"grading": {
//!   "checks": {"unpatchify": 2, "vit": 3},
//!   "thresholds": {"vit_test_acc": {"points": 5, "at_least": 0.85, "title": "ViT test accuracy"},
//!                  "val_loss": {"points": 2, "at_most": 5.1, "title": "validation loss"}}
//! }}
//! ```
//!
//! `hw9 release` copies it to `assets/grading/<notebook>.json`, which the grader reads (never the
//! copy inside a submitted notebook, which a student could edit).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Error, Result};

/// One threshold item: a recorded number that must reach `at_least` (an accuracy) or stay at
/// `at_most` (a loss); exactly one of the two is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdSpec {
    /// Points when the value meets the threshold in a grading profile.
    pub points: f64,
    /// The value must be at least this (the grader's threshold, not the submitted one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_least: Option<f64>,
    /// The value must be at most this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_most: Option<f64>,
    /// What the number is, for reports.
    #[serde(default)]
    pub title: String,
}

impl ThresholdSpec {
    /// Whether `value` meets the threshold (a NaN never does).
    pub fn passes(&self, value: f64) -> bool {
        match (self.at_least, self.at_most) {
            (Some(lo), None) => value >= lo,
            (None, Some(hi)) => value <= hi,
            _ => false,
        }
    }

    /// `value` against the threshold, as reports print it: `0.8812 >= 0.85`, `5.31 > 5.1`.
    pub fn describe(&self, value: f64) -> String {
        let ok = self.passes(value);
        match (self.at_least, self.at_most) {
            (Some(lo), None) => format!("{value:.4} {} {lo}", if ok { ">=" } else { "<" }),
            (None, Some(hi)) => format!("{value:.4} {} {hi}", if ok { "<=" } else { ">" }),
            _ => "the grading spec sets neither at_least nor at_most".into(),
        }
    }
}

/// A notebook's graded items and their points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GradingSpec {
    /// Fixture checks (the names given to `Recorder::check`) → points.
    #[serde(default)]
    pub checks: BTreeMap<String, f64>,
    /// Threshold items (the names given to `Recorder::at_least`).
    #[serde(default)]
    pub thresholds: BTreeMap<String, ThresholdSpec>,
    /// The profiles whose threshold results count; a run in another (`quick`) is reported as not
    /// graded.
    #[serde(default = "graded_profiles")]
    pub graded_profiles: Vec<String>,
}

fn graded_profiles() -> Vec<String> {
    vec!["cpu".into(), "full".into()]
}

impl Default for GradingSpec {
    fn default() -> Self {
        GradingSpec { checks: BTreeMap::new(), thresholds: BTreeMap::new(), graded_profiles: graded_profiles() }
    }
}

impl GradingSpec {
    /// Where the released spec of `notebook` lives under an assets folder:
    /// `<assets>/grading/<notebook>.json`.
    pub fn path_of(assets: &Path, notebook: &str) -> PathBuf {
        assets.join("grading").join(format!("{notebook}.json"))
    }

    /// The released spec of `notebook` under `assets` (the repository's `assets/`, or a grader
    /// bundle's).
    pub fn load(assets: &Path, notebook: &str) -> Result<Self> {
        let path = Self::path_of(assets, notebook);
        let text = std::fs::read_to_string(&path).map_err(|_| {
            Error::missing(
                format!("grading spec of {notebook}"),
                path.clone(),
                "make release (writes it from the solution notebook's hw9.grading metadata)",
            )
        })?;
        serde_json::from_str(&text).map_err(|e| Error::corrupt("grading spec", path, e.to_string()))
    }

    /// The spec in a solution notebook's metadata (`hw9.grading`), if it has one.
    pub fn from_notebook(notebook: &Value, name: &str) -> Result<Option<Self>> {
        let Some(spec) = notebook.pointer("/metadata/hw9/grading") else { return Ok(None) };
        let spec: GradingSpec = serde_json::from_value(spec.clone())
            .map_err(|e| Error::Input(format!("{name}: metadata hw9.grading is not a grading spec: {e}")))?;
        if let Some((item, p)) = spec.checks.iter().find(|(_, p)| !(p.is_finite() && **p >= 0.0)) {
            return Err(Error::Input(format!("{name}: check {item:?} has {p} points, expected a number >= 0")));
        }
        if let Some((item, _)) = spec.thresholds.iter().find(|(_, t)| t.at_least.is_some() == t.at_most.is_some()) {
            return Err(Error::Input(format!(
                "{name}: threshold {item:?} must set exactly one of at_least and at_most"
            )));
        }
        Ok(Some(spec))
    }

    /// The points of everything graded.
    pub fn max_points(&self) -> f64 {
        // Starting from +0.0: an empty float sum is -0.0.
        self.checks.values().chain(self.thresholds.values().map(|t| &t.points)).fold(0.0, |a, b| a + b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_spec_reads_from_notebook_metadata_and_bad_points_are_named() {
        let nb = json!({"metadata": {"hw9": {"grading": {"checks": {"a": 2, "b": 1.5},
            "thresholds": {"acc": {"points": 3, "at_least": 0.8}}}}}});
        let spec = GradingSpec::from_notebook(&nb, "x").unwrap().unwrap();
        assert_eq!(spec.max_points(), 6.5);
        assert_eq!(spec.graded_profiles, ["cpu", "full"]);
        assert_eq!(GradingSpec::from_notebook(&json!({"metadata": {}}), "x").unwrap(), None);
        let bad = json!({"metadata": {"hw9": {"grading": {"checks": {"a": -1}}}}});
        let err = GradingSpec::from_notebook(&bad, "x").unwrap_err().to_string();
        assert!(err.contains("\"a\" has -1 points"), "{err}");
        let both = json!({"metadata": {"hw9": {"grading": {"thresholds": {"loss": {"points": 1, "at_least": 0, "at_most": 5}}}}}});
        let err = GradingSpec::from_notebook(&both, "x").unwrap_err().to_string();
        assert!(err.contains("\"loss\" must set exactly one of at_least and at_most"), "{err}");
    }

    #[test]
    fn a_loss_passes_at_most_and_an_accuracy_at_least_and_nan_never() {
        let loss = ThresholdSpec { points: 1.0, at_least: None, at_most: Some(5.1), title: String::new() };
        assert!(loss.passes(4.84) && !loss.passes(5.3) && !loss.passes(f64::NAN));
        assert_eq!(loss.describe(5.3), "5.3000 > 5.1");
        let acc = ThresholdSpec { points: 1.0, at_least: Some(0.85), at_most: None, title: String::new() };
        assert!(acc.passes(0.9) && !acc.passes(f64::NAN));
        assert_eq!(acc.describe(0.9), "0.9000 >= 0.85");
    }
}
