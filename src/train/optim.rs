//! The optimizer and its learning-rate schedule, from one config: AdamW (decoupled weight decay,
//! as PyTorch's `torch.optim.AdamW`), warmup and decay, gradient clipping.

use serde::{Deserialize, Serialize};

use crate::error::Result;

/// A learning-rate schedule over a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub enum Schedule {
    /// The same rate throughout (the original homework's notebook 1).
    #[default]
    Constant,
    /// Linear warmup over the first `warmup` fraction of the run, then cosine decay to 0.
    WarmupCosine {
        /// The fraction of the run spent warming up.
        warmup: f64,
    },
    /// Linear warmup over the first `warmup` fraction of the run, then linear decay to 0 (the
    /// Hugging Face trainer's default).
    WarmupLinear {
        /// The fraction of the run spent warming up.
        warmup: f64,
    },
}

/// A decay from 1 (at `t = 0`) to 0 (at `t = 1`).
type Decay = fn(f64) -> f64;

impl Schedule {
    /// The factor on the base rate at optimizer step `step` of `total`: warmup rises as
    /// `(step + 1) / warmup_steps`, then the decay runs over the remaining steps.
    pub fn factor(self, step: usize, total: usize) -> f64 {
        let Some((warmup, decay)) = self.parts() else { return 1.0 };
        let warm = (warmup * total as f64).max(1.0);
        let s = step as f64;
        if s < warm {
            (s + 1.0) / warm
        } else {
            decay(((s - warm) / (total as f64 - warm).max(1.0)).min(1.0)).max(0.0)
        }
    }

    /// The factor at `progress` (0 = start, 1 = end) of a run whose length is a time budget, not a
    /// step count.
    pub fn factor_at(self, progress: f64) -> f64 {
        let Some((warmup, decay)) = self.parts() else { return 1.0 };
        if progress < warmup {
            progress / warmup
        } else {
            decay(((progress - warmup) / (1.0 - warmup).max(1e-12)).min(1.0)).max(0.0)
        }
    }

    /// The warmup fraction and the decay from 1 to 0 over `t` in `[0, 1]`; `None` when constant.
    fn parts(self) -> Option<(f64, Decay)> {
        match self {
            Schedule::Constant => None,
            Schedule::WarmupCosine { warmup } => Some((warmup, |t| 0.5 * (1.0 + (std::f64::consts::PI * t).cos()))),
            Schedule::WarmupLinear { warmup } => Some((warmup, |t| 1.0 - t)),
        }
    }
}

/// AdamW's settings, its schedule and gradient clipping: how every training run in the crate
/// optimises.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimConfig {
    /// The base (peak) learning rate.
    pub lr: f64,
    /// AdamW's `(beta1, beta2)`: the moment estimates' decay rates.
    pub betas: (f64, f64),
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// AdamW's epsilon.
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// How the learning rate moves over the run.
    #[serde(default)]
    pub schedule: Schedule,
    /// Gradients are clipped to this global L2 norm (none when `None`).
    #[serde(default)]
    pub clip_norm: Option<f64>,
    /// The learning rate never goes below this.
    #[serde(default)]
    pub min_lr: f64,
}

fn default_eps() -> f64 {
    1e-8
}

impl OptimConfig {
    /// AdamW with `lr`, `betas` and `weight_decay`, constant rate, no clipping.
    pub fn adamw(lr: f64, betas: (f64, f64), weight_decay: f64) -> Self {
        OptimConfig { lr, betas, weight_decay, eps: 1e-8, schedule: Schedule::Constant, clip_norm: None, min_lr: 0.0 }
    }

    /// The same settings with `schedule`.
    pub fn schedule(self, schedule: Schedule) -> Self {
        OptimConfig { schedule, ..self }
    }

    /// The same settings with gradients clipped to `max_norm`.
    pub fn clip(self, max_norm: f64) -> Self {
        OptimConfig { clip_norm: Some(max_norm), ..self }
    }

    /// The learning rate at `step` of `total` steps.
    pub fn lr_at(&self, step: usize, total: usize) -> f64 {
        (self.lr * self.schedule.factor(step, total)).max(self.min_lr)
    }

    /// The learning rate at `progress` in `[0, 1]` of a time-budgeted run.
    pub fn lr_at_progress(&self, progress: f64) -> f64 {
        (self.lr * self.schedule.factor_at(progress)).max(self.min_lr)
    }

    /// Checks the settings, naming the one that is wrong, what it must be and what it is: a
    /// negative or NaN rate set in a notebook's hyperparameter cell would otherwise train (or
    /// diverge) without a word, or stop inside libtorch.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str, expected: &str, got: String| {
            Err(crate::error::Error::Config(format!("{what} must be {expected}, got {got}")))
        };
        let (b1, b2) = self.betas;
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("the learning rate (lr)", "a positive number", self.lr.to_string());
        }
        if !(self.min_lr.is_finite() && (0.0..=self.lr).contains(&self.min_lr)) {
            return bad("min_lr", &format!("between 0 and lr ({})", self.lr), self.min_lr.to_string());
        }
        if !((0.0..1.0).contains(&b1) && (0.0..1.0).contains(&b2)) {
            return bad("AdamW's betas", "two numbers in [0, 1)", format!("({b1}, {b2})"));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad("weight_decay", "0 or more", self.weight_decay.to_string());
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return bad("AdamW's eps", "a positive number", self.eps.to_string());
        }
        if let Some(c) = self.clip_norm.filter(|c| !(c.is_finite() && *c > 0.0)) {
            return bad("the gradient clipping norm", "a positive number", c.to_string());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_settings_are_named_with_what_was_expected() {
        let ok = OptimConfig::adamw(1e-3, (0.9, 0.999), 0.01).clip(1.0);
        assert!(ok.validate().is_ok());
        let err = |c: OptimConfig| c.validate().unwrap_err().to_string();
        assert!(err(OptimConfig { lr: -1.0, ..ok.clone() }).contains("lr) must be a positive number, got -1"));
        assert!(err(OptimConfig { lr: f64::NAN, ..ok.clone() }).contains("got NaN"));
        assert!(err(OptimConfig { betas: (0.9, 1.0), ..ok.clone() })
            .contains("betas must be two numbers in [0, 1), got (0.9, 1)"));
        assert!(err(OptimConfig { weight_decay: -0.1, ..ok.clone() }).contains("weight_decay must be 0 or more"));
        assert!(err(OptimConfig { min_lr: 1.0, ..ok.clone() }).contains("min_lr must be between 0 and lr"));
        assert!(err(ok.clone().clip(0.0)).contains("clipping norm must be a positive number, got 0"));
    }

    #[test]
    fn warmup_schedules_rise_then_decay_to_zero() {
        let s = Schedule::WarmupCosine { warmup: 0.1 };
        assert!((s.factor(0, 100) - 0.1).abs() < 1e-12);
        assert!((s.factor(9, 100) - 1.0).abs() < 1e-12);
        assert!((s.factor(10, 100) - 1.0).abs() < 1e-12);
        assert!(s.factor(55, 100) < 0.6 && s.factor(55, 100) > 0.4);
        assert!(s.factor(99, 100) < 0.01);
        assert_eq!(Schedule::Constant.factor(50, 100), 1.0);
        let l = Schedule::WarmupLinear { warmup: 0.1 };
        assert!((l.factor(4, 100) - 0.5).abs() < 1e-12);
        assert!((l.factor(10, 100) - 1.0).abs() < 1e-12);
        assert!((l.factor(55, 100) - 0.5).abs() < 1e-12);
        assert!(l.factor(99, 100) < 0.02);
    }

    #[test]
    fn a_time_budget_follows_the_same_shape() {
        let s = Schedule::WarmupCosine { warmup: 0.05 };
        assert!((s.factor_at(0.025) - 0.5).abs() < 1e-12);
        assert!((s.factor_at(0.05) - 1.0).abs() < 1e-12);
        assert!((s.factor_at(0.525) - 0.5).abs() < 1e-12);
        assert!(s.factor_at(1.0).abs() < 1e-12);
        let cfg = OptimConfig { min_lr: 1e-5, ..OptimConfig::adamw(1e-3, (0.9, 0.95), 0.1).schedule(s) };
        assert_eq!(cfg.lr_at_progress(1.0), 1e-5);
    }
}
