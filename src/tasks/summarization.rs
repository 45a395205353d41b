//! Notebook 2 end to end around the [`Summarizer`]: training through the crate's core with
//! validation after each epoch, TensorBoard curves and checkpoints; summaries of documents; ROUGE
//! on the test split. Its sizes are [`crate::plan::SummarizationPlan`], its data
//! [`crate::data::text::SummaryData`].

use std::path::Path;

use tch::{nn, Device};

use crate::data::corpus::Pair;
use crate::data::seq2seq::{batch_indices, Batch, Example, EOS};
use crate::data::text::{SubwordTokenizer, SummaryData};
use crate::error::Result;
use crate::models::decoding::{generate, DecodeConfig};
use crate::models::summarizer::Summarizer;
use crate::train::{Evaluation, Fit, History, Precision, Progress, Step, TrainConfig};

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
/// `loss/validation`, `accuracy/validation`) and the weights exported to `checkpoints/epoch-N`.
/// With `cfg.resume` the run saves its whole state as it trains and, run again after an
/// interruption, continues exactly from it, mid-epoch and AdamW's moments included
/// ([`Fit::resumable_in`]).
pub fn train_summarizer(
    model: &Summarizer,
    vs: &nn::VarStore,
    data: &SummaryData,
    cfg: &TrainConfig,
    checkpoints: &Path,
    logdir: &Path,
) -> Result<History> {
    let steps = data.train.len().div_ceil(cfg.batch_size.max(1) as usize);
    // bf16 halves the `full`-size step (0.48x); the `cpu` size gains nothing (BENCHMARKS.md).
    let fit = Fit::epochs("summarizer", cfg.epochs, steps, &cfg.optim)
        .precision(Precision::requested(Precision::Bf16)?)
        .tensorboard(logdir)
        .exports(checkpoints, &model.cfg)?
        .resumable_in(cfg.resume.as_ref(), vs, &(TrainConfig { resume: None, ..cfg.clone() }, &model.cfg))?;
    fit_summarizer(model, vs, data, cfg, &fit, false)
}

/// [`train_summarizer`] for a wall-clock budget of `seconds` instead of a number of epochs
/// (shuffled epochs one after another; the schedule runs over the budget), validated once at the
/// end, with the weights exported to `checkpoints/epoch-1`. With `cfg.resume` its state is saved as it
/// trains and a run started again after an interruption trains for the rest of the budget.
pub fn train_summarizer_for(
    model: &Summarizer,
    vs: &nn::VarStore,
    data: &SummaryData,
    cfg: &TrainConfig,
    seconds: f64,
    checkpoints: &Path,
    logdir: &Path,
) -> Result<History> {
    let fit = Fit::seconds("summarizer", seconds, &cfg.optim)
        .precision(Precision::requested(Precision::Bf16)?)
        .tensorboard(logdir)
        .exports(checkpoints, &model.cfg)?
        .resumable_in(cfg.resume.as_ref(), vs, &(TrainConfig { resume: None, ..cfg.clone() }, &model.cfg, seconds))?;
    fit_summarizer(model, vs, data, cfg, &fit, true)
}

/// The summarizer's steps (label-smoothed loss when `cfg` says), validation and batches (one
/// shuffled epoch per epoch, or shuffled epochs without end for a time budget) through `fit`.
fn fit_summarizer(
    model: &Summarizer,
    vs: &nn::VarStore,
    data: &SummaryData,
    cfg: &TrainConfig,
    fit: &Fit,
    endless: bool,
) -> Result<History> {
    let device = vs.device();
    let batch_size = cfg.batch_size.max(1) as usize;
    let step = |idx: Vec<usize>| {
        let batch = Batch::new(&idx.iter().map(|&i| &data.train[i]).collect::<Vec<_>>(), device);
        let (loss, correct, counted) = model.loss_smoothed(&batch, true, cfg.label_smoothing)?;
        Ok(Step { loss, weight: 1.0, correct: Some((correct, counted)) })
    };
    let eval = || {
        let (loss, accuracy) = evaluate(model, &data.validation, 64, device)?;
        Ok(Evaluation { loss: Some(loss), accuracy: Some(accuracy) })
    };
    if endless {
        fit.run(vs, |_| (0..).flat_map(|_| batch_indices(&data.train, batch_size, true)), step, eval)
    } else {
        fit.run(vs, |_| batch_indices(&data.train, batch_size, true).into_iter(), step, eval)
    }
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
    // Chunks of 200 documents: [`summarize`] sorts each by length, so its batches carry little padding.
    let mut bar = Progress::new(format!("ROUGE ({} beam(s))", decode.beams), pairs.len().div_ceil(200) as u64);
    let mut predictions = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(200) {
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

/// The first `k` words (split on whitespace) of `document`: the Lead-k baseline, summarization's
/// yardstick (Lead-3 sentences for news; words here, where a summary is one short line).
pub fn lead_k(document: &str, k: usize) -> String {
    document.split_whitespace().take(k).collect::<Vec<_>>().join(" ")
}

/// The Lead-k baseline with `k` chosen on the validation split.
#[derive(Debug, Clone, PartialEq)]
pub struct LeadBaseline {
    /// The number of words that scored the best ROUGE-L on the validation documents.
    pub k: usize,
    /// `(k, ROUGE-1, ROUGE-2, ROUGE-L)` for every `k` tried, on the validation documents.
    pub validation: Vec<(usize, f64, f64, f64)>,
    /// ROUGE-1, ROUGE-2, ROUGE-L F1 of Lead-k on the first `n` test documents.
    pub test: (f64, f64, f64),
}

/// Tries every `k` in `ks` on the first `n` validation documents, keeps the best by ROUGE-L, and
/// scores it on the first `n` test documents (the ones [`test_rouge`] scores a model on).
pub fn lead_baseline(data: &SummaryData, ks: impl IntoIterator<Item = usize>, n: usize) -> Result<LeadBaseline> {
    let score = |pairs: &[Pair], k: usize| {
        let leads: Vec<String> = pairs.iter().take(n).map(|p| lead_k(&p.document, k)).collect();
        crate::tasks::rouge::corpus_f1(
            leads.iter().map(String::as_str).zip(pairs.iter().take(n).map(|p| p.summary.as_str())),
        )
    };
    let validation: Vec<(usize, f64, f64, f64)> = ks
        .into_iter()
        .map(|k| {
            let (r1, r2, rl) = score(&data.validation_pairs, k);
            (k, r1, r2, rl)
        })
        .collect();
    let best = validation
        .iter()
        .max_by(|a, b| a.3.total_cmp(&b.3))
        .ok_or_else(|| crate::Error::Input("Lead-k: expected at least one k to try, got none".into()))?;
    let k = best.0;
    Ok(LeadBaseline { k, test: score(&data.test_pairs, k), validation })
}

/// Whether some word (split on whitespace) appears three times in a row: the degenerate repeats
/// ("the the the") that no-repeat n-gram blocking prevents.
pub fn has_triple_repeat(text: &str) -> bool {
    let words: Vec<&str> = text.split_whitespace().collect();
    words.windows(3).any(|w| w[0] == w[1] && w[1] == w[2])
}

/// One summary of the gallery.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GalleryItem {
    /// The Debian package (or the document's id).
    pub package: String,
    /// The reference summary.
    pub reference: String,
    /// The model's summary.
    pub generated: String,
}

/// `n` test documents picked at random with `seed` (the same ones for every model), summarized
/// with `decode`.
pub fn gallery(
    model: &Summarizer,
    data: &SummaryData,
    max_src: usize,
    decode: DecodeConfig,
    n: usize,
    seed: u64,
) -> Result<Vec<GalleryItem>> {
    let total = data.test_pairs.len();
    let mut picked: Vec<usize> = Vec::with_capacity(n.min(total));
    let mut i = 0u64;
    while picked.len() < n.min(total) {
        let j = (crate::rng::stream(seed, i) % total as u64) as usize;
        if !picked.contains(&j) {
            picked.push(j);
        }
        i += 1;
    }
    let docs: Vec<&str> = picked.iter().map(|&j| data.test_pairs[j].document.as_str()).collect();
    let generated = summarize(model, &data.tokenizer, &docs, max_src, decode)?;
    Ok(picked
        .iter()
        .zip(generated)
        .map(|(&j, generated)| {
            let p = &data.test_pairs[j];
            GalleryItem { package: p.package.clone(), reference: p.summary.clone(), generated }
        })
        .collect())
}

/// The ROUGE table of `hw9 summarize --evaluate` runs, from each run's `<dir>/evaluation.json`:
/// the Lead-k baseline once (the first run's), then every decoding of every run, as a plain-text
/// table. Runs whose file is missing are listed with the command that makes them.
pub fn evaluation_table(runs: &[(&str, &Path, &str)]) -> Result<String> {
    let mut lines = vec![format!("{:<58} {:>8} {:>8} {:>8}", "", "ROUGE-1", "ROUGE-2", "ROUGE-L")];
    let mut lead_done = false;
    for (name, dir, command) in runs {
        let path = dir.join("evaluation.json");
        let Ok(text) = std::fs::read_to_string(&path) else {
            lines.push(format!("{name}: not run yet ({command})"));
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| crate::Error::corrupt("evaluation", path.clone(), e.to_string()))?;
        let triple = |r: &serde_json::Value| -> Vec<f64> {
            r.as_array().map(|a| a.iter().filter_map(serde_json::Value::as_f64).collect()).unwrap_or_default()
        };
        if !lead_done {
            let t = triple(&v["lead"]["test"]);
            if let [r1, r2, rl] = t[..] {
                let k = v["lead"]["k"].as_u64().unwrap_or(0);
                lines.push(format!("{:<58} {r1:>8.4} {r2:>8.4} {rl:>8.4}", format!("Lead-{k} (the first {k} words)")));
                lead_done = true;
            }
        }
        for row in v["model"].as_array().into_iter().flatten() {
            if let [r1, r2, rl] = triple(&row["rouge"])[..] {
                let label = format!("{name}: {}", row["decoding"].as_str().unwrap_or("?"));
                let repeats = row["gallery_triple_repeats"].as_u64().unwrap_or(0);
                lines.push(format!(
                    "{label:<58} {r1:>8.4} {r2:>8.4} {rl:>8.4}   ({repeats}/20 with a word 3× in a row)"
                ));
            }
        }
    }
    Ok(lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lead_k_takes_the_first_words_and_triples_are_found() {
        assert_eq!(lead_k("A  small\ntool for\tthe shell.", 3), "A small tool");
        assert_eq!(lead_k("two words", 10), "two words");
        assert!(has_triple_repeat("game for the the the"));
        assert!(!has_triple_repeat("the the game the"));
    }

    #[test]
    fn the_evaluation_table_lists_lead_k_once_and_says_how_to_make_a_missing_run() {
        let dir = tempfile::tempdir().unwrap();
        let json = serde_json::json!({
            "lead": {"k": 11, "test": [0.309, 0.146, 0.2777]},
            "model": [{"decoding": "beam 4", "rouge": [0.2, 0.07, 0.19], "gallery_triple_repeats": 3}],
        });
        std::fs::write(dir.path().join("evaluation.json"), json.to_string()).unwrap();
        let missing = dir.path().join("nothing");
        let table = evaluation_table(&[
            ("scratch", dir.path(), "make it"),
            ("warm", &missing, "cargo run -- summarize --warm-start"),
        ])
        .unwrap();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[1].starts_with("Lead-11 (the first 11 words)") && lines[1].ends_with("0.2777"), "{table}");
        assert!(
            lines[2].starts_with("scratch: beam 4") && lines[2].contains("(3/20 with a word 3× in a row)"),
            "{table}"
        );
        assert_eq!(lines[3], "warm: not run yet (cargo run -- summarize --warm-start)");
    }
}
