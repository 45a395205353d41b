//! A summarizer warm-started from a pretrained BERT (BERT2BERT, Rothe, Narayan and Severyn,
//! 2020, "Leveraging Pre-trained Checkpoints for Sequence Generation Tasks"): the encoder *is*
//! BERT (MiniLM-L6 here), the decoder's self-attention and feed-forward blocks start from BERT's
//! first layers, its cross-attention starts random, and the token and position embeddings (shared
//! by encoder, decoder and the tied output projection) are BERT's. The tokenizer is BERT's
//! WordPiece ([`crate::data::text::SubwordTokenizer::bert_wordpiece`]).
//!
//! The homework's [`Summarizer`] is already BERT's shape: post-LayerNorm layers whose
//! self-attention (`q/k/v/out_proj`), LayerNorms and feed-forward block (`fc1`, `fc2`) map one to
//! one onto BERT's (`query/key/value`, `attention.output.dense`, `intermediate`/`output.dense`),
//! one embedding LayerNorm, learned positions; only the activation differs (GELU, set in the
//! config). BERT's segment embedding for sentence A is a constant added to every token, so it is
//! folded into the position embeddings. `tests/warm_start.rs` checks that the warm-started
//! encoder computes what BERT computes.

use std::collections::HashMap;
use std::path::Path;

use tch::{nn, Tensor};

use super::bert::BertConfig;
use super::summarizer::SummarizerConfig;
use super::transformer::Activation;
use crate::error::{Error, Result};
use crate::io::{read_config, read_weights};

/// A summarizer config with BERT's sizes: its encoder is all of BERT's layers, its decoder the
/// first `decoder_layers`, GELU, `max_positions` (at most BERT's).
pub fn bert2bert_config(bert: &BertConfig, decoder_layers: i64, max_positions: i64, dropout: f64) -> SummarizerConfig {
    SummarizerConfig {
        vocab_size: bert.vocab_size,
        d_model: bert.hidden_size,
        n_heads: bert.num_attention_heads,
        encoder_layers: bert.num_hidden_layers,
        decoder_layers,
        d_ffn: bert.intermediate_size,
        dropout,
        max_positions: max_positions.min(bert.max_position_embeddings),
        activation: Activation::Gelu,
    }
}

/// Copies BERT's weights from `bert_dir` (`config.json` + `model.safetensors`, Hugging Face
/// names, an optional `bert.` prefix) into a summarizer of `cfg`'s sizes whose variables are
/// `vs`'s: every encoder layer, the decoder layers' self-attention and feed-forward blocks (from
/// BERT's first layers), embeddings and the embedding LayerNorm. Returns how many summarizer
/// tensors were set; the rest (cross-attention) keep their random initialisation.
pub fn warm_start_from_bert(vs: &nn::VarStore, cfg: &SummarizerConfig, bert_dir: &Path) -> Result<usize> {
    let bert: BertConfig = read_config(bert_dir)?;
    let mismatch = [
        ("vocab_size", cfg.vocab_size, bert.vocab_size),
        ("d_model / hidden_size", cfg.d_model, bert.hidden_size),
        ("n_heads / num_attention_heads", cfg.n_heads, bert.num_attention_heads),
        ("d_ffn / intermediate_size", cfg.d_ffn, bert.intermediate_size),
    ]
    .into_iter()
    .find(|(_, a, b)| a != b);
    if let Some((what, a, b)) = mismatch {
        return Err(Error::Config(format!("warm start: the summarizer's {what} is {a}, BERT's is {b}")));
    }
    if cfg.encoder_layers > bert.num_hidden_layers || cfg.decoder_layers > bert.num_hidden_layers {
        return Err(Error::Config(format!(
            "warm start: BERT has {} layers, the summarizer wants {} encoder and {} decoder layers",
            bert.num_hidden_layers, cfg.encoder_layers, cfg.decoder_layers
        )));
    }
    if cfg.max_positions > bert.max_position_embeddings {
        return Err(Error::Config(format!(
            "warm start: BERT has {} positions, the summarizer wants {}",
            bert.max_position_embeddings, cfg.max_positions
        )));
    }
    let path = bert_dir.join("model.safetensors");
    let weights: HashMap<String, Tensor> = read_weights(&path, "make setup installs MiniLM-L6")?
        .into_iter()
        .map(|(k, v)| (k.strip_prefix("bert.").map(str::to_string).unwrap_or(k), v))
        .collect();
    let get = |name: &str| {
        weights.get(name).ok_or_else(|| Error::Input(format!("warm start: {} has no tensor {name}", path.display())))
    };
    let mut plan: Vec<(String, Tensor)> = Vec::new();
    // Embeddings: padding's rows stay zero (the summarizer never reads them).
    let words = get("embeddings.word_embeddings.weight")?.copy();
    let _ = words.get(crate::data::seq2seq::PAD).zero_();
    plan.push(("embed_tokens.weight".into(), words));
    let (positions, segment) =
        (get("embeddings.position_embeddings.weight")?, get("embeddings.token_type_embeddings.weight")?);
    let rows = positions.narrow(0, 0, cfg.max_positions) + segment.get(0); // BERT position i -> row i + 1
    let zero = Tensor::zeros([1, cfg.d_model], (rows.kind(), rows.device()));
    plan.push(("embed_positions.weight".into(), Tensor::cat(&[&zero, &rows], 0)));
    for p in ["weight", "bias"] {
        plan.push((format!("layernorm_embedding.{p}"), get(&format!("embeddings.LayerNorm.{p}"))?.shallow_clone()));
    }
    let layer = |stack: &str, i: i64, plan: &mut Vec<(String, Tensor)>| -> Result<()> {
        let (ours, theirs) = (format!("{stack}.layers.{i}"), format!("encoder.layer.{i}"));
        let pairs = [
            ("self_attn.q_proj", "attention.self.query"),
            ("self_attn.k_proj", "attention.self.key"),
            ("self_attn.v_proj", "attention.self.value"),
            ("self_attn.out_proj", "attention.output.dense"),
            ("self_attn_layer_norm", "attention.output.LayerNorm"),
            ("fc1", "intermediate.dense"),
            ("fc2", "output.dense"),
            ("final_layer_norm", "output.LayerNorm"),
        ];
        for (a, b) in pairs {
            for p in ["weight", "bias"] {
                plan.push((format!("{ours}.{a}.{p}"), get(&format!("{theirs}.{b}.{p}"))?.shallow_clone()));
            }
        }
        Ok(())
    };
    for i in 0..cfg.encoder_layers {
        layer("encoder", i, &mut plan)?;
    }
    for i in 0..cfg.decoder_layers {
        layer("decoder", i, &mut plan)?;
    }
    let mut vars = vs.variables();
    // Check every name and shape before changing anything.
    for (name, t) in &plan {
        let var =
            vars.get(name).ok_or_else(|| Error::Input(format!("warm start: the summarizer has no variable {name}")))?;
        if var.size() != t.size() {
            return Err(Error::Shape { what: format!("warm start: {name}"), expected: var.size(), got: t.size() });
        }
    }
    tch::no_grad(|| {
        for (name, t) in &plan {
            if let Some(var) = vars.get_mut(name) {
                var.copy_(&t.to_device(var.device()).to_kind(var.kind()));
            }
        }
    });
    Ok(plan.len())
}
