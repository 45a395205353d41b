//! BERT with attention extraction: parity with Hugging Face's own BertModel (real MiniLM-L6 and a
//! tiny random model written by save_pretrained), tokenizer ids, attention invariants, bad files.

use std::collections::HashMap;
use std::path::Path;

use hw9::data::tokenize::Tokenizer;
use hw9::models::bert::{default_bert_dir, Bert};
use tch::{Device, Kind, Tensor};

fn fixtures() -> HashMap<String, Tensor> {
    let path = hw9::paths::assets().join("fixtures/hf_parity.safetensors");
    Tensor::read_safetensors(&path).expect("committed fixtures").into_iter().collect()
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

fn assert_parity(bert: &Bert, fx: &HashMap<String, Tensor>, prefix: &str) {
    let mask = &fx[&format!("{prefix}/attention_mask")];
    let out = bert
        .forward(&fx[&format!("{prefix}/input_ids")], &fx[&format!("{prefix}/token_type_ids")], Some(mask))
        .unwrap();
    for (i, layer) in out.layers.iter().enumerate() {
        let want = &fx[&format!("{prefix}/attentions.{i}")];
        let d = max_abs(&layer.probs, want);
        assert!(d < 1e-4, "{prefix} layer {i}: attention differs by {d}");
    }
    // Hidden states at real tokens (Hugging Face leaves padded rows meaningless too).
    let keep = mask.unsqueeze(-1).to_kind(Kind::Float);
    let d = max_abs(&(&out.hidden * &keep), &(&fx[&format!("{prefix}/last_hidden_state")] * &keep));
    assert!(d < 1e-4, "{prefix}: hidden states differ by {d}");
}

#[test]
fn minilm_matches_hugging_face_on_a_pair_and_a_padded_batch() {
    let fx = fixtures();
    let (_vs, bert) = Bert::load(&default_bert_dir(), Device::Cpu).unwrap_or_else(|e| panic!("{e} (run `make setup`)"));
    assert_eq!((bert.cfg.num_hidden_layers, bert.cfg.num_attention_heads), (6, 12));
    assert_parity(&bert, &fx, "minilm/pair");
    assert_parity(&bert, &fx, "minilm/batch");
}

#[test]
fn a_tiny_random_bert_written_by_save_pretrained_matches() {
    let fx = fixtures();
    let (_vs, bert) = Bert::load(&hw9::paths::assets().join("fixtures/tiny-bert"), Device::Cpu).unwrap();
    assert_parity(&bert, &fx, "tiny_bert");
}

#[test]
fn the_wordpiece_tokenizer_gives_hugging_faces_ids_and_sentence_b_start() {
    let fx = fixtures();
    let tok = Tokenizer::load(&default_bert_dir().join("tokenizer.json")).unwrap();
    let enc = tok.encode("I wanted to have a party", Some("I bought a cake for it.")).unwrap();
    assert_eq!(enc.ids, Vec::<i64>::try_from(fx["minilm/pair/input_ids"].reshape([-1])).unwrap());
    assert_eq!(enc.type_ids, Vec::<i64>::try_from(fx["minilm/pair/token_type_ids"].reshape([-1])).unwrap());
    assert_eq!(enc.tokens.first().map(String::as_str), Some("[CLS]"));
    let b = enc.sentence_b_start.unwrap();
    assert_eq!(enc.tokens[b - 1], "[SEP]");
    assert_eq!(enc.tokens[b], "i");
}

#[test]
fn attention_rows_sum_to_one_and_padded_keys_get_nothing() {
    let fx = fixtures();
    let (_vs, bert) = Bert::load(&default_bert_dir(), Device::Cpu).unwrap();
    let mask = &fx["minilm/batch/attention_mask"];
    let out = bert.forward(&fx["minilm/batch/input_ids"], &fx["minilm/batch/token_type_ids"], Some(mask)).unwrap();
    for layer in &out.layers {
        let sums = layer.probs.sum_dim_intlist(-1, false, Kind::Float);
        assert!(max_abs(&sums, &Tensor::ones_like(&sums)) < 1e-5);
        // Sentence 0 is padded: its padded keys get (numerically) zero weight.
        let padded = mask.get(0).eq(0);
        let on_pad = layer.probs.get(0).masked_select(&padded.reshape([1, 1, -1]).expand_as(&layer.probs.get(0)));
        assert!(on_pad.numel() > 0 && on_pad.max().double_value(&[]) < 1e-6);
        assert_eq!(layer.queries.size()[1], 12);
        assert_eq!(layer.keys.size(), layer.values.size());
    }
}

#[test]
fn corrupt_weights_and_another_shape_are_refused_with_a_clear_message() {
    let dir_tmp = tempfile::tempdir().unwrap();
    let dir = dir_tmp.path().to_path_buf();
    std::fs::create_dir_all(&dir).unwrap();
    let tiny = hw9::paths::assets().join("fixtures/tiny-bert");
    // A config of another shape than the weights.
    let cfg = std::fs::read_to_string(tiny.join("config.json"))
        .unwrap()
        .replace("\"hidden_size\": 32", "\"hidden_size\": 64");
    std::fs::write(dir.join("config.json"), cfg).unwrap();
    std::fs::copy(tiny.join("model.safetensors"), dir.join("model.safetensors")).unwrap();
    let err = Bert::load(&dir, Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("expected shape") && err.contains("64") && err.contains("32"), "{err}");
    // A corrupted safetensors file.
    std::fs::copy(tiny.join("config.json"), dir.join("config.json")).unwrap();
    std::fs::write(dir.join("model.safetensors"), b"\x10\x00\x00\x00\x00\x00\x00\x00{\"broken\": tr").unwrap();
    let err = Bert::load(&dir, Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("not a readable safetensors file"), "{err}");
    let err = Bert::load(Path::new("/nonexistent"), Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("missing model config"), "{err}");
}

#[test]
fn a_tiny_random_gpt2_matches_hugging_face_and_is_causal() {
    let fx = fixtures();
    let (_vs, gpt) =
        hw9::models::gpt2::Gpt2::load(&hw9::paths::assets().join("fixtures/tiny-gpt2"), Device::Cpu).unwrap();
    let mask = &fx["tiny_gpt2/attention_mask"];
    let out = gpt.forward(&fx["tiny_gpt2/input_ids"], Some(mask)).unwrap();
    for (i, layer) in out.layers.iter().enumerate() {
        let d = max_abs(&layer.probs, &fx[&format!("tiny_gpt2/attentions.{i}")]);
        assert!(d < 1e-4, "GPT-2 layer {i}: attention differs by {d}");
        // Causal: nothing above the diagonal.
        assert!(layer.probs.triu(1).abs().max().double_value(&[]) < 1e-7);
    }
    let keep = mask.unsqueeze(-1).to_kind(Kind::Float);
    let d = max_abs(&(&out.hidden * &keep), &(&fx["tiny_gpt2/last_hidden_state"] * &keep));
    assert!(d < 1e-4, "GPT-2 hidden states differ by {d}");
}

#[test]
fn the_gpt2_tokenizer_gives_gpt2_ids() {
    let tok = hw9::data::tokenize::Gpt2Tokenizer::new().unwrap();
    let (ids, pieces) = tok.encode("The dog ran");
    assert_eq!(ids, [464, 3290, 4966]);
    assert_eq!(pieces, ["The", " dog", " ran"]);
    assert_eq!(tok.encode("Hello world").0, [15496, 995]);
    assert_eq!(tok.decode(&ids).unwrap(), "The dog ran");
}

#[test]
fn the_local_gpt2_trains_and_saves_in_gpt2s_layout() {
    let out_tmp = tempfile::tempdir().unwrap();
    let out = out_tmp.path().to_path_buf();
    let cfg = hw9::models::gpt2::Gpt2Config {
        vocab_size: 50257,
        n_positions: 16,
        n_embd: 16,
        n_layer: 1,
        n_head: 2,
        n_inner: None,
        layer_norm_epsilon: 1e-5,
        activation_function: "gelu_new".into(),
    };
    // A constant, larger rate than the real plan's, so that a few steps on a loaded machine
    // already lower the loss.
    let optim = hw9::train::OptimConfig::adamw(1e-2, (0.9, 0.95), 0.0);
    let plan = hw9::plan::GptPlan {
        model: cfg.clone(),
        seconds: 3.0,
        batch_size: 4,
        max_docs: Some(500),
        optim,
        resume: None,
    };
    hw9::seed(0);
    let r = hw9::tasks::language_model::train_small_gpt2(&plan, &out, Device::Cpu).unwrap();
    assert!(r.steps >= 3 && r.first_loss > 10.0, "{r:?}"); // ln(50257) = 10.8 at the start
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(json["model_type"], "gpt2");
    let (_vs, gpt) = hw9::models::gpt2::Gpt2::load(&out, Device::Cpu).unwrap();
    let tok = hw9::data::tokenize::Gpt2Tokenizer::new().unwrap();
    let ids = Tensor::from_slice(&tok.encode("The dog ran").0).unsqueeze(0);
    assert_eq!(gpt.logits(&ids).unwrap().size(), [1, 3, 50257]);
    // The trained model predicts a corpus text better than the same architecture untrained.
    let text = Tensor::from_slice(
        &tok.encode("Library for parsing command-line options. This package contains the development files.").0,
    )
    .unsqueeze(0);
    let t = text.size()[1].min(16);
    let (x, y) = (text.narrow(1, 0, t - 1), text.narrow(1, 1, t - 1));
    let nll = |g: &hw9::models::gpt2::Gpt2| {
        g.logits(&x).unwrap().squeeze_dim(0).cross_entropy_for_logits(&y.squeeze_dim(0)).double_value(&[])
    };
    let fresh_vs = tch::nn::VarStore::new(Device::Cpu);
    let fresh = hw9::models::gpt2::Gpt2::new(&fresh_vs.root(), &cfg).unwrap();
    let (trained, untrained) = (nll(&gpt), nll(&fresh));
    assert!(trained < untrained - 0.2, "after {} steps: {trained} vs untrained {untrained}", r.steps);
}

#[test]
fn a_saved_and_reloaded_bert_gives_identical_attention() {
    let dir_tmp = tempfile::tempdir().unwrap();
    let dir = dir_tmp.path().to_path_buf();
    std::fs::create_dir_all(&dir).unwrap();
    let (vs, bert) = Bert::load(&default_bert_dir(), Device::Cpu).unwrap();
    vs.save(dir.join("model.safetensors")).unwrap();
    std::fs::copy(default_bert_dir().join("config.json"), dir.join("config.json")).unwrap();
    let (_vs2, again) = Bert::load(&dir, Device::Cpu).unwrap();
    let tok = Tokenizer::load(&default_bert_dir().join("tokenizer.json")).unwrap();
    let (_, a) = bert.attend(&tok, "I am happy", Some("I am not sad")).unwrap();
    let (_, b) = again.attend(&tok, "I am happy", Some("I am not sad")).unwrap();
    for (x, y) in a.layers.iter().zip(&b.layers) {
        assert!(x.probs.equal(&y.probs) && x.queries.equal(&y.queries));
    }
}
