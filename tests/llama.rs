//! hw9's LLaMA decoder on SmolLM2-135M-Instruct against `transformers`' own `LlamaForCausalLM`
//! loaded from the same GGUF file (assets/fixtures/llama_parity.safetensors, written by
//! `make fixtures`): tokenizer ids, hidden states, attention probabilities, next tokens and
//! greedy generations; and the key/value cache against the uncached model.

use std::collections::HashMap;

use hw9::data::tokenize::LlamaTokenizer;
use hw9::models::llama::{default_llama_dir, Llama, LlamaConfig};
use tch::{nn, Device, Kind, Tensor};

/// The same texts and prompts as tools/gen_fixtures.py.
const TEXTS: [&str; 5] = [
    "The cat sat on the mat because it was tired.",
    "In 2024 there were 135 million  parameters!\n\nOK",
    "<|im_start|>user\nHi there<|im_end|>\n",
    "naïve café — résumé 東京 🙂",
    "    def forward(self, x):\n        return x",
];

fn fixtures() -> HashMap<String, Tensor> {
    let path = hw9::paths::assets().join("fixtures/llama_parity.safetensors");
    Tensor::read_safetensors(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).into_iter().collect()
}

struct Loaded {
    model: Llama,
    tok: LlamaTokenizer,
    _vs: nn::VarStore,
}

// Each test loads its own copy (about 1 s; tensors cannot be shared between test threads).
fn load() -> Loaded {
    let dir = default_llama_dir();
    let (vs, model) = Llama::load(&dir, Device::Cpu).unwrap_or_else(|e| panic!("{e} (run `make setup`)"));
    let tok = LlamaTokenizer::load(&dir.join("tokenizer.json")).unwrap();
    Loaded { model, tok, _vs: vs }
}

fn ids(t: &Tensor) -> Vec<i64> {
    Vec::<i64>::try_from(t.reshape([-1])).unwrap()
}

/// Max |a - b| over max(1, max |b|): hidden states of a LLaMA grow to hundreds in later layers.
fn scaled_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    let diff = (a - b).abs().max().double_value(&[]);
    diff / b.abs().max().double_value(&[]).max(1.0)
}

#[test]
fn the_tokenizer_matches_hugging_face() {
    let smol = load();
    let fx = fixtures();
    for (i, text) in TEXTS.iter().enumerate() {
        let (got, pieces) = smol.tok.encode(text).unwrap();
        assert_eq!(got, ids(&fx[&format!("tokenizer/{i}/ids")]), "{text:?}");
        assert_eq!(pieces.len(), got.len());
        assert_eq!(smol.tok.decode(&got).unwrap(), text.replace("<|im_start|>", "").replace("<|im_end|>", ""));
    }
}

#[test]
fn hidden_states_attention_and_next_tokens_match_hugging_face() {
    let smol = load();
    let fx = fixtures();
    let m = &smol.model;
    for case in ["sentence", "repeated"] {
        let x = &fx[&format!("{case}/input_ids")];
        let states = tch::no_grad(|| m.hidden_states(x)).unwrap();
        assert_eq!(states.len(), 31);
        for i in [1usize, 15, 30] {
            let Some(want) = fx.get(&format!("{case}/hidden_states.{i}")) else { continue };
            let d = scaled_diff(&states[i], want);
            let abs = (&states[i] - want).abs().max().double_value(&[]);
            println!("{case}: hidden state {i}: max |diff| = {abs:.2e}, / max(1, max |ref|) = {d:.2e}");
            assert!(d < 1e-4, "{case}: hidden state {i} differs by {d:e} (relative to its largest value)");
        }
        let out = tch::no_grad(|| m.forward(x)).unwrap();
        assert_eq!(out.layers.len(), 30);
        assert!(scaled_diff(&out.hidden, &fx[&format!("{case}/hidden_states.30")]) < 1e-4);
        for i in [0usize, 14, 29] {
            let (got, want) = (&out.layers[i].probs, &fx[&format!("{case}/attentions.{i}")]);
            let d = (got - want).abs().max().double_value(&[]);
            println!("{case}: attention of layer {i}: max |diff| = {d:.2e}");
            assert!(d < 1e-4, "{case}: attention of layer {i} differs by {d:e}");
            assert_eq!(out.layers[i].kv_heads, 3);
            assert_eq!(out.layers[i].keys.size()[1], 9, "keys repeated per query head");
        }
        let logits = m.logits(x).unwrap();
        assert_eq!(ids(&logits.argmax(-1, false)), ids(&fx[&format!("{case}/next_tokens")]), "{case}");
        let top = logits.select(1, -1).topk(10, -1, true, true);
        assert_eq!(ids(&top.1), ids(&fx[&format!("{case}/top_ids")]));
        assert!(scaled_diff(&top.0, &fx[&format!("{case}/top_logits")]) < 1e-4);
    }
}

#[test]
fn queries_and_keys_reproduce_the_attention_and_groups_share_keys() {
    let smol = load();
    let m = &smol.model;
    let (tokens, out) = m.attend(&smol.tok, "When Mary and John went to the store, John gave a drink to").unwrap();
    let t = tokens.len() as i64;
    let layer = &out.layers[7];
    let dh = layer.queries.size()[3] as f64;
    let scores = layer.queries.matmul(&layer.keys.transpose(-2, -1)) / dh.sqrt();
    let future = Tensor::ones([t, t], (Kind::Bool, Device::Cpu)).triu(1);
    let probs = scores.masked_fill(&future, f64::NEG_INFINITY).softmax(-1, Kind::Float);
    assert!((probs - &layer.probs).abs().max().double_value(&[]) < 1e-5);
    // Query heads 0, 1, 2 read key/value head 0; heads 3, 4, 5 head 1.
    assert_eq!(layer.keys.get(0).get(0), layer.keys.get(0).get(2));
    assert_ne!(layer.keys.get(0).get(2), layer.keys.get(0).get(3));
    assert_eq!((layer.kv_head(2), layer.kv_head(3), layer.kv_head(8)), (0, 1, 2));
    assert_eq!(layer.head_label(4), "H4·kv1");
}

#[test]
fn greedy_generation_with_the_cache_matches_hugging_face() {
    let smol = load();
    let fx = fixtures();
    let m = &smol.model;
    for i in 0..3 {
        let prompt = ids(&fx[&format!("generate/{i}/prompt")]);
        let want = ids(&fx[&format!("generate/{i}/new")]);
        let got = m.generate(&prompt, 12, &[]).unwrap();
        assert_eq!(got.ids, want, "prompt {i}: {:?}", smol.tok.decode(&prompt).unwrap());
        assert!(got.tokens_per_second > 0.0);
    }
    let answer = m.chat(&smol.tok, "What is the capital of France?", 20).unwrap();
    assert!(answer.contains("Paris"), "{answer:?}");
}

#[test]
fn the_cache_gives_the_logits_of_the_whole_sequence() {
    let smol = load();
    let m = &smol.model;
    let (ids, _) = smol.tok.encode("Rust is a systems programming language that").unwrap();
    let full = m.logits(&Tensor::from_slice(&ids).unsqueeze(0)).unwrap(); // (1, T, V)
    let mut cache = m.cache();
    let split = 4;
    let first = m.step(&Tensor::from_slice(&ids[..split]).unsqueeze(0), &mut cache).unwrap();
    assert!(scaled_diff(&first, &full.select(1, split as i64 - 1)) < 1e-4);
    for (j, &id) in ids.iter().enumerate().skip(split) {
        let step = m.step(&Tensor::from_slice(&[id]).unsqueeze(0), &mut cache).unwrap();
        let d = scaled_diff(&step, &full.select(1, j as i64));
        assert!(d < 1e-4, "position {j}: {d:e}");
    }
    assert_eq!(cache.len(), ids.len() as i64);
    let err = m.step(&Tensor::from_slice(&ids[..2]).unsqueeze(0), &mut cache).unwrap_err().to_string();
    assert!(err.contains("one token at a time"), "{err}");
}

#[test]
fn bad_inputs_say_what_was_expected() {
    let smol = load();
    let m = &smol.model;
    let err = m.forward(&Tensor::from_slice(&[1i64, 2, 3])).unwrap_err().to_string();
    assert!(err.contains("expected (B, T)"), "{err}");
    let err = m.forward(&Tensor::from_slice(&[1i64, 49152]).unsqueeze(0)).unwrap_err().to_string();
    assert!(err.contains("expected ids in 0..49152"), "{err}");
    let err = m.forward(&Tensor::from_slice(&[1.0f32, 2.0]).unsqueeze(0)).unwrap_err().to_string();
    assert!(err.contains("int64"), "{err}");
    let mut cfg: LlamaConfig =
        serde_json::from_str(&std::fs::read_to_string(default_llama_dir().join("config.json")).unwrap()).unwrap();
    cfg.num_key_value_heads = 4;
    let err = Llama::new(&nn::VarStore::new(Device::Cpu).root(), &cfg).unwrap_err().to_string();
    assert!(err.contains("multiple of num_key_value_heads 4"), "{err}");
}
