//! Looking inside pretrained Transformers: a BERT encoder with Hugging Face `BertModel`'s
//! parameter names that returns, for every layer and head, the attention probabilities and the
//! queries, keys and values; and its WordPiece tokenizer (the `tokenizers` crate) with sentence
//! pairs.
//!
//! Weights load from a Hugging Face folder (`config.json` + `model.safetensors`), unchanged: the
//! MiniLM-L6 that setup installs, or a real `bert-base-uncased` (its `bert.` prefix is stripped).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};

/// The fields of a Hugging Face BERT `config.json` that the model needs (others are ignored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub intermediate_size: i64,
    pub max_position_embeddings: i64,
    pub type_vocab_size: i64,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
}

fn default_eps() -> f64 {
    1e-12
}

fn default_act() -> String {
    "gelu".into()
}

impl BertConfig {
    /// Checks the sizes and the activation.
    pub fn validate(&self) -> Result<()> {
        if self.hidden_size % self.num_attention_heads != 0 {
            return Err(Error::Config(format!(
                "hidden_size {} must be divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        if self.hidden_act != "gelu" {
            return Err(Error::Config(format!("hidden_act: only \"gelu\" is supported, got {:?}", self.hidden_act)));
        }
        Ok(())
    }
}

/// One layer's attention, per head.
#[derive(Debug)]
pub struct LayerAttention {
    /// `(B, H, T, T)`: row `t` is how query token `t` spreads its attention over the keys; rows
    /// sum to 1, padded keys get 0.
    pub probs: Tensor,
    /// `(B, H, T, Dh)`.
    pub queries: Tensor,
    /// `(B, H, T, Dh)`.
    pub keys: Tensor,
    /// `(B, H, T, Dh)`.
    pub values: Tensor,
}

/// What a forward pass returns: the last hidden states and every layer's attention.
#[derive(Debug)]
pub struct EncoderOutput {
    /// `(B, T, D)`.
    pub hidden: Tensor,
    pub layers: Vec<LayerAttention>,
}

fn ln(vs: nn::Path, d: i64, eps: f64) -> nn::LayerNorm {
    nn::layer_norm(vs, vec![d], nn::LayerNormConfig { eps, ..Default::default() })
}

/// BERT's self-attention (`attention.self.{query,key,value}`).
#[derive(Debug)]
struct BertSelfAttention {
    query: nn::Linear,
    key: nn::Linear,
    value: nn::Linear,
    n_heads: i64,
}

/// One BERT layer (post-norm).
#[derive(Debug)]
struct BertLayer {
    attn: BertSelfAttention,
    attn_out: nn::Linear,
    attn_norm: nn::LayerNorm,
    intermediate: nn::Linear,
    output: nn::Linear,
    out_norm: nn::LayerNorm,
}

impl BertLayer {
    fn new(vs: &nn::Path, cfg: &BertConfig) -> Self {
        let (d, f, eps) = (cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps);
        let a = vs / "attention";
        BertLayer {
            attn: BertSelfAttention {
                query: nn::linear(&a / "self" / "query", d, d, Default::default()),
                key: nn::linear(&a / "self" / "key", d, d, Default::default()),
                value: nn::linear(&a / "self" / "value", d, d, Default::default()),
                n_heads: cfg.num_attention_heads,
            },
            attn_out: nn::linear(&a / "output" / "dense", d, d, Default::default()),
            attn_norm: ln(&a / "output" / "LayerNorm", d, eps),
            intermediate: nn::linear(vs / "intermediate" / "dense", d, f, Default::default()),
            output: nn::linear(vs / "output" / "dense", f, d, Default::default()),
            out_norm: ln(vs / "output" / "LayerNorm", d, eps),
        }
    }

    /// `x: (B, T, D)`, `additive_mask: (B, 1, 1, T)` (0 = attend, −∞-like = padding).
    fn forward(&self, x: &Tensor, additive_mask: &Tensor) -> (Tensor, LayerAttention) {
        let (b, t, d) = x.size3().unwrap_or((0, 0, 0));
        let h = self.attn.n_heads;
        let split = |y: Tensor| y.reshape([b, t, h, d / h]).transpose(1, 2); // (B, H, T, Dh)
        let q = split(self.attn.query.forward(x));
        let k = split(self.attn.key.forward(x));
        let v = split(self.attn.value.forward(x));
        let scores = q.matmul(&k.transpose(-2, -1)) / ((d / h) as f64).sqrt() + additive_mask; // (B, H, T, Dh) x (B, H, Dh, T) -> (B, H, T, T)
        let probs = scores.softmax(-1, Kind::Float);
        let context = probs.matmul(&v).transpose(1, 2).reshape([b, t, d]); // (B, H, T, T) x (B, H, T, Dh) -> (B, T, D)
        let x = self.attn_norm.forward(&(self.attn_out.forward(&context) + x));
        let ffn = self.output.forward(&self.intermediate.forward(&x).gelu("none"));
        let x = self.out_norm.forward(&(ffn + x));
        (x, LayerAttention { probs, queries: q, keys: k, values: v })
    }
}

/// A BERT encoder (Hugging Face `BertModel` without the pooler) that exposes its attention.
#[derive(Debug)]
pub struct Bert {
    pub cfg: BertConfig,
    word_embeddings: nn::Embedding,
    position_embeddings: nn::Embedding,
    token_type_embeddings: nn::Embedding,
    emb_norm: nn::LayerNorm,
    layers: Vec<BertLayer>,
}

impl Bert {
    pub fn new(vs: &nn::Path, cfg: &BertConfig) -> Result<Self> {
        cfg.validate()?;
        let d = cfg.hidden_size;
        let e = vs / "embeddings";
        Ok(Bert {
            cfg: cfg.clone(),
            word_embeddings: nn::embedding(&e / "word_embeddings", cfg.vocab_size, d, Default::default()),
            position_embeddings: nn::embedding(&e / "position_embeddings", cfg.max_position_embeddings, d, Default::default()),
            token_type_embeddings: nn::embedding(&e / "token_type_embeddings", cfg.type_vocab_size, d, Default::default()),
            emb_norm: ln(&e / "LayerNorm", d, cfg.layer_norm_eps),
            layers: (0..cfg.num_hidden_layers).map(|i| BertLayer::new(&(vs / "encoder" / "layer" / i), cfg)).collect(),
        })
    }

    /// Loads `config.json` and `model.safetensors` from a Hugging Face folder onto `device`.
    pub fn load(dir: &Path, device: Device) -> Result<(nn::VarStore, Bert)> {
        let cfg: BertConfig = read_config(dir)?;
        let mut vs = nn::VarStore::new(device);
        let bert = Bert::new(&vs.root(), &cfg)?;
        load_hf_weights(&mut vs, dir, "bert.")?;
        Ok((vs, bert))
    }

    /// # Shapes
    /// `input_ids`, `token_type_ids`: `(B, T)` int64; `attention_mask`: `(B, T)`, **1 = real
    /// token, 0 = padding** (all ones when `None`) → hidden `(B, T, D)` and per-layer attention.
    pub fn forward(&self, input_ids: &Tensor, token_type_ids: &Tensor, attention_mask: Option<&Tensor>) -> Result<EncoderOutput> {
        let size = input_ids.size();
        let [b, t] = size[..] else {
            return Err(Error::Input(format!("BERT input_ids: expected (B, T), got shape {}", crate::error::fmt_shape(&size))));
        };
        if token_type_ids.size() != size {
            return Err(Error::Shape { what: "BERT token_type_ids".into(), expected: size, got: token_type_ids.size() });
        }
        if t > self.cfg.max_position_embeddings {
            return Err(Error::Input(format!("BERT takes at most {} tokens, got {t}", self.cfg.max_position_embeddings)));
        }
        let dev = input_ids.device();
        let positions = Tensor::arange(t, (Kind::Int64, dev)).unsqueeze(0).expand([b, t], false);
        let x = self.word_embeddings.forward(input_ids)
            + self.position_embeddings.forward(&positions)
            + self.token_type_embeddings.forward(token_type_ids);
        let mut x = self.emb_norm.forward(&x); // (B, T, D)
        let mask = match attention_mask {
            Some(m) => m.to_kind(Kind::Float),
            None => Tensor::ones([b, t], (Kind::Float, dev)),
        };
        // Hugging Face's extended mask: (1 − mask) · min(float32).
        let additive = mask.neg().g_add_scalar(1.0).reshape([b, 1, 1, t]) * f64::from(f32::MIN); // (B, 1, 1, T)
        let mut layers = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let (y, att) = layer.forward(&x, &additive);
            x = y;
            layers.push(att);
        }
        Ok(EncoderOutput { hidden: x, layers })
    }
}

impl Bert {
    /// Tokenizes `a` (and `b`, as a pair) and runs the model: the tokens and every layer's
    /// attention, for the views.
    pub fn attend(&self, tok: &Tokenizer, a: &str, b: Option<&str>) -> Result<(Vec<String>, EncoderOutput)> {
        let enc = tok.encode(a, b)?;
        let device = self.word_embeddings.ws.device();
        let (ids, types) = enc.tensors(device);
        Ok((enc.tokens, self.forward(&ids, &types, None)?))
    }
}

/// Reads a Hugging Face `config.json`.
pub fn read_config<C: serde::de::DeserializeOwned>(dir: &Path) -> Result<C> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|_| Error::Missing {
        what: "model config".into(),
        path: path.clone(),
        fix: "point at a Hugging Face model folder (config.json + model.safetensors); make setup installs MiniLM".into(),
    })?;
    serde_json::from_str(&text).map_err(|e| Error::Corrupt { what: "model config".into(), path, detail: e.to_string() })
}

/// Loads `model.safetensors` from a Hugging Face folder into `vs`, dropping `strip_prefix` from
/// names that carry it; names and shapes are checked (a checkpoint of another shape is refused
/// with the tensor that differs).
pub fn load_hf_weights(vs: &mut nn::VarStore, dir: &Path, strip_prefix: &str) -> Result<()> {
    let path = dir.join("model.safetensors");
    let tensors = crate::train::read_weights(&path, "a Hugging Face folder has model.safetensors beside config.json")?;
    let named = tensors.into_iter().map(|(k, v)| (k.strip_prefix(strip_prefix).map(str::to_string).unwrap_or(k), v)).collect();
    crate::train::copy_weights(vs, &named, &path.display().to_string())
}

/// The MiniLM-L6 (BERT family, 6 layers × 12 heads) folder that setup installs, or
/// `$HW9_BERT_DIR` when set (e.g. a real `bert-base-uncased` folder).
pub fn default_bert_dir() -> PathBuf {
    match std::env::var_os("HW9_BERT_DIR") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => crate::paths::assets().join("models/all-MiniLM-L6-v2"),
    }
}

/// A tokenized sentence or sentence pair, ready for [`Bert::forward`].
#[derive(Debug, Clone, PartialEq)]
pub struct Tokenized {
    pub tokens: Vec<String>,
    pub ids: Vec<i64>,
    pub type_ids: Vec<i64>,
    /// The index of sentence B's first token (`None` for a single sentence).
    pub sentence_b_start: Option<usize>,
}

impl Tokenized {
    /// `(input_ids, token_type_ids)`, each `(1, T)` on `device`.
    pub fn tensors(&self, device: Device) -> (Tensor, Tensor) {
        (
            Tensor::from_slice(&self.ids).unsqueeze(0).to_device(device),
            Tensor::from_slice(&self.type_ids).unsqueeze(0).to_device(device),
        )
    }
}

/// A Hugging Face `tokenizer.json` (WordPiece for BERT, byte-level BPE for GPT-2).
pub struct Tokenizer(tokenizers::Tokenizer);

impl Tokenizer {
    /// Loads `tokenizer.json`.
    pub fn load(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(Error::Missing { what: "tokenizer".into(), path: path.to_path_buf(), fix: "make setup (installs MiniLM's tokenizer.json)".into() });
        }
        let mut tok = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| Error::Corrupt { what: "tokenizer".into(), path: path.to_path_buf(), detail: e.to_string() })?;
        // Some tokenizer.json files (MiniLM's) pad every input to a fixed length: we look at
        // real tokens only, one sentence (pair) at a time.
        tok.with_padding(None);
        Ok(Tokenizer(tok))
    }

    /// Encodes one sentence, or a pair (`[CLS] a [SEP] b [SEP]` for BERT), with special tokens.
    pub fn encode(&self, a: &str, b: Option<&str>) -> Result<Tokenized> {
        let enc = match b {
            Some(b) => self.0.encode((a, b), true),
            None => self.0.encode(a, true),
        }
        .map_err(|e| Error::Input(format!("could not tokenize {a:?}: {e}")))?;
        let type_ids: Vec<i64> = enc.get_type_ids().iter().map(|&t| t as i64).collect();
        let sentence_b_start = b.and_then(|_| type_ids.iter().position(|&t| t == 1));
        Ok(Tokenized {
            tokens: enc.get_tokens().to_vec(),
            ids: enc.get_ids().iter().map(|&i| i as i64).collect(),
            type_ids,
            sentence_b_start,
        })
    }
}
