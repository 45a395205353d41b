//! Attention views drawn by the crate (inline in notebooks, saved as PNG): a head view (tokens in
//! two columns joined by lines weighted by attention, heads colour-coded), a model view (layers ×
//! heads of small attention maps), a neuron view (one query against every key: `q`, `k`, `q ⊙ k`
//! and the softmax) and a labelled heatmap of one head.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use tch::{Kind, Tensor};

use crate::error::{Error, Result};
use crate::models::attention::LayerAttention;
use crate::visuals::figure::plot_err;
use crate::visuals::{Figure, Heatmap, PALETTE};

/// The `(T, T)` attention of sequence `b`, head `h` of a layer, on the CPU.
fn head_probs(layer: &LayerAttention, b: i64, h: i64) -> Result<Tensor> {
    let size = layer.probs.size();
    if size.len() != 4 || b >= size[0] || h >= size[1] {
        return Err(Error::Input(format!("attention of shape {:?} has no sequence {b}, head {h}", size)));
    }
    Ok(layer.probs.get(b).get(h).detach().to_device(tch::Device::Cpu).to_kind(Kind::Float))
}

fn check_tokens(tokens: &[String], t: i64) -> Result<()> {
    if tokens.len() as i64 != t {
        return Err(Error::Input(format!("expected {t} tokens (one per position), got {}", tokens.len())));
    }
    Ok(())
}

/// A labelled heatmap of one head: rows are queries, columns keys.
pub fn attention_heatmap(layers: &[LayerAttention], layer: usize, head: i64, tokens: &[String]) -> Result<Heatmap> {
    let l = layers
        .get(layer)
        .ok_or_else(|| Error::Input(format!("layer {layer} does not exist: the model has {}", layers.len())))?;
    let probs = head_probs(l, 0, head)?;
    check_tokens(tokens, probs.size()[0])?;
    Ok(Heatmap::from_tensor(format!("layer {layer}, head {head}"), &probs)?
        .row_labels(tokens)
        .col_labels(tokens)
        .x_label("key")
        .y_label("query")
        .range(0.0, 1.0))
}

/// The head view of one layer: each token on the left attends to the tokens on the right, one
/// colour per head, line opacity = attention weight. `heads`: which heads (all when empty).
pub fn head_view(layers: &[LayerAttention], layer: usize, heads: &[i64], tokens: &[String]) -> Result<Figure> {
    let l = layers
        .get(layer)
        .ok_or_else(|| Error::Input(format!("layer {layer} does not exist: the model has {}", layers.len())))?;
    let n_heads = l.probs.size()[1];
    let heads: Vec<i64> = if heads.is_empty() { (0..n_heads).collect() } else { heads.to_vec() };
    let maps: Vec<Vec<f32>> = heads
        .iter()
        .map(|&h| head_probs(l, 0, h).and_then(|p| Ok(Vec::<f32>::try_from(p.reshape([-1]))?)))
        .collect::<Result<_>>()?;
    let t = (maps[0].len() as f64).sqrt() as usize;
    check_tokens(tokens, t as i64)?;
    let (row_h, top) = (22u32, 60u32);
    let (w, h) = (560u32, top + row_h * t as u32 + 20);
    let (left_x, right_x) = (170i32, 390i32);
    Figure::render(w, h, |root| {
        let title = format!("layer {layer}: head view ({} heads)", heads.len());
        root.draw(&Text::new(
            title,
            (w as i32 / 2, 10),
            TextStyle::from(("sans-serif", 18).into_font()).pos(Pos::new(HPos::Center, VPos::Top)),
        ))
        .map_err(plot_err)?;
        for (k, &hd) in heads.iter().enumerate() {
            let c = PALETTE[hd as usize % PALETTE.len()];
            let x = 20 + if l.kv_heads < n_heads { 58 } else { 40 } * k as i32;
            root.draw(&Rectangle::new([(x, 34), (x + 12, 46)], c.filled())).map_err(plot_err)?;
            let label = if l.kv_heads < n_heads { format!("{hd}·kv{}", l.kv_head(hd)) } else { format!("{hd}") };
            root.draw(&Text::new(label, (x + 14, 34), ("sans-serif", 12).into_font())).map_err(plot_err)?;
        }
        let y = |i: usize| (top + row_h * i as u32 + row_h / 2) as i32;
        for (k, &hd) in heads.iter().enumerate() {
            let c = PALETTE[hd as usize % PALETTE.len()];
            for i in 0..t {
                for j in 0..t {
                    let a = maps[k][i * t + j] as f64;
                    if a > 0.01 {
                        let style = ShapeStyle { color: c.mix(a.min(1.0) * 0.9), filled: false, stroke_width: 2 };
                        root.draw(&PathElement::new(vec![(left_x + 6, y(i)), (right_x - 6, y(j))], style))
                            .map_err(plot_err)?;
                    }
                }
            }
        }
        for (i, tok) in tokens.iter().enumerate() {
            let style = TextStyle::from(("sans-serif", 14).into_font());
            root.draw(&Text::new(tok.clone(), (left_x, y(i)), style.pos(Pos::new(HPos::Right, VPos::Center))))
                .map_err(plot_err)?;
            root.draw(&Text::new(tok.clone(), (right_x, y(i)), style.pos(Pos::new(HPos::Left, VPos::Center))))
                .map_err(plot_err)?;
        }
        Ok(())
    })
}

/// The model view: a grid of every layer (rows) × head (columns), each a small attention map
/// (dark = 0, bright = 1). Heads that share keys and values (grouped-query attention) are
/// labelled with their key/value head (`H4·kv1`).
pub fn model_view(layers: &[LayerAttention]) -> Result<Figure> {
    model_view_layers(layers, 0..layers.len())
}

/// The model view of some layers only (a 30-layer model's full grid is very tall), labelled
/// with their real indices: `model_view_layers(&out.layers, 24..30)`.
pub fn model_view_layers(all: &[LayerAttention], which: std::ops::Range<usize>) -> Result<Figure> {
    let first = which.start;
    let layers = all.get(which.clone()).filter(|l| !l.is_empty()).ok_or_else(|| {
        Error::Input(format!("model view: layers {which:?} do not exist: the model has layers 0..{}", all.len()))
    })?;
    let n_heads = layers[0].probs.size()[1];
    let t = layers[0].probs.size()[2];
    let cell = ((90 / t.max(1)) as u32).max(2);
    let map = cell * t as u32;
    let (gap, left, top) = (8u32, 40u32, 50u32);
    let (w, h) = (left + n_heads as u32 * (map + gap), top + layers.len() as u32 * (map + gap));
    Figure::render(w, h, |root| {
        root.draw(&Text::new(
            if layers.len() == all.len() {
                "model view: layers x heads".to_string()
            } else {
                format!("model view: layers {}-{} of {} x heads", which.start, which.end - 1, all.len())
            },
            (w as i32 / 2, 8),
            TextStyle::from(("sans-serif", 16).into_font()).pos(Pos::new(HPos::Center, VPos::Top)),
        ))
        .map_err(plot_err)?;
        for (l, layer) in layers.iter().enumerate() {
            let y0 = (top + l as u32 * (map + gap)) as i32;
            root.draw(&Text::new(
                format!("L{}", first + l),
                (6, y0 + map as i32 / 2),
                TextStyle::from(("sans-serif", 12).into_font()).pos(Pos::new(HPos::Left, VPos::Center)),
            ))
            .map_err(plot_err)?;
            for hd in 0..n_heads {
                let x0 = (left + hd as u32 * (map + gap)) as i32;
                if l == 0 {
                    root.draw(&Text::new(
                        layer.head_label(hd),
                        (x0 + map as i32 / 2, top as i32 - 14),
                        TextStyle::from(("sans-serif", 12).into_font()).pos(Pos::new(HPos::Center, VPos::Center)),
                    ))
                    .map_err(plot_err)?;
                }
                let p = Vec::<f32>::try_from(head_probs(layer, 0, hd)?.reshape([-1]))?;
                for i in 0..t as usize {
                    for j in 0..t as usize {
                        let c = ViridisRGB::get_color_normalized(p[i * t as usize + j] as f64, 0.0, 1.0);
                        let (x, y) = (x0 + (j as u32 * cell) as i32, y0 + (i as u32 * cell) as i32);
                        root.draw(&Rectangle::new([(x, y), (x + cell as i32, y + cell as i32)], c.filled()))
                            .map_err(plot_err)?;
                    }
                }
            }
        }
        Ok(())
    })
}

/// The neuron view of one query token: its query `q (1, Dh)`, every key `k (T, Dh)`, the
/// element-wise products `q ⊙ k (T, Dh)` and the attention `softmax(q·k/√Dh) (T, 1)`, stacked.
pub fn neuron_view(
    layers: &[LayerAttention],
    layer: usize,
    head: i64,
    query: usize,
    tokens: &[String],
) -> Result<Figure> {
    let l = layers
        .get(layer)
        .ok_or_else(|| Error::Input(format!("layer {layer} does not exist: the model has {}", layers.len())))?;
    let t = l.keys.size()[2];
    check_tokens(tokens, t)?;
    if query as i64 >= t {
        return Err(Error::Input(format!("query token {query} does not exist: there are {t} tokens")));
    }
    let cpu = |x: &Tensor| x.detach().to_device(tch::Device::Cpu).to_kind(Kind::Float);
    let q = cpu(&l.queries.get(0).get(head).narrow(0, query as i64, 1)); // (1, Dh)
    let k = cpu(&l.keys.get(0).get(head)); // (T, Dh)
    let qk = &q * &k; // (T, Dh)
    let probs = head_probs(l, 0, head)?.narrow(0, query as i64, 1).transpose(0, 1); // (T, 1)
    let who = &tokens[query];
    let figs = [
        Heatmap::from_tensor(format!("query of {who:?} (layer {layer}, head {head})"), &q)?
            .row_labels([who])
            .annotate(false)
            .draw()?,
        Heatmap::from_tensor("keys", &k)?.row_labels(tokens).annotate(false).draw()?,
        Heatmap::from_tensor("query ⊙ key", &qk)?.row_labels(tokens).annotate(false).draw()?,
        Heatmap::from_tensor(format!("attention of {who:?}"), &probs)?
            .row_labels(tokens)
            .col_labels(["softmax"])
            .range(0.0, 1.0)
            .draw()?,
    ];
    Figure::vstack(&figs)
}

/// Queries, keys and values side by side for one token of one head: the token's query
/// `q (1, Dh)` over every key `k (T, Dh)` and value `v (T, Dh)`, its attention over the tokens
/// `(T, 1)`, and what the head returns for it, `attention · v (1, Dh)`.
pub fn qkv_view(layers: &[LayerAttention], layer: usize, head: i64, token: usize, tokens: &[String]) -> Result<Figure> {
    let l = layers
        .get(layer)
        .ok_or_else(|| Error::Input(format!("layer {layer} does not exist: the model has {}", layers.len())))?;
    let (h, t) = (l.keys.size()[1], l.keys.size()[2]);
    check_tokens(tokens, t)?;
    if head < 0 || head >= h {
        return Err(Error::Input(format!("head {head} does not exist: the layer has {h}")));
    }
    if token as i64 >= t {
        return Err(Error::Input(format!("token {token} does not exist: there are {t} tokens")));
    }
    let cpu = |x: &Tensor| x.detach().to_device(tch::Device::Cpu).to_kind(Kind::Float);
    let q = cpu(&l.queries.get(0).get(head).narrow(0, token as i64, 1)); // (1, Dh)
    let k = cpu(&l.keys.get(0).get(head)); // (T, Dh)
    let v = cpu(&l.values.get(0).get(head)); // (T, Dh)
    let probs = head_probs(l, 0, head)?.narrow(0, token as i64, 1); // (1, T)
    let out = probs.matmul(&v); // (1, T) x (T, Dh) -> (1, Dh)
    let who = &tokens[token];
    let row = |title: String, x: &Tensor| -> Result<Figure> {
        Heatmap::from_tensor(title, x)?.row_labels([who]).annotate(false).draw()
    };
    let side = Figure::hstack(&[
        Heatmap::from_tensor("keys", &k)?.row_labels(tokens).annotate(false).draw()?,
        Heatmap::from_tensor("values", &v)?.row_labels(tokens).annotate(false).draw()?,
        Heatmap::from_tensor(format!("attention of {who:?}"), &probs.transpose(0, 1))?
            .row_labels(tokens)
            .col_labels(["softmax"])
            .range(0.0, 1.0)
            .draw()?,
    ])?;
    Figure::vstack(&[
        row(format!("query of {who:?} (layer {layer}, head {head})"), &q)?,
        side,
        row(format!("output for {who:?} = attention · values"), &out)?,
    ])
}

/// Attention rollout (Abnar & Zuidema, 2020): the heads' mean attention of each layer, mixed
/// half-and-half with the identity for the residual path and renormalised, multiplied through the
/// layers. Row `t` is how much each input token flows into position `t` at the top.
///
/// # Shapes
/// every layer's `probs: (B, H, T, T)` → `(T, T)` for sequence 0, rows sum to 1.
pub fn rollout(layers: &[LayerAttention]) -> Result<Tensor> {
    Ok(rollout_batch(layers)?.get(0))
}

/// [`rollout`] for every sequence of the batch at once (a ViT's test images, say).
///
/// # Shapes
/// every layer's `probs: (B, H, T, T)` → `(B, T, T)` on the CPU, rows sum to 1.
///
/// # Errors
/// No layers, or layers whose `probs` are not `(B, H, T, T)` with the first layer's `B` and `T`.
pub fn rollout_batch(layers: &[LayerAttention]) -> Result<Tensor> {
    let first = layers.first().ok_or_else(|| Error::Input("rollout needs at least one layer".into()))?;
    let size = first.probs.size();
    let [b, _, t, _] = size[..] else {
        return Err(Error::Input(format!(
            "rollout: expected attention (B, H, T, T), got shape {}",
            crate::error::fmt_shape(&size)
        )));
    };
    let eye = Tensor::eye(t, (Kind::Float, tch::Device::Cpu));
    let mut flow = eye.expand([b, t, t], false).contiguous();
    for (i, l) in layers.iter().enumerate() {
        let got = l.probs.size();
        if got.len() != 4 || got[0] != b || got[2] != t || got[3] != t {
            return Err(Error::Input(format!(
                "rollout: layer {i}'s attention is {}, expected ({b}, H, {t}, {t}) like layer 0's",
                crate::error::fmt_shape(&got)
            )));
        }
        // (B, T, T): the mean over heads, then the residual path
        let a = l.probs.detach().to_device(tch::Device::Cpu).to_kind(Kind::Float).mean_dim(1, false, Kind::Float);
        let a = (a + &eye) * 0.5;
        let a = &a / a.sum_dim_intlist(-1, true, Kind::Float);
        flow = a.matmul(&flow);
    }
    Ok(flow)
}

/// Numbers that describe what one head does.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HeadStats {
    /// Layer index.
    pub layer: usize,
    /// Head index.
    pub head: i64,
    /// Mean entropy of the attention rows, in nats (0 = each token looks at one token).
    pub entropy: f64,
    /// Mean |query − key| distance in tokens, weighted by attention.
    pub mean_distance: f64,
    /// Mean share of attention on `[CLS]` / `[SEP]` tokens (0 when there are none).
    pub cls_share: f64,
    /// Mean share of attention on `[SEP]` tokens.
    pub sep_share: f64,
    /// Mean share of attention on the previous token.
    pub prev_share: f64,
}

/// [`HeadStats`] for every layer and head of sequence 0.
pub fn head_stats(layers: &[LayerAttention], tokens: &[String]) -> Result<Vec<HeadStats>> {
    let mut out = Vec::new();
    for (li, l) in layers.iter().enumerate() {
        let p = l.probs.get(0).detach().to_device(tch::Device::Cpu).to_kind(Kind::Double); // (H, T, T)
        let (h, t) = (p.size()[0], p.size()[1]);
        check_tokens(tokens, t)?;
        let idx = Tensor::arange(t, (Kind::Double, tch::Device::Cpu));
        let dist = (idx.unsqueeze(1) - idx.unsqueeze(0)).abs(); // (T, T)
        let mark = |name: &str| {
            Tensor::from_slice(&tokens.iter().map(|s| if s == name { 1.0 } else { 0.0 }).collect::<Vec<f64>>())
        };
        let (cls, sep) = (mark("[CLS]"), mark("[SEP]"));
        // (T, T): 1 at (i, i−1)
        let prev = Tensor::eye(t, (Kind::Double, tch::Device::Cpu)).roll([-1], [1]).triu(-1).tril(-1);
        for hd in 0..h {
            let a = p.get(hd); // (T, T)
            let mean = |x: Tensor| x.mean(Kind::Double).double_value(&[]);
            out.push(HeadStats {
                layer: li,
                head: hd,
                entropy: mean(-(&a * a.clamp_min(1e-12).log()).sum_dim_intlist(-1, false, Kind::Double)),
                mean_distance: mean((&a * &dist).sum_dim_intlist(-1, false, Kind::Double)),
                cls_share: mean(a.matmul(&cls)),
                sep_share: mean(a.matmul(&sep)),
                prev_share: if t > 1 { (&a * &prev).sum(Kind::Double).double_value(&[]) / (t - 1) as f64 } else { 0.0 },
            });
        }
    }
    Ok(out)
}

/// One statistic of [`head_stats`] as a labelled layers × heads heatmap. `pick` selects it.
pub fn stats_heatmap(stats: &[HeadStats], title: &str, pick: impl Fn(&HeadStats) -> f64) -> Result<Heatmap> {
    let layers = stats.iter().map(|s| s.layer).max().map_or(0, |m| m + 1);
    let heads = stats.iter().map(|s| s.head).max().map_or(0, |m| m + 1) as usize;
    let mut rows = vec![vec![f64::NAN; heads]; layers];
    for s in stats {
        rows[s.layer][s.head as usize] = pick(s);
    }
    Ok(Heatmap::from_rows(title, &rows)?
        .row_labels((0..layers).map(|l| format!("L{l}")))
        .col_labels((0..heads).map(|h| format!("H{h}")))
        .x_label("head")
        .y_label("layer"))
}

/// The difference of two sentences' attention (`a − b`) for one layer and head; both must have
/// the same number of tokens.
pub fn attention_difference(
    a: &[LayerAttention],
    b: &[LayerAttention],
    layer: usize,
    head: i64,
    tokens: &[String],
) -> Result<Heatmap> {
    let (la, lb) = match (a.get(layer), b.get(layer)) {
        (Some(x), Some(y)) => (x, y),
        _ => return Err(Error::Input(format!("layer {layer} does not exist in both models"))),
    };
    let (pa, pb) = (head_probs(la, 0, head)?, head_probs(lb, 0, head)?);
    if pa.size() != pb.size() {
        return Err(Error::Shape {
            what: "attention difference (the sentences need as many tokens)".into(),
            expected: pa.size(),
            got: pb.size(),
        });
    }
    check_tokens(tokens, pa.size()[0])?;
    Ok(Heatmap::from_tensor(format!("difference a − b, layer {layer}, head {head}"), &(pa - pb))?
        .row_labels(tokens)
        .col_labels(tokens)
        .range(-1.0, 1.0))
}
