//! Training: one loop for every model in the crate, and what it records.
//!
//! [`Fit`] is the core. It is generic over the batch: a caller gives it the batches of an epoch,
//! a function from a batch to its loss ([`Step`]), and an evaluation run after each epoch; the
//! core owns everything else — AdamW and its schedule from one [`OptimConfig`], gradient
//! clipping, a check that the loss stays finite, the progress bar, TensorBoard scalars, a
//! checkpoint after each epoch and resuming from the newest one. The image classifier and the
//! MAE ([`crate::tasks::images`]), the summarizer ([`crate::tasks::summarization`]), the small
//! GPT-2 ([`crate::tasks::language_model`]) and the FaceNet embedding ([`crate::tasks::triplet`])
//! all train through it; this module knows no model, data set or plot.

pub mod adamw;
pub mod checkpoint;
pub mod optim;
pub mod precision;
pub mod tensorboard;

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::Digest;
use tch::nn;
use tch::Tensor;

pub use checkpoint::{
    checkpoints_newest_first, latest_checkpoint, load_checkpoint, load_checkpoint_into, load_weights, save_checkpoint,
};
pub use hw9_env::progress::{self, Progress};
pub use optim::{OptimConfig, Schedule};
pub use precision::{autocast, Precision};

use crate::error::{Error, Result};
use crate::io::write_atomic;
use crate::rng::torch_seed;
use tensorboard::SummaryWriter;

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
    /// stopped ([`Fit::resumable_in`]); `None`: nothing saved mid-run.
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

/// How long a run lasts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Length {
    /// Whole epochs of `steps_per_epoch` batches each (the schedule runs over all their steps).
    Epochs {
        /// Passes over the training set.
        epochs: i64,
        /// Batches per epoch.
        steps_per_epoch: usize,
    },
    /// One pass over endless batches until the wall-clock budget is spent (the schedule runs
    /// over the time).
    Seconds(f64),
}

/// Where a run's checkpoints go, and whether it resumes from them.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoints {
    /// A checkpoint per epoch goes to `<dir>/epoch-N`.
    pub dir: PathBuf,
    /// The model's config, saved as `config.json` and compared on resume.
    pub config: serde_json::Value,
    /// Start after the newest checkpoint in `dir`.
    pub resume: bool,
}

/// One training run of the core loop; build it with [`Fit::epochs`] or [`Fit::seconds`], add
/// options, then [`Fit::run`].
#[derive(Debug, Clone, PartialEq)]
pub struct Fit {
    /// Shown on the progress bar and in errors.
    pub title: String,
    /// How long it runs.
    pub length: Length,
    /// AdamW, schedule and clipping.
    pub optim: OptimConfig,
    /// TensorBoard event files go to this folder.
    pub tensorboard: Option<PathBuf>,
    /// TensorBoard gets the mean training loss and the learning rate every this many steps.
    pub log_every: usize,
    /// Checkpoints after each epoch, and resuming.
    pub checkpoints: Option<Checkpoints>,
    /// Mid-epoch checkpoints with the optimizer's state, resumed exactly ([`Fit::resumable`]).
    pub resumable: Option<Resumable>,
    /// The forward pass's precision (fp32 unless [`Fit::precision`] says otherwise; the trainers
    /// pass what `HW9_PRECISION` asks, [`Precision::requested`]).
    pub precision: Precision,
}

/// How often a resumable run saves its state.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Every {
    /// After this many optimizer steps.
    Steps(usize),
    /// When this many seconds of training have passed since the last save.
    Seconds(f64),
}

/// A run that can be stopped at any moment (an interrupted kernel, `kill -9`) and continued
/// exactly: see [`Fit::resumable`].
#[derive(Debug, Clone, PartialEq)]
pub struct Resumable {
    /// `step-N` folders go here.
    pub dir: PathBuf,
    /// The model's config, saved and compared on resume.
    pub config: serde_json::Value,
    /// How often the state is saved.
    pub every: Every,
    /// The run's seed: each epoch's data order and each step's randomness derive from it.
    pub seed: u64,
}

/// What a resumable run saves besides the weights and the optimizer's moments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RunState {
    /// The epoch in progress (1-based).
    epoch: i64,
    /// Batches of it already trained.
    in_epoch: usize,
    /// The optimizer's update count.
    optimizer_step: i64,
    /// Everything recorded so far.
    history: History,
    /// The epoch in progress's running sums.
    sums: Sums,
    /// Seconds of training done (a time-budgeted run continues its budget and schedule from here).
    #[serde(default)]
    seconds: f64,
    /// Seconds of training done when the epoch in progress began (its time, resumed or not).
    #[serde(default)]
    epoch_start: Option<f64>,
}

/// The optimizer a run steps: tch's (libtorch's AdamW), or the crate's when its state must be
/// saved.
enum Optim {
    Libtorch(nn::Optimizer),
    Crate(adamw::AdamW),
}

impl Fit {
    /// A run of `epochs` epochs of `steps_per_epoch` batches.
    pub fn epochs(title: impl Into<String>, epochs: i64, steps_per_epoch: usize, optim: &OptimConfig) -> Self {
        Self::new(title, Length::Epochs { epochs, steps_per_epoch }, optim)
    }

    /// A run that stops after `seconds` of wall time.
    pub fn seconds(title: impl Into<String>, seconds: f64, optim: &OptimConfig) -> Self {
        Self::new(title, Length::Seconds(seconds), optim)
    }

    fn new(title: impl Into<String>, length: Length, optim: &OptimConfig) -> Self {
        Fit {
            title: title.into(),
            length,
            optim: optim.clone(),
            tensorboard: None,
            log_every: 20,
            checkpoints: None,
            resumable: None,
            precision: Precision::Fp32,
        }
    }

    /// Runs each step's forward pass and loss in `precision` ([`precision::autocast`]: bf16
    /// products, fp32 weights and optimizer); fp32 when not set. The loop reads no environment:
    /// a trainer passes what `HW9_PRECISION` asks ([`Precision::requested`]). bf16 falls back to
    /// fp32 on a CPU without bf16 dot products.
    pub fn precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// The precision this run's steps use on `device`.
    pub fn resolved_precision(&self, device: tch::Device) -> Precision {
        self.precision.resolve(device)
    }

    /// Makes the run resumable at any step: it saves the weights, the optimizer's moments and
    /// step, the history and its position in the epoch into `<dir>/step-N` (atomically, the two
    /// newest kept) `every` so often, and a later run with the same config continues from the
    /// newest valid one (falling back past a corrupt one, with a warning naming it). The data
    /// order of each epoch and the randomness of each step are seeded from `seed`, so a run
    /// resumed at any step ends with the same weights, bit for bit on the CPU, as one that was
    /// never stopped. Runs use the crate's AdamW ([`adamw::AdamW`]) then.
    ///
    /// A time-budgeted run ([`Fit::seconds`]) saves the training time spent too and, resumed,
    /// trains for the rest of its budget with the schedule continuing from there: nothing trained
    /// is lost, but its steps are not bit-equal to an unstopped run's (how many steps fit in the
    /// budget depends on the machine's speed at the time).
    pub fn resumable(
        mut self,
        dir: impl Into<PathBuf>,
        config: &impl Serialize,
        every: Every,
        seed: u64,
    ) -> Result<Self> {
        self.resumable = Some(Resumable { dir: dir.into(), config: serde_json::to_value(config)?, every, seed });
        Ok(self)
    }

    /// Makes the run resumable ([`Fit::resumable`]) when `resume` is given, its state in
    /// `<resume.dir>/<title>-<key>`: the key is a hash of `config`, the title and the names and
    /// shapes of `vs`'s variables, so a changed config or model starts afresh in a folder of its
    /// own instead of meeting another run's state. `None`: the run as it is.
    pub fn resumable_in(
        self,
        resume: Option<&ResumeConfig>,
        vs: &nn::VarStore,
        config: &impl Serialize,
    ) -> Result<Self> {
        let Some(r) = resume else { return Ok(self) };
        let mut shapes: Vec<(String, Vec<i64>)> = vs.variables().into_iter().map(|(n, t)| (n, t.size())).collect();
        shapes.sort();
        let key = serde_json::json!({ "title": self.title, "config": config, "variables": shapes });
        let digest = sha2::Sha256::digest(serde_json::to_vec(&key)?);
        let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
        let slug: String =
            self.title.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
        let slug = slug.split('-').filter(|w| !w.is_empty()).collect::<Vec<_>>().join("-"); // "1 % of" -> "1-of"
        let dir = r.dir.join(format!("{slug}-{hex}"));
        let (every, seed) = (r.every, r.seed);
        self.resumable(dir, &key, every, seed)
    }

    /// Writes TensorBoard scalars to `logdir`.
    pub fn tensorboard(mut self, logdir: impl Into<PathBuf>) -> Self {
        self.tensorboard = Some(logdir.into());
        self
    }

    /// Saves a checkpoint of `config`'s model in `<dir>/epoch-N` after each epoch; with `resume`,
    /// starts after the newest one there (its config must equal `config`).
    pub fn checkpoints(mut self, dir: impl Into<PathBuf>, config: &impl Serialize, resume: bool) -> Result<Self> {
        self.checkpoints = Some(Checkpoints { dir: dir.into(), config: serde_json::to_value(config)?, resume });
        Ok(self)
    }

    /// Trains the variables of `vs`. `batches(epoch)` gives an epoch's training batches (endless
    /// for a time budget), `step` turns one into its loss, `evaluate` runs after each epoch.
    ///
    /// Resuming from epoch checkpoints loads the weights and the history of the newest one;
    /// AdamW's moment estimates start again and the schedule continues from the step reached. A
    /// [`Fit::resumable`] run restores everything, mid-epoch included.
    ///
    /// Gradients are recorded whatever the thread's grad mode was: `tch::no_grad` does not restore
    /// it when its closure panics, so an earlier cell's panic inside one would otherwise leave every
    /// later training in the kernel failing with "does not require grad".
    pub fn run<B, I>(
        &self,
        vs: &nn::VarStore,
        batches: impl FnMut(i64) -> I,
        step: impl FnMut(B) -> Result<Step>,
        evaluate: impl FnMut() -> Result<Evaluation>,
    ) -> Result<History>
    where
        I: Iterator<Item = B>,
    {
        tch::with_grad(|| self.run_with_grad(vs, batches, step, evaluate))
    }

    fn run_with_grad<B, I>(
        &self,
        vs: &nn::VarStore,
        mut batches: impl FnMut(i64) -> I,
        mut step: impl FnMut(B) -> Result<Step>,
        mut evaluate: impl FnMut() -> Result<Evaluation>,
    ) -> Result<History>
    where
        I: Iterator<Item = B>,
    {
        self.optim.validate()?;
        let (epochs, per_epoch) = match self.length {
            Length::Epochs { epochs, steps_per_epoch } => (epochs, steps_per_epoch),
            Length::Seconds(_) => (1, 0),
        };
        let (mut opt, mut history, first_epoch, mut skip, mut resumed_sums, trained_before) = match &self.resumable {
            Some(r) => {
                let mut own = adamw::AdamW::new(vs, &self.optim);
                match self.resume_state(vs, &mut own, r)? {
                    Some(st) => (
                        Optim::Crate(own),
                        st.history,
                        st.epoch,
                        st.in_epoch,
                        Some((st.sums, st.epoch_start)),
                        st.seconds,
                    ),
                    None => (Optim::Crate(own), History::default(), 1, 0, None, 0.0),
                }
            }
            None => {
                let history = self.resume(vs)?;
                let next = history.epochs.len() as i64 + 1;
                (Optim::Libtorch(self.optim.build(vs)?), history, next, 0, None, 0.0)
            }
        };
        if first_epoch > epochs {
            let whence = match (&self.resumable, &self.checkpoints) {
                (Some(r), _) => format!(" (its state is in {}: delete that folder to train again)", r.dir.display()),
                (None, Some(c)) => format!(" (checkpoints in {})", c.dir.display()),
                (None, None) => String::new(),
            };
            println!("{}: already trained for {} epoch(s){whence}", self.title, history.epochs.len());
            return Ok(history);
        }
        let precision = self.resolved_precision(vs.device());
        let mut tb = self.tensorboard.as_deref().map(SummaryWriter::new).transpose()?;
        let total = per_epoch * epochs.max(0) as usize;
        let run_start = Instant::now();
        // Training seconds so far, this run's and those of the runs it resumes.
        let trained = || trained_before + run_start.elapsed().as_secs_f64();
        let mut last_save = (Instant::now(), history.step_losses.len());
        for epoch in first_epoch..=epochs {
            let bf16 = if precision == Precision::Bf16 { " (bf16)" } else { "" };
            let label = match self.length {
                Length::Epochs { .. } => format!("{}{bf16} epoch {epoch}/{epochs}", self.title),
                Length::Seconds(s) => format!("{}{bf16} ({s:.0} s)", self.title),
            };
            let mut bar = Progress::new(label, per_epoch as u64);
            let (mut epoch_sums, epoch_start) = match resumed_sums.take() {
                Some((sums, started)) => (sums, started.unwrap_or_else(trained)),
                None => (Sums::default(), trained()),
            };
            let mut window = Sums::default();
            let seed = self.resumable.as_ref().map(|r| r.seed);
            if let Some(seed) = seed {
                tch::manual_seed(torch_seed(seed, epoch as u64));
            }
            let mut it = batches(epoch);
            // Resumed mid-epoch: draw the batches already trained, each with its step's seed.
            let done = history.step_losses.len();
            for k in 0..std::mem::take(&mut skip) {
                if let Some(seed) = seed {
                    tch::manual_seed(torch_seed(seed, (1u64 << 40) + (done - epoch_sums.steps + k) as u64));
                }
                let _ = it.next();
            }
            let mut in_epoch = epoch_sums.steps;
            loop {
                let at = history.step_losses.len();
                if let Some(seed) = seed {
                    tch::manual_seed(torch_seed(seed, (1u64 << 40) + at as u64));
                }
                let Some(batch) = it.next() else { break };
                let lr = match self.length {
                    Length::Epochs { .. } => self.optim.lr_at(at, total),
                    Length::Seconds(s) => {
                        let progress = trained() / s;
                        if progress >= 1.0 {
                            break;
                        }
                        self.optim.lr_at_progress(progress)
                    }
                };
                let out = autocast(precision, vs.device(), || step(batch))?;
                match &mut opt {
                    Optim::Libtorch(o) => {
                        o.set_lr(lr);
                        self.optim.step(o, &out.loss);
                    }
                    Optim::Crate(o) => {
                        o.set_lr(lr);
                        o.backward_step(&out.loss);
                    }
                }
                let loss = finite_loss(&out.loss, &self.title, epoch, at, lr)?;
                history.step_losses.push(loss);
                epoch_sums.add(loss, &out);
                window.add(loss, &out);
                in_epoch += 1;
                if let (Some(r), Optim::Crate(o)) = (&self.resumable, &opt) {
                    let due = match r.every {
                        Every::Steps(n) => history.step_losses.len() - last_save.1 >= n.max(1),
                        Every::Seconds(secs) => last_save.0.elapsed().as_secs_f64() >= secs,
                    };
                    if due {
                        let st = RunState {
                            epoch,
                            in_epoch,
                            optimizer_step: o.step,
                            history: history.clone(),
                            sums: epoch_sums.clone(),
                            seconds: trained(),
                            epoch_start: Some(epoch_start),
                        };
                        save_state(vs, o, r, &st)?;
                        last_save = (Instant::now(), history.step_losses.len());
                    }
                }
                if let Some(tb) = tb.as_mut().filter(|_| window.steps == self.log_every) {
                    tb.add_scalar("loss/train", window.mean_loss(), at as i64 + 1)?;
                    tb.add_scalar("learning_rate", lr, at as i64 + 1)?;
                    window = Sums::default();
                }
                bar.tick(&format!("loss {:.4}{} lr {lr:.1e}", epoch_sums.mean_loss(), epoch_sums.acc_text()));
            }
            let eval = evaluate()?;
            let at = history.step_losses.len();
            if let Some(tb) = tb.as_mut() {
                for (tag, value) in [("loss/validation", eval.loss), ("accuracy/validation", eval.accuracy)] {
                    if let Some(v) = value {
                        tb.add_scalar(tag, v, at as i64)?;
                    }
                }
            }
            let stats = EpochStats {
                epoch,
                step: at,
                train_loss: epoch_sums.mean_loss(),
                train_acc: epoch_sums.accuracy(),
                val_loss: eval.loss,
                val_acc: eval.accuracy,
                seconds: trained() - epoch_start,
            };
            let val_loss = eval.loss.map_or(String::new(), |v| format!(" | validation loss {v:.4}"));
            let val_acc = eval.accuracy.map_or(String::new(), |v| format!(" | validation acc {v:.4}"));
            bar.finish(&format!("loss {:.4}{}{val_loss}{val_acc}", stats.train_loss, epoch_sums.acc_text()));
            history.epochs.push(stats);
            if let (Some(r), Optim::Crate(o)) = (&self.resumable, &opt) {
                let st = RunState {
                    epoch: epoch + 1,
                    in_epoch: 0,
                    optimizer_step: o.step,
                    history: history.clone(),
                    sums: Sums::default(),
                    seconds: trained(),
                    epoch_start: Some(trained()),
                };
                save_state(vs, o, r, &st)?;
                last_save = (Instant::now(), history.step_losses.len());
            }
            if let Some(ck) = &self.checkpoints {
                let dir = ck.dir.join(format!("epoch-{epoch}"));
                save_checkpoint(vs, &ck.config, &dir)?;
                write_atomic(&dir.join("history.json"), &serde_json::to_vec(&history)?)?;
            }
        }
        Ok(history)
    }

    /// The history of the newest valid checkpoint, its weights loaded into `vs`, when resuming;
    /// else an empty history. A checkpoint that does not load (a corrupt or truncated file, a
    /// history that does not parse) is skipped with a warning naming it, and the one before it is
    /// tried; a checkpoint of another model (its config differs) stops the resume with an error.
    fn resume(&self, vs: &nn::VarStore) -> Result<History> {
        let Some(ck) = self.checkpoints.as_ref().filter(|ck| ck.resume) else { return Ok(History::default()) };
        for (epoch, dir) in checkpoints_newest_first(&ck.dir) {
            match load_resumable(vs, &ck.config, &dir) {
                Ok(history) => {
                    println!("resumed from {} (epoch {epoch}, step {})", dir.display(), history.step_losses.len());
                    return Ok(history);
                }
                Err(e @ Error::Config(_)) => return Err(e),
                Err(e) => eprintln!("skipping the checkpoint {}: {e}", dir.display()),
            }
        }
        Ok(History::default())
    }
}

impl Fit {
    /// The newest valid `step-N` state of a resumable run, loaded into `vs` and `opt`; a state
    /// that does not load is skipped with a warning naming it; another model's stops with an error.
    fn resume_state(&self, vs: &nn::VarStore, opt: &mut adamw::AdamW, r: &Resumable) -> Result<Option<RunState>> {
        for (n, dir) in numbered(&r.dir, "step-") {
            let loaded = (|| -> Result<RunState> {
                let st: RunState = read_json(&dir.join("state.json"), "run state")?;
                load_checkpoint(vs, &r.config, &dir)?;
                opt.load(&dir.join("optimizer.safetensors"), st.optimizer_step)?;
                Ok(st)
            })();
            match loaded {
                Ok(st) => {
                    println!(
                        "{}: resumed from {} (epoch {}, batch {} of it, step {})",
                        self.title,
                        dir.display(),
                        st.epoch,
                        st.in_epoch,
                        st.history.step_losses.len()
                    );
                    return Ok(Some(st));
                }
                Err(e @ Error::Config(_)) => return Err(e),
                Err(e) => eprintln!("{}: skipping the saved state {} (step {n}): {e}", self.title, dir.display()),
            }
        }
        Ok(None)
    }
}

/// The `<prefix>N` folders under `dir`, highest `N` first.
fn numbered(dir: &Path, prefix: &str) -> Vec<(usize, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut found: Vec<(usize, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.strip_prefix(prefix)?.parse::<usize>().ok()?, e.path())))
        .collect();
    found.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    found
}

/// Saves a resumable run's state into `<dir>/step-N` atomically (a temporary folder renamed into
/// place), keeping the two newest.
fn save_state(vs: &nn::VarStore, opt: &adamw::AdamW, r: &Resumable, st: &RunState) -> Result<()> {
    let n = st.history.step_losses.len();
    let tmp = r.dir.join(format!(".step-{n}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    save_checkpoint(vs, &r.config, &tmp)?;
    opt.save(&tmp.join("optimizer.safetensors"))?;
    write_atomic(&tmp.join("state.json"), &serde_json::to_vec(st)?)?;
    let dest = r.dir.join(format!("step-{n}"));
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::rename(&tmp, &dest).map_err(|e| Error::io(&dest, e))?;
    for (_, old) in numbered(&r.dir, "step-").into_iter().skip(2) {
        let _ = std::fs::remove_dir_all(old);
    }
    Ok(())
}

/// Reads a JSON file saved with a checkpoint; one that does not parse is corrupt.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Corrupt {
        what: what.into(),
        path: path.into(),
        detail: e.to_string(),
    })
}

/// Loads one checkpoint's weights into `vs` and reads its history.
fn load_resumable(vs: &nn::VarStore, config: &serde_json::Value, dir: &Path) -> Result<History> {
    let history: History = read_json(&dir.join("history.json"), "training history")?;
    load_checkpoint(vs, config, dir)?;
    Ok(history)
}

/// Running sums of a span of steps.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Sums {
    steps: usize,
    loss: f64,
    weight: f64,
    correct: Option<(i64, i64)>,
}

impl Sums {
    fn add(&mut self, loss: f64, step: &Step) {
        self.steps += 1;
        self.loss += loss * step.weight;
        self.weight += step.weight;
        if let Some((c, n)) = step.correct {
            let (c0, n0) = self.correct.unwrap_or((0, 0));
            self.correct = Some((c0 + c, n0 + n));
        }
    }

    fn mean_loss(&self) -> f64 {
        self.loss / self.weight.max(f64::MIN_POSITIVE)
    }

    fn accuracy(&self) -> Option<f64> {
        self.correct.map(|(c, n)| c as f64 / n.max(1) as f64)
    }

    fn acc_text(&self) -> String {
        self.accuracy().map_or(String::new(), |a| format!(" acc {a:.3}"))
    }
}

/// The loss's value, or an error saying where it stopped being finite and what to look at.
fn finite_loss(loss: &Tensor, what: &str, epoch: i64, step: usize, lr: f64) -> Result<f64> {
    let v = loss.double_value(&[]);
    if v.is_finite() {
        Ok(v)
    } else {
        Err(Error::Input(format!(
            "{what}: the loss became {v} at epoch {epoch}, step {step} (learning rate {lr:.3e}). \
             Check your forward for a division by zero or a log of 0, or lower the learning rate."
        )))
    }
}
