//! The reference answers of notebook 2's TODO cells: multi-head attention, the encoder/decoder
//! layer and position ids. Compiled with the `reference` feature; the student handout does not
//! contain this file. Re-exported from [`crate::models::transformer`].

use tch::nn::{self, Module, ModuleT};
use tch::{Kind, Tensor};

use crate::models::attention::{attention, merge_heads, split_heads, Mask};
use crate::models::transformer::{append, dropout, Activation, LayerCache, LayerConfig, SeqLayer, Stack};

/// Multi-head attention with separate q, k, v and output projections (with bias).
#[derive(Debug)]
pub struct MultiheadAttention {
    /// Query projection.
    pub q_proj: nn::Linear,
    /// Key projection.
    pub k_proj: nn::Linear,
    /// Value projection.
    pub v_proj: nn::Linear,
    /// Output projection after the heads are merged.
    pub out_proj: nn::Linear,
    /// Heads `H`.
    pub n_heads: i64,
}

impl MultiheadAttention {
    /// `d`-wide projections for `n_heads` heads under `vs` (`q_proj`, `k_proj`, `v_proj`, `out_proj`).
    pub fn new(vs: &nn::Path, d: i64, n_heads: i64) -> Self {
        let lin = |name: &str| nn::linear(vs / name, d, d, Default::default());
        MultiheadAttention {
            q_proj: lin("q_proj"),
            k_proj: lin("k_proj"),
            v_proj: lin("v_proj"),
            out_proj: lin("out_proj"),
            n_heads,
        }
    }

    /// Projects, attends in every head at once, merges the heads and projects the output. With
    /// `need_weights` the weights come back too (the explicit path); without, the layer trains
    /// through libtorch's fused kernel.
    ///
    /// # Shapes
    /// `query: (B, T, D)`, `key, value: (B, S, D)`, `mask` over the `S` keys →
    /// `(output (B, T, D), weights (B, H, T, S) when asked for)`.
    pub fn forward(
        &self,
        query: &Tensor,
        key: &Tensor,
        value: &Tensor,
        mask: Mask,
        need_weights: bool,
    ) -> (Tensor, Option<Tensor>) {
        let q = self.heads(&self.q_proj, query);
        let k = self.heads(&self.k_proj, key);
        let v = self.heads(&self.v_proj, value);
        self.attend(&q, &k, &v, mask, need_weights)
    }

    /// Projects `x: (B, n, D)` with `proj` and splits the heads: `(B, H, n, Dh)`.
    pub fn heads(&self, proj: &nn::Linear, x: &Tensor) -> Tensor {
        split_heads(&proj.forward(x), self.n_heads)
    }

    /// Attention over already projected heads, then the heads merged and the output projection:
    /// `q: (B, H, T, Dh)`, `k, v: (B, H, S, Dh)` → `(output (B, T, D), weights (B, H, T, S))`.
    pub fn attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Mask,
        need_weights: bool,
    ) -> (Tensor, Option<Tensor>) {
        let out = attention(q, k, v, mask, need_weights);
        (self.out_proj.forward(&merge_heads(&out.context)), out.weights) // (B, H, T, Dh) -> (B, T, D)
    }
}

/// A post-LayerNorm Transformer layer. Without `encoder_attn` it is an encoder layer; with it, a
/// decoder layer (causal self-attention, then cross-attention over the encoder's output).
#[derive(Debug)]
pub struct TransformerLayer {
    /// Self-attention (causal in a decoder layer).
    pub self_attn: MultiheadAttention,
    /// The LayerNorm after self-attention's residual.
    pub self_attn_layer_norm: nn::LayerNorm,
    /// A decoder layer's cross-attention and the LayerNorm after its residual.
    pub encoder_attn: Option<(MultiheadAttention, nn::LayerNorm)>,
    /// The feed-forward block's first projection (`D → d_ffn`).
    pub fc1: nn::Linear,
    /// The feed-forward block's second projection (`d_ffn → D`).
    pub fc2: nn::Linear,
    /// The LayerNorm after the feed-forward residual.
    pub final_layer_norm: nn::LayerNorm,
    /// Dropout probability while training.
    pub dropout: f64,
    /// The feed-forward activation (ReLU unless [`TransformerLayer::with_activation`] says).
    pub activation: Activation,
}

impl TransformerLayer {
    /// The same layer with another feed-forward activation.
    pub fn with_activation(self, activation: Activation) -> Self {
        TransformerLayer { activation, ..self }
    }

    /// A layer of `cfg`'s sizes under `vs`, with fairseq's parameter names.
    pub fn new(vs: &nn::Path, cfg: &LayerConfig, stack: Stack) -> Self {
        let d = cfg.d_model;
        let ln = |name: &str| nn::layer_norm(vs / name, vec![d], Default::default());
        TransformerLayer {
            self_attn: MultiheadAttention::new(&(vs / "self_attn"), d, cfg.n_heads),
            self_attn_layer_norm: ln("self_attn_layer_norm"),
            encoder_attn: (stack == Stack::Decoder).then(|| {
                (MultiheadAttention::new(&(vs / "encoder_attn"), d, cfg.n_heads), ln("encoder_attn_layer_norm"))
            }),
            fc1: nn::linear(vs / "fc1", d, cfg.d_ffn, Default::default()),
            fc2: nn::linear(vs / "fc2", cfg.d_ffn, d, Default::default()),
            final_layer_norm: ln("final_layer_norm"),
            dropout: cfg.dropout,
            activation: Activation::Relu,
        }
    }
}

impl ModuleT for TransformerLayer {
    /// An encoder layer without padding.
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        SeqLayer::forward(self, x, None, None, None, train)
    }
}

impl SeqLayer for TransformerLayer {
    fn forward(
        &self,
        x: &Tensor,
        padding_mask: Option<&Tensor>,
        encoder_out: Option<&Tensor>,
        encoder_padding_mask: Option<&Tensor>,
        train: bool,
    ) -> Tensor {
        let drop = |y: Tensor| dropout(&y, self.dropout, train);
        let causal = self.encoder_attn.is_some();
        let (a, _) = self.self_attn.forward(x, x, x, Mask::padding(padding_mask).causal(causal), false);
        let mut x = self.self_attn_layer_norm.forward(&(x + drop(a)));
        if let (Some((attn, norm)), Some(enc)) = (&self.encoder_attn, encoder_out) {
            let (a, _) = attn.forward(&x, enc, enc, Mask::padding(encoder_padding_mask), false);
            x = norm.forward(&(&x + drop(a)));
        }
        let ffn = self.fc2.forward(&drop(self.activation.apply(&self.fc1.forward(&x))));
        self.final_layer_norm.forward(&(&x + drop(ffn)))
    }

    fn step(
        &self,
        x: &Tensor,
        cache: &mut LayerCache,
        encoder_out: &Tensor,
        encoder_padding_mask: Option<&Tensor>,
    ) -> Tensor {
        let sa = &self.self_attn;
        let k = append(&mut cache.keys, sa.heads(&sa.k_proj, x), 2); // (B, H, t, Dh)
        let v = append(&mut cache.values, sa.heads(&sa.v_proj, x), 2);
        // The newest query may look at every cached position: no causal mask needed.
        let (a, _) = sa.attend(&sa.heads(&sa.q_proj, x), &k, &v, Mask::default(), false);
        let mut x = self.self_attn_layer_norm.forward(&(x + a));
        if let Some((attn, norm)) = &self.encoder_attn {
            let (ck, cv) = cache
                .cross
                .get_or_insert_with(|| (attn.heads(&attn.k_proj, encoder_out), attn.heads(&attn.v_proj, encoder_out)));
            let (a, _) = attn.attend(&attn.heads(&attn.q_proj, &x), ck, cv, Mask::padding(encoder_padding_mask), false);
            x = norm.forward(&(&x + a));
        }
        let ffn = self.fc2.forward(&self.activation.apply(&self.fc1.forward(&x)));
        self.final_layer_norm.forward(&(&x + ffn))
    }
}

/// Position ids that skip padding: real tokens get `pad + 1, pad + 2, …` in order, padding keeps
/// `pad` (fairseq's `make_positions`).
///
/// # Shapes
/// `tokens: (B, T)` int64 → `(B, T)` int64.
pub fn make_positions(tokens: &Tensor, pad: i64) -> Tensor {
    let real = tokens.ne(pad).to_kind(Kind::Int64);
    real.cumsum(1, Kind::Int64) * &real + pad
}
