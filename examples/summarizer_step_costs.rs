//! What notebook 2's training step spends its time on, and what a cheaper step would save
//! (BENCHMARKS.md, issue 30 item 6): `steps` real training steps of the `cpu` plan (the crate's
//! layers, the crate's AdamW through `Fit`) in each variant, back to back, alternating rounds.
//!
//!     cargo run --release --example summarizer_step_costs -- steps=300 rounds=2 [only=notebook]
//!
//! Variants (batch 16 unless named): the crate's layers with `full` logits (every summary position
//! projected, as before 2026-12-07) or `packed` (only where a label is scored: `Summarizer::loss`
//! now), at batch 16 and 32; and notebook 2's own layer (the solution's code, unfused attention)
//! with libtorch's `Tensor::dropout` or hw9's `dropout`. Also prints how much of each batch is
//! padding under other orders.

use std::time::Instant;

use hw9::data::seq2seq::{batch_indices, Batch, IGNORE};
use hw9::models::summarizer::Summarizer;
use hw9::models::transformer::{dropout, LayerConfig, SeqLayer, Stack};
use hw9::plan::SummarizationPlan;
use hw9::train::{Evaluation, Fit, Step};
use hw9::Profile;
use tch::nn::Module;
use tch::{nn, Kind, Reduction, Tensor};

/// Notebook 2's solution: scaled dot-product attention written out.
fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>, causal: bool) -> Tensor {
    let dh = q.size()[3] as f64;
    let mut scores = q.matmul(&k.transpose(-2, -1)) / dh.sqrt();
    if let Some(mask) = mask {
        let s = mask.size()[1];
        scores = scores.masked_fill(&mask.to_kind(Kind::Bool).reshape([-1, 1, 1, s]), f64::NEG_INFINITY);
    }
    if causal {
        let (t, s) = (scores.size()[2], scores.size()[3]);
        let future = Tensor::ones([t, s], (Kind::Bool, q.device())).triu(1);
        scores = scores.masked_fill(&future, f64::NEG_INFINITY);
    }
    scores.softmax(-1, Kind::Float).matmul(v)
}

/// Notebook 2's solution: multi-head attention.
#[derive(Debug)]
struct Mha {
    q: nn::Linear,
    k: nn::Linear,
    v: nn::Linear,
    o: nn::Linear,
    h: i64,
}

impl Mha {
    fn new(vs: &nn::Path, d: i64, h: i64) -> Self {
        let lin = |name: &str| nn::linear(vs / name, d, d, Default::default());
        Mha { q: lin("q_proj"), k: lin("k_proj"), v: lin("v_proj"), o: lin("out_proj"), h }
    }

    fn forward(&self, query: &Tensor, kv: &Tensor, mask: Option<&Tensor>, causal: bool) -> Tensor {
        let (b, t, d) = (query.size()[0], query.size()[1], query.size()[2]);
        let s = kv.size()[1];
        let split = |x: Tensor, n: i64| x.reshape([b, n, self.h, d / self.h]).transpose(1, 2);
        let out = attention(
            &split(self.q.forward(query), t),
            &split(self.k.forward(kv), s),
            &split(self.v.forward(kv), s),
            mask,
            causal,
        );
        self.o.forward(&out.transpose(1, 2).reshape([b, t, d]))
    }
}

/// Notebook 2's solution layer; `fast` picks hw9's dropout over libtorch's.
#[derive(Debug)]
struct NotebookLayer {
    self_attn: Mha,
    ln1: nn::LayerNorm,
    cross: Option<(Mha, nn::LayerNorm)>,
    fc1: nn::Linear,
    fc2: nn::Linear,
    ln3: nn::LayerNorm,
    p: f64,
    fast: bool,
}

impl NotebookLayer {
    fn new(vs: &nn::Path, cfg: &LayerConfig, stack: Stack, fast: bool) -> Self {
        let d = cfg.d_model;
        let ln = |name: &str| nn::layer_norm(vs / name, vec![d], Default::default());
        NotebookLayer {
            self_attn: Mha::new(&(vs / "self_attn"), d, cfg.n_heads),
            ln1: ln("self_attn_layer_norm"),
            cross: (stack == Stack::Decoder)
                .then(|| (Mha::new(&(vs / "encoder_attn"), d, cfg.n_heads), ln("encoder_attn_layer_norm"))),
            fc1: nn::linear(vs / "fc1", d, cfg.d_ffn, Default::default()),
            fc2: nn::linear(vs / "fc2", cfg.d_ffn, d, Default::default()),
            ln3: ln("final_layer_norm"),
            p: cfg.dropout,
            fast,
        }
    }
}

impl SeqLayer for NotebookLayer {
    fn forward(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        enc: Option<&Tensor>,
        enc_mask: Option<&Tensor>,
        train: bool,
    ) -> Tensor {
        let drop = |y: Tensor| if self.fast { dropout(&y, self.p, train) } else { y.dropout(self.p, train) };
        let a = self.self_attn.forward(x, x, mask, self.cross.is_some());
        let mut x = self.ln1.forward(&(x + drop(a)));
        if let (Some((attn, norm)), Some(enc)) = (&self.cross, enc) {
            let a = attn.forward(&x, enc, enc_mask, false);
            x = norm.forward(&(&x + drop(a)));
        }
        let ffn = self.fc2.forward(&drop(self.fc1.forward(&x).relu()));
        self.ln3.forward(&(&x + drop(ffn)))
    }
}

/// The notebook's `make_positions`.
fn positions(tokens: &Tensor, pad: i64) -> Tensor {
    let real = tokens.ne(pad).to_kind(Kind::Int64);
    real.cumsum(1, Kind::Int64) * &real + pad
}

/// The loss as it was before 2026-12-07: logits at every summary position, -100 ignored.
fn full_loss(model: &Summarizer, batch: &Batch) -> hw9::Result<(Tensor, i64, i64)> {
    let logits = model.forward_t(&batch.src, &batch.dec_in, true)?;
    let v = logits.size()[2];
    let loss =
        logits.view([-1, v]).cross_entropy_loss::<Tensor>(&batch.labels.view([-1]), None, Reduction::Mean, IGNORE, 0.0);
    let counted = batch.labels.ne(IGNORE);
    let correct =
        logits.argmax(-1, false).eq_tensor(&batch.labels).logical_and(&counted).sum(Kind::Int64).int64_value(&[]);
    Ok((loss, correct, counted.sum(Kind::Int64).int64_value(&[])))
}

/// `batch_indices` with pools sorted by (source length rounded up to `bucket`, summary length).
fn batches_by(examples: &[hw9::data::seq2seq::Example], batch_size: usize, bucket: usize) -> Vec<Vec<usize>> {
    let n = examples.len();
    let perm = |n: usize| -> Vec<usize> {
        Vec::<i64>::try_from(Tensor::randperm(n as i64, (Kind::Int64, tch::Device::Cpu)))
            .unwrap_or_default()
            .into_iter()
            .map(|i| i as usize)
            .collect()
    };
    let mut order = perm(n);
    for chunk in order.chunks_mut(batch_size * 50) {
        chunk.sort_by_key(|&i| std::cmp::Reverse((examples[i].src.len().div_ceil(bucket), examples[i].tgt.len())));
    }
    let mut batches: Vec<Vec<usize>> = order.chunks(batch_size).map(<[usize]>::to_vec).collect();
    let p = perm(batches.len());
    batches = p.into_iter().map(|i| std::mem::take(&mut batches[i])).collect();
    batches
}

fn main() -> hw9::Result<()> {
    let bad = |arg: &str| hw9::Error::Config(format!("expected steps=N, rounds=N or only=TEXT, got {arg:?}"));
    let (mut steps, mut rounds, mut only) = (300usize, 2usize, String::new());
    for arg in std::env::args().skip(1) {
        match arg.split_once('=') {
            Some(("steps", v)) => steps = v.parse().map_err(|_| bad(&arg))?,
            Some(("rounds", v)) => rounds = v.parse().map_err(|_| bad(&arg))?,
            Some(("only", v)) => only = v.to_string(),
            _ => return Err(bad(&arg)),
        }
    }
    let tokenizer = hw9::data::text::SubwordTokenizer::load_default()?;
    let plan = SummarizationPlan::for_profile(Profile::Cpu, tokenizer.vocab_size());
    let data = hw9::data::text::SummaryData::load_with(tokenizer, &plan.data)?;
    // Padding on the target side of the batches an epoch draws.
    hw9::seed(0);
    let (mut real, mut padded) = (0usize, 0usize);
    for idx in batch_indices(&data.train, 16, true) {
        let t = idx.iter().map(|&i| data.train[i].tgt.len()).max().unwrap_or(0);
        real += idx.iter().map(|&i| data.train[i].tgt.len()).sum::<usize>();
        padded += t * idx.len();
    }
    println!("target positions scored: {real} of {padded} ({:.1} %)", 100.0 * real as f64 / padded as f64);
    for cap in [64usize, 80, 96] {
        let kept: usize = data.train.iter().map(|e| e.src.len().min(cap)).sum();
        println!("documents cut at {cap} tokens: {kept} source tokens");
    }
    for bucket in [1usize, 4, 8, 16, 32] {
        hw9::seed(0);
        let (mut s_pos, mut s_real, mut t_pos, mut t_real) = (0usize, 0usize, 0usize, 0usize);
        for idx in batches_by(&data.train, 16, bucket) {
            let s = idx.iter().map(|&i| data.train[i].src.len()).max().unwrap_or(0);
            let t = idx.iter().map(|&i| data.train[i].tgt.len()).max().unwrap_or(0);
            s_pos += s * idx.len();
            t_pos += t * idx.len();
            s_real += idx.iter().map(|&i| data.train[i].src.len()).sum::<usize>();
            t_real += idx.iter().map(|&i| data.train[i].tgt.len()).sum::<usize>();
        }
        println!(
            "sorted by (source length / {bucket}, summary length): source {:.1} % real ({s_pos} positions), summary {:.1} % real ({t_pos})",
            100.0 * s_real as f64 / s_pos as f64,
            100.0 * t_real as f64 / t_pos as f64
        );
    }
    if steps == 0 {
        return Ok(());
    }
    for round in 0..rounds {
        let variants = [
            ("crate layers, full logits", 0, false, 16),
            ("crate layers, packed", 0, true, 16),
            ("crate layers, full logits", 0, false, 32),
            ("crate layers, packed", 0, true, 32),
            ("notebook layer, Tensor::dropout", 1, true, 16),
            ("notebook layer, hw9 dropout", 2, true, 16),
        ];
        for (name, layers, packed, batch) in variants {
            if !name.contains(only.as_str()) {
                continue;
            }
            hw9::seed(round as u64);
            let vs = nn::VarStore::new(hw9::device());
            let model = match layers {
                0 => Summarizer::new(&vs.root(), &plan.model)?,
                n => Summarizer::with_layers(
                    &vs.root(),
                    &plan.model,
                    |p, c, stack| Box::new(NotebookLayer::new(p, c, stack, n == 2)),
                    positions,
                )?,
            };
            let fit = Fit::epochs(format!("{name}, batch {batch}"), 1, steps, &plan.train.optim);
            let batches: Vec<Vec<usize>> = batch_indices(&data.train, batch, true).into_iter().take(steps).collect();
            let pairs: usize = batches.iter().map(Vec::len).sum();
            let t = Instant::now();
            let step = |idx: Vec<usize>| {
                let b = Batch::new(&idx.iter().map(|&i| &data.train[i]).collect::<Vec<_>>(), vs.device());
                let (loss, correct, counted) = if packed { model.loss(&b, true)? } else { full_loss(&model, &b)? };
                Ok(Step { loss, weight: 1.0, correct: Some((correct, counted)) })
            };
            let history = fit.run(&vs, |_| batches.clone().into_iter(), step, || Ok(Evaluation::default()))?;
            let secs = t.elapsed().as_secs_f64();
            let last: f64 = history.step_losses.iter().rev().take(20).sum::<f64>() / steps.min(20) as f64;
            println!(
                "round {round} {name:<34} batch {batch}: {:.4} s/step, {:.0} pairs/s, last-20 loss {last:.4}",
                secs / steps as f64,
                pairs as f64 / secs
            );
        }
    }
    Ok(())
}
