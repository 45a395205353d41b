//! What a training run records: each [`Step`]'s loss, each epoch's [`EpochStats`] (training and
//! validation loss and accuracy, time) in a [`History`], and the running sums behind them. The
//! charts of a history are drawn in [`crate::visuals`] (`History::loss_chart`, `History::show`).

use serde::{Deserialize, Serialize};
use tch::Tensor;

/// What one training step gives the core.
#[derive(Debug)]
pub struct Step {
    /// The scalar loss to minimise.
    pub loss: Tensor,
    /// Its weight in the epoch's mean training loss (a classifier: the batch size; 1.0 for a mean
    /// over steps).
    pub weight: f64,
    /// `(correct, counted)` predictions, for a training accuracy; `None` when there is none.
    pub correct: Option<(i64, i64)>,
}

/// What the evaluation after an epoch measured.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Evaluation {
    /// Validation loss.
    pub loss: Option<f64>,
    /// Validation accuracy.
    pub accuracy: Option<f64>,
}

/// One epoch's numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochStats {
    /// 1 for the first epoch.
    pub epoch: i64,
    /// Optimizer steps done when the epoch ended.
    #[serde(default)]
    pub step: usize,
    /// Mean training loss over the epoch (weighted by each step's [`Step::weight`]).
    pub train_loss: f64,
    /// Training accuracy, when the steps count correct predictions.
    #[serde(default)]
    pub train_acc: Option<f64>,
    /// Validation loss, when the evaluation measures one.
    #[serde(default)]
    pub val_loss: Option<f64>,
    /// Validation accuracy, when the evaluation measures one.
    #[serde(default)]
    pub val_acc: Option<f64>,
    /// Wall time of the epoch, evaluation included (a resumed epoch's counts its time before the
    /// interruption too).
    pub seconds: f64,
}

/// What a training run did, step by step and epoch by epoch. Saved with each checkpoint
/// (`history.json`), so a resumed run continues it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// The loss of every optimizer step.
    pub step_losses: Vec<f64>,
    /// One entry per finished epoch.
    pub epochs: Vec<EpochStats>,
}

impl History {
    /// The last epoch's validation accuracy.
    pub fn final_val_acc(&self) -> Option<f64> {
        self.epochs.last().and_then(|e| e.val_acc)
    }

    /// The last epoch's validation loss.
    pub fn final_val_loss(&self) -> Option<f64> {
        self.epochs.last().and_then(|e| e.val_loss)
    }
}

/// Running sums of a span of steps.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Sums {
    pub(super) steps: usize,
    loss: f64,
    weight: f64,
    correct: Option<(i64, i64)>,
}

impl Sums {
    pub(super) fn add(&mut self, loss: f64, step: &Step) {
        self.steps += 1;
        self.loss += loss * step.weight;
        self.weight += step.weight;
        if let Some((c, n)) = step.correct {
            let (c0, n0) = self.correct.unwrap_or((0, 0));
            self.correct = Some((c0 + c, n0 + n));
        }
    }

    pub(super) fn mean_loss(&self) -> f64 {
        self.loss / self.weight.max(f64::MIN_POSITIVE)
    }

    pub(super) fn accuracy(&self) -> Option<f64> {
        self.correct.map(|(c, n)| c as f64 / n.max(1) as f64)
    }

    pub(super) fn acc_text(&self) -> String {
        self.accuracy().map_or(String::new(), |a| format!(" acc {a:.3}"))
    }
}
