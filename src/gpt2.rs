//! GPT-2 with Hugging Face `GPT2Model`'s parameter names, returning every layer's attention,
//! queries, keys and values; and GPT-2's byte-level BPE (`tiktoken-rs`'s `r50k_base`, GPT-2's
//! own encoding, embedded in that crate).
//!
//! Hugging Face stores GPT-2's projections as `Conv1D`: weights are `(in, out)`, the transpose of
//! a `Linear`'s, so `x @ W + b`.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

use crate::attention::{load_hf_weights, read_config, EncoderOutput, LayerAttention};
use crate::error::{Error, Result};

/// The fields of a Hugging Face GPT-2 `config.json` that the model needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gpt2Config {
    pub vocab_size: i64,
    pub n_positions: i64,
    pub n_embd: i64,
    pub n_layer: i64,
    pub n_head: i64,
    /// Feed-forward size; `None` means `4 · n_embd`.
    #[serde(default)]
    pub n_inner: Option<i64>,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
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
    pub fn validate(&self) -> Result<()> {
        if self.n_embd % self.n_head != 0 {
            return Err(Error::Config(format!("n_embd {} must be divisible by n_head {}", self.n_embd, self.n_head)));
        }
        if !matches!(self.activation_function.as_str(), "gelu_new" | "gelu") {
            return Err(Error::Config(format!("activation_function: expected gelu_new or gelu, got {:?}", self.activation_function)));
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
        Conv1D { weight: vs.var("weight", &[d_in, d_out], nn::Init::Randn { mean: 0.0, stdev: 0.02 }), bias: vs.zeros("bias", &[d_out]) }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        x.matmul(&self.weight) + &self.bias // (B, T, in) x (in, out) -> (B, T, out)
    }
}

#[derive(Debug)]
struct Block {
    ln_1: nn::LayerNorm,
    c_attn: Conv1D,
    attn_proj: Conv1D,
    ln_2: nn::LayerNorm,
    c_fc: Conv1D,
    mlp_proj: Conv1D,
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
            c_attn: Conv1D::new(vs / "attn" / "c_attn", d, 3 * d),
            attn_proj: Conv1D::new(vs / "attn" / "c_proj", d, d),
            ln_2: ln(vs / "ln_2"),
            c_fc: Conv1D::new(vs / "mlp" / "c_fc", d, inner),
            mlp_proj: Conv1D::new(vs / "mlp" / "c_proj", inner, d),
            n_head: cfg.n_head,
            approximate: if cfg.activation_function == "gelu_new" { "tanh" } else { "none" },
        }
    }

    /// `x: (B, T, D)`, `mask: (B, 1, T, T)` additive (causal and padding) → `(B, T, D)`.
    fn forward(&self, x: &Tensor, mask: &Tensor) -> (Tensor, LayerAttention) {
        let (b, t, d) = x.size3().unwrap_or((0, 0, 0));
        let h = self.n_head;
        let qkv = self.c_attn.forward(&self.ln_1.forward(x)).split(d, -1); // 3 x (B, T, D)
        let heads = |y: &Tensor| y.reshape([b, t, h, d / h]).transpose(1, 2); // (B, H, T, Dh)
        let (q, k, v) = (heads(&qkv[0]), heads(&qkv[1]), heads(&qkv[2]));
        let scores = q.matmul(&k.transpose(-2, -1)) / ((d / h) as f64).sqrt() + mask; // (B, H, T, T)
        let probs = scores.softmax(-1, Kind::Float);
        let context = probs.matmul(&v).transpose(1, 2).reshape([b, t, d]); // (B, T, D)
        let x = x + self.attn_proj.forward(&context);
        let ffn = self.mlp_proj.forward(&self.c_fc.forward(&self.ln_2.forward(&x)).gelu(self.approximate));
        (x + ffn, LayerAttention { probs, queries: q, keys: k, values: v })
    }
}

/// GPT-2 (`GPT2Model`, pre-norm, causal) with the LM head tied to the token embeddings.
#[derive(Debug)]
pub struct Gpt2 {
    pub cfg: Gpt2Config,
    wte: nn::Embedding,
    wpe: nn::Embedding,
    blocks: Vec<Block>,
    ln_f: nn::LayerNorm,
}

impl Gpt2 {
    pub fn new(vs: &nn::Path, cfg: &Gpt2Config) -> Result<Self> {
        cfg.validate()?;
        let init = nn::EmbeddingConfig { ws_init: nn::Init::Randn { mean: 0.0, stdev: 0.02 }, ..Default::default() };
        Ok(Gpt2 {
            cfg: cfg.clone(),
            wte: nn::embedding(vs / "wte", cfg.vocab_size, cfg.n_embd, init),
            wpe: nn::embedding(vs / "wpe", cfg.n_positions, cfg.n_embd, init),
            blocks: (0..cfg.n_layer).map(|i| Block::new(&(vs / "h" / i), cfg)).collect(),
            ln_f: nn::layer_norm(vs / "ln_f", vec![cfg.n_embd], nn::LayerNormConfig { eps: cfg.layer_norm_epsilon, ..Default::default() }),
        })
    }

    /// Loads a Hugging Face GPT-2 folder (`config.json` + `model.safetensors`; a
    /// `GPT2LMHeadModel`'s `transformer.` prefix is stripped).
    pub fn load(dir: &Path, device: Device) -> Result<(nn::VarStore, Gpt2)> {
        let cfg: Gpt2Config = read_config(dir)?;
        let mut vs = nn::VarStore::new(device);
        let model = Gpt2::new(&vs.root(), &cfg)?;
        load_hf_weights(&mut vs, dir, "transformer.")?;
        Ok((vs, model))
    }

    /// # Shapes
    /// `input_ids: (B, T)` int64, `attention_mask: (B, T)` with **1 = real token, 0 = padding**
    /// → hidden `(B, T, D)` after the final LayerNorm, and per-layer attention (causal: token `t`
    /// attends to `0..=t` only).
    pub fn forward(&self, input_ids: &Tensor, attention_mask: Option<&Tensor>) -> Result<EncoderOutput> {
        let size = input_ids.size();
        let [b, t] = size[..] else {
            return Err(Error::Input(format!("GPT-2 input_ids: expected (B, T), got shape {}", crate::error::fmt_shape(&size))));
        };
        if t > self.cfg.n_positions {
            return Err(Error::Input(format!("GPT-2 takes at most {} tokens, got {t}", self.cfg.n_positions)));
        }
        let dev = input_ids.device();
        let positions = Tensor::arange(t, (Kind::Int64, dev)).unsqueeze(0);
        let mut x = self.wte.forward(input_ids) + self.wpe.forward(&positions); // (B, T, D)
        let min = f64::from(f32::MIN);
        let causal = Tensor::ones([t, t], (Kind::Float, dev)).triu(1) * min; // (T, T): min above the diagonal
        let mut mask = causal.reshape([1, 1, t, t]).expand([b, 1, t, t], true);
        if let Some(m) = attention_mask {
            mask = mask + m.to_kind(Kind::Float).neg().g_add_scalar(1.0).reshape([b, 1, 1, t]) * min;
        }
        let mask = mask.clamp_min(min);
        let mut layers = Vec::with_capacity(self.blocks.len());
        for block in &self.blocks {
            let (y, att) = block.forward(&x, &mask);
            x = y;
            layers.push(att);
        }
        Ok(EncoderOutput { hidden: self.ln_f.forward(&x), layers })
    }

    /// Next-token logits, the LM head tied to `wte`: `(B, T)` → `(B, T, V)`.
    pub fn logits(&self, input_ids: &Tensor) -> Result<Tensor> {
        Ok(self.forward(input_ids, None)?.hidden.matmul(&self.wte.ws.transpose(0, 1)))
    }
}

/// GPT-2's byte-level BPE tokenizer (`r50k_base`).
pub struct Gpt2Tokenizer(tiktoken_rs::CoreBPE);

impl Gpt2Tokenizer {
    pub fn new() -> Result<Self> {
        tiktoken_rs::r50k_base().map(Gpt2Tokenizer).map_err(|e| Error::Input(format!("GPT-2 tokenizer: {e}")))
    }

    /// Token ids and their text pieces (a leading space belongs to its token, as in GPT-2).
    pub fn encode(&self, text: &str) -> (Vec<i64>, Vec<String>) {
        let ids = self.0.encode_ordinary(text);
        // A piece may be part of a multi-byte character: shown lossily.
        let pieces = ids.iter().map(|&i| String::from_utf8_lossy(&self.0.decode_bytes(&[i]).unwrap_or_default()).into_owned()).collect();
        (ids.into_iter().map(|i| i as i64).collect(), pieces)
    }

    pub fn decode(&self, ids: &[i64]) -> Result<String> {
        let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
        let bytes = self.0.decode_bytes(&ids).map_err(|e| Error::Input(format!("GPT-2 decode: {e}")))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}
