//! Every notebook's sizes and budgets per compute profile (`HW9_PROFILE=quick|cpu|full`), in one
//! place: [`VitMaePlan`] (notebook 1), [`SummarizationPlan`] (notebook 2), [`GptPlan`] (the
//! small GPT-2 notebook 3 looks inside) and [`FacenetPlan`] (notebook 4). `quick` proves the wiring in seconds, `cpu` reaches real
//! quality on 2 cores, `full` is the original homework's sizes (for a GPU).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::data::images::{fashion_mnist_dir, load_fashion_mnist, Splits};
use crate::data::text::TextSizes;
use crate::error::{Error, Result};
use crate::models::decoding::DecodeConfig;
use crate::models::facenet::{FacenetConfig, Mining};
use crate::models::gpt2::Gpt2Config;
use crate::models::mae::MaeConfig;
use crate::models::summarizer::SummarizerConfig;
use crate::models::vit::{EncoderConfig, VitConfig};
use crate::profile::Profile;
use crate::train::{OptimConfig, ResumeConfig, Schedule, TrainConfig};

/// Notebook 1's models, training stages and data subset for one profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VitMaePlan {
    /// The ViT.
    pub vit: VitConfig,
    /// The MAE.
    pub mae: MaeConfig,
    /// Training the ViT.
    pub vit_train: TrainConfig,
    /// Pretraining the MAE.
    pub mae_train: TrainConfig,
    /// The linear probe on the frozen MAE.
    pub probe_train: TrainConfig,
    /// Finetuning the MAE with a head.
    pub finetune_train: TrainConfig,
    /// `(train, test)` images kept, or `None` for all of them.
    pub subset: Option<(i64, i64)>,
    /// The accuracy thresholds checked in the notebook: ViT, linear probe, finetune.
    pub thresholds: (f64, f64, f64),
}

impl VitMaePlan {
    /// The plan for `profile`.
    pub fn for_profile(profile: Profile) -> Self {
        let enc = |d, l, f| EncoderConfig { d_model: d, n_heads: 4, n_layers: l, d_ffn: f };
        let fmnist =
            |p, e: EncoderConfig| VitConfig { image_size: 28, channels: 1, patch_size: p, encoder: e, n_classes: 10 };
        let mae = |p, e: EncoderConfig, d: EncoderConfig| MaeConfig {
            image_size: 28,
            channels: 1,
            patch_size: p,
            encoder: e,
            decoder: d,
            mask_ratio: 0.75,
        };
        let adamw = |epochs, lr, wd| TrainConfig::adamw(epochs, 128, lr, wd);
        let cosine =
            |t: TrainConfig| TrainConfig { optim: t.optim.schedule(Schedule::WarmupCosine { warmup: 0.05 }), ..t };
        match profile {
            Profile::Quick => VitMaePlan {
                vit: fmnist(4, enc(32, 2, 64)),
                mae: mae(4, enc(32, 2, 64), enc(16, 1, 32)),
                vit_train: adamw(1, 1e-3, 0.01),
                mae_train: adamw(1, 1e-3, 0.05),
                probe_train: adamw(1, 1e-3, 0.01),
                finetune_train: adamw(1, 1e-3, 0.01),
                subset: Some((1024, 512)),
                thresholds: (0.0, 0.0, 0.0),
            },
            // Sized for under 10 minutes on 2 cores; warmup + cosine decay gets more out of few
            // epochs. Patches of 7×7 pixels (16 per image) train ~3× faster than 4×4 (49) to the
            // same ViT accuracy (0.8795 against 0.8793 after 5 epochs, BENCHMARKS.md).
            Profile::Cpu => VitMaePlan {
                vit: fmnist(7, enc(128, 4, 256)),
                mae: mae(7, enc(128, 4, 256), enc(64, 2, 128)),
                vit_train: cosine(adamw(5, 1e-3, 0.01)),
                mae_train: cosine(adamw(5, 1e-3, 0.05)),
                probe_train: cosine(adamw(3, 1e-3, 0.01)),
                finetune_train: cosine(adamw(5, 3e-4, 0.01)),
                subset: None,
                // Each below the worst correct run by at least the runs' whole range (BENCHMARKS.md,
                // "Thresholds over seeds": 10 seed runs, seeds 0–4 × reference and an independent
                // implementation, and the notebook's own runs): ViT 0.868–0.882, probe 0.732–0.749,
                // finetune 0.865–0.884 (a range of 0.019: 0.85 sat 0.015 under the worst run).
                thresholds: (0.85, 0.70, 0.84),
            },
            Profile::Full => VitMaePlan {
                vit: VitConfig::fashion_mnist_full(),
                mae: MaeConfig::fashion_mnist_full(),
                vit_train: adamw(10, 1e-3, 0.01),
                mae_train: adamw(20, 1e-4, 0.05),
                probe_train: adamw(20, 1e-4, 0.01),
                finetune_train: adamw(20, 1e-4, 0.01),
                subset: None,
                // One grading spec for both graded profiles: the cpu profile's thresholds.
                thresholds: (0.85, 0.70, 0.84),
            },
        }
    }

    /// Fashion-MNIST as installed by setup, cut to this plan's subset.
    pub fn data(&self) -> Result<Splits> {
        fashion_mnist(self.subset)
    }

    /// Makes every stage resumable: each saves its state under `dir` every minute of training
    /// ([`ResumeConfig::every_minute`]) and, run again after an interrupted or crashed kernel,
    /// continues from it; a finished stage run again loads its trained weights at once.
    pub fn resumable_in(&mut self, dir: impl Into<PathBuf>, profile: Profile) {
        let r = ResumeConfig::every_minute(dir, profile);
        for t in [&mut self.vit_train, &mut self.mae_train, &mut self.probe_train, &mut self.finetune_train] {
            t.resume = Some(r.clone());
        }
    }
}

/// Notebook 2's model, training and data sizes for one profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SummarizationPlan {
    /// The model's sizes.
    pub model: SummarizerConfig,
    /// Epochs, batches and the optimizer (original: AdamW at 1e-4, 2 epochs).
    pub train: TrainConfig,
    /// How the data is cut: truncation lengths (original: 1024 and 128 tokens) and the pairs
    /// kept of each split.
    pub data: TextSizes,
    /// Test documents summarized for ROUGE.
    pub rouge_docs: usize,
    /// Beam search for the samples and ROUGE.
    pub beam: DecodeConfig,
    /// What the notebook grades after the last epoch: the validation loss at most `.0`, the
    /// validation accuracy at least `.1`.
    pub expected: (f64, f64),
}

impl SummarizationPlan {
    /// Makes the training resumable: it saves its state under `dir` every minute of training
    /// ([`ResumeConfig::every_minute`]) and, run again after an interrupted or crashed kernel,
    /// continues from it mid-epoch (AdamW's moments included); a finished run loads at once.
    pub fn resumable_in(&mut self, dir: impl Into<PathBuf>, profile: Profile) {
        self.train.resume = Some(ResumeConfig::every_minute(dir, profile));
    }

    /// The plan for `profile`, for a tokenizer of `vocab_size` ids.
    pub fn for_profile(profile: Profile, vocab_size: i64) -> Self {
        // AdamW (0.9, 0.999), weight decay 0.01, linear warmup over 10 % of the steps then linear
        // decay (the Hugging Face trainer's schedule), gradients clipped to norm 1.
        let train = |epochs, lr| TrainConfig {
            epochs,
            batch_size: 16,
            optim: OptimConfig::adamw(lr, (0.9, 0.999), 0.01)
                .schedule(Schedule::WarmupLinear { warmup: 0.1 })
                .clip(1.0),
            augment: false,
            label_smoothing: 0.0,
            resume: None,
        };
        match profile {
            Profile::Quick => SummarizationPlan {
                model: SummarizerConfig {
                    d_model: 64,
                    n_heads: 2,
                    encoder_layers: 1,
                    decoder_layers: 1,
                    d_ffn: 128,
                    ..SummarizerConfig::cpu(vocab_size)
                },
                train: train(2, 1e-3),
                data: TextSizes { max_src: 64, max_tgt: 24, subset: Some((512, 64, 16)) },
                rouge_docs: 16,
                beam: DecodeConfig::beam(2, 16, 1.0),
                expected: (1e9, 0.0), // the quick profile proves the wiring only
            },
            // The small model learns faster with a larger peak rate than the original's 1e-4.
            Profile::Cpu => SummarizationPlan {
                model: SummarizerConfig::cpu(vocab_size),
                train: train(2, 5e-4),
                data: TextSizes { max_src: 96, max_tgt: 32, subset: None },
                rouge_docs: 1000,
                beam: DecodeConfig::beam(4, 32, 1.0),
                // Measured after 2 epochs: validation loss 4.84–4.86, accuracy 0.25–0.26 (BENCHMARKS.md).
                expected: (5.1, 0.24),
            },
            Profile::Full => SummarizationPlan {
                model: SummarizerConfig::full(vocab_size),
                train: train(2, 1e-4),
                data: TextSizes { max_src: 1024, max_tgt: 128, subset: None },
                rouge_docs: usize::MAX,
                beam: DecodeConfig::beam(4, 64, 1.0),
                // Not measured at these sizes (a GPU run): the cpu profile's bounds, which the
                // larger model should meet.
                expected: (5.1, 0.24),
            },
        }
    }
}

/// The small GPT-2 of notebook 3 (`hw9 train-gpt`): its size, budget and optimizer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GptPlan {
    /// The model: GPT-2's vocabulary, 4 layers × 4 heads, d 128, 128 positions.
    pub model: Gpt2Config,
    /// Wall-clock training budget in seconds.
    pub seconds: f64,
    /// Windows of `n_positions + 1` tokens per batch.
    pub batch_size: i64,
    /// Only the first this many training documents (all when `None`).
    pub max_docs: Option<usize>,
    /// AdamW (0.9, 0.95), weight decay 0.1, peak 1e-3, warmup over 5 % of the time then cosine
    /// decay to 1e-5.
    pub optim: OptimConfig,
    /// Saves the run's state as it trains, so that running it again after an interruption trains
    /// for the rest of the budget instead of from the start ([`GptPlan::resumable_in`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<ResumeConfig>,
}

impl GptPlan {
    /// The plan for `profile`: 8 seconds on 300 documents in `quick` (the wiring only), 10
    /// minutes on the whole training split otherwise.
    pub fn for_profile(profile: Profile) -> Self {
        let (seconds, max_docs) = profile.pick((8.0, Some(300)), (600.0, None), (600.0, None));
        GptPlan {
            model: Gpt2Config::small(),
            seconds,
            batch_size: 16,
            max_docs,
            optim: OptimConfig {
                min_lr: 1e-5,
                ..OptimConfig::adamw(1e-3, (0.9, 0.95), 0.1).schedule(Schedule::WarmupCosine { warmup: 0.05 })
            },
            resume: None,
        }
    }

    /// Makes the training resumable: its state (weights, AdamW's moments, the training time
    /// spent: about 80 MB) is saved under `dir` every minute and when the budget is spent; run
    /// again after an interruption, it trains for the rest of its budget. (Every minute in the
    /// `quick` profile too: its 8-second run saves once, at its end.)
    pub fn resumable_in(&mut self, dir: impl Into<PathBuf>) {
        self.resume = Some(ResumeConfig { dir: dir.into(), every: crate::train::Every::Seconds(60.0), seed: 0 });
    }
}

/// Notebook 4's embedding network, training runs, experiments and evaluation for one profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FacenetPlan {
    /// The network (a 128-d embedding, as the paper's).
    pub model: FacenetConfig,
    /// The main run: semi-hard triplets on the whole training set.
    pub train: TripletTrain,
    /// Each experiment's run (dimensionality, data size, selection): shorter, all on one budget.
    pub experiment: TripletTrain,
    /// Embedding sizes compared (the paper's table 5).
    pub dims: Vec<i64>,
    /// Shares of the training set compared (the paper's table 6 spans 100×: 2.6 M to 260 M images).
    pub fractions: Vec<f64>,
    /// What the evaluation uses.
    pub eval: EvalSizes,
    /// `(train, test)` images kept, or `None` for all of them.
    pub subset: Option<(i64, i64)>,
    /// The thresholds the main run must meet: VAL at FAR 1e-3, nearest-neighbour accuracy,
    /// k-means purity.
    pub thresholds: (f64, f64, f64),
}

impl FacenetPlan {
    /// The plan for `profile`: `cpu` trains 2,000 batches of 10 classes × 16 images (about 3
    /// minutes on 2 cores) and each experiment 300.
    pub fn for_profile(profile: Profile) -> Self {
        let optim = OptimConfig::adamw(1e-3, (0.9, 0.999), 1e-4).schedule(Schedule::WarmupCosine { warmup: 0.05 });
        let run = |epochs, steps_per_epoch| TripletTrain {
            epochs,
            steps_per_epoch,
            classes_per_batch: 10,
            per_class: 16,
            margin: 0.2,
            mining: Mining::SemiHard,
            fraction: 1.0,
            optim: optim.clone(),
            resume: None,
        };
        // Ten k-means restarts (best inertia): purity moves less with where a start fell.
        let eval = |test, gallery| EvalSizes { test, gallery, target_far: 1e-3, kmeans_restarts: 10 };
        match profile {
            Profile::Quick => FacenetPlan {
                model: FacenetConfig { channels: 1, widths: vec![8, 16], embedding_dim: 32 },
                train: run(1, 20),
                experiment: run(1, 5),
                dims: vec![8, 32],
                fractions: vec![0.3, 1.0],
                eval: eval(300, 600),
                subset: Some((1200, 300)),
                thresholds: (0.0, 0.0, 0.0),
            },
            Profile::Cpu | Profile::Full => FacenetPlan {
                model: FacenetConfig::fashion_mnist(),
                train: run(4, 500),
                experiment: run(1, 300),
                dims: vec![16, 32, 64, 128],
                fractions: vec![0.01, 0.1, 1.0],
                eval: eval(2000, 10_000),
                subset: None,
                // Each below the worst of 10 runs (5 seeds, the reference and an independent
                // implementation) by at least their whole range: VAL 0.354–0.379, nearest-neighbour
                // accuracy 0.884–0.898, purity 0.906–0.911 (BENCHMARKS.md, "Thresholds over seeds").
                thresholds: (0.25, 0.86, 0.80),
            },
        }
    }

    /// Makes the main training and every experiment resumable: each run saves its state under
    /// `dir` every minute of training ([`ResumeConfig::every_minute`]) and, run again after an
    /// interrupted or crashed kernel, continues from it.
    pub fn resumable_in(&mut self, dir: impl Into<PathBuf>, profile: Profile) {
        let r = ResumeConfig::every_minute(dir, profile);
        self.train.resume = Some(r.clone());
        self.experiment.resume = Some(r);
    }

    /// Fashion-MNIST as installed by setup, cut to this plan's subset.
    pub fn data(&self) -> Result<Splits> {
        fashion_mnist(self.subset)
    }
}

/// Fashion-MNIST as installed by setup, cut to `(train, test)` images when given.
fn fashion_mnist(subset: Option<(i64, i64)>) -> Result<Splits> {
    let data = load_fashion_mnist(&fashion_mnist_dir())?;
    Ok(match subset {
        Some((train, test)) => data.truncate(train, test),
        None => data,
    })
}

/// One triplet-training run's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TripletTrain {
    /// Passes of `steps_per_epoch` batches; the embedding is evaluated after each.
    pub epochs: i64,
    /// Batches per epoch.
    pub steps_per_epoch: usize,
    /// `P`: classes (identities) per batch.
    pub classes_per_batch: i64,
    /// `K`: images per class in a batch.
    pub per_class: i64,
    /// The margin α between positive and negative squared distances.
    pub margin: f64,
    /// How triplets are chosen in a batch.
    pub mining: Mining,
    /// The share of the training set used (the paper's data-size experiment): the first
    /// `fraction · N` images of a fixed shuffle.
    pub fraction: f64,
    /// AdamW and its schedule.
    pub optim: OptimConfig,
    /// Saves the run's state as it trains, to continue after an interrupt or a crash
    /// ([`crate::train::Fit::resumable_in`]); `None`: nothing saved mid-run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<ResumeConfig>,
}

impl TripletTrain {
    /// Images per batch: `P · K`.
    pub fn batch_size(&self) -> i64 {
        self.classes_per_batch * self.per_class
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        if self.per_class < 2 || self.classes_per_batch < 2 || !(self.fraction > 0.0 && self.fraction <= 1.0) {
            return Err(Error::Config(format!(
                "triplet training: expected at least 2 classes per batch, at least 2 images per class (an anchor \
                 needs a positive) and a fraction in (0, 1]; got P = {}, K = {}, fraction = {}",
                self.classes_per_batch, self.per_class, self.fraction
            )));
        }
        Ok(())
    }
}

/// How much of the data notebook 4's evaluation uses
/// ([`crate::tasks::verification::evaluate_embedding`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalSizes {
    /// Held-out (test) images: their pairs are verified, they are clustered and identified.
    pub test: i64,
    /// Training images in the identification gallery.
    pub gallery: i64,
    /// The false accept rate VAL is read at (the paper: 1e-3).
    pub target_far: f64,
    /// k-means restarts.
    pub kmeans_restarts: usize,
}

/// The summarizer step benchmark's `(size, source tokens, summary tokens)` (`hw9 bench-summarizer`,
/// tools/bench_torch_summarizer.py through `hw9 plan`): the `cpu` profile's documents (96 tokens)
/// and `full`'s halved (512), with short summaries.
pub const SUMMARIZER_BENCH_LENGTHS: [(&str, i64, i64); 2] = [("cpu", 96, 16), ("full", 512, 64)];
