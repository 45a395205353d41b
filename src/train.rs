//! Training loops, evaluation, progress bars, learning curves and checkpoints.
//!
//! The loops are generic: a classifier is any `nn::ModuleT` (images → logits) and an MAE is any
//! [`MaskedAutoencoder`], so a student's own model is what trains.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tch::nn::{self, ModuleT, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use crate::data::{augment, batches, n_batches, ImageSet, Splits};
use crate::error::{Error, Result};
use crate::mae::MaskedAutoencoder;
use crate::plot::LineChart;

/// A progress bar that works in a terminal and in a notebook (it redraws one line with `\r`):
/// count, rate, ETA and a message such as the running loss.
pub struct Progress {
    label: String,
    total: u64,
    done: u64,
    start: Instant,
    last_draw: Option<Instant>,
}

impl Progress {
    pub fn new(label: impl Into<String>, total: u64) -> Self {
        Progress { label: label.into(), total, done: 0, start: Instant::now(), last_draw: None }
    }

    fn line(&self, msg: &str) -> String {
        let secs = self.start.elapsed().as_secs_f64();
        let rate = self.done as f64 / secs.max(1e-9);
        let eta = if rate > 0.0 { (self.total.saturating_sub(self.done)) as f64 / rate } else { 0.0 };
        if self.total == 0 {
            // Unknown length (a time budget): count and rate only.
            return format!("{} {} steps, {:.1} it/s, {} elapsed {}", self.label, self.done, rate, fmt_secs(secs), msg);
        }
        let width = 24;
        let filled = ((width as u64 * self.done / self.total) as usize).min(width);
        format!(
            "{} [{}{}] {}/{} {:.1} it/s, {} elapsed, ETA {} {}",
            self.label,
            "#".repeat(filled),
            ".".repeat(width - filled),
            self.done,
            self.total,
            rate,
            fmt_secs(secs),
            fmt_secs(eta),
            msg
        )
    }

    /// Counts one step; redraws at most twice a second.
    pub fn tick(&mut self, msg: &str) {
        self.done += 1;
        if self.last_draw.is_none_or(|t| t.elapsed().as_secs_f64() >= 0.5) || self.done == self.total {
            self.last_draw = Some(Instant::now());
            print!("\r{}", self.line(msg));
            let _ = std::io::stdout().flush();
        }
    }

    /// Draws the final line and ends it.
    pub fn finish(&mut self, msg: &str) {
        println!("\r{}", self.line(msg));
    }
}

fn fmt_secs(s: f64) -> String {
    let s = s.round() as u64;
    format!("{}:{:02}", s / 60, s % 60)
}

/// How to train.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub epochs: i64,
    pub batch_size: i64,
    /// AdamW learning rate.
    pub lr: f64,
    /// AdamW betas (original: 0.9, 0.95).
    pub betas: (f64, f64),
    pub weight_decay: f64,
    /// Random crops (padding 2) and horizontal flips on training batches.
    pub augment: bool,
    /// How the learning rate changes over the run.
    #[serde(default)]
    pub schedule: Schedule,
}

/// A learning-rate schedule over all steps of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub enum Schedule {
    /// The same rate throughout (the original homework).
    #[default]
    Constant,
    /// Linear warmup over the first `warmup` fraction of steps, then cosine decay to 0.
    WarmupCosine { warmup: f64 },
    /// Linear warmup over the first `warmup` fraction of steps, then linear decay to 0 (the
    /// Hugging Face trainer's default).
    WarmupLinear { warmup: f64 },
}

impl Schedule {
    /// The factor on the base rate at `step` of `total`.
    pub fn factor(self, step: usize, total: usize) -> f64 {
        let (warmup, decay): (f64, fn(f64) -> f64) = match self {
            Schedule::Constant => return 1.0,
            Schedule::WarmupCosine { warmup } => (warmup, |t| 0.5 * (1.0 + (std::f64::consts::PI * t).cos())),
            Schedule::WarmupLinear { warmup } => (warmup, |t| 1.0 - t),
        };
        let warm = (warmup * total as f64).max(1.0);
        let s = step as f64;
        if s < warm {
            (s + 1.0) / warm
        } else {
            decay(((s - warm) / (total as f64 - warm).max(1.0)).min(1.0)).max(0.0)
        }
    }
}

impl TrainConfig {
    /// AdamW with the original homework's betas.
    pub fn adamw(epochs: i64, batch_size: i64, lr: f64, weight_decay: f64) -> Self {
        TrainConfig { epochs, batch_size, lr, betas: (0.9, 0.95), weight_decay, augment: false, schedule: Schedule::Constant }
    }

    fn optimizer(&self, vs: &nn::VarStore) -> Result<nn::Optimizer> {
        let opt = nn::AdamW { beta1: self.betas.0, beta2: self.betas.1, wd: self.weight_decay, eps: 1e-8, amsgrad: false };
        Ok(opt.build(vs, self.lr)?)
    }
}

/// One epoch's numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochStats {
    pub epoch: i64,
    pub train_loss: f64,
    /// Training accuracy (classifiers only).
    pub train_acc: Option<f64>,
    /// Validation accuracy (classifiers only).
    pub val_acc: Option<f64>,
    pub seconds: f64,
}

/// What a training run did, step by step and epoch by epoch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub step_losses: Vec<f64>,
    pub epochs: Vec<EpochStats>,
}

impl History {
    /// The last epoch's validation accuracy.
    pub fn final_val_acc(&self) -> Option<f64> {
        self.epochs.last().and_then(|e| e.val_acc)
    }

    /// Training loss per step, with the per-epoch means at epoch ends.
    pub fn loss_chart(&self, title: &str) -> LineChart {
        let steps_per_epoch = self.step_losses.len() as f64 / self.epochs.len().max(1) as f64;
        let ends: Vec<f64> = self.epochs.iter().map(|e| e.epoch as f64 * steps_per_epoch).collect();
        let means: Vec<f64> = self.epochs.iter().map(|e| e.train_loss).collect();
        LineChart::new(format!("{title}: training loss")).x_label("step").y_label("loss").series("train (step)", &self.step_losses).series_xy("train (epoch mean)", &ends, &means)
    }

    /// Training and validation accuracy per epoch.
    pub fn accuracy_chart(&self, title: &str) -> LineChart {
        let x: Vec<f64> = self.epochs.iter().map(|e| e.epoch as f64).collect();
        let train: Vec<f64> = self.epochs.iter().map(|e| e.train_acc.unwrap_or(f64::NAN)).collect();
        let val: Vec<f64> = self.epochs.iter().map(|e| e.val_acc.unwrap_or(f64::NAN)).collect();
        LineChart::new(format!("{title}: accuracy")).x_label("epoch").y_label("accuracy").series_xy("train", &x, &train).series_xy("validation", &x, &val)
    }

    /// Shows the loss chart and, for classifiers, the accuracy chart, inline.
    pub fn show(&self, title: &str) {
        self.loss_chart(title).show();
        if self.epochs.iter().any(|e| e.val_acc.is_some()) {
            self.accuracy_chart(title).show();
        }
    }
}

pub(crate) fn finite_loss(loss: &Tensor, what: &str, epoch: i64, step: usize, lr: f64) -> Result<f64> {
    let v = loss.double_value(&[]);
    if v.is_finite() {
        Ok(v)
    } else {
        Err(Error::Input(format!(
            "{what}: the loss became {v} at epoch {epoch}, step {step} (learning rate {lr}). \
             Check your forward for a division by zero or a log of 0, or lower the learning rate."
        )))
    }
}

/// Accuracy of `model` on `set` (normalised as `data` does), without gradients.
pub fn evaluate<M: ModuleT>(model: &M, data: &Splits, set: &ImageSet, device: Device) -> f64 {
    tch::no_grad(|| {
        let (mut correct, mut total) = (0i64, 0i64);
        for (x, y) in batches(set, 500, false, device) {
            let logits = model.forward_t(&data.normalize(&x), false);
            correct += logits.argmax(-1, false).eq_tensor(&y).sum(Kind::Int64).int64_value(&[]);
            total += y.size()[0];
        }
        correct as f64 / total.max(1) as f64
    })
}

/// The loop both trainers share: epochs of shuffled, normalised (optionally augmented) training
/// batches, the learning-rate schedule, AdamW steps, a check that the loss stays finite, and a
/// progress bar. `batch_loss` maps `(images, labels)` to the loss and, for a classifier, the
/// number of correct predictions; `validate` runs after each epoch.
fn fit(
    vs: &nn::VarStore,
    data: &Splits,
    cfg: &TrainConfig,
    title: &str,
    mut batch_loss: impl FnMut(&Tensor, &Tensor) -> Result<(Tensor, Option<i64>)>,
    mut validate: impl FnMut() -> Option<f64>,
) -> Result<History> {
    let device = vs.device();
    let mut opt = cfg.optimizer(vs)?;
    let mut history = History::default();
    let per_epoch = n_batches(&data.train, cfg.batch_size);
    let total = (cfg.epochs * per_epoch) as usize;
    for epoch in 1..=cfg.epochs {
        let start = Instant::now();
        let mut bar = Progress::new(format!("{title} epoch {epoch}/{}", cfg.epochs), per_epoch as u64);
        let (mut loss_sum, mut correct, mut seen) = (0.0, None::<i64>, 0i64);
        for (step, (x, y)) in batches(&data.train, cfg.batch_size, true, device).enumerate() {
            opt.set_lr(cfg.lr * cfg.schedule.factor(history.step_losses.len(), total));
            let x = data.normalize(&x);
            let x = if cfg.augment { augment(&x, true, 2) } else { x };
            let (loss, right) = batch_loss(&x, &y)?;
            opt.backward_step(&loss);
            let l = finite_loss(&loss, title, epoch, step, cfg.lr)?;
            history.step_losses.push(l);
            loss_sum += l * y.size()[0] as f64;
            seen += y.size()[0];
            correct = right.map(|r| correct.unwrap_or(0) + r);
            let acc = correct.map_or(String::new(), |c| format!(" acc {:.3}", c as f64 / seen as f64));
            bar.tick(&format!("loss {:.4}{acc}", loss_sum / seen as f64));
        }
        let val_acc = validate();
        let stats = EpochStats {
            epoch,
            train_loss: loss_sum / seen.max(1) as f64,
            train_acc: correct.map(|c| c as f64 / seen.max(1) as f64),
            val_acc,
            seconds: start.elapsed().as_secs_f64(),
        };
        let acc = stats.train_acc.map_or(String::new(), |a| format!(" acc {a:.3}"));
        let val = val_acc.map_or(String::new(), |v| format!(" | validation acc {v:.4}"));
        bar.finish(&format!("loss {:.4}{acc}{val}", stats.train_loss));
        history.epochs.push(stats);
    }
    Ok(history)
}

/// Trains a classifier with cross-entropy and AdamW, evaluating on the test split each epoch.
pub fn train_classifier<M: ModuleT>(model: &M, vs: &nn::VarStore, data: &Splits, cfg: &TrainConfig, title: &str) -> Result<History> {
    let batch_loss = |x: &Tensor, y: &Tensor| {
        let logits = model.forward_t(x, true);
        if logits.dim() != 2 || logits.size()[0] != y.size()[0] {
            return Err(Error::Shape { what: format!("{title}: logits"), expected: vec![y.size()[0], -1], got: logits.size() });
        }
        let correct = logits.argmax(-1, false).eq_tensor(y).sum(Kind::Int64).int64_value(&[]);
        Ok((logits.cross_entropy_for_logits(y), Some(correct)))
    };
    fit(vs, data, cfg, title, batch_loss, || Some(evaluate(model, data, &data.test, vs.device())))
}

/// Pretrains a masked autoencoder: MSE on the masked patches, AdamW.
pub fn train_mae<M: MaskedAutoencoder>(model: &M, vs: &nn::VarStore, data: &Splits, cfg: &TrainConfig, title: &str) -> Result<History> {
    let batch_loss = |x: &Tensor, _: &Tensor| Ok((model.pretraining_loss(x)?, None));
    fit(vs, data, cfg, title, batch_loss, || None)
}

/// Saves `vs` as `<dir>/model.safetensors` and `config` as `<dir>/config.json`.
pub fn save_checkpoint<C: Serialize>(vs: &nn::VarStore, config: &C, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    crate::plot::write_atomic(&dir.join("config.json"), &serde_json::to_vec_pretty(config)?)?;
    let tmp = dir.join(".model.tmp.safetensors"); // tch picks the format by extension
    vs.save(&tmp)?;
    std::fs::rename(&tmp, dir.join("model.safetensors")).map_err(|e| Error::io(dir, e))
}

/// Reads `<dir>/config.json`.
pub fn load_config<C: DeserializeOwned>(dir: &Path) -> Result<C> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Corrupt { what: "checkpoint config".into(), path, detail: e.to_string() })
}

/// Refuses a checkpoint whose `config.json` differs from `expected`, naming both.
fn check_saved_config<C: DeserializeOwned + PartialEq + std::fmt::Debug>(expected: &C, dir: &Path) -> Result<()> {
    let saved: C = load_config(dir)?;
    if &saved != expected {
        return Err(Error::Config(format!("the checkpoint in {} was saved with another config:\n  saved: {saved:?}\n  this model: {expected:?}", dir.display())));
    }
    Ok(())
}

/// Loads `<dir>/model.safetensors` into `vs`, after checking that `<dir>/config.json` equals
/// `expected` and that every variable is there with its shape: a checkpoint from another config
/// is an error that names the difference.
pub fn load_checkpoint<C: DeserializeOwned + PartialEq + std::fmt::Debug>(vs: &mut nn::VarStore, expected: &C, dir: &Path) -> Result<()> {
    check_saved_config(expected, dir)?;
    load_weights(vs, &dir.join("model.safetensors"))
}

/// Loads a checkpoint saved by [`save_checkpoint`] into the variables of `vs` under `prefix`
/// (e.g. an MAE built at `vs.root() / "mae"` inside a classifier's store), after checking its
/// config against `expected`. Variables outside `prefix` are left as they are.
pub fn load_checkpoint_into<C: DeserializeOwned + PartialEq + std::fmt::Debug>(vs: &mut nn::VarStore, prefix: &str, expected: &C, dir: &Path) -> Result<()> {
    check_saved_config(expected, dir)?;
    let path = dir.join("model.safetensors");
    let mut named: std::collections::HashMap<String, Tensor> =
        read_weights(&path, TRAIN_FIRST)?.into_iter().map(|(k, v)| (format!("{prefix}.{k}"), v)).collect();
    // Variables outside the prefix keep their values.
    for (k, v) in vs.variables() {
        if !k.starts_with(&format!("{prefix}.")) {
            named.insert(k, v.detach().copy());
        }
    }
    copy_weights(vs, &named, &path.display().to_string())
}

const TRAIN_FIRST: &str = "train and save the model first";

/// Reads a safetensors weights file by name; a missing file says `fix`, an unreadable one is
/// reported as corrupt.
pub fn read_weights(path: &Path, fix: &str) -> Result<std::collections::HashMap<String, Tensor>> {
    if !path.exists() {
        return Err(Error::Missing { what: "weights".into(), path: path.to_path_buf(), fix: fix.into() });
    }
    let tensors = Tensor::read_safetensors(path).map_err(|e| Error::Corrupt {
        what: "weights file".into(),
        path: path.to_path_buf(),
        detail: format!("not a readable safetensors file ({e})"),
    })?;
    Ok(tensors.into_iter().collect())
}

/// Loads safetensors weights into `vs` by name, checking names and shapes first.
pub fn load_weights(vs: &mut nn::VarStore, path: &Path) -> Result<()> {
    copy_weights(vs, &read_weights(path, TRAIN_FIRST)?, &path.display().to_string())
}

/// Copies `tensors` into the variables of `vs` with the same names. Every variable must be there
/// with its shape; `source` names where the tensors came from in the error.
pub fn copy_weights(vs: &mut nn::VarStore, tensors: &std::collections::HashMap<String, Tensor>, source: &str) -> Result<()> {
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0)); // report the first problem deterministically
    for (name, var) in &vars {
        match tensors.get(name) {
            None => {
                let mut have: Vec<&String> = tensors.keys().collect();
                have.sort();
                return Err(Error::Input(format!(
                    "{source} has no tensor {name:?}, which this model needs (saved from another model, or a parameter named differently?). It has: {have:?}"
                )));
            }
            Some(t) if t.size() != var.size() => {
                return Err(Error::Shape { what: format!("{source} tensor {name:?} (saved from another config?)"), expected: var.size(), got: t.size() })
            }
            Some(_) => {}
        }
    }
    tch::no_grad(|| -> Result<()> {
        for (name, mut var) in vars {
            var.f_copy_(&tensors[&name].to_device(var.device()).to_kind(var.kind()))?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
