//! Looking inside a pretrained Transformer: a BERT encoder with Hugging Face `BertModel`'s
//! parameter names that returns, for every layer and head, the attention probabilities and the
//! queries, keys and values. Its WordPiece tokenizer is [`crate::data::tokenize::Tokenizer`].
//!
//! Weights load from a Hugging Face folder (`config.json` + `model.safetensors`), unchanged: the
//! MiniLM-L6 that setup installs, or a real `bert-base-uncased` (its `bert.` prefix is stripped).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

use super::attention::{self_attention_with_weights, LayerAttention, Mask, ModelOutput};
use crate::data::tokenize::Tokenizer;
use crate::error::{Error, Result};
use crate::io::{load_hf_weights, read_config};

/// The fields of a Hugging Face BERT `config.json` that the model needs (others are ignored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    /// Token ids.
    pub vocab_size: i64,
    /// Model width `D`.
    pub hidden_size: i64,
    /// Encoder layers.
    pub num_hidden_layers: i64,
    /// Attention heads `H`.
    pub num_attention_heads: i64,
    /// Feed-forward width.
    pub intermediate_size: i64,
    /// Longest input in tokens.
    pub max_position_embeddings: i64,
    /// Segment ids (2: sentence A and B).
    pub type_vocab_size: i64,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// The feed-forward activation (only `gelu`).
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

fn ln(vs: nn::Path, d: i64, eps: f64) -> nn::LayerNorm {
    nn::layer_norm(vs, vec![d], nn::LayerNormConfig { eps, ..Default::default() })
}

/// BERT's self-attention projections (`attention.self.{query,key,value}`).
#[derive(Debug)]
struct BertSelfAttention {
    query: nn::Linear,
    key: nn::Linear,
    value: nn::Linear,
}

/// A dense projection, then LayerNorm over it plus the residual (`*.output.{dense,LayerNorm}`).
#[derive(Debug)]
struct BertOutput {
    dense: nn::Linear,
    layer_norm: nn::LayerNorm,
}

impl BertOutput {
    fn new(vs: &nn::Path, d_in: i64, d: i64, eps: f64) -> Self {
        BertOutput {
            dense: nn::linear(vs / "dense", d_in, d, Default::default()),
            layer_norm: ln(vs / "LayerNorm", d, eps),
        }
    }

    /// `layer_norm(dense(x) + residual)`.
    fn forward(&self, x: &Tensor, residual: &Tensor) -> Tensor {
        self.layer_norm.forward(&(self.dense.forward(x) + residual))
    }
}

/// `attention.self` and `attention.output`.
#[derive(Debug)]
struct BertAttention {
    self_: BertSelfAttention,
    output: BertOutput,
}

/// One BERT layer (post-norm): `attention`, `intermediate.dense`, `output`.
#[derive(Debug)]
struct BertLayer {
    attention: BertAttention,
    intermediate: nn::Linear,
    output: BertOutput,
    n_heads: i64,
}

impl BertLayer {
    fn new(vs: &nn::Path, cfg: &BertConfig) -> Self {
        let (d, f, eps) = (cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps);
        let a = vs / "attention";
        let lin = |p: nn::Path| nn::linear(p, d, d, Default::default());
        BertLayer {
            attention: BertAttention {
                self_: BertSelfAttention {
                    query: lin(&a / "self" / "query"),
                    key: lin(&a / "self" / "key"),
                    value: lin(&a / "self" / "value"),
                },
                output: BertOutput::new(&(&a / "output"), d, d, eps),
            },
            intermediate: nn::linear(vs / "intermediate" / "dense", d, f, Default::default()),
            output: BertOutput::new(&(vs / "output"), f, d, eps),
            n_heads: cfg.num_attention_heads,
        }
    }

    /// `x: (B, T, D)`, `padding: (B, T)` with 1 = padding.
    fn forward(&self, x: &Tensor, padding: &Tensor) -> (Tensor, LayerAttention) {
        let s = &self.attention.self_;
        let (q, k, v) = (s.query.forward(x), s.key.forward(x), s.value.forward(x)); // (B, T, D) each
        let (context, att) = self_attention_with_weights(&q, &k, &v, self.n_heads, Mask::padding(Some(padding)));
        let x = self.attention.output.forward(&context, x);
        let x = self.output.forward(&self.intermediate.forward(&x).gelu("none"), &x);
        (x, att)
    }
}

/// A BERT encoder (Hugging Face `BertModel` without the pooler) that exposes its attention.
#[derive(Debug)]
pub struct Bert {
    /// The model's config (`config.json`).
    pub cfg: BertConfig,
    word_embeddings: nn::Embedding,
    position_embeddings: nn::Embedding,
    token_type_embeddings: nn::Embedding,
    emb_norm: nn::LayerNorm,
    layers: Vec<BertLayer>,
}

impl Bert {
    /// A BERT of `cfg`'s sizes under `vs`, randomly initialised (load weights with [`Bert::load`]).
    pub fn new(vs: &nn::Path, cfg: &BertConfig) -> Result<Self> {
        cfg.validate()?;
        let d = cfg.hidden_size;
        let e = vs / "embeddings";
        Ok(Bert {
            cfg: cfg.clone(),
            word_embeddings: nn::embedding(&e / "word_embeddings", cfg.vocab_size, d, Default::default()),
            position_embeddings: nn::embedding(
                &e / "position_embeddings",
                cfg.max_position_embeddings,
                d,
                Default::default(),
            ),
            token_type_embeddings: nn::embedding(
                &e / "token_type_embeddings",
                cfg.type_vocab_size,
                d,
                Default::default(),
            ),
            emb_norm: ln(&e / "LayerNorm", d, cfg.layer_norm_eps),
            layers: (0..cfg.num_hidden_layers).map(|i| BertLayer::new(&(vs / "encoder" / "layer" / i), cfg)).collect(),
        })
    }

    /// Loads `config.json` and `model.safetensors` from a Hugging Face folder onto `device`.
    pub fn load(dir: &Path, device: Device) -> Result<(nn::VarStore, Bert)> {
        let cfg: BertConfig = read_config(dir)?;
        let vs = nn::VarStore::new(device);
        let bert = Bert::new(&vs.root(), &cfg)?;
        load_hf_weights(&vs, dir, "bert.")?;
        Ok((vs, bert))
    }

    /// # Shapes
    /// `input_ids`, `token_type_ids`: `(B, T)` int64; `attention_mask`: `(B, T)`, **1 = real
    /// token, 0 = padding** (all ones when `None`) → hidden `(B, T, D)` and per-layer attention.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        attention_mask: Option<&Tensor>,
    ) -> Result<ModelOutput> {
        let size = input_ids.size();
        let [b, t] = size[..] else {
            return Err(Error::Input(format!(
                "BERT input_ids: expected (B, T), got shape {}",
                crate::error::fmt_shape(&size)
            )));
        };
        if token_type_ids.size() != size {
            return Err(Error::Shape {
                what: "BERT token_type_ids".into(),
                expected: size,
                got: token_type_ids.size(),
            });
        }
        if t > self.cfg.max_position_embeddings {
            return Err(Error::Input(format!(
                "BERT takes at most {} tokens, got {t}",
                self.cfg.max_position_embeddings
            )));
        }
        let dev = input_ids.device();
        let positions = Tensor::arange(t, (Kind::Int64, dev)).unsqueeze(0).expand([b, t], false);
        let x = self.word_embeddings.forward(input_ids)
            + self.position_embeddings.forward(&positions)
            + self.token_type_embeddings.forward(token_type_ids);
        let mut x = self.emb_norm.forward(&x); // (B, T, D)
        let padding = match attention_mask {
            Some(m) => m.eq(0),
            None => Tensor::zeros([b, t], (Kind::Bool, dev)),
        }; // (B, T), true = padding
        let mut layers = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let (y, att) = layer.forward(&x, &padding);
            x = y;
            layers.push(att);
        }
        Ok(ModelOutput { hidden: x, layers })
    }
}

impl Bert {
    /// Tokenizes `a` (and `b`, as a pair) and runs the model: the tokens and every layer's
    /// attention, for the views.
    pub fn attend(&self, tok: &Tokenizer, a: &str, b: Option<&str>) -> Result<(Vec<String>, ModelOutput)> {
        let enc = tok.encode(a, b)?;
        let device = self.word_embeddings.ws.device();
        let (ids, types) = enc.tensors(device);
        Ok((enc.tokens, self.forward(&ids, &types, None)?))
    }
}

/// The MiniLM-L6 (BERT family, 6 layers × 12 heads) folder that setup installs, or
/// `$HW9_BERT_DIR` when set (e.g. a real `bert-base-uncased` folder).
pub fn default_bert_dir() -> PathBuf {
    match std::env::var_os("HW9_BERT_DIR") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => hw9_env::paths::assets().join("models/all-MiniLM-L6-v2"),
    }
}
