//! [`Fit`], the training loop every run of the crate goes through, in named phases: [`Fit::run`]
//! restores the saved state or starts afresh ([`Fit::start`]), trains each epoch's batches
//! ([`Run::train_epoch`], saving the state when due) and closes each epoch ([`Run::end_epoch`]:
//! evaluation, TensorBoard, the epoch's numbers, an export of the weights).
//!
//! (Over 400 lines: about 150 are `Fit`'s options with their documentation, the rest the loop's
//! phases; apart, a reader of the loop would look up in another file what each option does.)

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;
use tch::{nn, Tensor};

use super::adamw::AdamW;
use super::checkpoint::save_checkpoint;
use super::config::{Every, ResumeConfig};
use super::history::{EpochStats, Evaluation, History, Step, Sums};
use super::precision::{autocast, Precision};
use super::state::{self, Resumable, RunState};
use super::tensorboard::SummaryWriter;
use super::OptimConfig;
use crate::error::{Error, Result};
use crate::io::write_atomic;
use crate::rng::torch_seed;

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

/// Where a run exports its weights after each epoch (`<dir>/epoch-N/{model.safetensors,
/// config.json, history.json}`): finished models to load, compare or hand in. Exports are not
/// what a run resumes from; that is its state ([`Fit::resumable`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Exports {
    /// An export per epoch goes to `<dir>/epoch-N`.
    pub dir: PathBuf,
    /// The model's config, saved as `config.json`.
    pub config: serde_json::Value,
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
    /// The weights exported after each epoch.
    pub exports: Option<Exports>,
    /// The state saved as it trains, continued exactly after an interruption ([`Fit::resumable`]).
    pub resumable: Option<Resumable>,
    /// The forward pass's precision (fp32 unless [`Fit::precision`] says otherwise; the trainers
    /// pass what `HW9_PRECISION` asks, [`Precision::requested`]).
    pub precision: Precision,
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
            exports: None,
            resumable: None,
            precision: Precision::Fp32,
        }
    }

    /// Runs each step's forward pass and loss in `precision` ([`super::precision::autocast`]:
    /// bf16 products, fp32 weights and optimizer); fp32 when not set. The loop reads no
    /// environment: a trainer passes what `HW9_PRECISION` asks ([`Precision::requested`]). bf16
    /// falls back to fp32 on a CPU without bf16 dot products.
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
    /// newest kept) `every` so often and at the end of each epoch, and a later run with the same
    /// config continues from the newest valid one (falling back past a corrupt one, with a warning
    /// naming it). The data order of each epoch and the randomness of each step are seeded from
    /// `seed`, so a run resumed at any step ends with the same weights, bit for bit on the CPU, as
    /// one that was never stopped.
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
        let (dir, key) = state::state_dir(&r.dir, &self.title, vs, config)?;
        let (every, seed) = (r.every, r.seed);
        self.resumable(dir, &key, every, seed)
    }

    /// Writes TensorBoard scalars to `logdir`.
    pub fn tensorboard(mut self, logdir: impl Into<PathBuf>) -> Self {
        self.tensorboard = Some(logdir.into());
        self
    }

    /// Exports the weights of `config`'s model to `<dir>/epoch-N` after each epoch, with the
    /// history so far.
    pub fn exports(mut self, dir: impl Into<PathBuf>, config: &impl Serialize) -> Result<Self> {
        self.exports = Some(Exports { dir: dir.into(), config: serde_json::to_value(config)? });
        Ok(self)
    }

    /// Trains the variables of `vs` with the crate's AdamW ([`AdamW`]). `batches(epoch)` gives an
    /// epoch's training batches (endless for a time budget), `step` turns one into its loss,
    /// `evaluate` runs after each epoch. A [`Fit::resumable`] run first restores its newest saved
    /// state, mid-epoch included.
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
        // The stop button stops the run between two steps instead of ending the process.
        let _armed = super::interrupt::arm();
        let mut opt = AdamW::new(vs, &self.optim);
        let start = self.start(vs, &mut opt)?;
        let epochs = match self.length {
            Length::Epochs { epochs, .. } => epochs,
            Length::Seconds(_) => 1,
        };
        if start.epoch > epochs {
            let whence = match &self.resumable {
                Some(r) => format!(" (its state is in {}: delete that folder to train again)", r.dir.display()),
                None => String::new(),
            };
            println!("{}: already trained for {} epoch(s){whence}", self.title, start.history.epochs.len());
            return Ok(start.history);
        }
        let mut run = Run {
            fit: self,
            vs,
            opt,
            history: start.history,
            precision: self.resolved_precision(vs.device()),
            tb: self.tensorboard.as_deref().map(SummaryWriter::new).transpose()?,
            clock: Instant::now(),
            trained_before: start.trained_before,
            last_save: (Instant::now(), 0),
        };
        run.last_save.1 = run.history.step_losses.len();
        let mut resumed = Some((start.in_epoch, start.sums));
        for epoch in start.epoch..=epochs {
            let (skip, sums) = resumed.take().unwrap_or((0, None));
            let trained = run.train_epoch(epoch, epochs, &mut batches, &mut step, skip, sums)?;
            run.end_epoch(epoch, trained, evaluate()?)?;
            if super::interrupt::requested() && epoch < epochs {
                // Pressed during the evaluation: the epoch is complete and its state saved.
                return Err(run.interrupted(None));
            }
        }
        Ok(run.history)
    }

    /// Where the run starts: after its newest saved state (weights and AdamW restored), or at the
    /// beginning.
    fn start(&self, vs: &nn::VarStore, opt: &mut AdamW) -> Result<Start> {
        let saved = match &self.resumable {
            Some(r) => state::load_newest(&self.title, vs, opt, r)?,
            None => None,
        };
        Ok(match saved {
            Some(st) => Start {
                history: st.history,
                epoch: st.epoch,
                in_epoch: st.in_epoch,
                sums: Some((st.sums, st.epoch_start)),
                trained_before: st.seconds,
            },
            None => Start { history: History::default(), epoch: 1, in_epoch: 0, sums: None, trained_before: 0.0 },
        })
    }
}

/// Where a run starts.
struct Start {
    history: History,
    /// The epoch to train (1-based); past the last when the run is done.
    epoch: i64,
    /// Batches of that epoch already trained.
    in_epoch: usize,
    /// That epoch's running sums and the training time at its start, when resumed.
    sums: Option<(Sums, Option<f64>)>,
    /// Seconds of training done by the runs it resumes.
    trained_before: f64,
}

/// An epoch trained, before its evaluation.
struct Epoch {
    sums: Sums,
    /// Seconds of training done when it began.
    start: f64,
    /// Its progress bar, finished with the evaluation's numbers.
    bar: super::Progress,
}

/// A run in progress: the optimizer, what it recorded, and where its outputs go.
struct Run<'a> {
    fit: &'a Fit,
    vs: &'a nn::VarStore,
    opt: AdamW,
    history: History,
    precision: Precision,
    tb: Option<SummaryWriter>,
    /// When this process's part of the run began.
    clock: Instant,
    trained_before: f64,
    /// When and at which step the state was last saved.
    last_save: (Instant, usize),
}

impl Run<'_> {
    /// Seconds of training so far, this process's and those of the runs it resumes.
    fn trained(&self) -> f64 {
        self.trained_before + self.clock.elapsed().as_secs_f64()
    }

    /// The run's seed, when its randomness is seeded (a resumable run).
    fn seed(&self) -> Option<u64> {
        self.fit.resumable.as_ref().map(|r| r.seed)
    }

    /// Trains one epoch's batches (after the `skip` a resumed run already trained, whose sums it
    /// continues).
    fn train_epoch<B, I: Iterator<Item = B>>(
        &mut self,
        epoch: i64,
        epochs: i64,
        batches: &mut impl FnMut(i64) -> I,
        step: &mut impl FnMut(B) -> Result<Step>,
        skip: usize,
        resumed: Option<(Sums, Option<f64>)>,
    ) -> Result<Epoch> {
        let fit = self.fit;
        let (per_epoch, total) = match fit.length {
            Length::Epochs { steps_per_epoch, epochs } => (steps_per_epoch, steps_per_epoch * epochs.max(0) as usize),
            Length::Seconds(_) => (0, 0),
        };
        let bf16 = if self.precision == Precision::Bf16 { " (bf16)" } else { "" };
        let label = match fit.length {
            Length::Epochs { .. } => format!("{}{bf16} epoch {epoch}/{epochs}", fit.title),
            Length::Seconds(s) => format!("{}{bf16} ({s:.0} s)", fit.title),
        };
        let mut bar = super::Progress::new(label, per_epoch as u64);
        let (mut sums, epoch_start) = match resumed {
            Some((sums, started)) => (sums, started.unwrap_or_else(|| self.trained())),
            None => (Sums::default(), self.trained()),
        };
        let mut window = Sums::default();
        let seed = self.seed();
        if let Some(seed) = seed {
            tch::manual_seed(torch_seed(seed, epoch as u64));
        }
        // The epoch's batches are made after its seed: a resumed run draws the same order.
        let mut batches = batches(epoch);
        // Resumed mid-epoch: draw the batches already trained, each with its step's seed.
        let done = self.history.step_losses.len();
        for k in 0..skip {
            if let Some(seed) = seed {
                tch::manual_seed(torch_seed(seed, (1u64 << 40) + (done - sums.steps + k) as u64));
            }
            let _ = batches.next();
        }
        let mut in_epoch = sums.steps;
        loop {
            let at = self.history.step_losses.len();
            if let Some(seed) = seed {
                tch::manual_seed(torch_seed(seed, (1u64 << 40) + at as u64));
            }
            let Some(batch) = batches.next() else { break };
            let lr = match fit.length {
                Length::Epochs { .. } => fit.optim.lr_at(at, total),
                Length::Seconds(s) => {
                    let progress = self.trained() / s;
                    if progress >= 1.0 {
                        break;
                    }
                    fit.optim.lr_at_progress(progress)
                }
            };
            let out = autocast(self.precision, self.vs.device(), || step(batch))?;
            self.opt.set_lr(lr);
            self.opt.backward_step(&out.loss);
            let loss = finite_loss(&out.loss, &fit.title, epoch, at, lr)?;
            self.history.step_losses.push(loss);
            sums.add(loss, &out);
            window.add(loss, &out);
            in_epoch += 1;
            self.save_if_due(epoch, in_epoch, &sums, epoch_start)?;
            if let Some(tb) = self.tb.as_mut().filter(|_| window.steps == fit.log_every) {
                tb.add_scalar("loss/train", window.mean_loss(), at as i64 + 1)?;
                tb.add_scalar("learning_rate", lr, at as i64 + 1)?;
                window = Sums::default();
            }
            bar.tick(&format!("loss {:.4}{} lr {lr:.1e}", sums.mean_loss(), sums.acc_text()));
            if super::interrupt::requested() {
                bar.finish(&format!("loss {:.4}{} (stopped)", sums.mean_loss(), sums.acc_text()));
                let st = self.state(epoch, in_epoch, &sums, epoch_start);
                return Err(self.interrupted(Some(&st)));
            }
        }
        Ok(Epoch { sums, start: epoch_start, bar })
    }

    /// Saves the state when the run is resumable and its `every` has come.
    fn save_if_due(&mut self, epoch: i64, in_epoch: usize, sums: &Sums, epoch_start: f64) -> Result<()> {
        let Some(r) = &self.fit.resumable else { return Ok(()) };
        let due = match r.every {
            Every::Steps(n) => self.history.step_losses.len() - self.last_save.1 >= n.max(1),
            Every::Seconds(secs) => self.last_save.0.elapsed().as_secs_f64() >= secs,
        };
        if due {
            let st = self.state(epoch, in_epoch, sums, epoch_start);
            self.save(&st)?;
        }
        Ok(())
    }

    /// The state to save mid-epoch.
    fn state(&self, epoch: i64, in_epoch: usize, sums: &Sums, epoch_start: f64) -> RunState {
        RunState {
            epoch,
            in_epoch,
            optimizer_step: self.opt.step,
            history: self.history.clone(),
            sums: sums.clone(),
            seconds: self.trained(),
            epoch_start: Some(epoch_start),
        }
    }

    /// The error of a run stopped by the interrupt, after saving `state` when the run is
    /// resumable (`None`: the state saved at the end of the last epoch is the newest).
    fn interrupted(&mut self, state: Option<&RunState>) -> Error {
        let title = self.fit.title.clone();
        let steps = self.history.step_losses.len();
        let resume = match (&self.fit.resumable, state.map(|st| self.save(st))) {
            (_, Some(Err(e))) => format!("saving its state failed ({e}): running the cell again trains afresh"),
            (Some(r), _) => {
                format!(
                    "its state is saved in {}: run the cell again to continue from there (in a terminal: the same \
                     command)",
                    r.dir.display()
                )
            }
            (None, _) => "this run is not resumable: running the cell again trains afresh (a model made in an \
                          earlier cell keeps the weights it has now; variables this cell made are dropped with the \
                          error)"
                .to_string(),
        };
        Error::Interrupted { title, steps, resume }
    }

    fn save(&mut self, st: &RunState) -> Result<()> {
        if let Some(r) = &self.fit.resumable {
            state::save(self.vs, &self.opt, r, st)?;
            self.last_save = (Instant::now(), self.history.step_losses.len());
        }
        Ok(())
    }

    /// Closes an epoch: the evaluation's numbers to TensorBoard and the history, the state (the
    /// next epoch starts from it), the epoch's export.
    fn end_epoch(&mut self, epoch: i64, trained: Epoch, eval: Evaluation) -> Result<()> {
        let Epoch { sums, start: epoch_start, mut bar } = trained;
        let at = self.history.step_losses.len();
        if let Some(tb) = self.tb.as_mut() {
            for (tag, value) in [("loss/validation", eval.loss), ("accuracy/validation", eval.accuracy)] {
                if let Some(v) = value {
                    tb.add_scalar(tag, v, at as i64)?;
                }
            }
        }
        let stats = EpochStats {
            epoch,
            step: at,
            train_loss: sums.mean_loss(),
            train_acc: sums.accuracy(),
            val_loss: eval.loss,
            val_acc: eval.accuracy,
            seconds: self.trained() - epoch_start,
        };
        let val_loss = eval.loss.map_or(String::new(), |v| format!(" | validation loss {v:.4}"));
        let val_acc = eval.accuracy.map_or(String::new(), |v| format!(" | validation acc {v:.4}"));
        bar.finish(&format!("loss {:.4}{}{val_loss}{val_acc}", stats.train_loss, sums.acc_text()));
        self.history.epochs.push(stats);
        let st = RunState {
            epoch: epoch + 1,
            in_epoch: 0,
            optimizer_step: self.opt.step,
            history: self.history.clone(),
            sums: Sums::default(),
            seconds: self.trained(),
            epoch_start: Some(self.trained()),
        };
        self.save(&st)?;
        if let Some(ex) = &self.fit.exports {
            let dir = ex.dir.join(format!("epoch-{epoch}"));
            save_checkpoint(self.vs, &ex.config, &dir)?;
            write_atomic(&dir.join("history.json"), &serde_json::to_vec(&self.history)?)?;
        }
        Ok(())
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
