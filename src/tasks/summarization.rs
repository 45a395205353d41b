//! Notebook 2 end to end around the [`Summarizer`]: training through the crate's core with
//! validation after each epoch, TensorBoard curves and checkpoints; summaries of documents; ROUGE
//! on the test split. Its sizes are [`crate::plan::SummarizationPlan`], its data
//! [`crate::data::text::SummaryData`].

use std::path::Path;

use tch::{nn, Device};

use crate::data::corpus::Pair;
use crate::data::text::{batch_indices, Batch, Example, SubwordTokenizer, SummaryData, EOS};
use crate::error::Result;
use crate::models::decoding::{generate, DecodeConfig};
use crate::models::summarizer::Summarizer;
use crate::train::{Evaluation, Fit, History, Progress, Step, TrainConfig};

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

/// Trains `model` (its variables are `vs`'s) for `cfg.epochs` through the crate's training core:
/// AdamW with `cfg.optim`'s schedule and clipping, the validation loss and teacher-forced
/// accuracy after each epoch, TensorBoard scalars in `logdir` (`loss/train`, `learning_rate`,
/// `loss/validation`, `accuracy/validation`) and a checkpoint in `checkpoints/epoch-N`. With
/// `resume`, it starts after the newest checkpoint there (its config must match the model's);
/// AdamW's moments restart, the learning-rate schedule resumes.
pub fn train_summarizer(
    model: &Summarizer,
    vs: &nn::VarStore,
    data: &SummaryData,
    cfg: &TrainConfig,
    checkpoints: &Path,
    logdir: &Path,
    resume: bool,
) -> Result<History> {
    let device = vs.device();
    let batch_size = cfg.batch_size.max(1) as usize;
    let fit = Fit::epochs("summarizer", cfg.epochs, data.train.len().div_ceil(batch_size), &cfg.optim)
        .tensorboard(logdir)
        .checkpoints(checkpoints, &model.cfg, resume)?;
    let step = |idx: Vec<usize>| {
        let batch = Batch::new(&idx.iter().map(|&i| &data.train[i]).collect::<Vec<_>>(), device);
        let (loss, correct, counted) = model.loss(&batch, true)?;
        Ok(Step { loss, weight: 1.0, correct: Some((correct, counted)) })
    };
    let eval = || {
        let (loss, accuracy) = evaluate(model, &data.validation, 64, device)?;
        Ok(Evaluation { loss: Some(loss), accuracy: Some(accuracy) })
    };
    fit.run(vs, |_| batch_indices(&data.train, batch_size, true).into_iter(), step, eval)
}

/// Summaries of `documents` (truncated to `max_src` tokens), in order.
pub fn summarize(
    model: &Summarizer,
    tok: &SubwordTokenizer,
    documents: &[&str],
    max_src: usize,
    decode: DecodeConfig,
) -> Result<Vec<String>> {
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
pub fn test_rouge(
    model: &Summarizer,
    data: &SummaryData,
    max_src: usize,
    n: usize,
    decode: DecodeConfig,
) -> Result<(f64, f64, f64)> {
    let pairs: Vec<&Pair> = data.test_pairs.iter().take(n).collect();
    let mut bar = Progress::new(format!("ROUGE ({} beam(s))", decode.beams), pairs.len().div_ceil(64) as u64);
    let mut predictions = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(64) {
        predictions.extend(summarize(
            model,
            &data.tokenizer,
            &chunk.iter().map(|p| p.document.as_str()).collect::<Vec<_>>(),
            max_src,
            decode,
        )?);
        bar.tick("");
    }
    let r = crate::tasks::rouge::corpus_f1(
        predictions.iter().map(String::as_str).zip(pairs.iter().map(|p| p.summary.as_str())),
    );
    bar.finish(&format!("ROUGE-1 {:.4} ROUGE-2 {:.4} ROUGE-L {:.4}", r.0, r.1, r.2));
    Ok(r)
}
