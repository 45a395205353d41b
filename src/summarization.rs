//! Notebook 2's pipeline around the [`Summarizer`]: sizes per profile, the data, training with
//! evaluation after each epoch, TensorBoard curves, a checkpoint each epoch and resuming from
//! one, and ROUGE of generated summaries.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Tensor};

use crate::corpus::{corpus_path, read_pairs, split, Pair};
use crate::decoding::{generate, DecodeConfig};
use crate::error::{Error, Result};
use crate::plot::LineChart;
use crate::profile::Profile;
use crate::seq2seq::{batch_indices, read_hf_jsonl, tokenize, Batch, Example, SubwordTokenizer, EOS};
use crate::summarizer::{Summarizer, SummarizerConfig};
use crate::tensorboard::SummaryWriter;
use crate::train::{load_checkpoint, save_checkpoint, Progress, Schedule};

/// How the summarizer trains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seq2SeqTrainConfig {
    pub epochs: i64,
    pub batch_size: usize,
    /// AdamW's peak learning rate (original: 1e-4).
    pub lr: f64,
    /// AdamW's weight decay (original: 0.01).
    pub weight_decay: f64,
    /// Warmup and decay of the learning rate (original: linear warmup over 10 % of steps, then
    /// linear decay, as the Hugging Face trainer does).
    pub schedule: Schedule,
    /// Gradients are clipped to this global norm (the Hugging Face trainer's default, 1.0).
    pub clip_norm: f64,
    /// Documents are truncated to this many tokens, EOS included (original: 1024).
    pub max_src: usize,
    /// Summaries are truncated to this many tokens, EOS included (original: 128).
    pub max_tgt: usize,
}

/// Notebook 2's model, training and data sizes for one profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SummarizationPlan {
    pub model: SummarizerConfig,
    pub train: Seq2SeqTrainConfig,
    /// `(train, validation, test)` pairs kept, or `None` for all of them.
    pub subset: Option<(usize, usize, usize)>,
    /// Test documents summarized for ROUGE.
    pub rouge_docs: usize,
    /// Beam search for the samples and ROUGE.
    pub beam: DecodeConfig,
}

impl SummarizationPlan {
    /// The plan for `profile`, for a tokenizer of `vocab_size` ids.
    pub fn for_profile(profile: Profile, vocab_size: i64) -> Self {
        let train = |epochs, lr, max_src, max_tgt| Seq2SeqTrainConfig { epochs, batch_size: 16, lr, weight_decay: 0.01, schedule: Schedule::WarmupLinear { warmup: 0.1 }, clip_norm: 1.0, max_src, max_tgt };
        match profile {
            Profile::Quick => SummarizationPlan {
                model: SummarizerConfig { d_model: 64, n_heads: 2, encoder_layers: 1, decoder_layers: 1, d_ffn: 128, ..SummarizerConfig::cpu(vocab_size) },
                train: train(2, 1e-3, 64, 24),
                subset: Some((512, 64, 16)),
                rouge_docs: 16,
                beam: DecodeConfig::beam(2, 16, 1.0),
            },
            // The small model learns faster with a larger peak rate than the original's 1e-4.
            Profile::Cpu => SummarizationPlan {
                model: SummarizerConfig::cpu(vocab_size),
                train: train(2, 5e-4, 96, 32),
                subset: None,
                rouge_docs: 1000,
                beam: DecodeConfig::beam(4, 32, 1.0),
            },
            Profile::Full => SummarizationPlan {
                model: SummarizerConfig::full(vocab_size),
                train: train(2, 1e-4, 1024, 128),
                subset: None,
                rouge_docs: usize::MAX,
                beam: DecodeConfig::beam(4, 64, 1.0),
            },
        }
    }
}

/// The tokenized splits and their texts.
#[derive(Debug)]
pub struct SummaryData {
    pub tokenizer: SubwordTokenizer,
    pub train: Vec<Example>,
    pub validation: Vec<Example>,
    pub test: Vec<Example>,
    pub validation_pairs: Vec<Pair>,
    pub test_pairs: Vec<Pair>,
}

/// Where a user's own XSum / CNN-DailyMail JSON lines are (`train.jsonl`, `validation.jsonl`,
/// `test.jsonl`); unset, the committed Debian corpus is used.
pub const DATA_VAR: &str = "HW9_SUMMARIZATION_DATA";

impl SummaryData {
    /// The committed Debian corpus with the committed tokenizer, or the JSON lines in
    /// `$HW9_SUMMARIZATION_DATA`; cut to the plan's subset and truncation lengths.
    pub fn load(plan: &SummarizationPlan) -> Result<Self> {
        let tokenizer = SubwordTokenizer::load_default()?;
        let pairs = match std::env::var_os(DATA_VAR) {
            Some(dir) => ["train", "validation", "test"].iter().map(|s| read_hf_jsonl(&PathBuf::from(&dir).join(format!("{s}.jsonl")), s)).collect::<Result<Vec<_>>>()?.concat(),
            None => read_pairs(&corpus_path())?,
        };
        Self::from_pairs(tokenizer, &pairs, plan)
    }

    pub fn from_pairs(tokenizer: SubwordTokenizer, pairs: &[Pair], plan: &SummarizationPlan) -> Result<Self> {
        let (n_train, n_val, n_test) = plan.subset.unwrap_or((usize::MAX, usize::MAX, usize::MAX));
        let take = |name: &str, n: usize| split(pairs, name).into_iter().take(n).collect::<Vec<_>>();
        let (train, val, test) = (take("train", n_train), take("validation", n_val), take("test", n_test));
        if train.is_empty() || val.is_empty() {
            return Err(Error::Input(format!("expected training and validation pairs, got {} and {}", train.len(), val.len())));
        }
        let tok = |p: &[&Pair]| tokenize(&tokenizer, p, plan.train.max_src, plan.train.max_tgt);
        Ok(SummaryData {
            train: tok(&train)?,
            validation: tok(&val)?,
            test: tok(&test)?,
            validation_pairs: val.into_iter().cloned().collect(),
            test_pairs: test.into_iter().cloned().collect(),
            tokenizer,
        })
    }
}

/// One epoch's numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seq2SeqEpoch {
    pub epoch: i64,
    /// Optimizer steps done when the epoch ended.
    pub step: usize,
    pub train_loss: f64,
    pub val_loss: f64,
    /// Teacher-forced next-token accuracy over the validation summaries' real tokens.
    pub val_acc: f64,
    pub seconds: f64,
}

/// A run's losses, saved with each checkpoint (`history.json`) so a resumed run continues them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Seq2SeqHistory {
    pub step_losses: Vec<f64>,
    pub epochs: Vec<Seq2SeqEpoch>,
}

impl Seq2SeqHistory {
    pub fn final_val_acc(&self) -> Option<f64> {
        self.epochs.last().map(|e| e.val_acc)
    }

    /// Training loss per step and validation loss per epoch.
    pub fn loss_chart(&self) -> LineChart {
        let x: Vec<f64> = self.epochs.iter().map(|e| e.step as f64).collect();
        let val: Vec<f64> = self.epochs.iter().map(|e| e.val_loss).collect();
        LineChart::new("summarizer: loss").x_label("step").y_label("cross-entropy").series("train (step)", &self.step_losses).series_xy("validation (epoch)", &x, &val)
    }
}

/// Mean loss per real target token and teacher-forced accuracy on `examples`.
pub fn evaluate(model: &Summarizer, examples: &[Example], batch_size: usize, device: Device) -> Result<(f64, f64)> {
    tch::no_grad(|| {
        let (mut loss, mut correct, mut counted) = (0.0, 0i64, 0i64);
        for idx in batch_indices(examples, batch_size, false) {
            let batch = Batch::new(&idx.iter().map(|&i| &examples[i]).collect::<Vec<_>>(), device);
            let (l, c, n) = model.loss(&batch, false)?;
            loss += l.double_value(&[]) * n as f64;
            correct += c;
            counted += n;
        }
        Ok((loss / counted.max(1) as f64, correct as f64 / counted.max(1) as f64))
    })
}

/// The newest `epoch-N` checkpoint folder under `dir` that has its history.
pub fn latest_checkpoint(dir: &Path) -> Option<(i64, PathBuf)> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.strip_prefix("epoch-")?.parse::<i64>().ok()?, e.path())))
        .filter(|(_, p)| p.join("history.json").exists() && p.join("model.safetensors").exists())
        .max_by_key(|(n, _)| *n)
}

/// Trains `model` (its variables are `vs`'s) for `cfg.epochs` with AdamW, evaluating on the
/// validation split after each epoch, writing TensorBoard scalars to `logdir` and a checkpoint to
/// `checkpoints/epoch-N`. With `resume`, it starts after the newest checkpoint there (its config
/// must match the model's); AdamW's moments restart, the learning-rate schedule resumes.
pub fn train_summarizer(model: &Summarizer, vs: &mut nn::VarStore, data: &SummaryData, cfg: &Seq2SeqTrainConfig, checkpoints: &Path, logdir: &Path, resume: bool) -> Result<Seq2SeqHistory> {
    let device = vs.device();
    let mut history = Seq2SeqHistory::default();
    if let Some((epoch, dir)) = resume.then(|| latest_checkpoint(checkpoints)).flatten() {
        load_checkpoint(vs, &model.cfg, &dir)?;
        let text = std::fs::read_to_string(dir.join("history.json")).map_err(|e| Error::io(dir.join("history.json"), e))?;
        history = serde_json::from_str(&text).map_err(|e| Error::Corrupt { what: "training history".into(), path: dir.join("history.json"), detail: e.to_string() })?;
        println!("resumed from {} (epoch {epoch}, step {})", dir.display(), history.step_losses.len());
    }
    if history.epochs.len() as i64 >= cfg.epochs {
        println!("already trained for {} epoch(s)", history.epochs.len());
        return Ok(history);
    }
    let mut opt = nn::AdamW { beta1: 0.9, beta2: 0.999, wd: cfg.weight_decay, eps: 1e-8, amsgrad: false }.build(vs, cfg.lr)?;
    let mut tb = SummaryWriter::new(logdir)?;
    let per_epoch = data.train.len().div_ceil(cfg.batch_size.max(1));
    let total = per_epoch * cfg.epochs as usize;
    for epoch in history.epochs.len() as i64 + 1..=cfg.epochs {
        let start = Instant::now();
        let mut bar = Progress::new(format!("summarizer epoch {epoch}/{}", cfg.epochs), per_epoch as u64);
        let (mut sum, mut seen, mut window) = (0.0, 0usize, Vec::new());
        for idx in batch_indices(&data.train, cfg.batch_size, true) {
            let step = history.step_losses.len();
            let lr = cfg.lr * cfg.schedule.factor(step, total);
            opt.set_lr(lr);
            let batch = Batch::new(&idx.iter().map(|&i| &data.train[i]).collect::<Vec<_>>(), device);
            let (loss, _, _) = model.loss(&batch, true)?;
            opt.backward_step_clip_norm(&loss, cfg.clip_norm);
            let l = crate::train::finite_loss(&loss, "summarizer", epoch, step, lr)?;
            history.step_losses.push(l);
            (sum, seen) = (sum + l, seen + 1);
            window.push(l);
            if window.len() == 20 {
                tb.add_scalar("loss/train", window.iter().sum::<f64>() / 20.0, step as i64 + 1)?;
                tb.add_scalar("learning_rate", lr, step as i64 + 1)?;
                window.clear();
            }
            bar.tick(&format!("loss {:.4} lr {lr:.1e}", sum / seen as f64));
        }
        let (val_loss, val_acc) = evaluate(model, &data.validation, 64, device)?;
        let step = history.step_losses.len();
        tb.add_scalar("loss/validation", val_loss, step as i64)?;
        tb.add_scalar("accuracy/validation", val_acc, step as i64)?;
        let e = Seq2SeqEpoch { epoch, step, train_loss: sum / seen.max(1) as f64, val_loss, val_acc, seconds: start.elapsed().as_secs_f64() };
        bar.finish(&format!("loss {:.4} | validation loss {val_loss:.4}, accuracy {val_acc:.4}", e.train_loss));
        history.epochs.push(e);
        let dir = checkpoints.join(format!("epoch-{epoch}"));
        save_checkpoint(vs, &model.cfg, &dir)?;
        crate::plot::write_atomic(&dir.join("history.json"), &serde_json::to_vec(&history)?)?;
    }
    Ok(history)
}

/// Summaries of `documents` (truncated to `max_src` tokens), in order.
pub fn summarize(model: &Summarizer, tok: &SubwordTokenizer, documents: &[&str], max_src: usize, decode: DecodeConfig) -> Result<Vec<String>> {
    let device = model.embed_tokens.device();
    let examples = documents
        .iter()
        .map(|d| {
            let mut src = tok.encode(d, max_src.saturating_sub(1).max(1))?;
            src.push(EOS);
            Ok(Example { src, tgt: vec![EOS] })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut out = vec![String::new(); documents.len()];
    for idx in batch_indices(&examples, 32, false) {
        let batch = Batch::new(&idx.iter().map(|&i| &examples[i]).collect::<Vec<_>>(), device);
        for (i, ids) in idx.iter().zip(generate(model, &batch.src, decode)?) {
            out[*i] = tok.decode(&ids)?;
        }
    }
    Ok(out)
}

/// Mean ROUGE-1/2/L F1 of `decode`'s summaries of the first `n` test documents, with a progress bar.
pub fn test_rouge(model: &Summarizer, data: &SummaryData, max_src: usize, n: usize, decode: DecodeConfig) -> Result<(f64, f64, f64)> {
    let pairs: Vec<&Pair> = data.test_pairs.iter().take(n).collect();
    let mut bar = Progress::new(format!("ROUGE ({} beam(s))", decode.beams), pairs.len().div_ceil(64) as u64);
    let mut predictions = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(64) {
        predictions.extend(summarize(model, &data.tokenizer, &chunk.iter().map(|p| p.document.as_str()).collect::<Vec<_>>(), max_src, decode)?);
        bar.tick("");
    }
    let r = crate::rouge::corpus_f1(predictions.iter().map(String::as_str).zip(pairs.iter().map(|p| p.summary.as_str())));
    bar.finish(&format!("ROUGE-1 {:.4} ROUGE-2 {:.4} ROUGE-L {:.4}", r.0, r.1, r.2));
    Ok(r)
}

/// One training step's seconds (median of `steps` after `warmup`) for `cfg` on random batches of
/// `batch` documents of `src_len` tokens and summaries of `tgt_len`.
pub fn bench_step(cfg: &SummarizerConfig, batch: i64, src_len: i64, tgt_len: i64, warmup: usize, steps: usize, device: Device) -> Result<f64> {
    crate::seed(0);
    let vs = nn::VarStore::new(device);
    let model = Summarizer::new(&vs.root(), cfg)?;
    let mut opt = nn::AdamW::default().build(&vs, 1e-4)?;
    let ids = |n| Tensor::randint_low(3, cfg.vocab_size, [batch, n], (tch::Kind::Int64, device));
    let b = Batch { src: ids(src_len), dec_in: ids(tgt_len), labels: ids(tgt_len) };
    let mut err = None;
    let secs = crate::homework::median_step_seconds(device, warmup, steps, &mut || match model.loss(&b, true) {
        Ok((loss, _, _)) => opt.backward_step_clip_norm(&loss, 1.0),
        Err(e) => err = Some(e),
    });
    err.map_or(Ok(secs), Err)
}
