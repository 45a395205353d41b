//! The student's crate holds no working answer to a TODO: compiled as the handout ships it (the
//! `reference` feature off — this file runs in the handout's own `make test`, and in the
//! repository with `cargo test --no-default-features --test api_probe`), the public functions
//! closest to each TODO are tried on its check, and none passes.
//!
//! What was public once and answered TODOs (`models::attention::self_attention_with_weights` with
//! `split_heads` / `merge_heads`; `tasks::verification::squared_distances`; the passes of
//! `models::vit::SelfAttention`, whose public weights made it multi-head attention, even masked
//! by running each row on its real keys) is crate-private now and cannot even be named here.
//! `tests/handout.rs` lists every public tensor function of the handout's crate
//! (`tests/handout_api.txt`), so a new one is reviewed before it ships.

#![cfg(not(feature = "reference"))]

use std::collections::HashMap;

use hw9::grading::check::{check_public, Case, Fixtures};
use hw9::models::vit::{EncoderConfig, EncoderLayer};
use hw9::tasks::verification::hardest_pairs;
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

fn fixtures(nb: &str) -> Fixtures {
    Fixtures::load(nb).expect("the handout's public fixtures")
}

/// Copies `tensors` into `vs` by name.
fn load(vs: &nn::VarStore, tensors: HashMap<String, Tensor>) {
    hw9::io::copy_weights(vs, &tensors, "probe").expect("weights");
}

/// PyTorch's packed in_proj from hw9's separate q/k/v projections (prefix `p`).
fn packed(w: &HashMap<String, Tensor>, p: &str, into: &str, out: &mut HashMap<String, Tensor>) {
    let cat = |part: &str| {
        Tensor::cat(&["q_proj", "k_proj", "v_proj"].map(|n| w[&format!("{p}{n}.{part}")].shallow_clone()), 0)
    };
    out.insert(format!("{into}in_proj_weight"), cat("weight"));
    out.insert(format!("{into}in_proj_bias"), cat("bias"));
    out.insert(format!("{into}out_proj.weight"), w[&format!("{p}out_proj.weight")].shallow_clone());
    out.insert(format!("{into}out_proj.bias"), w[&format!("{p}out_proj.bias")].shallow_clone());
}

#[test]
fn the_given_encoder_layer_does_not_answer_the_transformer_layer() {
    let fx = fixtures("02_summarization");
    let w = fx.weights("encoder_layer").unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let layer = EncoderLayer::new(&vs.root(), &EncoderConfig { d_model: 16, n_heads: 4, n_layers: 1, d_ffn: 32 });
    let mut t = HashMap::new();
    packed(&w, "self_attn.", "self_attn.", &mut t);
    for (ours, theirs) in
        [("linear1", "fc1"), ("linear2", "fc2"), ("norm1", "self_attn_layer_norm"), ("norm2", "final_layer_norm")]
    {
        for part in ["weight", "bias"] {
            t.insert(format!("{ours}.{part}"), w[&format!("{theirs}.{part}")].shallow_clone());
        }
    }
    load(&vs, t);
    // Each row on its real tokens alone (padding sits at the end): what masking the padded keys
    // does, without a mask. Only the output is compared, as the check does.
    let r = check_public(&fx, "encoder_layer", &|c: &Case| {
        let (x, pad) = (&c["x"], &c["padding_mask"]);
        let rows: Vec<Tensor> = (0..x.size()[0])
            .map(|i| {
                let n = pad.get(i).eq(0).sum(Kind::Int64).int64_value(&[]);
                let real = layer.forward(&x.get(i).narrow(0, 0, n).unsqueeze(0)).squeeze_dim(0);
                Tensor::cat(&[real, x.get(i).narrow(0, n, x.size()[1] - n).zeros_like()], 0)
            })
            .collect();
        Tensor::stack(&rows, 0)
    });
    assert!(!r.passed, "the handout's EncoderLayer answers the encoder_layer TODO: {r}");
    // What it lacks is the student's own part (a ReLU feed-forward block where it has GELU).
    assert!(r.message.contains("elements differ"), "{r}");
}

#[test]
fn hardest_pairs_measures_with_the_students_own_distances() {
    // It once returned the crate's squared distances of any pairs asked for: the whole matrix,
    // the answer to pairwise_squared_distances. Now it uses the function it is given.
    let fx = fixtures("04_facenet");
    let r = check_public(&fx, "pairwise_distances", &|c: &Case| {
        let e = &c["embeddings"];
        let n = e.size()[0];
        let same = Tensor::zeros([n], (Kind::Int64, Device::Cpu));
        let (pairs, _) = hardest_pairs(e, &same, (n * n) as usize, |e| e.matmul(&e.tr()) * 0.0).unwrap();
        let d = Tensor::zeros([n, n], (Kind::Float, Device::Cpu));
        for p in pairs {
            let _ = d.get(p.i).get(p.j).fill_(p.distance);
            let _ = d.get(p.j).get(p.i).fill_(p.distance);
        }
        d
    });
    assert!(!r.passed, "hardest_pairs gives the pairwise distances away: {r}");
}

#[test]
fn the_encoders_attention_maps_do_not_answer_multi_head_attention() {
    // `TransformerEncoder::forward_with_attention` (for attention rollout in notebook 1) returns
    // every head's weights, queries, keys and values of self-attention without masks. The mha
    // TODO attends from separate queries over padded keys: the encoder, given the TODO's own
    // weights, attends from the keys to themselves and over the padding.
    use hw9::models::vit::TransformerEncoder;
    let fx = fixtures("02_summarization");
    let w = fx.weights("mha").unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let encoder =
        TransformerEncoder::new(&vs.root(), &EncoderConfig { d_model: 16, n_heads: 4, n_layers: 1, d_ffn: 32 });
    let mut t = HashMap::new();
    packed(&w, "", "layers.0.self_attn.", &mut t);
    for (name, v) in vs.variables() {
        t.entry(name).or_insert(v); // the feed-forward half is not used below
    }
    load(&vs, t);
    let r = check_public(&fx, "mha", &|c: &Case| {
        let (query, kv) = (&c["query"], &c["key_value"]);
        let att = encoder.forward_with_attention(kv).unwrap().layers.remove(0);
        let weights = att.probs.narrow(2, 0, query.size()[1]); // (B, H, T, S): the first T rows
        let (b, h, tq, dh) = (query.size()[0], att.probs.size()[1], query.size()[1], att.values.size()[3]);
        let merged = weights.matmul(&att.values).transpose(1, 2).reshape([b, tq, h * dh]);
        let out = merged.linear(&w["out_proj.weight"], Some(&w["out_proj.bias"]));
        (out, weights)
    });
    assert!(!r.passed, "forward_with_attention answers the mha TODO: {r}");
    assert!(r.message.contains("differ"), "{r}");
}
