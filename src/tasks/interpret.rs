//! What attention weights cannot show, on SmolLM2 (notebook 3, after the induction heads):
//!
//! - **the logit lens** (nostalgebraist, 2020): each layer's residual stream read through the
//!   final norm and the unembedding, so one sees at which layer the next token becomes the
//!   model's guess ([`logit_lens`], [`LogitLens::heatmap`]);
//! - **ablation**: a head's output replaced by its mean (or zeros) and the loss measured again; if
//!   the induction heads found by their attention pattern really copy, ablating them must hurt the
//!   second copy of a repeated sequence far more than ablating as many other heads
//!   ([`ablation_curve`]);
//! - **attribution**: how much each input token's embedding moves one output logit, by input ×
//!   gradient (Shrikumar et al., 2016; [`input_x_gradient`]) and integrated gradients (Sundararajan
//!   et al., 2017; [`integrated_gradients`], from an "average token" baseline, whose attributions
//!   add up to the output's change from the baseline: the check of completeness).

use tch::{Kind, Tensor};

use crate::error::{Error, Result};
use crate::models::llama::{Ablation, HeadAblation, Llama};
use crate::rng::stream;
use crate::tasks::heads::{repeated_loss, top_heads};
use crate::visuals::Heatmap;

/// The logit lens of one sequence: per layer (the embeddings first, the model's output last) and
/// position, the probability of the token that actually comes next and the lens's top token.
#[derive(Debug)]
pub struct LogitLens {
    /// `(L + 1, T − 1)`: the probability each layer gives the true next token at each position.
    pub target_probs: Tensor,
    /// `(L + 1, T − 1)`: each layer's most probable next token.
    pub top_ids: Tensor,
    /// The largest difference between the lens's last layer and [`Llama::logits`] (0: the last
    /// layer is the model's output).
    pub last_layer_max_diff: f64,
}

/// The logit lens of `ids (1, T)`, `T ≥ 2`.
pub fn logit_lens(model: &Llama, ids: &Tensor) -> Result<LogitLens> {
    let t = match ids.size()[..] {
        [1, t] if t >= 2 => t,
        _ => return Err(Error::Input(format!("logit lens: expected ids (1, T) with T ≥ 2, got {:?}", ids.size()))),
    };
    let lens = model.logit_lens(ids)?.select(1, 0).narrow(1, 0, t - 1); // (L + 1, T − 1, V)
    let targets = ids.select(0, 0).narrow(0, 1, t - 1).to_device(lens.device()); // (T − 1,)
    let probs = lens.to_kind(Kind::Float).softmax(-1, Kind::Float);
    let index = targets.view([1, -1, 1]).expand([probs.size()[0], t - 1, 1], false);
    let target_probs = probs.gather(2, &index, false).squeeze_dim(2);
    let top_ids = lens.argmax(-1, false);
    let logits = model.logits(ids)?.select(0, 0).narrow(0, 0, t - 1);
    let last = lens.select(0, lens.size()[0] - 1);
    let last_layer_max_diff = (last - logits).abs().max().double_value(&[]);
    Ok(LogitLens { target_probs, top_ids, last_layer_max_diff })
}

impl LogitLens {
    /// A layers × positions heatmap of the true next token's probability, columns labelled
    /// `token → next`.
    pub fn heatmap(&self, title: &str, tokens: &[String]) -> Result<Heatmap> {
        let (rows, cols) = self.target_probs.size2()?;
        if tokens.len() as i64 != cols + 1 {
            return Err(Error::Input(format!(
                "logit lens heatmap: expected {} tokens (the sequence), got {}",
                cols + 1,
                tokens.len()
            )));
        }
        let labels = (0..cols as usize).map(|i| format!("{}→{}", tokens[i].trim(), tokens[i + 1].trim()));
        Ok(Heatmap::from_tensor(title, &self.target_probs)?
            .row_labels((0..rows).map(|l| if l == 0 { "embed".to_string() } else { format!("L{}", l - 1) }))
            .col_labels(labels)
            .x_label("position: token → the true next token")
            .y_label("residual stream after")
            .range(0.0, 1.0))
    }
}

/// How [`ablation_curve`] ablates: up to `k_max` heads, against `draws` random draws of as many
/// other heads (seeded by `seed`), their output replaced as `mode` says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AblationPlan {
    /// The most heads ablated at once.
    pub k_max: usize,
    /// Random draws averaged for the comparison.
    pub draws: usize,
    /// What replaces an ablated head's output.
    pub mode: Ablation,
    /// The draws' seed.
    pub seed: u64,
}

/// The loss on the second copy of repeated sequences `tokens` (halves of `len`, from
/// [`crate::tasks::heads::repeated_tokens`]) with 0, 1, …, `plan.k_max` heads ablated: the heads of
/// highest `scores` (e.g. the induction scores), and, for comparison, as many heads drawn at random
/// from the others (`plan.draws` draws, averaged). Returns `(top heads, random heads)`, each
/// `k_max + 1` losses in nats.
pub fn ablation_curve(
    model: &Llama,
    tokens: &Tensor,
    len: i64,
    scores: &Tensor,
    plan: AblationPlan,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let AblationPlan { k_max, draws, mode, seed } = plan;
    let (layers, heads) = scores.size2()?;
    let n = (layers * heads) as usize;
    if k_max >= n || draws == 0 {
        return Err(Error::Input(format!(
            "ablation curve: expected k_max < {n} heads and at least one random draw, got k_max {k_max}, draws {draws}"
        )));
    }
    let ranked = top_heads(scores, n)?;
    let loss = |ablated: Vec<(usize, i64)>| -> Result<f64> {
        let logits = model.logits_ablated(tokens, &HeadAblation { heads: ablated, mode })?;
        Ok(repeated_loss(&logits, tokens, len)?.1)
    };
    let mut induction = Vec::with_capacity(k_max + 1);
    let mut random = Vec::with_capacity(k_max + 1);
    // The random heads come from outside the k_max top-scoring ones.
    let others: Vec<(usize, i64)> = ranked[k_max..].iter().map(|&(l, h, _)| (l, h)).collect();
    let mut drawn = 0u64;
    let picks: Vec<Vec<(usize, i64)>> = (0..draws)
        .map(|_| {
            let mut pool = others.clone();
            // A partial Fisher–Yates shuffle: the first k_max of the pool, uniformly.
            for i in 0..k_max.min(pool.len()) {
                drawn += 1;
                let j = i + (stream(seed, drawn) % (pool.len() - i) as u64) as usize;
                pool.swap(i, j);
            }
            pool.truncate(k_max);
            pool
        })
        .collect();
    for k in 0..=k_max {
        induction.push(loss(ranked[..k].iter().map(|&(l, h, _)| (l, h)).collect())?);
        let mut sum = 0.0;
        for pick in &picks {
            sum += loss(pick[..k].to_vec())?;
        }
        random.push(sum / draws as f64);
    }
    Ok((induction, random))
}

/// Checks `ids (1, T)`, a `position < T` and a `target` id.
fn check_prediction(model: &Llama, ids: &Tensor, position: i64, target: i64) -> Result<i64> {
    let t = match ids.size()[..] {
        [1, t] => t,
        _ => return Err(Error::Input(format!("attribution: expected ids (1, T), got {:?}", ids.size()))),
    };
    if !(0..t).contains(&position) || !(0..model.cfg.vocab_size).contains(&target) {
        return Err(Error::Input(format!(
            "attribution: expected a position in 0..{t} and a target id in 0..{}, got position {position}, target {target}",
            model.cfg.vocab_size
        )));
    }
    Ok(t)
}

/// Input × gradient: for the logit of `target` at `position` of `ids (1, T)`, each token's
/// `embedding · ∂logit/∂embedding` (summed over the model dimension): `(T,)`.
pub fn input_x_gradient(model: &Llama, ids: &Tensor, position: i64, target: i64) -> Result<Tensor> {
    check_prediction(model, ids, position, target)?;
    tch::with_grad(|| {
        let emb = model.embed(ids)?.detach().set_requires_grad(true);
        let logit = model.logits_from_embeddings(&emb)?.get(0).get(position).get(target);
        let grads = Tensor::run_backward(&[&logit], &[&emb], false, false);
        let grad = grads.into_iter().next().ok_or_else(|| Error::Input("attribution: no gradient".into()))?;
        Ok((grad * &emb).sum_dim_intlist([2].as_slice(), false, Kind::Float).get(0).detach())
    })
}

/// Integrated gradients for the logit of `target` at `position`, along the straight path from a
/// baseline to `ids`' embeddings, `steps` midpoints: `(attributions (T,), f(x) − f(baseline))`.
/// The baseline makes every token but the first the average token ([`Llama::mean_embedding`]);
/// the first keeps its embedding (attribution 0): the model parks most of its attention there,
/// and moving it makes the output jump. By completeness the attributions add up to the
/// difference, up to the Riemann sum's error, which shrinks with `steps`. Measured on SmolLM2
/// (BENCHMARKS.md): the all-zeros baseline usual for images, or moving the first token too, gives
/// an output that swings by tens of logits along the path, and sums that do not settle even at
/// 384 steps.
pub fn integrated_gradients(
    model: &Llama,
    ids: &Tensor,
    position: i64,
    target: i64,
    steps: i64,
) -> Result<(Tensor, f64)> {
    check_prediction(model, ids, position, target)?;
    if steps < 1 {
        return Err(Error::Input(format!("integrated gradients: expected at least 1 step, got {steps}")));
    }
    tch::with_grad(|| {
        let emb = model.embed(ids)?.detach(); // (1, T, D)
        let device = emb.device();
        // Every token the average token, except the first, which keeps its own embedding: the
        // model parks most attention on the first position (the sink), and moving that token off
        // the embeddings it knows makes the output jump along the path.
        let t = emb.size()[1];
        let average = model.mean_embedding().to_device(device).view([1, 1, -1]).expand_as(&emb);
        let base = Tensor::cat(&[emb.narrow(1, 0, 1), average.narrow(1, 1, t - 1)], 1);
        let delta = &emb - &base;
        // The path's points in chunks of 32 (a forward and backward at once): memory stays bounded.
        let mut grad_sum = emb.zeros_like().get(0); // (T, D)
        for first in (0..steps).step_by(32) {
            let n = (steps - first).min(32);
            let alphas = (Tensor::arange_start(first, first + n, (Kind::Float, device)) + 0.5) / steps as f64;
            let path = (&base + alphas.view([-1, 1, 1]) * &delta).detach().set_requires_grad(true); // (n, T, D)
            let out = model.logits_from_embeddings(&path)?.select(1, position).select(1, target); // (n,)
            let grads = Tensor::run_backward(&[&out.sum(Kind::Float)], &[&path], false, false);
            let grad = grads.into_iter().next().ok_or_else(|| Error::Input("attribution: no gradient".into()))?;
            grad_sum += grad.sum_dim_intlist([0].as_slice(), false, Kind::Float);
        }
        let attributions =
            (grad_sum / steps as f64 * delta.get(0)).sum_dim_intlist([1].as_slice(), false, Kind::Float).detach();
        let end = tch::no_grad(|| -> Result<f64> {
            let at = |e: &Tensor| -> Result<f64> {
                Ok(model.logits_from_embeddings(e)?.get(0).get(position).get(target).double_value(&[]))
            };
            Ok(at(&emb)? - at(&base)?)
        })?;
        Ok((attributions, end))
    })
}

/// Rows of per-token values `(T,)` (attention, attributions), each scaled to its largest absolute
/// value, as one heatmap with the tokens as columns: where they agree and where they do not.
pub fn attribution_heatmap(title: &str, rows: &[(&str, &Tensor)], tokens: &[String]) -> Result<Heatmap> {
    let mut data = Vec::with_capacity(rows.len());
    for (name, row) in rows {
        let v = Vec::<f64>::try_from(row.to_kind(Kind::Double).reshape([-1]))?;
        if v.len() != tokens.len() {
            return Err(Error::Input(format!(
                "attribution heatmap: row {name:?} has {} values for {} tokens",
                v.len(),
                tokens.len()
            )));
        }
        let max = v.iter().fold(0.0f64, |m, x| m.max(x.abs())).max(1e-12);
        data.push(v.iter().map(|x| x.abs() / max).collect::<Vec<f64>>());
    }
    Ok(Heatmap::from_rows(title, &data)?
        .row_labels(rows.iter().map(|(n, _)| n.to_string()))
        .col_labels(tokens.iter().map(|t| t.trim().to_string()))
        .x_label("input token")
        .range(0.0, 1.0))
}
