//! A summarizer fine-tuned from a pretrained causal LM (issue 31; notebook 2's optional section):
//! SmolLM2-135M-Instruct reads a document in its chat template (without the template's default
//! system line: 20 tokens fewer a document) and writes the synopsis as its answer. The pairs are
//! the committed Debian corpus' (`$HW9_SUMMARIZATION_DATA` is not read here). Decoder-only:
//! `<|im_start|>user\n{instruction}\n\n{document}<|im_end|>\n
//! <|im_start|>assistant\n{synopsis}<|im_end|>`, the loss on the synopsis' tokens only.
//!
//! **What is trained: the top layers.** On 2 CPU cores what costs is which layers gradients flow
//! through, not how many weights change: the 22 frozen layers run forward without recording
//! gradients and nothing flows back through them, so a step costs about 30 layers' forward plus
//! 8 layers' backward (≈ 2 forwards each): ~46 layer-forwards. LoRA on every layer must carry
//! gradients back through all 30 (≈ 1 forward each without weight gradients): ~60, 1.3× this.
//! LoRA on the top 8 only would cost what this costs and save ~1 MB instead of 113 MB; full
//! updates were kept because they need no adapter module (LoRA was not measured). The trained
//! layers are saved alone (about 14 MB a layer) and loaded over the base model's.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

use crate::data::corpus::{corpus_path, read_pairs, split, Pair};
use crate::data::tokenize::LlamaTokenizer;
use crate::error::{Error, Result};
use crate::io::write_atomic;
use crate::models::llama::Llama;
use crate::profile::Profile;
use crate::train::{
    load_checkpoint, save_checkpoint, Evaluation, Fit, OptimConfig, Precision, Progress, ResumeConfig, Schedule, Step,
};

/// The base model's folder name (`$HW9_LLAMA_DIR`'s, when set): a summarizer is loaded over the
/// base it was trained from, no other.
pub const BASE: &str = "smollm2-135m-instruct";

/// The instruction before each document.
pub const INSTRUCTION: &str = "Write the one-line synopsis of this Debian package description.";

/// What a fine-tuned summarizer is, beside its weights (`config.json` of its folder).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LmSummarizerConfig {
    /// The base model's folder name ([`BASE`] for SmolLM2-135M-Instruct).
    pub base: String,
    /// The top layers trained (and saved); the final norm is trained too.
    pub top_layers: usize,
    /// Documents are cut to this many tokens of the base model's tokenizer.
    pub max_doc_tokens: usize,
    /// Synopses are cut to this many tokens when training; generation stops there.
    pub max_summary_tokens: usize,
    /// The instruction before each document.
    pub instruction: String,
}

/// The fine-tuning run: notebook 2's optional section and `hw9 finetune-lm`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LmSummaryPlan {
    /// What is trained and how the prompt looks.
    pub model: LmSummarizerConfig,
    /// Wall-clock training budget in seconds.
    pub seconds: f64,
    /// A fixed number of steps instead of the time budget (tests: the same work on any machine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<usize>,
    /// Documents per step.
    pub batch_size: usize,
    /// Only the first this many training documents (all when `None`).
    pub max_train_docs: Option<usize>,
    /// AdamW and its schedule.
    pub optim: OptimConfig,
    /// Test documents the notebook scores it on (the first this many; `hw9 finetune-lm` scores
    /// 1,000 by default).
    pub rouge_docs: usize,
    /// Saves the run's state as it trains, so that running it again after an interruption trains
    /// for the rest of the budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<ResumeConfig>,
}

impl LmSummaryPlan {
    /// The plan for `profile`: 20 minutes in `cpu` and `full` (scored on 200 and 1,000 test
    /// documents), 10 seconds on 200 training documents in `quick` (the wiring only, 10 scored).
    pub fn for_profile(profile: Profile) -> Self {
        let (seconds, max_train_docs, rouge_docs) =
            profile.pick((10.0, Some(200), 10), (1200.0, None, 200), (1200.0, None, 1000));
        LmSummaryPlan {
            model: LmSummarizerConfig {
                base: BASE.into(),
                top_layers: 8,
                max_doc_tokens: 128,
                max_summary_tokens: 32,
                instruction: INSTRUCTION.into(),
            },
            seconds,
            max_steps: None,
            batch_size: 8,
            max_train_docs,
            rouge_docs,
            optim: OptimConfig { min_lr: 1e-6, ..OptimConfig::adamw(3e-4, (0.9, 0.999), 0.0) }
                .schedule(Schedule::WarmupCosine { warmup: 0.05 }),
            resume: None,
        }
    }

    /// Saves the state in `dir` every minute (see [`LmSummaryPlan::resume`]).
    pub fn resumable_in(&mut self, dir: impl Into<PathBuf>) {
        self.resume = Some(ResumeConfig { dir: dir.into(), every: crate::train::Every::Seconds(60.0), seed: 0 });
    }
}

/// A pretrained causal LM that summarizes: the base model with its top layers fine-tuned (or not,
/// as loaded by [`LmSummarizer::base`]).
pub struct LmSummarizer {
    /// The model (its top layers shared with `trained`).
    pub model: Llama,
    /// Its tokenizer.
    pub tok: LlamaTokenizer,
    /// The prompt and the layers trained.
    pub config: LmSummarizerConfig,
    /// Every weight of the model.
    pub vs: nn::VarStore,
    /// The top layers and the final norm: the same tensors as `vs`'s, the ones training updates
    /// and a checkpoint holds.
    pub trained: nn::VarStore,
    prefix: Vec<i64>,
    suffix: Vec<i64>,
    stop: Vec<i64>,
}

impl std::fmt::Debug for LmSummarizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LmSummarizer").field("config", &self.config).finish_non_exhaustive()
    }
}

impl LmSummarizer {
    /// The base model (SmolLM2-135M-Instruct, or `$HW9_LLAMA_DIR`) as `config` prompts it, before
    /// any fine-tuning.
    pub fn base(config: &LmSummarizerConfig, device: Device) -> Result<Self> {
        let dir = crate::models::llama::default_llama_dir();
        let here = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if here != config.base {
            return Err(Error::Input(format!(
                "LmSummarizer: expected the base model {:?}, got {} ({} is set to another model: unset it, or \
                 train a summarizer from this one)",
                config.base,
                dir.display(),
                if std::env::var_os("HW9_LLAMA_DIR").is_some() { "HW9_LLAMA_DIR" } else { "the default folder" }
            )));
        }
        let (vs, model, tok) = crate::models::llama::load_default(device)?;
        let layers = model.cfg.num_hidden_layers as usize;
        if config.top_layers > layers {
            return Err(Error::Input(format!(
                "LmSummarizer: top_layers must be at most the model's {layers} layers, got {}",
                config.top_layers
            )));
        }
        if config.max_doc_tokens == 0 || config.max_summary_tokens == 0 {
            return Err(Error::Input(format!(
                "LmSummarizer: expected max_doc_tokens and max_summary_tokens ≥ 1, got {} and {}",
                config.max_doc_tokens, config.max_summary_tokens
            )));
        }
        // The trained tensors, registered a second time under their own names in a store of their
        // own: the same storage as the model's (training them trains the model).
        let trained = nn::VarStore::new(device);
        let first = layers - config.top_layers;
        for (name, t) in vs.variables() {
            let top = name
                .strip_prefix("model.layers.")
                .and_then(|rest| rest.split('.').next())
                .and_then(|i| i.parse::<usize>().ok())
                .is_some_and(|i| i >= first);
            if top || name == "model.norm.weight" {
                let mut parts: Vec<&str> = name.split('.').collect();
                let last = parts.pop().unwrap_or_default();
                let path = parts.iter().fold(trained.root(), |p, part| p / *part);
                let _ = path.add(last, t.shallow_clone(), true);
            }
        }
        let ids = |text: &str| tok.encode(text).map(|(ids, _)| ids);
        let prefix = ids(&format!("<|im_start|>user\n{}\n\n", config.instruction))?;
        let suffix = ids("<|im_end|>\n<|im_start|>assistant\n")?;
        let stop = tok.stop_ids();
        if stop.is_empty() {
            return Err(Error::Input("LmSummarizer: the tokenizer has no <|im_end|> to end a synopsis".into()));
        }
        if (prefix.len() + config.max_doc_tokens + suffix.len() + config.max_summary_tokens) as i64
            > model.cfg.max_position_embeddings
        {
            return Err(Error::Input(format!(
                "LmSummarizer: a prompt of {} tokens ({} of instruction and template, {} of document) and {} of \
                 synopsis exceeds the model's context of {}",
                prefix.len() + suffix.len() + config.max_doc_tokens,
                prefix.len() + suffix.len(),
                config.max_doc_tokens,
                config.max_summary_tokens,
                model.cfg.max_position_embeddings
            )));
        }
        Ok(LmSummarizer { model, tok, config: config.clone(), vs, trained, prefix, suffix, stop })
    }

    /// A fine-tuned summarizer saved by [`fine_tune`] (`config.json` and the trained layers'
    /// `model.safetensors`), over the base model.
    pub fn load(dir: &Path, device: Device) -> Result<Self> {
        if !dir.join("config.json").exists() || !dir.join("model.safetensors").exists() {
            return Err(Error::Input(format!(
                "no fine-tuned summarizer in {}: expected config.json and model.safetensors there (make one with \
                 `cargo run --release -- finetune-lm`, or notebook 2's fine_tune_here = true)",
                dir.display()
            )));
        }
        let config: LmSummarizerConfig = crate::io::read_config(dir)?;
        let s = Self::base(&config, device)?;
        load_checkpoint(&s.trained, &config, dir)?;
        Ok(s)
    }

    /// The layer training starts from (the ones below are frozen).
    fn trained_from(&self) -> usize {
        self.model.cfg.num_hidden_layers as usize - self.config.top_layers
    }

    /// The prompt's ids for `document`, cut to `max_doc_tokens` of it.
    pub fn prompt_ids(&self, document: &str) -> Result<Vec<i64>> {
        let (mut doc, _) = self.tok.encode(document)?;
        doc.truncate(self.config.max_doc_tokens);
        Ok([self.prefix.as_slice(), &doc, &self.suffix].concat())
    }

    /// One training example: `(input ids, labels)` of one length, the labels −1 except on the
    /// synopsis' tokens and the closing `<|im_end|>` (each the id that follows its position).
    pub fn example(&self, pair: &Pair) -> Result<(Vec<i64>, Vec<i64>)> {
        let prompt = self.prompt_ids(&pair.document)?;
        let (mut target, _) = self.tok.encode(pair.summary.trim())?;
        target.truncate(self.config.max_summary_tokens.saturating_sub(1));
        target.push(self.stop[0]);
        let full = [prompt.as_slice(), &target].concat();
        let input = full[..full.len() - 1].to_vec();
        let labels = (1..full.len()).map(|i| if i >= prompt.len() { full[i] } else { -1 }).collect();
        Ok((input, labels))
    }

    /// A batch of examples, right-padded (causal attention: no real token sees the padding, whose
    /// labels are −1): `(input_ids, labels)`, `(B, T)` each.
    fn batch(&self, examples: &[(Vec<i64>, Vec<i64>)]) -> (Tensor, Tensor) {
        let t = examples.iter().map(|e| e.0.len()).max().unwrap_or(1);
        let pad = self.stop[0];
        let (mut ids, mut labels) = (Vec::with_capacity(examples.len() * t), Vec::with_capacity(examples.len() * t));
        for (x, y) in examples {
            ids.extend(x.iter().copied().chain(std::iter::repeat_n(pad, t - x.len())));
            labels.extend(y.iter().copied().chain(std::iter::repeat_n(-1, t - y.len())));
        }
        let shape = [examples.len() as i64, t as i64];
        let device = self.vs.device();
        (
            Tensor::from_slice(&ids).reshape(shape).to_device(device),
            Tensor::from_slice(&labels).reshape(shape).to_device(device),
        )
    }

    /// The mean loss on the synopses of `examples` (no gradients).
    pub fn loss(&self, examples: &[(Vec<i64>, Vec<i64>)]) -> Result<f64> {
        if examples.is_empty() {
            return Err(Error::Input("LmSummarizer::loss: expected at least one example, got none".into()));
        }
        if let Some((i, (x, y))) = examples.iter().enumerate().find(|(_, (x, y))| x.len() != y.len() || x.is_empty()) {
            return Err(Error::Input(format!(
                "LmSummarizer::loss: example {i}: expected ids and labels of one non-zero length, got {} and {}",
                x.len(),
                y.len()
            )));
        }
        let (ids, labels) = self.batch(examples);
        Ok(tch::no_grad(|| self.model.lm_loss(&ids, &labels, self.model.cfg.num_hidden_layers as usize))?
            .double_value(&[]))
    }

    /// The greedy synopsis of one document.
    pub fn summarize(&self, document: &str) -> Result<String> {
        if document.trim().is_empty() {
            return Err(Error::Input("LmSummarizer::summarize: expected a document, got an empty one".into()));
        }
        let prompt = self.prompt_ids(document)?;
        let out = self.model.generate(&prompt, self.config.max_summary_tokens, &self.stop)?;
        Ok(self.tok.decode(&out.ids)?.trim().to_string())
    }
}

/// What [`fine_tune`] did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LmTrainReport {
    /// Optimizer steps taken (a resumed run: before and after the interruption).
    pub steps: usize,
    /// Training documents seen by this call.
    pub documents: usize,
    /// Tokens through the model by this call (padding included).
    pub tokens: usize,
    /// Training wall time of this call (a resumed run: the part it trained).
    pub seconds: f64,
    /// Mean loss of the first 20 steps and of the last 20.
    pub first_loss: f64,
    /// See `first_loss`.
    pub final_loss: f64,
    /// The synopsis loss on validation documents, before and after.
    pub validation_before: f64,
    /// See `validation_before`.
    pub validation_after: f64,
}

/// Fine-tunes `plan`'s top layers on the corpus' training split for `plan.seconds` (documents in a
/// random order, batches of similar lengths), then saves the trained layers to `out`
/// (`config.json`, `model.safetensors`, `training.json`). With `plan.resume` the state is saved
/// every minute and a run started again trains for the rest of the budget.
pub fn fine_tune(plan: &LmSummaryPlan, out: &Path, device: Device) -> Result<(LmSummarizer, LmTrainReport)> {
    let s = LmSummarizer::base(&plan.model, device)?;
    let pairs = read_pairs(&corpus_path())?;
    let train: Vec<&Pair> =
        split(&pairs, "train").into_iter().take(plan.max_train_docs.unwrap_or(usize::MAX)).collect();
    let val: Vec<&Pair> = split(&pairs, "validation").into_iter().take(64).collect();
    if train.is_empty() || val.is_empty() {
        return Err(Error::Input("fine_tune: expected training and validation pairs in the corpus, got none".into()));
    }
    let val_examples = val.iter().map(|p| s.example(p)).collect::<Result<Vec<_>>>()?;
    let val_loss = |s: &LmSummarizer| -> Result<f64> {
        let losses = val_examples.chunks(16).map(|c| s.loss(c)).collect::<Result<Vec<_>>>()?;
        Ok(losses.iter().sum::<f64>() / losses.len() as f64)
    };
    let validation_before = val_loss(&s)?;
    println!("{}: synopsis loss on {} validation documents before: {validation_before:.4}", plan.model.base, val.len());
    if plan.batch_size == 0 {
        return Err(Error::Input("fine_tune: expected a batch size ≥ 1, got 0".into()));
    }
    let b = plan.batch_size;
    // Tokenized once, before the clock starts (about 12 s for the whole split on 2 cores).
    let examples = train.iter().map(|p| s.example(p)).collect::<Result<Vec<_>>>()?;
    let counts = std::cell::Cell::new((0usize, 0usize));
    // The documents in a random order (libtorch's generator, which the run seeds before each step,
    // so a resumed run draws the same), taken 32 batches at a time and sorted by length within, so
    // a batch carries little padding; a new order for each pass over the split, without end (the
    // time budget or `max_steps` ends the run).
    let examples = &examples;
    let batches = |_epoch: i64| {
        (0..).flat_map(move |_pass| {
            // A pass's order: Fisher–Yates from a seed drawn from libtorch's seeded generator.
            let seed = Tensor::randint(i64::MAX, [1], (Kind::Int64, Device::Cpu)).int64_value(&[0]) as u64;
            let mut order: Vec<usize> = (0..examples.len()).collect();
            for i in (1..order.len()).rev() {
                order.swap(i, (crate::rng::stream(seed, i as u64) % (i as u64 + 1)) as usize);
            }
            let mut groups: Vec<Vec<usize>> = Vec::new();
            for chunk in order.chunks(32 * b) {
                let mut pool = chunk.to_vec();
                pool.sort_by_key(|&i| examples[i].0.len());
                groups.extend(pool.chunks(b).map(<[usize]>::to_vec));
            }
            groups.into_iter().map(move |g| g.iter().map(|&i| examples[i].clone()).collect::<Vec<_>>())
        })
    };
    let trained_from = s.trained_from();
    let step = |batch: Vec<(Vec<i64>, Vec<i64>)>| {
        let (ids, labels) = s.batch(&batch);
        let (docs, tokens) = counts.get();
        counts.set((docs + batch.len(), tokens + ids.numel()));
        Ok(Step { loss: s.model.lm_loss(&ids, &labels, trained_from)?, weight: 1.0, correct: None })
    };
    let start = Instant::now();
    let title = format!("{} fine-tuned", plan.model.base);
    let fit = match plan.max_steps {
        Some(n) => Fit::epochs(title, 1, n, &plan.optim),
        None => Fit::seconds(title, plan.seconds, &plan.optim),
    };
    let fit = fit.precision(Precision::requested(Precision::Fp32)?).resumable_in(
        plan.resume.as_ref(),
        &s.trained,
        &LmSummaryPlan { resume: None, ..plan.clone() },
    )?;
    let steps = plan.max_steps.unwrap_or(usize::MAX);
    let history = fit.run(&s.trained, |e| batches(e).take(steps), step, || Ok(Evaluation::default()))?;
    let seconds = start.elapsed().as_secs_f64();
    if history.step_losses.is_empty() {
        let budget = match plan.max_steps {
            Some(n) => format!("max_steps {n}"),
            None => format!("{} s", plan.seconds),
        };
        return Err(Error::Input(format!(
            "fine_tune: no step was trained with a budget of {budget}: expected a budget of at least one step"
        )));
    }
    let losses = &history.step_losses;
    let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len().max(1) as f64;
    let validation_after = val_loss(&s)?;
    let (documents, tokens) = counts.get();
    let report = LmTrainReport {
        steps: losses.len(),
        documents,
        tokens,
        seconds,
        first_loss: mean(&losses[..losses.len().min(20)]),
        final_loss: mean(&losses[losses.len().saturating_sub(20)..]),
        validation_before,
        validation_after,
    };
    println!(
        "{}: {} steps, {} documents, {:.0} tokens/s; synopsis loss on validation {:.4} -> {:.4}",
        plan.model.base,
        report.steps,
        report.documents,
        report.tokens as f64 / report.seconds.max(1e-9),
        validation_before,
        validation_after
    );
    save_checkpoint(&s.trained, &plan.model, out)?;
    write_atomic(&out.join("training.json"), &serde_json::to_vec_pretty(&report)?)?;
    Ok((s, report))
}

/// The fine-tuned summarizer's greedy synopses of the first `n` test documents and their mean
/// ROUGE-1/2/L F1 (the project's ROUGE, as [`super::summarization::test_rouge`] scores the other
/// models on the same documents), with a progress bar.
pub fn test_rouge(s: &LmSummarizer, test_pairs: &[Pair], n: usize) -> Result<(Vec<String>, (f64, f64, f64))> {
    let pairs = &test_pairs[..n.min(test_pairs.len())];
    let mut bar = Progress::new(format!("ROUGE ({})", s.config.base), pairs.len() as u64);
    let _armed = crate::train::interrupt::arm();
    let mut predictions = Vec::with_capacity(pairs.len());
    for p in pairs {
        if crate::train::interrupt::requested() {
            return Err(Error::Interrupted {
                title: "summaries".into(),
                steps: predictions.len(),
                resume: "nothing is kept of an evaluation: run the cell (in a terminal: the command) again to evaluate from the start".into(),
            });
        }
        predictions.push(s.summarize(&p.document)?);
        bar.tick("");
    }
    let r = crate::tasks::rouge::corpus_f1(
        predictions.iter().map(String::as_str).zip(pairs.iter().map(|p| p.summary.as_str())),
    );
    bar.finish(&format!("ROUGE-1 {:.4} ROUGE-2 {:.4} ROUGE-L {:.4}", r.0, r.1, r.2));
    Ok((predictions, r))
}

/// Where `hw9 finetune-lm` saves the fine-tuned summarizer by default: `build/lm-summarizer` of
/// the repository (notebook 2 looks there too).
pub fn default_dir() -> PathBuf {
    crate::paths::root().join("build/lm-summarizer")
}
