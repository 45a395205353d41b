//! The small GPT-2 that notebook 3 looks inside (`hw9 train-gpt`): GPT-2's architecture and
//! tokenizer, trained as a language model on the Debian descriptions through the crate's training
//! core, for a wall-clock budget, and saved in GPT-2's Hugging Face layout.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

use crate::data::corpus::{corpus_path, read_pairs, split};
use crate::data::tokenize::Gpt2Tokenizer;
use crate::error::Result;
use crate::io::write_atomic;
use crate::models::gpt2::Gpt2;
use crate::plan::GptPlan;
use crate::train::{save_checkpoint, Evaluation, Fit, Precision, Step};

/// GPT-2's `<|endoftext|>`, between documents.
const END_OF_TEXT: i64 = 50256;

/// What [`train_small_gpt2`] did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GptTrainReport {
    /// Optimizer steps taken.
    pub steps: usize,
    /// Tokens predicted (steps × batch × positions).
    pub tokens_seen: usize,
    /// Training wall time.
    pub seconds: f64,
    /// The first step's loss.
    pub first_loss: f64,
    /// Mean loss of the last 20 steps.
    pub final_loss: f64,
}

/// Trains `plan`'s GPT-2 on the corpus' training split (`summary`, a blank line, `document`,
/// `<|endoftext|>`), on random windows of `n_positions + 1` tokens, for `plan.seconds`, and saves
/// it to `out` (`config.json` + `model.safetensors` in GPT-2's Hugging Face layout, and
/// `training.json`, this report). With `plan.resume` its state is saved every minute and a run
/// started again after an interruption trains for the rest of the budget ([`GptPlan::resumable_in`]).
pub fn train_small_gpt2(plan: &GptPlan, out: &Path, device: Device) -> Result<GptTrainReport> {
    let tok = Gpt2Tokenizer::new()?;
    let pairs = read_pairs(&corpus_path())?;
    let mut ids: Vec<i64> = Vec::new();
    for p in split(&pairs, "train").into_iter().take(plan.max_docs.unwrap_or(usize::MAX)) {
        ids.extend(tok.encode(&format!("{}\n\n{}", p.summary, p.document)).0);
        ids.push(END_OF_TEXT);
    }
    let (cfg, b) = (&plan.model, plan.batch_size);
    let t = cfg.n_positions;
    let data = Tensor::from_slice(&ids);
    let n = ids.len() as i64 - t - 1;
    if n <= 0 {
        return Err(crate::error::Error::Input(format!(
            "GPT-2 training needs more than {} tokens of text for windows of {} positions, got {}",
            t + 1,
            t,
            ids.len()
        )));
    }
    let vs = nn::VarStore::new(device);
    let model = Gpt2::new(&vs.root(), cfg)?;
    let windows = || {
        std::iter::repeat_with(|| {
            let starts = Tensor::randint(n, [b], (Kind::Int64, Device::Cpu));
            let idx = starts.unsqueeze(1) + Tensor::arange(t + 1, (Kind::Int64, Device::Cpu)).unsqueeze(0); // (B, T+1)
            data.index_select(0, &idx.reshape([-1])).reshape([b, t + 1]).to_device(device)
        })
    };
    let step = |chunk: Tensor| {
        let (x, y) = (chunk.narrow(1, 0, t), chunk.narrow(1, 1, t));
        let logits = model.logits(&x)?; // (B, T, V)
        let loss = logits.reshape([-1, cfg.vocab_size]).cross_entropy_for_logits(&y.reshape([-1]));
        Ok(Step { loss, weight: 1.0, correct: None })
    };
    let start = std::time::Instant::now();
    let fit = Fit::seconds("GPT-2", plan.seconds, &plan.optim)
        .precision(Precision::requested(Precision::Fp32)?)
        .resumable_in(plan.resume.as_ref(), &vs, &GptPlan { resume: None, ..plan.clone() })?;
    let history = fit.run(&vs, |_| windows(), step, || Ok(Evaluation::default()))?;
    let losses = &history.step_losses;
    let tail = &losses[losses.len().saturating_sub(20)..];
    let report = GptTrainReport {
        steps: losses.len(),
        tokens_seen: losses.len() * (b * t) as usize,
        seconds: start.elapsed().as_secs_f64(),
        first_loss: losses.first().copied().unwrap_or(f64::NAN),
        final_loss: tail.iter().sum::<f64>() / tail.len().max(1) as f64,
    };
    println!("GPT-2: final loss {:.3} (mean of the last {} steps)", report.final_loss, tail.len());
    save_checkpoint(&vs, &cfg.to_hf_json(), out)?;
    write_atomic(&out.join("training.json"), &serde_json::to_vec_pretty(&report)?)?;
    Ok(report)
}
