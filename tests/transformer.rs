//! Transformer blocks: attention invariants, padding invariance, and parity with PyTorch's
//! nn.MultiheadAttention / nn.TransformerEncoderLayer / nn.TransformerDecoderLayer.

#![cfg(feature = "reference")] // the reference models: not in the student handout

use std::collections::HashMap;

use hw9::models::attention::{attention, Mask};
use hw9::models::transformer::{make_positions, LayerConfig, MultiheadAttention, SeqLayer, Stack, TransformerLayer};
use tch::nn;
use tch::{Device, Kind, Tensor};

fn fixtures() -> HashMap<String, Tensor> {
    Tensor::read_safetensors(hw9::paths::assets().join("fixtures/transformer_parity.safetensors"))
        .unwrap()
        .into_iter()
        .collect()
}

/// The fixture tensors under `prefix.` as a VarStore's names.
fn weights(fx: &HashMap<String, Tensor>, prefix: &str) -> HashMap<String, Tensor> {
    fx.iter()
        .filter_map(|(k, v)| k.strip_prefix(&format!("{prefix}.")).map(|n| (n.to_string(), v.shallow_clone())))
        .collect()
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

#[test]
fn attention_rows_sum_to_one_hide_the_future_and_padded_keys() {
    let q = Tensor::randn([2, 3, 5, 4], (Kind::Float, Device::Cpu));
    let pad = Tensor::from_slice(&[0u8, 0, 0, 0, 0, 0, 0, 0, 1, 1]).reshape([2, 5]);
    let out = attention(&q, &q, &q, Mask::padding(Some(&pad)).causal(true), true);
    let (out, w) = (out.context, out.weights.unwrap());
    assert_eq!(out.size(), [2, 3, 5, 4]);
    let sums = w.sum_dim_intlist(-1, false, Kind::Float);
    assert!(max_abs(&sums, &Tensor::ones_like(&sums)) < 1e-6);
    assert_eq!(w.triu(1).abs().max().double_value(&[]), 0.0, "a query attends to a later key");
    assert_eq!(w.get(1).narrow(-1, 3, 2).abs().max().double_value(&[]), 0.0, "padded keys get weight");
}

#[test]
fn padding_does_not_change_the_unpadded_outputs() {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let layer = TransformerLayer::new(
        &vs.root(),
        &LayerConfig { d_model: 8, n_heads: 2, d_ffn: 16, dropout: 0.0 },
        Stack::Encoder,
    );
    let x = Tensor::randn([1, 4, 8], (Kind::Float, Device::Cpu));
    let alone = layer.forward(&x, None, None, None, false);
    let padded = Tensor::cat(&[&x, &Tensor::randn([1, 3, 8], (Kind::Float, Device::Cpu))], 1);
    let mask = Tensor::from_slice(&[0u8, 0, 0, 0, 1, 1, 1]).reshape([1, 7]);
    let with_pad = layer.forward(&padded, Some(&mask), None, None, false);
    assert!(max_abs(&with_pad.narrow(1, 0, 4), &alone) < 1e-5);
}

#[test]
fn multihead_attention_and_both_layers_match_pytorch() {
    let fx = fixtures();
    let (x, mem) = (&fx["x"], &fx["memory"]);
    let (x_pad, mem_pad) = (&fx["x_padding"], &fx["memory_padding"]);
    let vs = nn::VarStore::new(Device::Cpu);
    let mha = MultiheadAttention::new(&vs.root(), 16, 4);
    hw9::io::copy_weights(&vs, &weights(&fx, "mha"), "fixture").unwrap();
    let (out, w) = mha.forward(x, mem, mem, Mask::padding(Some(mem_pad)), true);
    assert!(max_abs(&out, &fx["mha/output"]) < 1e-5);
    assert!(max_abs(&w.unwrap(), &fx["mha/weights"]) < 1e-6);
    let (fused, none) = mha.forward(x, mem, mem, Mask::padding(Some(mem_pad)), false);
    assert!(none.is_none() && max_abs(&fused, &fx["mha/output"]) < 1e-5);

    let vs = nn::VarStore::new(Device::Cpu);
    let enc = TransformerLayer::new(
        &vs.root(),
        &LayerConfig { d_model: 16, n_heads: 4, d_ffn: 24, dropout: 0.0 },
        Stack::Encoder,
    );
    hw9::io::copy_weights(&vs, &weights(&fx, "encoder"), "fixture").unwrap();
    let keep = x_pad.eq(0).unsqueeze(-1).to_kind(Kind::Float); // PyTorch leaves padded rows undefined
    let y = enc.forward(x, Some(x_pad), None, None, false);
    assert!(max_abs(&(&y * &keep), &(&fx["encoder/output"] * &keep)) < 1e-5);

    let vs = nn::VarStore::new(Device::Cpu);
    let dec = TransformerLayer::new(
        &vs.root(),
        &LayerConfig { d_model: 16, n_heads: 4, d_ffn: 24, dropout: 0.0 },
        Stack::Decoder,
    );
    hw9::io::copy_weights(&vs, &weights(&fx, "decoder"), "fixture").unwrap();
    let y = dec.forward(x, Some(x_pad), Some(mem), Some(mem_pad), false);
    assert!(max_abs(&(&y * &keep), &(&fx["decoder/output"] * &keep)) < 1e-5);
}

#[test]
fn positions_skip_padding() {
    let tokens = Tensor::from_slice(&[5i64, 6, 7, 1, 1, 8, 9, 1, 1, 1]).reshape([2, 5]);
    let pos = make_positions(&tokens, 1);
    assert_eq!(Vec::<i64>::try_from(pos.reshape([-1])).unwrap(), [2, 3, 4, 1, 1, 2, 3, 1, 1, 1]);
}

#[test]
fn dropout_zeroes_about_p_scales_the_rest_and_is_identity_in_eval() {
    tch::manual_seed(0);
    let x = Tensor::ones([200, 500], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let y = hw9::models::transformer::dropout(&x, 0.1, true);
    let zeros = y.eq(0.0).to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
    assert!((zeros - 0.1).abs() < 0.005, "zeroed fraction {zeros}");
    let kept = y.ne(0.0);
    // p is used rounded to a multiple of 2^-16: 0.1 -> 6554 / 65536.
    let scale = 1.0 / (1.0 - 6554.0 / 65536.0);
    assert!((y.masked_select(&kept) - scale).abs().max().double_value(&[]) < 1e-6);
    assert!((y.mean(Kind::Float).double_value(&[]) - 1.0).abs() < 0.01);
    // Every fourth value (the lanes of one draw on devices other than the CPU) drops about p on
    // its own, and a second call draws a different mask.
    let by_lane = y.eq(0.0).to_kind(Kind::Float).reshape([-1, 4]).mean_dim(0, false, Kind::Float);
    for lane in 0..4 {
        let f = by_lane.double_value(&[lane]);
        assert!((f - 0.1).abs() < 0.01, "lane {lane} zeroed fraction {f}");
    }
    let again = hw9::models::transformer::dropout(&x, 0.1, true);
    assert!(!again.equal(&y));
    let both = y.eq(0.0).logical_and(&again.eq(0.0)).to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
    assert!((both - 0.01).abs() < 0.003, "two masks overlap on {both} (independent: 0.01)");
    y.sum(Kind::Float).backward();
    // The gradient is the same mask and scale.
    assert!((x.grad() - &y).abs().max().double_value(&[]) < 1e-6);
    let eval = hw9::models::transformer::dropout(&x, 0.1, false);
    assert!(eval.equal(&x));
    // No values, nothing to draw.
    let empty = Tensor::zeros([0, 4], (Kind::Float, Device::Cpu));
    assert_eq!(hw9::models::transformer::dropout(&empty, 0.1, true).size(), [0, 4]);
}
