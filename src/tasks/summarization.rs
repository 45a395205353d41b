//! Notebook 2 end to end around the [`Summarizer`]: training through the crate's core with
//! validation after each epoch, TensorBoard curves and checkpoints; summaries of documents; ROUGE
//! on the test split. Its sizes are [`crate::plan::SummarizationPlan`], its data
//! [`crate::data::text::SummaryData`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use tch::{nn, Device};

use crate::data::corpus::Pair;
use crate::data::seq2seq::{batch_indices, Batch, Example, EOS};
use crate::data::text::{SubwordTokenizer, SummaryData};
use crate::error::Result;
use crate::models::decoding::{generate, DecodeConfig};
use crate::models::summarizer::Summarizer;
use crate::plan::SummarizationPlan;
use crate::profile::Profile;
use crate::train::{Evaluation, Fit, History, Precision, Progress, Step, TrainConfig};

/// Mean loss per real target token and teacher-forced accuracy on `examples`.
pub fn evaluate(model: &Summarizer, examples: &[Example], batch_size: usize, device: Device) -> Result<(f64, f64)> {
    tch::no_grad(|| {
        let (mut loss, mut correct, mut counted) = (0.0, 0i64, 0i64);
        for idx in batch_indices(examples, batch_size, false) {
            let batch = Batch::new(&idx.iter().map(|&i| &examples[i]).collect::<Vec<_>>(), device);
            let (l, c, n) = model.loss(&batch, false)?;
            if n == 0 {
                continue; // no summary token scored in this batch: its mean loss is NaN
            }
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
        // Inside an evaluation the stop button armed (test_rouge): stop between batches.
        if crate::train::interrupt::requested() {
            return Err(crate::Error::Interrupted {
                title: "summaries".into(),
                steps: out.iter().filter(|s| !s.is_empty()).count(),
                resume: "nothing is kept of an evaluation: run the cell (in a terminal: the command) again to evaluate from the start".into(),
            });
        }
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
    // The stop button ends the evaluation after the batch in progress ([`summarize`] checks between
    // batches), keeping the notebook's variables (crate::train::interrupt).
    let _armed = crate::train::interrupt::arm();
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    lead_baseline_of(&data.validation_pairs, &data.test_pairs, ks, n)
}

/// [`lead_baseline`] on pairs as they are: `k` chosen on the first `n` of `validation`, scored on
/// the first `n` of `test`.
pub fn lead_baseline_of(
    validation: &[Pair],
    test: &[Pair],
    ks: impl IntoIterator<Item = usize>,
    n: usize,
) -> Result<LeadBaseline> {
    let score = |pairs: &[Pair], k: usize| {
        let leads: Vec<String> = pairs.iter().take(n).map(|p| lead_k(&p.document, k)).collect();
        crate::tasks::rouge::corpus_f1(
            leads.iter().map(String::as_str).zip(pairs.iter().take(n).map(|p| p.summary.as_str())),
        )
    };
    let validation: Vec<(usize, f64, f64, f64)> = ks
        .into_iter()
        .map(|k| {
            let (r1, r2, rl) = score(validation, k);
            (k, r1, r2, rl)
        })
        .collect();
    let best = validation
        .iter()
        .max_by(|a, b| a.3.total_cmp(&b.3))
        .ok_or_else(|| crate::Error::Input("Lead-k: expected at least one k to try, got none".into()))?;
    let k = best.0;
    Ok(LeadBaseline { k, test: score(test, k), validation })
}

/// Whether some word (split on whitespace) appears three times in a row: the degenerate repeats
/// ("the the the") that no-repeat n-gram blocking prevents.
pub fn has_triple_repeat(text: &str) -> bool {
    let words: Vec<&str> = text.split_whitespace().collect();
    words.windows(3).any(|w| w[0] == w[1] && w[1] == w[2])
}

/// One summary of the gallery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// What `hw9 summarize` is asked (its flags), for [`run_summarization`].
#[derive(Debug, Clone, Default)]
pub struct SummarizeOptions {
    /// Each epoch's weights are exported to `<out>/epoch-N`; `--evaluate` writes
    /// `<out>/evaluation.json`.
    pub out: PathBuf,
    /// TensorBoard event files.
    pub logdir: PathBuf,
    /// The run's state, saved every minute and continued from after an interruption.
    pub state: Option<PathBuf>,
    /// The profile's epochs, overridden.
    pub epochs: Option<i64>,
    /// Train for this wall-clock budget (minutes) instead of epochs.
    pub minutes: Option<f64>,
    /// Label smoothing ε of the training loss.
    pub label_smoothing: f64,
    /// The profile's peak learning rate, overridden.
    pub lr: Option<f64>,
    /// BERT2BERT with this many decoder layers: the encoder (and the decoder's self-attention and
    /// feed-forward blocks) start from MiniLM-L6, with its WordPiece tokenizer.
    pub warm_start: Option<i64>,
    /// Also Lead-k, decoding options and a gallery of 20 test summaries (`evaluation.json`).
    pub evaluate: bool,
}

/// A validation document's summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// The Debian package (or the document's id).
    pub package: String,
    /// The reference summary.
    pub reference: String,
    /// The model's (beam search).
    pub generated: String,
}

/// One decoding's ROUGE on the test documents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RougeRow {
    /// What decoded, e.g. `beam 4, no repeated 2-gram`.
    pub decoding: String,
    /// Its settings.
    pub config: DecodeConfig,
    /// ROUGE-1, ROUGE-2, ROUGE-L F1.
    pub rouge: [f64; 3],
    /// Seconds to decode and score.
    #[serde(default)]
    pub seconds: f64,
    /// Gallery summaries with a word three times in a row (`--evaluate` only).
    #[serde(default)]
    pub gallery_triple_repeats: usize,
    /// 20 random test summaries (`--evaluate` only).
    #[serde(default)]
    pub gallery: Vec<GalleryItem>,
}

/// What [`run_summarization`] measured (`hw9 summarize`; with `--evaluate` also written to
/// `<out>/evaluation.json`, which [`evaluation_table`] reads back).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SummarizationReport {
    /// The profile that ran.
    #[serde(default)]
    pub profile: Option<Profile>,
    /// The plan, with the options applied.
    pub plan: SummarizationPlan,
    /// Training losses and each epoch's validation loss and accuracy.
    #[serde(default)]
    pub history: History,
    /// Seconds of training.
    pub training_seconds: f64,
    /// Test documents ROUGE was computed on.
    pub test_docs: usize,
    /// Five validation documents' summaries.
    #[serde(default)]
    pub samples: Vec<Sample>,
    /// The Lead-k baseline on the same test documents (`--evaluate` only).
    #[serde(default)]
    pub lead: Option<LeadBaseline>,
    /// Each decoding's ROUGE: greedy and beam, and with `--evaluate` n-gram blocking too.
    pub model: Vec<RougeRow>,
}

/// Notebook 2 end to end with the crate's layers (the `hw9 summarize` command): the data (the
/// committed corpus and tokenizer, or MiniLM's WordPiece for BERT2BERT), training for the
/// profile's epochs or a time budget, five sample summaries, and test ROUGE of greedy and beam
/// search — with `evaluate`, the Lead-k baseline, n-gram blocking and a gallery, written to
/// `<out>/evaluation.json`.
#[cfg(feature = "reference")]
pub fn run_summarization(profile: Profile, device: Device, opts: &SummarizeOptions) -> Result<SummarizationReport> {
    use crate::models::bert::{default_bert_dir, BertConfig};
    use crate::models::warm_start::{bert2bert_config, warm_start_from_bert};
    let start = std::time::Instant::now();
    let tok = SubwordTokenizer::load_default()?;
    let mut plan = SummarizationPlan::for_profile(profile, tok.vocab_size());
    if let Some(e) = opts.epochs {
        plan.train.epochs = e;
    }
    if let Some(dir) = &opts.state {
        plan.resumable_in(dir, profile);
    }
    plan.train.label_smoothing = opts.label_smoothing;
    if let Some(lr) = opts.lr {
        plan.train.optim.lr = lr;
    }
    let bert_dir = default_bert_dir();
    let data = match opts.warm_start {
        Some(layers) => {
            let bert: BertConfig = crate::io::read_config(&bert_dir)?;
            plan.model = bert2bert_config(&bert, layers, plan.model.max_positions, plan.model.dropout);
            SummaryData::load_with(SubwordTokenizer::bert_wordpiece(&bert_dir.join("tokenizer.json"))?, &plan.data)?
        }
        None => SummaryData::load_with(tok, &plan.data)?,
    };
    println!(
        "profile {profile}: {:?}\n{:?}\ntrain {} / validation {} / test {} pairs (tokenized in {:.1} s)",
        plan.model,
        plan.train,
        data.train.len(),
        data.validation.len(),
        data.test.len(),
        start.elapsed().as_secs_f64()
    );
    crate::seed(0);
    let vs = nn::VarStore::new(device);
    let model = Summarizer::new(&vs.root(), &plan.model)?;
    if opts.warm_start.is_some() {
        let n = warm_start_from_bert(&vs, &plan.model, &bert_dir)?;
        println!("warm start: {n} tensors from {}", bert_dir.display());
    }
    let train_start = std::time::Instant::now();
    let history = match opts.minutes {
        Some(m) => train_summarizer_for(&model, &vs, &data, &plan.train, m * 60.0, &opts.out, &opts.logdir)?,
        None => train_summarizer(&model, &vs, &data, &plan.train, &opts.out, &opts.logdir)?,
    };
    let training_seconds = train_start.elapsed().as_secs_f64();
    let pairs: Vec<&Pair> = data.validation_pairs.iter().take(5).collect();
    let docs: Vec<&str> = pairs.iter().map(|p| p.document.as_str()).collect();
    let generated = summarize(&model, &data.tokenizer, &docs, plan.data.max_src, plan.beam)?;
    let samples = pairs
        .iter()
        .zip(generated)
        .map(|(p, g)| Sample { package: p.package.clone(), reference: p.summary.clone(), generated: g })
        .collect();
    let n = plan.rouge_docs.min(data.test.len());
    let max_len = plan.beam.max_len;
    let mut decodes = vec![("greedy", DecodeConfig::greedy(max_len)), ("beam 4", plan.beam)];
    let lead = if opts.evaluate {
        decodes = vec![
            ("greedy", DecodeConfig::greedy(max_len)),
            ("greedy, no repeated 2-gram", DecodeConfig::greedy(max_len).no_repeat_ngram(2)),
            ("beam 4", plan.beam),
            ("beam 4, no repeated 3-gram", plan.beam.no_repeat_ngram(3)),
            ("beam 4, no repeated 2-gram", plan.beam.no_repeat_ngram(2)),
        ];
        Some(lead_baseline(&data, 4..=20, n)?)
    } else {
        None
    };
    let mut rows = Vec::new();
    for (name, decode) in decodes {
        let t = std::time::Instant::now();
        let (r1, r2, rl) = test_rouge(&model, &data, plan.data.max_src, plan.rouge_docs, decode)?;
        let gallery =
            if opts.evaluate { gallery(&model, &data, plan.data.max_src, decode, 20, 9)? } else { Vec::new() };
        let gallery_triple_repeats = gallery.iter().filter(|g| has_triple_repeat(&g.generated)).count();
        let seconds = t.elapsed().as_secs_f64();
        rows.push(RougeRow {
            decoding: name.into(),
            config: decode,
            rouge: [r1, r2, rl],
            seconds,
            gallery_triple_repeats,
            gallery,
        });
    }
    let report = SummarizationReport {
        profile: Some(profile),
        plan,
        history,
        training_seconds,
        test_docs: n,
        samples,
        lead,
        model: rows,
    };
    if opts.evaluate {
        let path = opts.out.join("evaluation.json");
        crate::io::write_atomic(&path, serde_json::to_string_pretty(&report)?.as_bytes())?;
        println!("wrote {}", path.display());
    }
    Ok(report)
}

/// What [`evaluation_table`] reads of an `evaluation.json` (the parts every version of the file
/// has: files written before the report was typed hold them too).
#[derive(Deserialize)]
struct Evaluated {
    lead: Option<EvaluatedLead>,
    model: Vec<EvaluatedRow>,
}

#[derive(Deserialize)]
struct EvaluatedLead {
    k: usize,
    test: (f64, f64, f64),
}

#[derive(Deserialize)]
struct EvaluatedRow {
    decoding: String,
    rouge: [f64; 3],
    #[serde(default)]
    gallery_triple_repeats: usize,
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
        let v: Evaluated = serde_json::from_str(&text)
            .map_err(|e| crate::Error::corrupt("evaluation", path.clone(), e.to_string()))?;
        if let Some(lead) = v.lead.as_ref().filter(|_| !lead_done) {
            let (r1, r2, rl) = lead.test;
            let k = lead.k;
            lines.push(format!("{:<58} {r1:>8.4} {r2:>8.4} {rl:>8.4}", format!("Lead-{k} (the first {k} words)")));
            lead_done = true;
        }
        for row in &v.model {
            let [r1, r2, rl] = row.rouge;
            let label = format!("{name}: {}", row.decoding);
            let repeats = row.gallery_triple_repeats;
            lines.push(format!("{label:<58} {r1:>8.4} {r2:>8.4} {rl:>8.4}   ({repeats}/20 with a word 3× in a row)"));
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
