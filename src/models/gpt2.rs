//! GPT-2 with Hugging Face `GPT2Model`'s parameter names, returning every layer's attention,
//! queries, keys and values. Its tokenizer is [`crate::data::tokenize::Gpt2Tokenizer`]; the
//! local model is trained by [`crate::tasks::language_model`].
//!
//! Hugging Face stores GPT-2's projections as `Conv1D`: weights are `(in, out)`, the transpose of
//! a `Linear`'s, so `x @ W + b`.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

use super::attention::{
    attention, merge_heads, self_attention_with_weights, split_heads, LayerAttention, Mask, ModelOutput,
};
use crate::data::tokenize::Gpt2Tokenizer;
use crate::error::{Error, Result};
use crate::io::{load_hf_weights, read_config};

/// The fields of a Hugging Face GPT-2 `config.json` that the model needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gpt2Config {
    /// Token ids.
    pub vocab_size: i64,
    /// Longest input in tokens.
    pub n_positions: i64,
    /// Model width `D`.
    pub n_embd: i64,
    /// Blocks.
    pub n_layer: i64,
    /// Attention heads `H`.
    pub n_head: i64,
    /// Feed-forward size; `None` means `4 · n_embd`.
    #[serde(default)]
    pub n_inner: Option<i64>,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    /// The feed-forward activation: `gelu_new` (tanh approximation) or `gelu`.
    #[serde(default = "default_act")]
    pub activation_function: String,
}

fn default_eps() -> f64 {
    1e-5
}

fn default_act() -> String {
    "gelu_new".into()
}

impl Gpt2Config {
    /// Checks the sizes and the activation.
    pub fn validate(&self) -> Result<()> {
        if self.n_embd % self.n_head != 0 {
            return Err(Error::Config(format!("n_embd {} must be divisible by n_head {}", self.n_embd, self.n_head)));
        }
        if !matches!(self.activation_function.as_str(), "gelu_new" | "gelu") {
            return Err(Error::Config(format!(
                "activation_function: expected gelu_new or gelu, got {:?}",
                self.activation_function
            )));
        }
        Ok(())
    }
}

/// A `Conv1D`: `y = x @ weight + bias`, `weight: (in, out)`.
#[derive(Debug)]
struct Conv1D {
    weight: Tensor,
    bias: Tensor,
}

impl Conv1D {
    fn new(vs: nn::Path, d_in: i64, d_out: i64) -> Self {
        Conv1D {
            weight: vs.var("weight", &[d_in, d_out], nn::Init::Randn { mean: 0.0, stdev: 0.02 }),
            bias: vs.zeros("bias", &[d_out]),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        x.matmul(&self.weight) + &self.bias // (B, T, in) x (in, out) -> (B, T, out)
    }
}

/// `attn.c_attn` (the packed q, k, v projection) and `attn.c_proj`.
#[derive(Debug)]
struct Gpt2Attention {
    c_attn: Conv1D,
    c_proj: Conv1D,
}

/// `mlp.c_fc` and `mlp.c_proj`.
#[derive(Debug)]
struct Gpt2Mlp {
    c_fc: Conv1D,
    c_proj: Conv1D,
}

/// One pre-norm block: `h.{i}.{ln_1, attn, ln_2, mlp}`.
#[derive(Debug)]
struct Block {
    ln_1: nn::LayerNorm,
    attn: Gpt2Attention,
    ln_2: nn::LayerNorm,
    mlp: Gpt2Mlp,
    n_head: i64,
    approximate: &'static str,
}

impl Block {
    fn new(vs: &nn::Path, cfg: &Gpt2Config) -> Self {
        let (d, eps) = (cfg.n_embd, cfg.layer_norm_epsilon);
        let inner = cfg.n_inner.unwrap_or(4 * d);
        let ln = |p: nn::Path| nn::layer_norm(p, vec![d], nn::LayerNormConfig { eps, ..Default::default() });
        Block {
            ln_1: ln(vs / "ln_1"),
            attn: Gpt2Attention {
                c_attn: Conv1D::new(vs / "attn" / "c_attn", d, 3 * d),
                c_proj: Conv1D::new(vs / "attn" / "c_proj", d, d),
            },
            ln_2: ln(vs / "ln_2"),
            mlp: Gpt2Mlp {
                c_fc: Conv1D::new(vs / "mlp" / "c_fc", d, inner),
                c_proj: Conv1D::new(vs / "mlp" / "c_proj", inner, d),
            },
            n_head: cfg.n_head,
            approximate: if cfg.activation_function == "gelu_new" { "tanh" } else { "none" },
        }
    }

    /// `x: (B, T, D)`; `mask`: causal, and the padding when there is some → `(B, T, D)`, and the
    /// layer's attention when `need_weights` (else the fused kernel runs and none is kept).
    fn forward(&self, x: &Tensor, mask: Mask, need_weights: bool) -> (Tensor, Option<LayerAttention>) {
        let d = x.size().last().copied().unwrap_or(0);
        let qkv = self.attn.c_attn.forward(&self.ln_1.forward(x)).split(d, -1); // 3 × (B, T, D)
        let (context, att) = if need_weights {
            let (context, att) = self_attention_with_weights(&qkv[0], &qkv[1], &qkv[2], self.n_head, mask);
            (context, Some(att))
        } else {
            let heads = |y: &Tensor| split_heads(y, self.n_head); // (B, H, T, Dh)
            let out = attention(&heads(&qkv[0]), &heads(&qkv[1]), &heads(&qkv[2]), mask, false);
            (merge_heads(&out.context), None)
        };
        let x = x + self.attn.c_proj.forward(&context);
        let ffn = self.mlp.c_proj.forward(&self.mlp.c_fc.forward(&self.ln_2.forward(&x)).gelu(self.approximate));
        (x + ffn, att)
    }
}

/// GPT-2 (`GPT2Model`, pre-norm, causal) with the LM head tied to the token embeddings.
#[derive(Debug)]
pub struct Gpt2 {
    /// The model's config (`config.json`).
    pub cfg: Gpt2Config,
    wte: nn::Embedding,
    wpe: nn::Embedding,
    blocks: Vec<Block>,
    ln_f: nn::LayerNorm,
}

impl Gpt2 {
    /// A GPT-2 of `cfg`'s sizes under `vs`, initialised as GPT-2 is (N(0, 0.02)).
    pub fn new(vs: &nn::Path, cfg: &Gpt2Config) -> Result<Self> {
        cfg.validate()?;
        let init = nn::EmbeddingConfig { ws_init: nn::Init::Randn { mean: 0.0, stdev: 0.02 }, ..Default::default() };
        Ok(Gpt2 {
            cfg: cfg.clone(),
            wte: nn::embedding(vs / "wte", cfg.vocab_size, cfg.n_embd, init),
            wpe: nn::embedding(vs / "wpe", cfg.n_positions, cfg.n_embd, init),
            blocks: (0..cfg.n_layer).map(|i| Block::new(&(vs / "h" / i), cfg)).collect(),
            ln_f: nn::layer_norm(
                vs / "ln_f",
                vec![cfg.n_embd],
                nn::LayerNormConfig { eps: cfg.layer_norm_epsilon, ..Default::default() },
            ),
        })
    }

    /// Loads a Hugging Face GPT-2 folder (`config.json` + `model.safetensors`; a
    /// `GPT2LMHeadModel`'s `transformer.` prefix is stripped).
    pub fn load(dir: &Path, device: Device) -> Result<(nn::VarStore, Gpt2)> {
        let cfg: Gpt2Config = read_config(dir)?;
        let vs = nn::VarStore::new(device);
        let model = Gpt2::new(&vs.root(), &cfg)?;
        load_hf_weights(&vs, dir, "transformer.")?;
        Ok((vs, model))
    }

    /// # Shapes
    /// `input_ids: (B, T)` int64, `attention_mask: (B, T)` with **1 = real token, 0 = padding**
    /// → hidden `(B, T, D)` after the final LayerNorm, and per-layer attention (causal: token `t`
    /// attends to `0..=t` only).
    pub fn forward(&self, input_ids: &Tensor, attention_mask: Option<&Tensor>) -> Result<ModelOutput> {
        self.run(input_ids, attention_mask, true)
    }

    /// The blocks, with every layer's attention kept when `need_weights`.
    fn run(&self, input_ids: &Tensor, attention_mask: Option<&Tensor>, need_weights: bool) -> Result<ModelOutput> {
        let size = input_ids.size();
        let [_, t] = size[..] else {
            return Err(Error::Input(format!(
                "GPT-2 input_ids: expected (B, T), got shape {}",
                crate::error::fmt_shape(&size)
            )));
        };
        if t > self.cfg.n_positions {
            return Err(Error::Input(format!("GPT-2 takes at most {} tokens, got {t}", self.cfg.n_positions)));
        }
        if let Some(m) = attention_mask.filter(|m| m.size() != size) {
            return Err(Error::Shape {
                what: "GPT-2 attention_mask (1 = real token)".into(),
                expected: size,
                got: m.size(),
            });
        }
        let positions = Tensor::arange(t, (Kind::Int64, input_ids.device())).unsqueeze(0);
        let mut x = self.wte.forward(input_ids) + self.wpe.forward(&positions); // (B, T, D)
        let padding = attention_mask.map(|m| m.eq(0)); // (B, T), true = padding
        let mask = Mask::padding(padding.as_ref()).causal(true);
        let mut layers = Vec::with_capacity(self.blocks.len());
        for block in &self.blocks {
            let (y, att) = block.forward(&x, mask, need_weights);
            x = y;
            layers.extend(att);
        }
        Ok(ModelOutput { hidden: self.ln_f.forward(&x), layers })
    }

    /// Next-token logits, the LM head tied to `wte`: `(B, T)` → `(B, T, V)`. No attention is
    /// kept: the layers run libtorch's fused kernel (what training wants).
    pub fn logits(&self, input_ids: &Tensor) -> Result<Tensor> {
        Ok(self.run(input_ids, None, false)?.hidden.matmul(&self.wte.ws.transpose(0, 1)))
        // (B, T, D) x (D, V)
    }
}

impl Gpt2 {
    /// Tokenizes `text` and runs the model: the token pieces and every layer's attention.
    pub fn attend(&self, tok: &Gpt2Tokenizer, text: &str) -> Result<(Vec<String>, ModelOutput)> {
        let (ids, pieces) = tok.encode(text);
        let ids = Tensor::from_slice(&ids).unsqueeze(0).to_device(self.wte.ws.device());
        Ok((pieces, self.forward(&ids, None)?))
    }
}

/// The GPT-2 folder notebooks load: `$HW9_GPT2_DIR` (e.g. a real `gpt2` download), else the
/// model `hw9 train-gpt` trains into `assets/models/gpt2-hw9`.
pub fn default_gpt2_dir() -> std::path::PathBuf {
    match std::env::var_os("HW9_GPT2_DIR") {
        Some(p) if !p.is_empty() => std::path::PathBuf::from(p),
        _ => hw9_env::paths::assets().join("models/gpt2-hw9"),
    }
}

/// Loads the default GPT-2, or says how to make it.
pub fn load_default(device: Device) -> Result<(nn::VarStore, Gpt2)> {
    let dir = default_gpt2_dir();
    if !dir.join("model.safetensors").exists() {
        return Err(Error::missing(
            "GPT-2 model",
            dir,
            "train the local one (about 10 minutes): cargo run --release -- train-gpt; or set HW9_GPT2_DIR to a folder with real gpt2 files",
        ));
    }
    Gpt2::load(&dir, device)
}

impl Gpt2Config {
    /// A Hugging Face `config.json` for this model (`GPT2LMHeadModel`, GPT-2's special ids), so
    /// that `transformers` loads what hw9 saves.
    pub fn to_hf_json(&self) -> serde_json::Value {
        serde_json::json!({
            "model_type": "gpt2",
            "architectures": ["GPT2LMHeadModel"],
            "vocab_size": self.vocab_size,
            "n_positions": self.n_positions,
            "n_ctx": self.n_positions,
            "n_embd": self.n_embd,
            "n_layer": self.n_layer,
            "n_head": self.n_head,
            "n_inner": self.n_inner,
            "activation_function": self.activation_function,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "bos_token_id": 50256,
            "eos_token_id": 50256,
        })
    }

    /// The local model `hw9 train-gpt` trains: GPT-2's vocabulary, 4 layers × 4 heads, d 128,
    /// 128 positions.
    pub fn small() -> Self {
        Gpt2Config {
            vocab_size: 50257,
            n_positions: 128,
            n_embd: 128,
            n_layer: 4,
            n_head: 4,
            n_inner: None,
            layer_norm_epsilon: 1e-5,
            activation_function: "gelu_new".into(),
        }
    }
}
