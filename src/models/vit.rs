//! Vision Transformer: patches, a Transformer encoder equivalent to PyTorch's
//! `nn.TransformerEncoder`, and the ViT classifier.
//!
//! Parameter names follow PyTorch's: the encoder's are those of `nn.TransformerEncoder`'s
//! `state_dict` (`layers.0.self_attn.in_proj_weight`, `layers.0.linear1.weight`, ...), so weights
//! written by PyTorch load unchanged (that is how the parity fixtures work).
//!
//! (Over 400 lines: the encoder stack — self-attention, layer, stack with its row-pruned paths —
//! lives here because the ViT and the MAE share it, and PyTorch keeps it as one module too.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::Tensor;

use super::attention::{attention, merge_heads, split_heads, LayerAttention, Mask, ModelOutput};
use crate::error::{Error, Result};

/// Splits images into flattened square patches.
///
/// # Shapes
/// `images: (B, C, H, W)` → `(B, N, C·P·P)` with `N = (H/P)·(W/P)`, patches in row-major order and
/// each patch flattened channel first (`c p1 p2`, as einops' `b c (h p1) (w p2) -> b (h w) (c p1 p2)`).
pub fn patchify(images: &Tensor, p: i64) -> Result<Tensor> {
    let size = images.size();
    let [b, c, h, w] = size[..] else {
        return Err(Error::Input(format!(
            "patchify: expected images (B, C, H, W), got shape {}",
            crate::error::fmt_shape(&size)
        )));
    };
    if p <= 0 || h % p != 0 || w % p != 0 {
        return Err(Error::Input(format!("patchify: patch size {p} must divide the image size {h}x{w}")));
    }
    Ok(images
        .reshape([b, c, h / p, p, w / p, p]) // (B, C, h, P, w, P)
        .permute([0, 2, 4, 1, 3, 5]) // (B, h, w, C, P, P)
        .reshape([b, (h / p) * (w / p), c * p * p])) // (B, N, C·P·P)
}

/// Gathers the tokens `ids` of each sequence: `x: (B, N, D)`, `ids: (B, K)` (int64) → `(B, K, D)`.
pub fn index_sequence(x: &Tensor, ids: &Tensor) -> Tensor {
    let d = x.size()[2];
    x.gather(1, &ids.unsqueeze(-1).expand([-1, -1, d], false), false)
}

/// Sizes of a Transformer encoder stack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncoderConfig {
    /// Model dimension `D`.
    pub d_model: i64,
    /// Attention heads `H` (`D % H == 0`).
    pub n_heads: i64,
    /// Number of layers.
    pub n_layers: i64,
    /// Hidden size of each layer's feed-forward block.
    pub d_ffn: i64,
}

impl EncoderConfig {
    /// Checks the sizes.
    pub fn validate(&self) -> Result<()> {
        if self.d_model <= 0 || self.n_heads <= 0 || self.n_layers <= 0 || self.d_ffn <= 0 {
            return Err(Error::Config(format!("encoder sizes must be positive, got {self:?}")));
        }
        if self.d_model % self.n_heads != 0 {
            return Err(Error::Config(format!(
                "d_model {} must be divisible by n_heads {}",
                self.d_model, self.n_heads
            )));
        }
        Ok(())
    }
}

/// Multi-head self-attention with PyTorch's `nn.MultiheadAttention` parameters. Its passes are
/// crate-private: with the weights in its public fields they would compute notebook 2's
/// multi-head attention TODO; the encoder around it (`EncoderLayer`, `TransformerEncoder`) is
/// what notebook 1 is given.
#[derive(Debug)]
pub struct SelfAttention {
    /// `(3D, D)`: the query, key and value projections, packed.
    pub in_proj_weight: Tensor,
    /// `(3D,)`: their biases.
    pub in_proj_bias: Tensor,
    /// Output projection after the heads are merged.
    pub out_proj: nn::Linear,
    /// Heads `H`.
    pub n_heads: i64,
}

impl SelfAttention {
    /// Self-attention of width `d` with `n_heads` heads under `vs`, initialised as PyTorch does.
    pub fn new(vs: &nn::Path, d: i64, n_heads: i64) -> Self {
        let bound = (6.0 / (d + 3 * d) as f64).sqrt(); // xavier_uniform_, as PyTorch initialises it
        SelfAttention {
            in_proj_weight: vs.var("in_proj_weight", &[3 * d, d], nn::Init::Uniform { lo: -bound, up: bound }),
            in_proj_bias: vs.zeros("in_proj_bias", &[3 * d]),
            out_proj: nn::linear(vs / "out_proj", d, d, nn::LinearConfig { bias: true, ..Default::default() }),
            n_heads,
        }
    }

    /// # Shapes
    /// `x: (B, N, D)` → `(B, N, D)`.
    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        let d = x.size().last().copied().unwrap_or(0);
        let h = self.n_heads;
        // One packed projection, split into views: split's backward is one concatenation, where
        // indexing a (3, …) tensor would build three zero-padded gradients and add them.
        let qkv = x.linear(&self.in_proj_weight, Some(&self.in_proj_bias)).split(d, -1); // 3 × (B, N, D)
        let out = attention(
            &split_heads(&qkv[0], h),
            &split_heads(&qkv[1], h),
            &split_heads(&qkv[2], h),
            Mask::default(),
            false,
        );
        self.out_proj.forward(&merge_heads(&out.context)) // (B, H, N, Dh) -> (B, N, D)
    }

    /// [`SelfAttention::forward`] for the query rows `xq` only, attending over all of `x`: when
    /// `xq` is the first `Q` rows of `x`, the result is the first `Q` rows of `forward(x)`, with
    /// the query projection and the output projection computed for those rows alone.
    ///
    /// # Shapes
    /// `xq: (B, Q, D)`, `x: (B, N, D)` → `(B, Q, D)`.
    pub(crate) fn forward_queries(&self, xq: &Tensor, x: &Tensor) -> Tensor {
        let d = xq.size().last().copied().unwrap_or(0);
        let (h, w, bias) = (self.n_heads, &self.in_proj_weight, &self.in_proj_bias);
        let q = xq.linear(&w.narrow(0, 0, d), Some(&bias.narrow(0, 0, d))); // (B, Q, D)
        let kv = x.linear(&w.narrow(0, d, 2 * d), Some(&bias.narrow(0, d, 2 * d))).split(d, -1); // 2 × (B, N, D)
        let out =
            attention(&split_heads(&q, h), &split_heads(&kv[0], h), &split_heads(&kv[1], h), Mask::default(), false);
        self.out_proj.forward(&merge_heads(&out.context)) // (B, H, Q, Dh) -> (B, Q, D)
    }

    /// [`SelfAttention::forward`] with the attention kept: each head's weights, queries, keys and
    /// values (libtorch's reference kernel, which returns the weights, in place of the fused one).
    ///
    /// # Shapes
    /// `x: (B, N, D)` → `(B, N, D)` and a [`LayerAttention`] with `probs: (B, H, N, N)`.
    pub(crate) fn forward_with_attention(&self, x: &Tensor) -> Result<(Tensor, LayerAttention)> {
        let d = x.size().last().copied().unwrap_or(0);
        let h = self.n_heads;
        let qkv = x.linear(&self.in_proj_weight, Some(&self.in_proj_bias)).split(d, -1); // 3 × (B, N, D)
        let (q, k, v) = (split_heads(&qkv[0], h), split_heads(&qkv[1], h), split_heads(&qkv[2], h));
        let out = attention(&q, &k, &v, Mask::default(), true);
        let probs = out.weights.ok_or_else(|| Error::Input("the attention kernel returned no weights".into()))?;
        let context = self.out_proj.forward(&merge_heads(&out.context));
        Ok((context, LayerAttention { probs, queries: q, keys: k, values: v, kv_heads: h }))
    }
}

/// One post-norm encoder layer, as `nn.TransformerEncoderLayer(d, h, ffn, dropout=0,
/// activation="gelu", batch_first=True)`: `x = norm1(x + attn(x)); x = norm2(x + ffn(x))`.
#[derive(Debug)]
pub struct EncoderLayer {
    /// Self-attention.
    pub self_attn: SelfAttention,
    /// Feed-forward: `D → d_ffn`.
    pub linear1: nn::Linear,
    /// Feed-forward: `d_ffn → D`.
    pub linear2: nn::Linear,
    /// LayerNorm after the attention residual.
    pub norm1: nn::LayerNorm,
    /// LayerNorm after the feed-forward residual.
    pub norm2: nn::LayerNorm,
}

impl EncoderLayer {
    /// A layer of `cfg`'s sizes under `vs`.
    pub fn new(vs: &nn::Path, cfg: &EncoderConfig) -> Self {
        let (d, f) = (cfg.d_model, cfg.d_ffn);
        EncoderLayer {
            self_attn: SelfAttention::new(&(vs / "self_attn"), d, cfg.n_heads),
            linear1: nn::linear(vs / "linear1", d, f, Default::default()),
            linear2: nn::linear(vs / "linear2", f, d, Default::default()),
            norm1: nn::layer_norm(vs / "norm1", vec![d], Default::default()),
            norm2: nn::layer_norm(vs / "norm2", vec![d], Default::default()),
        }
    }

    /// The layer's output for the first `q` positions only (every position is still attended
    /// over): the first `q` rows of `forward(x)`, without the work for the other rows.
    ///
    /// # Shapes
    /// `x: (B, N, D)` → `(B, q, D)`.
    pub fn forward_first(&self, x: &Tensor, q: i64) -> Tensor {
        self.forward_rows(&x.narrow(1, 0, q), x)
    }

    /// The layer's output for the rows `xq` of `x` only (every row of `x` is still attended over).
    ///
    /// # Shapes
    /// `xq: (B, Q, D)` rows of `x: (B, N, D)` → `(B, Q, D)`.
    pub(crate) fn forward_rows(&self, xq: &Tensor, x: &Tensor) -> Tensor {
        self.feed_forward(&self.norm1.forward(&(xq + self.self_attn.forward_queries(xq, x))))
    }

    /// The layer's output with its attention kept ([`TransformerEncoder::forward_with_attention`]).
    fn forward_with_attention(&self, x: &Tensor) -> Result<(Tensor, LayerAttention)> {
        let (a, attention) = self.self_attn.forward_with_attention(x)?;
        Ok((self.feed_forward(&self.norm1.forward(&(x + a))), attention))
    }

    /// The feed-forward half: `norm2(x + linear2(gelu(linear1(x))))`.
    fn feed_forward(&self, x: &Tensor) -> Tensor {
        let ffn = self.linear2.forward(&self.linear1.forward(x).gelu("none"));
        self.norm2.forward(&(x + ffn))
    }
}

impl Module for EncoderLayer {
    /// # Shapes
    /// `x: (B, N, D)` → `(B, N, D)`.
    fn forward(&self, x: &Tensor) -> Tensor {
        self.feed_forward(&self.norm1.forward(&(x + self.self_attn.forward(x))))
    }
}

/// A stack of [`EncoderLayer`]s, named like `nn.TransformerEncoder` (`layers.{i}.…`).
#[derive(Debug)]
pub struct TransformerEncoder {
    /// The layers, first first.
    pub layers: Vec<EncoderLayer>,
    /// Set inside [`TransformerEncoder::with_attention`]: passes keep their attention in `recorded`.
    recording: AtomicBool,
    recorded: Mutex<Option<Vec<LayerAttention>>>,
}

impl TransformerEncoder {
    /// `cfg.n_layers` layers under `vs / "layers"`.
    pub fn new(vs: &nn::Path, cfg: &EncoderConfig) -> Self {
        let layers = (0..cfg.n_layers).map(|i| EncoderLayer::new(&(vs / "layers" / i), cfg)).collect();
        TransformerEncoder { layers, recording: AtomicBool::new(false), recorded: Mutex::new(None) }
    }

    /// Runs `f` (a model's forward pass that uses this encoder, say) with the encoder keeping
    /// every layer's attention, and returns `f`'s result with the attention of the encoder's last
    /// pass inside it: attention rollout on a ViT exactly as its own forward computes it. Inside,
    /// every pass runs all rows of every layer with libtorch's reference attention kernel (which
    /// returns the weights): same outputs, a little slower.
    ///
    /// # Errors
    /// `f` never ran the encoder.
    pub fn with_attention<T>(&self, f: impl FnOnce() -> T) -> Result<(T, Vec<LayerAttention>)> {
        struct Off<'a>(&'a AtomicBool);
        impl Drop for Off<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::SeqCst); // also when `f` panics
            }
        }
        self.take_recorded();
        self.recording.store(true, Ordering::SeqCst);
        let out = {
            let _off = Off(&self.recording);
            f()
        };
        let layers = self.take_recorded().ok_or_else(|| {
            Error::Input(
                "with_attention: the closure never ran this encoder; call the forward pass of the model that \
                 holds it inside the closure"
                    .into(),
            )
        })?;
        Ok((out, layers))
    }

    fn take_recorded(&self) -> Option<Vec<LayerAttention>> {
        self.recorded.lock().map(|mut r| r.take()).unwrap_or_else(|poisoned| poisoned.into_inner().take())
    }

    /// Inside [`TransformerEncoder::with_attention`]: the whole pass with its attention kept
    /// (`None` outside, or for input the encoder cannot take: the plain pass then reports it).
    fn recording_pass(&self, x: &Tensor) -> Option<Tensor> {
        if !self.recording.load(Ordering::SeqCst) {
            return None;
        }
        let out = self.forward_with_attention(x).ok()?;
        let mut slot = self.recorded.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *slot = Some(out.layers);
        Some(out.hidden)
    }

    /// The encoder's output for the first `q` positions: the first `q` rows of `forward(x)`. The
    /// last layer works on those rows alone (its other outputs would be thrown away): a ViT
    /// that reads only the CLS token (`q = 1`) saves most of a layer's work.
    ///
    /// # Shapes
    /// `x: (B, N, D)` → `(B, q, D)`.
    pub fn forward_first(&self, x: &Tensor, q: i64) -> Tensor {
        self.forward_last_rows(x, |h| h.narrow(1, 0, q))
    }

    /// The encoder's output at positions `ids` only: `index_sequence(forward(x), ids)`, with the
    /// last layer working on those rows alone (an MAE decoder whose loss reads only the masked
    /// patches).
    ///
    /// # Shapes
    /// `x: (B, N, D)`, `ids: (B, Q)` positions → `(B, Q, D)`.
    pub fn forward_at(&self, x: &Tensor, ids: &Tensor) -> Tensor {
        self.forward_last_rows(x, |h| index_sequence(h, ids))
    }

    /// The encoder's output with every layer's attention kept, for attention rollout and the
    /// attention views: the same output as `forward` (up to the attention kernel: the weights come
    /// from libtorch's reference kernel, `forward` uses the fused one).
    ///
    /// # Shapes
    /// `x: (B, N, D)` → `hidden: (B, N, D)`, one [`LayerAttention`] per layer (`probs: (B, H, N, N)`).
    ///
    /// # Errors
    /// `x` not `(B, N, D)` with `D` the encoder's width.
    pub fn forward_with_attention(&self, x: &Tensor) -> Result<ModelOutput> {
        let size = x.size();
        let width = self.layers.first().map(|l| l.self_attn.in_proj_weight.size()[1]);
        if size.len() != 3 || width.is_some_and(|d| size[2] != d) {
            return Err(Error::Input(format!(
                "TransformerEncoder::forward_with_attention: expected tokens (B, N, {}), got shape {}",
                width.map_or("D".to_string(), |d| d.to_string()),
                crate::error::fmt_shape(&size)
            )));
        }
        let mut hidden = x.shallow_clone();
        let mut layers = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let (h, attention) = layer.forward_with_attention(&hidden)?;
            hidden = h;
            layers.push(attention);
        }
        Ok(ModelOutput { hidden, layers })
    }

    /// All layers but the last on every row, then the last on the rows `rows(h)` of its input.
    fn forward_last_rows(&self, x: &Tensor, rows: impl Fn(&Tensor) -> Tensor) -> Tensor {
        if let Some(all) = self.recording_pass(x) {
            return rows(&all);
        }
        match self.layers.split_last() {
            Some((last, rest)) => {
                let h = rest.iter().fold(x.shallow_clone(), |x, layer| layer.forward(&x));
                last.forward_rows(&rows(&h), &h)
            }
            None => rows(x),
        }
    }
}

impl Module for TransformerEncoder {
    /// # Shapes
    /// `x: (B, N, D)` → `(B, N, D)`.
    fn forward(&self, x: &Tensor) -> Tensor {
        if let Some(all) = self.recording_pass(x) {
            return all;
        }
        self.layers.iter().fold(x.shallow_clone(), |x, layer| layer.forward(&x))
    }
}

/// A ViT classifier's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VitConfig {
    /// Image side in pixels (square images).
    pub image_size: i64,
    /// Image channels `C`.
    pub channels: i64,
    /// Patch side `P` (divides `image_size`).
    pub patch_size: i64,
    /// The encoder's sizes.
    pub encoder: EncoderConfig,
    /// Number of classes.
    pub n_classes: i64,
}

impl VitConfig {
    /// The original homework's ViT on CIFAR-10: 32×32×3, patch 4, d 256, 4 heads, 4 layers, ffn 1024.
    pub fn original_cifar10() -> Self {
        VitConfig {
            image_size: 32,
            channels: 3,
            patch_size: 4,
            encoder: EncoderConfig { d_model: 256, n_heads: 4, n_layers: 4, d_ffn: 1024 },
            n_classes: 10,
        }
    }

    /// The original sizes on Fashion-MNIST (28×28×1, patch 4: 49 patches).
    pub fn fashion_mnist_full() -> Self {
        VitConfig { image_size: 28, channels: 1, ..Self::original_cifar10() }
    }

    /// The model of notebook 1's `vit` check (its fixture weights, `tools/gen_fixtures.py`): 28×28
    /// images in 4×4 patches, 2 layers of 32 with 2 heads, 10 classes.
    pub fn fixture() -> Self {
        VitConfig {
            image_size: 28,
            channels: 1,
            patch_size: 4,
            encoder: EncoderConfig { d_model: 32, n_heads: 2, n_layers: 2, d_ffn: 64 },
            n_classes: 10,
        }
    }

    /// A tiny model for tests.
    pub fn tiny() -> Self {
        VitConfig {
            image_size: 8,
            channels: 1,
            patch_size: 4,
            encoder: EncoderConfig { d_model: 16, n_heads: 2, n_layers: 2, d_ffn: 32 },
            n_classes: 3,
        }
    }

    /// Patches per image `N`.
    pub fn n_patches(&self) -> i64 {
        (self.image_size / self.patch_size).pow(2)
    }

    /// Checks the sizes.
    pub fn validate(&self) -> Result<()> {
        self.encoder.validate()?;
        if self.patch_size <= 0 || self.image_size % self.patch_size != 0 {
            return Err(Error::Config(format!(
                "patch_size {} must divide image_size {}",
                self.patch_size, self.image_size
            )));
        }
        if self.channels <= 0 || self.n_classes <= 0 {
            return Err(Error::Config(format!("channels and n_classes must be positive, got {self:?}")));
        }
        Ok(())
    }
}

/// Checks that `images` is `(B, C, S, S)` for the configured channels and side.
pub fn check_images(what: &str, images: &Tensor, channels: i64, side: i64) -> Result<()> {
    let size = images.size();
    if size.len() != 4 || size[1..] != [channels, side, side] {
        return Err(Error::Shape {
            what: what.to_string(),
            expected: vec![size.first().copied().unwrap_or(-1), channels, side, side],
            got: size,
        });
    }
    Ok(())
}

#[cfg(feature = "reference")]
pub use super::reference::vit::{unpatchify, Vit};
