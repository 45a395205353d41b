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
            mask = &mask + m.to_kind(Kind::Float).neg().g_add_scalar(1.0).reshape([b, 1, 1, t]) * min;
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

impl Gpt2 {
    /// Tokenizes `text` and runs the model: the token pieces and every layer's attention.
    pub fn attend(&self, tok: &Gpt2Tokenizer, text: &str) -> Result<(Vec<String>, EncoderOutput)> {
        let (ids, pieces) = tok.encode(text);
        let ids = Tensor::from_slice(&ids).unsqueeze(0).to_device(self.wte.ws.device());
        Ok((pieces, self.forward(&ids, None)?))
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

/// The GPT-2 folder notebooks load: `$HW9_GPT2_DIR` (e.g. a real `gpt2` download), else the
/// model `hw9 train-gpt` trains into `assets/models/gpt2-hw9`.
pub fn default_gpt2_dir() -> std::path::PathBuf {
    match std::env::var_os("HW9_GPT2_DIR") {
        Some(p) if !p.is_empty() => std::path::PathBuf::from(p),
        _ => crate::paths::assets().join("models/gpt2-hw9"),
    }
}

/// Loads the default GPT-2, or says how to make it.
pub fn load_default(device: Device) -> Result<(nn::VarStore, Gpt2)> {
    let dir = default_gpt2_dir();
    if !dir.join("model.safetensors").exists() {
        return Err(Error::Missing {
            what: "GPT-2 model".into(),
            path: dir,
            fix: "train the local one (about 10 minutes): cargo run --release -- train-gpt; or set HW9_GPT2_DIR to a folder with real gpt2 files".into(),
        });
    }
    Gpt2::load(&dir, device)
}

impl Gpt2Config {
    /// The local model `hw9 train-gpt` trains: GPT-2's vocabulary, 4 layers × 4 heads, d 128,
    /// 128 positions.
    pub fn small() -> Self {
        Gpt2Config { vocab_size: 50257, n_positions: 128, n_embd: 128, n_layer: 4, n_head: 4, n_inner: None, layer_norm_epsilon: 1e-5, activation_function: "gelu_new".into() }
    }
}

/// A Hugging Face-compatible `config.json` for `cfg`.
fn hf_config_json(cfg: &Gpt2Config) -> serde_json::Value {
    serde_json::json!({
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.n_positions,
        "n_ctx": cfg.n_positions,
        "n_embd": cfg.n_embd,
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "n_inner": cfg.n_inner,
        "activation_function": cfg.activation_function,
        "layer_norm_epsilon": cfg.layer_norm_epsilon,
        "bos_token_id": 50256,
        "eos_token_id": 50256,
    })
}

/// What [`train_small_gpt2`] did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GptTrainReport {
    pub steps: usize,
    pub tokens_seen: usize,
    pub seconds: f64,
    pub first_loss: f64,
    /// Mean loss of the last 20 steps.
    pub final_loss: f64,
}

/// Trains a small GPT-2-architecture language model with GPT-2's tokenizer on the Debian
/// descriptions corpus' training split (its first `max_docs` documents, or all), for `seconds`
/// of wall time, and saves it in GPT-2's Hugging Face layout (`config.json` +
/// `model.safetensors`) in `out`.
pub fn train_small_gpt2(cfg: &Gpt2Config, seconds: f64, batch: i64, max_docs: Option<usize>, out: &Path, device: Device) -> Result<GptTrainReport> {
    use tch::nn::OptimizerConfig;
    let tok = Gpt2Tokenizer::new()?;
    let pairs = crate::corpus::read_pairs(&crate::corpus::corpus_path())?;
    let mut ids: Vec<i64> = Vec::new();
    for p in crate::corpus::split(&pairs, "train").into_iter().take(max_docs.unwrap_or(usize::MAX)) {
        ids.extend(tok.encode(&format!("{}\n\n{}", p.summary, p.document)).0);
        ids.push(50256); // <|endoftext|>
    }
    let t = cfg.n_positions;
    let data = Tensor::from_slice(&ids);
    let n = ids.len() as i64 - t - 1;
    let vs = nn::VarStore::new(device);
    let model = Gpt2::new(&vs.root(), cfg)?;
    let mut opt = nn::AdamW { beta1: 0.9, beta2: 0.95, wd: 0.1, eps: 1e-8, amsgrad: false }.build(&vs, 1e-3)?;
    let start = std::time::Instant::now();
    let mut losses = Vec::new();
    let mut bar = crate::train::Progress::new("GPT-2", 0);
    while start.elapsed().as_secs_f64() < seconds {
        let frac = start.elapsed().as_secs_f64() / seconds;
        let lr = if frac < 0.05 { 1e-3 * frac / 0.05 } else { 1e-3 * 0.5 * (1.0 + (std::f64::consts::PI * (frac - 0.05) / 0.95).cos()) };
        opt.set_lr(lr.max(1e-5));
        let starts = Tensor::randint(n, [batch], (Kind::Int64, Device::Cpu));
        let idx = starts.unsqueeze(1) + Tensor::arange(t + 1, (Kind::Int64, Device::Cpu)).unsqueeze(0); // (B, T+1)
        let chunk = data.index_select(0, &idx.reshape([-1])).reshape([batch, t + 1]).to_device(device);
        let (x, y) = (chunk.narrow(1, 0, t), chunk.narrow(1, 1, t));
        let logits = model.logits(&x)?; // (B, T, V)
        let loss = logits.reshape([-1, cfg.vocab_size]).cross_entropy_for_logits(&y.reshape([-1]));
        opt.backward_step(&loss);
        let l = loss.double_value(&[]);
        if !l.is_finite() {
            return Err(Error::Input(format!("GPT-2 training: the loss became {l} at step {}", losses.len())));
        }
        losses.push(l);
        bar.tick(&format!("loss {l:.3}, {:.0} of {seconds:.0} s", start.elapsed().as_secs_f64()));
    }
    let tail = &losses[losses.len().saturating_sub(20)..];
    let report = GptTrainReport {
        steps: losses.len(),
        tokens_seen: losses.len() * (batch * t) as usize,
        seconds: start.elapsed().as_secs_f64(),
        first_loss: losses.first().copied().unwrap_or(f64::NAN),
        final_loss: tail.iter().sum::<f64>() / tail.len().max(1) as f64,
    };
    bar.finish(&format!("final loss {:.3}", report.final_loss));
    crate::train::save_checkpoint(&vs, &hf_config_json(cfg), out)?;
    crate::plot::write_atomic(&out.join("training.json"), &serde_json::to_vec_pretty(&report)?)?;
    Ok(report)
}
