//! What attention heads do, measured per layer and head on any causal model's attention
//! (notebook 3 runs them on SmolLM2-135M and the local GPT-2):
//!
//! - **induction heads** (Olsson et al., 2022, "In-context Learning and Induction Heads"): on a
//!   sequence of random tokens repeated once, a head whose query at a token of the second copy
//!   looks at the token that *followed* the same token in the first copy, so the model can copy
//!   what came next. [`induction_scores`] is the mean attention on that position (TransformerLens'
//!   "induction stripe"); [`previous_token_scores`] the mean attention on the previous token (the
//!   heads an induction head builds on);
//! - **attention sinks** (Xiao et al., 2023): heads that park most of their attention on the first
//!   token when nothing else is relevant; [`sink_share`];
//! - the in-context effect itself: the loss per token on the first and the second copy
//!   ([`repeated_loss`]).

use std::ops::Range;

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::models::attention::LayerAttention;
use crate::visuals::Heatmap;

/// `batch` sequences `[start, r_1 … r_len, r_1 … r_len]` of random ids drawn uniformly from `ids`
/// (seeded: the same `seed` gives the same tokens everywhere), `(B, 1 + 2·len)` int64.
pub fn repeated_tokens(batch: i64, len: i64, ids: Range<i64>, start: i64, seed: u64) -> Result<Tensor> {
    if batch < 1 || len < 2 || ids.is_empty() {
        return Err(Error::Input(format!(
            "repeated tokens: expected batch ≥ 1, len ≥ 2 and a non-empty id range, got {batch}, {len}, {ids:?}"
        )));
    }
    let span = (ids.end - ids.start) as u64;
    let mut rows = Vec::with_capacity((batch * (1 + 2 * len)) as usize);
    for b in 0..batch {
        let half: Vec<i64> = (0..len)
            .map(|i| {
                let z = crate::rng::stream(seed, (b * len + i) as u64);
                ids.start + (z % span) as i64
            })
            .collect();
        rows.push(start);
        rows.extend(&half);
        rows.extend(&half);
    }
    Ok(Tensor::from_slice(&rows).reshape([batch, 1 + 2 * len]))
}

/// Every layer's `(B, H, T, T)` attention stacked as `(L, B, H, T, T)` on the CPU.
fn stacked(layers: &[LayerAttention]) -> Result<Tensor> {
    let first =
        layers.first().ok_or_else(|| Error::Input("expected at least one layer's attention, got none".into()))?;
    let size = first.probs.size();
    if size.len() != 4 || size[2] != size[3] {
        return Err(Error::Input(format!("expected self-attention of shape (B, H, T, T), got {size:?}")));
    }
    if let Some((i, l)) = layers.iter().enumerate().find(|(_, l)| l.probs.size() != size) {
        return Err(Error::Input(format!("layer {i}'s attention is {:?}, layer 0's {size:?}", l.probs.size())));
    }
    Ok(Tensor::stack(&layers.iter().map(|l| l.probs.detach().to_device(Device::Cpu)).collect::<Vec<_>>(), 0))
}

/// The mean over sequences and over the queries `queries` of the attention on key `query - back`:
/// `(L, H)`.
fn stripe(layers: &[LayerAttention], queries: Range<i64>, back: i64) -> Result<Tensor> {
    let p = stacked(layers)?; // (L, B, H, T, T)
    let t = p.size()[4];
    if queries.start < back || queries.end > t || queries.is_empty() {
        return Err(Error::Input(format!(
            "expected queries within {back}..{t} for a stripe {back} back, got {queries:?} (is the sequence length right?)"
        )));
    }
    let q = Tensor::arange_start(queries.start, queries.end, (Kind::Int64, Device::Cpu));
    let k = &q - back;
    // p[..., q, q - back] for each query q: index rows, then pick one column per row.
    let rows = p.index_select(3, &q); // (L, B, H, Q, T)
    let n = q.size()[0];
    let picked = rows.gather(
        4,
        &k.reshape([1, 1, 1, n, 1]).expand([rows.size()[0], rows.size()[1], rows.size()[2], n, 1], false),
        false,
    );
    Ok(picked.squeeze_dim(4).mean_dim([1, 3].as_slice(), false, Kind::Float)) // (L, H)
}

/// Induction score per layer and head `(L, H)`, in `[0, 1]`: on [`repeated_tokens`] with halves of
/// `len` tokens (`T = 1 + 2·len`), the mean attention from each token of the second copy (position
/// `p`) to the token after its first occurrence (`p - len + 1`).
pub fn induction_scores(layers: &[LayerAttention], len: i64) -> Result<Tensor> {
    stripe(layers, (len + 1)..(2 * len + 1), len - 1)
}

/// Previous-token score per layer and head `(L, H)`: the mean attention from every position but
/// the first to the token just before it.
pub fn previous_token_scores(layers: &[LayerAttention]) -> Result<Tensor> {
    let t = layers.first().map_or(0, |l| l.probs.size().last().copied().unwrap_or(0));
    stripe(layers, 1..t, 1)
}

/// Attention-sink share per layer and head `(L, H)`: the mean attention every query after the
/// first puts on the first token (the first query can only look at itself).
pub fn sink_share(layers: &[LayerAttention]) -> Result<Tensor> {
    let p = stacked(layers)?; // (L, B, H, T, T)
    let t = p.size()[3];
    if t < 2 {
        return Err(Error::Input(format!("a sink share needs at least 2 tokens, got {t}")));
    }
    Ok(p.narrow(3, 1, t - 1).select(4, 0).mean_dim([1, 3].as_slice(), false, Kind::Float))
}

/// The mean next-token loss (nats) of the model on the first copy and on the second copy of
/// [`repeated_tokens`], from its `logits (B, T, V)`: an induction head lets the model predict the
/// second copy from the first.
pub fn repeated_loss(logits: &Tensor, tokens: &Tensor, len: i64) -> Result<(f64, f64)> {
    let (b, t, v) =
        logits.size3().map_err(|_| Error::Input(format!("expected logits (B, T, V), got {:?}", logits.size())))?;
    if tokens.size() != [b, t] || t != 1 + 2 * len {
        return Err(Error::Input(format!(
            "expected tokens ({b}, {}) for halves of {len}, got logits {:?} and tokens {:?}",
            1 + 2 * len,
            logits.size(),
            tokens.size()
        )));
    }
    // Position i predicts token i + 1.
    let losses = logits
        .narrow(1, 0, t - 1)
        .reshape([-1, v])
        .to_kind(Kind::Float)
        .cross_entropy_loss::<Tensor>(
            &tokens.narrow(1, 1, t - 1).reshape([-1]).to_device(logits.device()),
            None,
            tch::Reduction::None,
            -100,
            0.0,
        )
        .reshape([b, t - 1]);
    // Targets 1..=len are the first copy (its first token is unpredictable either way); the
    // second copy's targets are len+1..=2·len, of which the first is still a random guess.
    let first = losses.narrow(1, 1, len - 1).mean(Kind::Float).double_value(&[]);
    let second = losses.narrow(1, len + 1, len - 1).mean(Kind::Float).double_value(&[]);
    Ok((first, second))
}

/// A layers × heads heatmap of per-head scores `(L, H)`, heads labelled with their key/value
/// head when they share one (grouped-query attention).
pub fn heads_heatmap(title: &str, scores: &Tensor, layers: &[LayerAttention]) -> Result<Heatmap> {
    let (l, h) =
        scores.size2().map_err(|_| Error::Input(format!("expected scores (L, H), got {:?}", scores.size())))?;
    let labels: Vec<String> = match layers.first() {
        Some(a) => (0..h).map(|i| a.head_label(i)).collect(),
        None => (0..h).map(|i| format!("H{i}")).collect(),
    };
    Ok(Heatmap::from_tensor(title, scores)?
        .row_labels((0..l).map(|i| format!("L{i}")))
        .col_labels(labels)
        .x_label("head")
        .y_label("layer")
        .range(0.0, 1.0)
        .annotate(h * l <= 80))
}

/// The `k` highest scores as `(layer, head, score)`, highest first.
pub fn top_heads(scores: &Tensor, k: usize) -> Result<Vec<(usize, i64, f64)>> {
    let (_, h) =
        scores.size2().map_err(|_| Error::Input(format!("expected scores (L, H), got {:?}", scores.size())))?;
    let flat = Vec::<f64>::try_from(scores.to_kind(Kind::Double).reshape([-1]))?;
    let mut all: Vec<(usize, i64, f64)> =
        flat.iter().enumerate().map(|(i, &s)| (i / h as usize, (i % h as usize) as i64, s)).collect();
    all.sort_by(|a, b| b.2.total_cmp(&a.2));
    all.truncate(k);
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One layer with 2 heads over `[s, a, b, c, a, b, c]`: head 0 attends exactly as an induction
    /// head, head 1 to the first token.
    fn layer(len: i64) -> Vec<LayerAttention> {
        let t = 1 + 2 * len;
        let induction = Tensor::zeros([t, t], (Kind::Float, Device::Cpu));
        for p in 0..t {
            let target = if p > len { p - len + 1 } else { p };
            let _ = induction.get(p).get(target).fill_(1.0);
        }
        let sink = Tensor::zeros([t, t], (Kind::Float, Device::Cpu));
        let _ = sink.select(1, 0).fill_(1.0);
        let probs = Tensor::stack(&[induction, sink], 0).unsqueeze(0); // (1, 2, T, T)
        let z = Tensor::zeros([1, 2, t, 4], (Kind::Float, Device::Cpu));
        vec![LayerAttention { probs, queries: z.shallow_clone(), keys: z.shallow_clone(), values: z, kv_heads: 2 }]
    }

    #[test]
    fn an_exact_induction_head_scores_one_and_a_sink_scores_one_on_the_sink() {
        let len = 3;
        let l = layer(len);
        let ind = Vec::<f64>::try_from(induction_scores(&l, len).unwrap().reshape([-1]).to_kind(Kind::Double)).unwrap();
        assert_eq!(ind, [1.0, 0.0]);
        let sink = Vec::<f64>::try_from(sink_share(&l).unwrap().reshape([-1]).to_kind(Kind::Double)).unwrap();
        assert_eq!(sink[1], 1.0);
        assert!(sink[0] < 0.2);
        let prev =
            Vec::<f64>::try_from(previous_token_scores(&l).unwrap().reshape([-1]).to_kind(Kind::Double)).unwrap();
        assert_eq!(prev[0], 0.0);
        assert!(
            (prev[1] - 1.0 / 6.0).abs() < 1e-7,
            "the sink head's query 1 looks at token 0, its previous token: {prev:?}"
        );
        assert_eq!(top_heads(&induction_scores(&l, len).unwrap(), 1).unwrap(), [(0, 0, 1.0)]);
        let err = induction_scores(&l, len + 1).unwrap_err().to_string();
        assert!(err.contains("is the sequence length right"), "{err}");
    }

    #[test]
    fn repeated_tokens_repeat_and_are_seeded() {
        let x = repeated_tokens(2, 5, 100..200, 0, 7).unwrap();
        assert_eq!(x.size(), [2, 11]);
        assert_eq!(x.narrow(1, 1, 5), x.narrow(1, 6, 5));
        assert_eq!(x, repeated_tokens(2, 5, 100..200, 0, 7).unwrap());
        assert_ne!(x, repeated_tokens(2, 5, 100..200, 0, 8).unwrap());
        assert_ne!(x.get(0), x.get(1));
        assert!(x.narrow(1, 1, 10).min().int64_value(&[]) >= 100 && x.max().int64_value(&[]) < 200);
    }

    #[test]
    fn a_model_that_copies_has_a_lower_loss_on_the_second_copy() {
        let len = 4;
        let x = repeated_tokens(1, len, 0..10, 0, 1).unwrap();
        // Logits that predict each next token of the second copy perfectly and are uniform elsewhere.
        let logits = Tensor::zeros([1, 1 + 2 * len, 10], (Kind::Float, Device::Cpu));
        for p in (len + 1)..(2 * len) {
            let next = x.int64_value(&[0, p + 1]);
            let _ = logits.get(0).get(p).get(next).fill_(50.0);
        }
        let (first, second) = repeated_loss(&logits, &x, len).unwrap();
        assert!((first - 10f64.ln()).abs() < 1e-5 && second < 1e-6, "{first} {second}");
    }
}
