//! What a training run is asked to do: [`TrainConfig`] (epochs, batches, the optimizer) and
//! [`ResumeConfig`] (where and how often its state is saved, [`Every`]).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::OptimConfig;

/// How a model trains: epochs of batches and the optimizer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Passes over the training set.
    pub epochs: i64,
    /// Examples per batch.
    pub batch_size: i64,
    /// AdamW, its schedule and clipping.
    pub optim: OptimConfig,
    /// Random crops (padding 2) and horizontal flips on training images (image classifiers only).
    #[serde(default)]
    pub augment: bool,
    /// Label smoothing ε of the training loss (the summarizer only; 0 = plain cross-entropy): the
    /// target gets `1 - ε` plus its share of `ε` spread over the vocabulary, as in "Attention Is
    /// All You Need" (ε = 0.1). Validation losses stay plain cross-entropy.
    #[serde(default)]
    pub label_smoothing: f64,
    /// Saves the run's state as it trains (weights, AdamW's moments, the position in the epoch)
    /// so that running it again after an interrupted or crashed kernel continues where it
    /// stopped ([`super::Fit::resumable_in`]); `None`: nothing saved mid-run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<ResumeConfig>,
}

/// Where and how often a trainer saves the state it resumes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResumeConfig {
    /// Each run keeps its state in `<dir>/<title>-<key>`, the key a hash of the run's config
    /// and its variables' names and shapes: another config or model never meets this state.
    pub dir: PathBuf,
    /// How often the state is saved.
    pub every: Every,
    /// The seed of each epoch's data order and each step's randomness.
    pub seed: u64,
}

impl ResumeConfig {
    /// State in `dir`, saved every minute of training (every 4 steps in the `quick` profile, whose
    /// runs last seconds), seed 0.
    pub fn every_minute(dir: impl Into<PathBuf>, profile: crate::profile::Profile) -> Self {
        ResumeConfig {
            dir: dir.into(),
            every: profile.pick(Every::Steps(4), Every::Seconds(60.0), Every::Seconds(60.0)),
            seed: 0,
        }
    }
}

impl TrainConfig {
    /// `epochs` of `batch_size` with AdamW at `lr`, the original homework's betas (0.9, 0.95) and
    /// `weight_decay`, constant rate.
    pub fn adamw(epochs: i64, batch_size: i64, lr: f64, weight_decay: f64) -> Self {
        TrainConfig {
            epochs,
            batch_size,
            optim: OptimConfig::adamw(lr, (0.9, 0.95), weight_decay),
            augment: false,
            label_smoothing: 0.0,
            resume: None,
        }
    }
}

/// How often a resumable run saves its state.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Every {
    /// After this many optimizer steps.
    Steps(usize),
    /// When this many seconds of training have passed since the last save.
    Seconds(f64),
}
