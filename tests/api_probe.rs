//! The student's crate holds no working answer to a TODO: compiled as the handout ships it (the
//! `reference` feature off — this file runs in the handout's own `make test`, and in the
//! repository with `cargo test --no-default-features --test api_probe`), the public functions
//! closest to each TODO are tried on its check, and none passes.
//!
//! What was public once and answered TODOs (`models::attention::self_attention_with_weights` with
//! `split_heads` / `merge_heads`; `tasks::verification::squared_distances`) is crate-private now and
//! cannot even be named here. `tests/handout.rs` lists every public tensor function of the
//! handout's crate (`tests/handout_api.txt`), so a new one is reviewed before it ships.

#![cfg(not(feature = "reference"))]

use std::collections::HashMap;

use hw9::grading::check::{check_public, Case, Fixtures};
use hw9::models::vit::{EncoderConfig, EncoderLayer, SelfAttention};
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
fn the_given_self_attention_does_not_answer_multi_head_attention() {
    let fx = fixtures("02_summarization");
    let w = fx.weights("mha").unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let attn = SelfAttention::new(&vs.root(), 16, 4);
    let mut t = HashMap::new();
    packed(&w, "", "", &mut t);
    load(&vs, t);
    // The output as the given layer computes it (no padding mask), with uniform weights.
    let r = check_public(&fx, "mha", &|c: &Case| {
        let out = attn.forward_queries(&c["query"], &c["key_value"]);
        let (b, t_, s) = (c["query"].size()[0], c["query"].size()[1], c["key_value"].size()[1]);
        (out, Tensor::ones([b, 4, t_, s], (Kind::Float, Device::Cpu)) / s as f64)
    });
    assert!(!r.passed, "the handout's SelfAttention answers the mha TODO: {r}");
}

#[test]
fn the_given_self_attention_does_not_answer_scaled_dot_product_attention() {
    let fx = fixtures("02_summarization");
    // Identity projections: attention(q, k, k) over merged heads, no mask.
    let r = check_public(&fx, "attention", &|c: &Case| {
        let (b, h, t, dh) = c["q"].size4().unwrap();
        let s = c["k"].size()[2];
        let d = h * dh;
        let vs = nn::VarStore::new(Device::Cpu);
        let attn = SelfAttention::new(&vs.root(), d, h);
        let eye = Tensor::eye(d, (Kind::Float, Device::Cpu));
        let mut m = HashMap::new();
        m.insert("in_proj_weight".to_string(), Tensor::cat(&[&eye, &eye, &eye], 0));
        m.insert("in_proj_bias".to_string(), Tensor::zeros([3 * d], (Kind::Float, Device::Cpu)));
        m.insert("out_proj.weight".to_string(), eye.shallow_clone());
        m.insert("out_proj.bias".to_string(), Tensor::zeros([d], (Kind::Float, Device::Cpu)));
        load(&vs, m);
        let merge = |x: &Tensor, n: i64| x.transpose(1, 2).reshape([b, n, d]);
        let out = attn.forward_queries(&merge(&c["q"], t), &merge(&c["k"], s));
        (out.reshape([b, t, h, dh]).transpose(1, 2), Tensor::ones([b, h, t, s], (Kind::Float, Device::Cpu)) / s as f64)
    });
    assert!(!r.passed, "the handout's SelfAttention answers the attention TODO: {r}");
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
    let r =
        check_public(&fx, "encoder_layer", &|c: &Case| layer.forward(&c["x"]) * c["padding_mask"].eq(0).unsqueeze(-1));
    assert!(!r.passed, "the handout's EncoderLayer answers the encoder_layer TODO: {r}");
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
