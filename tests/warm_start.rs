//! The BERT2BERT warm start: a summarizer whose encoder starts from BERT computes what BERT
//! computes (tiny random BERT written by transformers, and the real MiniLM-L6), its decoder's
//! self-attention and feed-forward blocks hold BERT's first layers, and sizes that do not fit
//! are refused before anything changes.

#![cfg(feature = "reference")] // the crate's layers (Summarizer::new): not in the student handout

use hw9::models::bert::{default_bert_dir, Bert, BertConfig};
use hw9::models::summarizer::Summarizer;
use hw9::models::warm_start::{bert2bert_config, warm_start_from_bert};
use tch::{nn, Device, Kind, Tensor};

fn check_encoder_equals_bert(dir: &std::path::Path, ids: &Tensor) {
    let bert_cfg: BertConfig = hw9::io::read_config(dir).unwrap();
    let (_bvs, bert) = Bert::load(dir, Device::Cpu).unwrap();
    let cfg = bert2bert_config(&bert_cfg, 1, 48, 0.0);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Summarizer::new(&vs.root(), &cfg).unwrap();
    let before = model.encode(ids, false).unwrap().0;
    let n = warm_start_from_bert(&vs, &cfg, dir).unwrap();
    assert_eq!(n, 4 + 16 * (cfg.encoder_layers + cfg.decoder_layers) as usize);
    let (ours, _) = model.encode(ids, false).unwrap();
    let theirs = bert.forward(ids, &ids.zeros_like(), None).unwrap().hidden;
    // LayerNorm epsilons differ (BERT 1e-12, the summarizer's 1e-5): close, not bit-equal.
    let diff = (&ours - &theirs).abs().max().double_value(&[]);
    assert!(diff < 2e-3, "{}: encoder vs BERT differ by {diff}", dir.display());
    let was = (&before - &theirs).abs().max().double_value(&[]);
    assert!(was > 0.1, "before the warm start the encoder was not BERT ({was})");
    // The decoder's first layer holds BERT's first layer; its cross-attention is still random.
    let vars = vs.variables();
    let w = hw9::io::read_weights(&dir.join("model.safetensors"), "").unwrap();
    let key = |k: &str| w.get(k).or_else(|| w.get(&format!("bert.{k}"))).unwrap().shallow_clone();
    assert_eq!(vars["decoder.layers.0.fc1.weight"], key("encoder.layer.0.intermediate.dense.weight"));
    assert_eq!(vars["decoder.layers.0.self_attn.q_proj.bias"], key("encoder.layer.0.attention.self.query.bias"));
    assert_eq!(vars["embed_tokens.weight"].get(0).abs().sum(Kind::Float).double_value(&[]), 0.0, "padding row");
}

#[test]
fn the_warm_started_encoder_computes_what_bert_computes() {
    let ids = Tensor::from_slice(&[5i64, 17, 42, 98, 3, 11, 60, 7]).reshape([2, 4]);
    check_encoder_equals_bert(&hw9::paths::assets().join("fixtures/tiny-bert"), &ids);
    // MiniLM-L6: "[CLS] the dog ran [SEP]" and a second sentence.
    let ids = Tensor::from_slice(&[101i64, 1996, 3899, 2743, 102, 101, 1045, 2293, 2009, 102]).reshape([2, 5]);
    check_encoder_equals_bert(&default_bert_dir(), &ids);
}

#[test]
fn sizes_that_do_not_fit_are_refused_before_anything_changes() {
    let dir = hw9::paths::assets().join("fixtures/tiny-bert");
    let bert_cfg: BertConfig = hw9::io::read_config(&dir).unwrap();
    let mut cfg = bert2bert_config(&bert_cfg, 1, 48, 0.0);
    cfg.d_ffn = 64;
    let vs = nn::VarStore::new(Device::Cpu);
    let _model = Summarizer::new(&vs.root(), &cfg).unwrap();
    let before = vs.variables()["embed_tokens.weight"].copy();
    let err = warm_start_from_bert(&vs, &cfg, &dir).unwrap_err().to_string();
    assert!(err.contains("d_ffn / intermediate_size is 64, BERT's is 37"), "{err}");
    assert_eq!(vs.variables()["embed_tokens.weight"], before);
    let too_deep =
        hw9::models::summarizer::SummarizerConfig { decoder_layers: 3, ..bert2bert_config(&bert_cfg, 1, 48, 0.0) };
    let err = warm_start_from_bert(&vs, &too_deep, &dir).unwrap_err().to_string();
    assert!(err.contains("BERT has 2 layers"), "{err}");
}
