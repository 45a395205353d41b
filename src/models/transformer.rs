//! Transformer building blocks for the summarizer (notebook 2): multi-head attention (over the
//! crate's one [`attention`] function), a post-LayerNorm Transformer layer that is an encoder layer or (with
//! cross-attention) a decoder layer, position ids that skip padding, dropout, and the
//! [`SeqLayer`] trait with its [`LayerCache`] for incremental decoding (so the summarizer can
//! stack the crate's layer or a student's).
//!
//! Conventions follow PyTorch's `nn.MultiheadAttention` / `nn.TransformerEncoderLayer` /
//! `nn.TransformerDecoderLayer` (`batch_first`, ReLU, post-norm), whose outputs the parity
//! fixtures record.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Dropout: zeroes each value with probability `p` while training and scales the rest by
/// `1 / (1 - p)`, like libtorch's `dropout`, with a cheaper mask.
///
/// On the CPU the cost of dropout is drawing the random numbers. libtorch's `bernoulli_` (behind
/// its `dropout`) uses MKL's vectorised generator on Intel CPUs and one draw of its serial
/// Mersenne Twister per value on others. Here a value is dropped when a 16-bit lane is below
/// `p · 2¹⁶`. On the CPU the lanes come from a counter-based hash, filled in vectorised Rust and
/// keyed by one draw of libtorch's generator (so `hw9::seed` and `tch::manual_seed` make runs
/// repeat, and a resumed run draws what an unstopped one drew): in notebook 2's training step
/// the masks took ~7 ms of the forward pass when four lanes came from each 64-bit draw of
/// libtorch's generator, and 1.4–2.7 ms so (BENCHMARKS.md). On other devices each 64-bit draw of
/// libtorch's generator gives four lanes. `p` is used rounded to a multiple of 2⁻¹⁶
/// (0.1 → 0.100006), and the scale is `1 / (1 − that)`, so the expectation is exactly `x` (in
/// `f32`; other kinds get the `f32` mask converted).
pub fn dropout(x: &Tensor, p: f64, train: bool) -> Tensor {
    if !train || p <= 0.0 {
        return x.shallow_clone();
    }
    let dropped_lanes = (p * 65536.0).round().min(65535.0);
    let scale = 65536.0 / (65536.0 - dropped_lanes);
    let keep = tch::no_grad(|| {
        let n = x.numel() as i64;
        if x.device() == tch::Device::Cpu && n > 0 && n <= 1 << 33 {
            let mut key = Tensor::empty([1], (Kind::Int64, tch::Device::Cpu));
            let key = key.random_from_(i64::MIN, None).int64_value(&[0]) as u64;
            let mask = Tensor::empty(x.size(), (Kind::Float, tch::Device::Cpu));
            // SAFETY: `mask` is a fresh contiguous f32 tensor of `n` values that nothing else holds.
            let out = unsafe { std::slice::from_raw_parts_mut(mask.data_ptr() as *mut f32, n as usize) };
            crate::rng::fill_keep_mask(out, key, dropped_lanes as u16, scale as f32);
            return if x.kind() == Kind::Float { mask } else { mask.to_kind(x.kind()) };
        }
        let mut bits = Tensor::empty([(n + 3) / 4], (Kind::Int64, x.device()));
        let _ = bits.random_from_(i64::MIN, None); // 64 uniform bits each
        let lanes = bits.view_dtype(Kind::Int16).narrow(0, 0, n).view(x.size().as_slice()); // uniform in [-2¹⁵, 2¹⁵)
        lanes.ge(dropped_lanes as i64 - 32768).to_kind(x.kind()) * scale
    });
    x * keep
}

/// The sizes of one Transformer layer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LayerConfig {
    /// Model width `D`.
    pub d_model: i64,
    /// Attention heads `H` (`D % H == 0`).
    pub n_heads: i64,
    /// Width of the feed-forward block.
    pub d_ffn: i64,
    /// Dropout on the residual branches and inside the feed-forward block while training.
    pub dropout: f64,
}

/// The feed-forward block's activation: the homework's ReLU, or BERT's GELU (exact, erf) for a
/// summarizer whose layers start from BERT's ([`crate::models::warm_start`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// `max(x, 0)`.
    #[default]
    Relu,
    /// `x · Φ(x)`.
    Gelu,
}

impl Activation {
    /// ReLU (the default, which configs leave unwritten).
    pub fn is_relu(&self) -> bool {
        *self == Activation::Relu
    }

    /// The activation of `x`.
    pub fn apply(self, x: &Tensor) -> Tensor {
        match self {
            Activation::Relu => x.relu(),
            Activation::Gelu => x.gelu("none"),
        }
    }
}

/// Which stack a layer belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stack {
    /// Self-attention over the whole (padded) sequence, then the feed-forward block.
    Encoder,
    /// Causal self-attention, cross-attention over the encoder's output, then the feed-forward block.
    Decoder,
}

/// What a decoder layer remembers between decoding steps: the inputs it has seen (for layers
/// that recompute), or its self-attention keys and values (for [`TransformerLayer`]), and the
/// encoder's projected keys and values.
#[derive(Debug, Default)]
pub struct LayerCache {
    /// `(B, t, D)`: every input so far.
    pub inputs: Option<Tensor>,
    /// `(B, H, t, Dh)` self-attention keys and values so far.
    pub keys: Option<Tensor>,
    /// `(B, H, t, Dh)` self-attention values so far.
    pub values: Option<Tensor>,
    /// `(B, H, S, Dh)` cross-attention keys and values (computed at the first step).
    pub cross: Option<(Tensor, Tensor)>,
}

impl LayerCache {
    /// Keeps rows `index: (B',)` of every cached tensor (beam search reorders its hypotheses).
    pub fn reorder(&mut self, index: &Tensor) {
        let pick = |t: &mut Option<Tensor>| {
            if let Some(x) = t.as_mut() {
                *x = x.index_select(0, index);
            }
        };
        pick(&mut self.inputs);
        pick(&mut self.keys);
        pick(&mut self.values);
        if let Some((k, v)) = self.cross.as_mut() {
            *k = k.index_select(0, index);
            *v = v.index_select(0, index);
        }
    }

    /// [`LayerCache::reorder`] when `index` keeps every row among the rows of its own source
    /// document (beam search between two steps where no document finished): the cross-attention
    /// keys and values, equal for those rows, stay as they are instead of being copied.
    pub fn reorder_within_documents(&mut self, index: &Tensor) {
        let cross = self.cross.take();
        self.reorder(index);
        self.cross = cross;
    }
}

pub(crate) fn append(cache: &mut Option<Tensor>, x: Tensor, dim: i64) -> Tensor {
    let all = match cache.take() {
        Some(prev) => Tensor::cat(&[prev, x], dim),
        None => x,
    };
    *cache = Some(all.shallow_clone());
    all
}

/// A layer the summarizer can stack: the crate's [`TransformerLayer`], or a student's own.
pub trait SeqLayer: std::fmt::Debug + Send {
    /// # Shapes
    /// `x: (B, T, D)`, `padding_mask: (B, T)` (1 = padding); for a decoder layer `encoder_out:
    /// (B, S, D)` and `encoder_padding_mask: (B, S)` (1 = padding) → `(B, T, D)`.
    fn forward(
        &self,
        x: &Tensor,
        padding_mask: Option<&Tensor>,
        encoder_out: Option<&Tensor>,
        encoder_padding_mask: Option<&Tensor>,
        train: bool,
    ) -> Tensor;

    /// One decoding step of a decoder layer: `x: (B, 1, D)` is the newest position, `cache` holds
    /// the earlier ones → `(B, 1, D)`, equal to the last row of [`SeqLayer::forward`] over the
    /// whole prefix. The default recomputes that prefix; [`TransformerLayer`] caches keys and values.
    fn step(
        &self,
        x: &Tensor,
        cache: &mut LayerCache,
        encoder_out: &Tensor,
        encoder_padding_mask: Option<&Tensor>,
    ) -> Tensor {
        let all = append(&mut cache.inputs, x.shallow_clone(), 1);
        let t = all.size()[1];
        self.forward(&all, None, Some(encoder_out), encoder_padding_mask, false).narrow(1, t - 1, 1)
    }
}

#[cfg(feature = "reference")]
pub use super::reference::transformer::{make_positions, MultiheadAttention, TransformerLayer};
