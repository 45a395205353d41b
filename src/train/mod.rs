//! Training: one loop for every model in the crate, and what it records.
//!
//! [`Fit`] is the core. It is generic over the batch: a caller gives it the batches of an epoch,
//! a function from a batch to its loss ([`Step`]), and an evaluation run after each epoch; the
//! core owns everything else — the crate's AdamW ([`adamw`]) and its schedule from one
//! [`OptimConfig`], gradient clipping, a check that the loss stays finite, the progress bar,
//! TensorBoard scalars, the run's state saved as it trains and continued after an interruption
//! ([`Fit::resumable`], [`state`]), and an export of the weights after each epoch. The image
//! classifier and the MAE ([`crate::tasks::images`]), the summarizer
//! ([`crate::tasks::summarization`]), the small GPT-2 ([`crate::tasks::language_model`]) and the
//! FaceNet embedding ([`crate::tasks::triplet`]) all train through it; this module knows no
//! model, data set or plot.
//!
//! Files: [`config`] (what a run is asked), [`history`] (what it records), [`fit`] (the loop),
//! [`state`] (what it saves to resume), [`adamw`], [`optim`] (schedules, clipping), [`precision`]
//! (bf16 autocast), [`checkpoint`] (weights with their config), [`tensorboard`], [`interrupt`]
//! (the notebook's stop button: a run stops between two steps, its state saved).

pub mod adamw;
pub mod checkpoint;
pub mod config;
pub mod fit;
pub mod history;
pub mod interrupt;
pub mod optim;
pub mod precision;
pub mod state;
pub mod tensorboard;

pub use checkpoint::{
    checkpoints_newest_first, latest_checkpoint, load_checkpoint, load_checkpoint_into, load_weights, save_checkpoint,
};
pub use config::{Every, ResumeConfig, TrainConfig};
pub use fit::{Exports, Fit, Length};
pub use history::{EpochStats, Evaluation, History, Step};
pub use hw9_env::progress::{self, Progress};
pub use optim::{OptimConfig, Schedule};
pub use precision::{autocast, Precision};
pub use state::Resumable;
