//! The notebooks' checks are right on every machine: every correct answer passes every case under
//! every CPU kernel selection, and every planted bug still fails a public case.
//!
//! MKL picks its kernels by CPU: on a 2-core AMD EPYC one diagonal entry of a distance matrix
//! came out 2.4e-7 where PyTorch's expected value is exactly 0, and the homework's relative error
//! failed a correct answer. So the parent test below runs this test binary again once per kernel
//! selection — `MKL_CBWR` unset / `COMPATIBLE` / `AVX2` / `AVX512`, `ATEN_CPU_CAPABILITY` unset /
//! `default` / `avx2`, 1 and 2 threads — each child computing, on every public and graded case of
//! every check:
//! - the crate's reference answer (`models::reference`, what the solution notebooks hold),
//! - the solution notebook's own formulation where it differs from the crate's (notebook 0, the
//!   attention of notebook 2),
//! - an independently written, differently formulated correct answer (the summed `(a−b)²`
//!   against the expanded form, a convolution for the patch embedding, `col2im` for
//!   `unpatchify`, scatters for the masking, loops for the selections, …),
//!
//! and comparing each with PyTorch's expected output with the grader's own comparison. Every one
//! must pass; every planted bug (a plausible student mistake per TODO) must fail a **public**
//! case, where the student sees it. The spreads seen go to `build/checks-across-cpus.md` (the
//! table in BENCHMARKS.md); the tolerances in the fixtures were chosen from them.

#![cfg(feature = "reference")] // the reference answers: not in the student handout

use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::rc::Rc;

use hw9::grading::check::{values, Case, Fixtures};
use hw9::models::attention::{attention, Mask};
use hw9::models::facenet::{self, positive_pairs, FaceNet, FacenetConfig, Triplets};
use hw9::models::mae::{Mae, MaeClassifier, MaeConfig};
use hw9::models::transformer::{self, LayerConfig, MultiheadAttention, SeqLayer, Stack, TransformerLayer};
use hw9::models::vit::{self, EncoderConfig, TransformerEncoder, Vit, VitConfig};
use hw9_grade::compare::{compare_all, Values};
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module, ModuleT};
use tch::{Device, Kind, Tensor};

/// One way to answer a check: the outputs for a case.
type Answer = Rc<dyn Fn(&Case) -> Vec<Tensor>>;

/// An answer with who wrote it: `reference`, `solution`, `variant: …` or `bug: …`.
struct Way {
    notebook: &'static str,
    check: &'static str,
    who: &'static str,
    answer: Answer,
}

fn way(
    notebook: &'static str,
    check: &'static str,
    who: &'static str,
    f: impl Fn(&Case) -> Vec<Tensor> + 'static,
) -> Way {
    Way { notebook, check, who, answer: Rc::new(f) }
}

/// What a child reports per answer and case.
#[derive(Debug, Serialize, Deserialize)]
struct Seen {
    notebook: String,
    check: String,
    who: String,
    case: String,
    passed: bool,
    /// Largest `|got − expected|` (none when the outputs could not be compared).
    max_abs: Option<f64>,
    /// Largest `|got − expected| / |expected|` over elements with `|expected| ≥ 1e-3`.
    max_rel: Option<f64>,
    message: String,
}

// ---------------------------------------------------------------- helpers of the variants

/// `x·wᵀ + b` with a plain matrix product (nn::Linear calls libtorch's `linear`).
fn lin(x: &Tensor, w: &HashMap<String, Tensor>, name: &str) -> Tensor {
    x.matmul(&w[&format!("{name}.weight")].tr()) + &w[&format!("{name}.bias")]
}

/// LayerNorm written out: `(x − mean) / √(var + 1e-5) · γ + β`, the variance in float64.
fn ln(x: &Tensor, w: &HashMap<String, Tensor>, name: &str) -> Tensor {
    let x64 = x.to_kind(Kind::Double);
    let mean = x64.mean_dim(-1, true, Kind::Double);
    let var = (&x64 - &mean).square().mean_dim(-1, true, Kind::Double);
    let y = ((x64 - mean) / (var + 1e-5).sqrt()).to_kind(Kind::Float);
    y * &w[&format!("{name}.weight")] + &w[&format!("{name}.bias")]
}

/// Softmax written out over the last dimension (max subtracted, exp, normalised).
fn softmax(x: &Tensor) -> Tensor {
    let e = (x - x.amax(-1, true)).exp();
    &e / e.sum_dim_intlist(-1, true, Kind::Float)
}

/// The patch embedding as a convolution with stride P (the linear layer's weight as a kernel).
fn conv_patch_embed(images: &Tensor, w: &HashMap<String, Tensor>, p: i64) -> Tensor {
    let weight = &w["patch_embed.weight"];
    let d = weight.size()[0];
    let c = images.size()[1];
    let kernel = weight.reshape([d, c, p, p]);
    let y = images.conv2d(&kernel, Some(&w["patch_embed.bias"]), [p, p], [0, 0], [1, 1], 1); // (B, D, h, w)
    y.flatten(2, 3).transpose(1, 2) // (B, N, D)
}

/// The given encoder (`hw9::models::vit::TransformerEncoder`, not a TODO) under `prefix`, with
/// the fixture's weights: the variants build on it as a student's code does.
fn given_encoder(w: &HashMap<String, Tensor>, prefix: &str, cfg: &EncoderConfig) -> (nn::VarStore, TransformerEncoder) {
    let vs = nn::VarStore::new(Device::Cpu);
    let enc = TransformerEncoder::new(&(vs.root() / prefix), cfg);
    hw9::io::copy_weights(&vs, w, "fixture").expect("encoder weights");
    (vs, enc)
}

fn i64s(t: &Tensor) -> Vec<i64> {
    Vec::<i64>::try_from(&t.reshape([-1]).to_kind(Kind::Int64)).expect("int64")
}

fn f64s(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(&t.reshape([-1]).to_kind(Kind::Double)).expect("numbers")
}

// ---------------------------------------------------------------- 00_setup_check

fn setup_check() -> Vec<Way> {
    const NB: &str = "00_setup_check";
    vec![
        // The solution notebook's formulations.
        way(NB, "mse", "solution", |c| vec![(&c["pred"] - &c["target"]).square().mean(Kind::Float)]),
        way(NB, "attention_weights", "solution", |c| {
            let d = c["q"].size()[1] as f64;
            vec![(c["q"].matmul(&c["k"].transpose(0, 1)) / d.sqrt()).softmax(-1, Kind::Float)]
        }),
        way(NB, "mse", "variant: sum of products over the count", |c| {
            let e = &c["pred"] - &c["target"];
            vec![(&e * &e).sum(Kind::Float) / e.numel() as f64]
        }),
        way(NB, "attention_weights", "variant: q scaled first, softmax written out", |c| {
            let d = c["q"].size()[1] as f64;
            vec![softmax(&(&c["q"] / d.sqrt()).matmul(&c["k"].tr()))]
        }),
        way(NB, "mse", "bug: the sum, not the mean", |c| vec![(&c["pred"] - &c["target"]).square().sum(Kind::Float)]),
        way(NB, "attention_weights", "bug: no 1/√D", |c| vec![c["q"].matmul(&c["k"].tr()).softmax(-1, Kind::Float)]),
        way(NB, "attention_weights", "bug: softmax over the queries", |c| {
            let d = c["q"].size()[1] as f64;
            vec![(c["q"].matmul(&c["k"].tr()) / d.sqrt()).softmax(0, Kind::Float)]
        }),
    ]
}

// ---------------------------------------------------------------- 01_vit_mae

fn vit_mae(fx: &Fixtures) -> Vec<Way> {
    const NB: &str = "01_vit_mae";
    let mut ways = vec![
        way(NB, "unpatchify", "reference", |c| vec![vit::unpatchify(&c["patches"], 4, 1).expect("unpatchify")]),
        way(NB, "unpatchify", "variant: col2im", |c| {
            let (b, n, _) = c["patches"].size3().expect("(B, N, P*P)");
            let side = (n as f64).sqrt() as i64 * 4;
            vec![c["patches"]
                .transpose(1, 2)
                .col2im([side, side], [4, 4], [1, 1], [0, 0], [4, 4])
                .reshape([b, 1, side, side])]
        }),
        way(NB, "unpatchify", "bug: the two patch axes swapped", |c| {
            let (b, n, _) = c["patches"].size3().expect("(B, N, P*P)");
            let s = (n as f64).sqrt() as i64;
            vec![c["patches"].reshape([b, s, s, 1, 4, 4]).permute([0, 3, 2, 4, 1, 5]).reshape([b, 1, s * 4, s * 4])]
        }),
        way(NB, "random_masking", "reference", |c| {
            let (k, m, r) =
                hw9::models::mae::random_masking(&c["x"], c["keep_length"].int64_value(&[]), &c["ids_shuffle"]);
            vec![k, m, r]
        }),
        way(NB, "random_masking", "variant: advanced indexing and scatters", |c| {
            let (x, ids) = (&c["x"], &c["ids_shuffle"]);
            let (b, n, _) = x.size3().expect("(B, N, D)");
            let keep = c["keep_length"].int64_value(&[]);
            let rows = Tensor::arange(b, (Kind::Int64, Device::Cpu)).unsqueeze(1); // (B, 1)
            let kept = x.index(&[Some(&rows), Some(&ids.narrow(1, 0, keep))]); // (B, K, D)
            let positions = Tensor::arange(n, (Kind::Int64, Device::Cpu)).expand([b, n], false).contiguous();
            let ids_restore = ids.zeros_like().scatter(1, ids, &positions); // where each patch went
            let mask = Tensor::ones([b, n], (Kind::Float, Device::Cpu)).scatter_value(1, &ids.narrow(1, 0, keep), 0.0);
            vec![kept, mask, ids_restore]
        }),
        way(NB, "random_masking", "bug: the mask left in shuffled order", |c| {
            let (k, _, r) =
                hw9::models::mae::random_masking(&c["x"], c["keep_length"].int64_value(&[]), &c["ids_shuffle"]);
            let (b, n) = (r.size()[0], r.size()[1]);
            let keep = c["keep_length"].int64_value(&[]);
            let m = Tensor::cat(
                &[
                    Tensor::zeros([b, keep], (Kind::Float, Device::Cpu)),
                    Tensor::ones([b, n - keep], (Kind::Float, Device::Cpu)),
                ],
                1,
            );
            vec![k, m, r]
        }),
        way(NB, "restore_masked", "reference", |c| {
            vec![hw9::models::mae::restore_masked(&c["kept"], &c["masked"], &c["ids_restore"])]
        }),
        way(NB, "restore_masked", "variant: advanced indexing", |c| {
            let all = Tensor::cat(&[&c["kept"], &c["masked"]], 1);
            let rows = Tensor::arange(all.size()[0], (Kind::Int64, Device::Cpu)).unsqueeze(1);
            vec![all.index(&[Some(&rows), Some(&c["ids_restore"])])]
        }),
        way(NB, "restore_masked", "bug: gathered with the shuffle instead of its inverse", |c| {
            let all = Tensor::cat(&[&c["kept"], &c["masked"]], 1);
            vec![vit::index_sequence(&all, &c["ids_restore"].argsort(1, false))]
        }),
    ];

    // The ViT: the crate's model, and a forward written from the weights with a convolution.
    let vit_w = fx.weights("vit").expect("vit weights");
    let mut vs = nn::VarStore::new(Device::Cpu);
    let model = Rc::new(Vit::new(&vs.root(), &VitConfig::fixture()).expect("vit"));
    fx.load_weights("vit", &mut vs).expect("vit weights");
    let (_keep_vs, enc) = given_encoder(&vit_w, "encoder", &VitConfig::fixture().encoder);
    let (w, enc) = (Rc::new(vit_w), Rc::new(enc));
    let m = model.clone();
    ways.push(way(NB, "vit", "reference", move |c| vec![m.forward_t(&c["images"], false)]));
    let vit_variant = {
        let (w, enc) = (w.clone(), enc.clone());
        move |c: &Case, pool_mean: bool| {
            let x = conv_patch_embed(&c["images"], &w, 4); // (B, N, D)
            let b = x.size()[0];
            let x = Tensor::cat(&[w["cls_token"].repeat([b, 1, 1]), x], 1) + &w["pos_embed"];
            let h = enc.forward(&x); // (B, 1+N, D)
            let first = if pool_mean { h.mean_dim(1, false, Kind::Float) } else { h.select(1, 0) };
            lin(&ln(&first, &w, "norm"), &w, "head")
        }
    };
    let v = vit_variant.clone();
    ways.push(way(NB, "vit", "variant: convolution, every token encoded, LayerNorm written out", move |c| {
        vec![v(c, false)]
    }));
    ways.push(way(NB, "vit", "bug: the mean token instead of CLS", move |c| vec![vit_variant(c, true)]));

    // The MAE: the crate's model, and each pass written from the weights.
    let cfg = MaeConfig::fixture();
    let mae_w = Rc::new(fx.weights("mae").expect("mae weights"));
    let mut mvs = nn::VarStore::new(Device::Cpu);
    let mae = Rc::new(Mae::new(&mvs.root(), &cfg).expect("mae"));
    fx.load_weights("mae", &mut mvs).expect("mae weights");
    let (_evs, menc) = given_encoder(&mae_w, "encoder", &cfg.encoder);
    let (_dvs, mdec) = given_encoder(&mae_w, "decoder", &cfg.decoder);
    let (menc, mdec) = (Rc::new(menc), Rc::new(mdec));
    let n = cfg.n_patches();
    let m = mae.clone();
    ways.push(way(NB, "forward_encoder", "reference", move |c| {
        let (e, mask, r) = m.forward_encoder(&c["images"], Some(&c["ids_shuffle"])).expect("forward_encoder");
        vec![e, mask, r]
    }));
    let encoder_variant = {
        let (w, enc) = (mae_w.clone(), menc.clone());
        move |c: &Case, cls_position: bool| {
            let x = conv_patch_embed(&c["images"], &w, 4) + w["pos_embed"].narrow(1, 1, n); // (B, N, D)
            let (b, keep) = (x.size()[0], (n as f64 * 0.25).floor() as i64);
            let ids = &c["ids_shuffle"];
            let rows = Tensor::arange(b, (Kind::Int64, Device::Cpu)).unsqueeze(1);
            let kept = x.index(&[Some(&rows), Some(&ids.narrow(1, 0, keep))]);
            let positions = Tensor::arange(n, (Kind::Int64, Device::Cpu)).expand([b, n], false).contiguous();
            let ids_restore = ids.zeros_like().scatter(1, ids, &positions);
            let mask = Tensor::ones([b, n], (Kind::Float, Device::Cpu)).scatter_value(1, &ids.narrow(1, 0, keep), 0.0);
            let cls = if cls_position {
                &w["cls_token"] + w["pos_embed"].narrow(1, 0, 1)
            } else {
                w["cls_token"].shallow_clone()
            };
            let h = enc.forward(&Tensor::cat(&[cls.repeat([b, 1, 1]), kept], 1));
            vec![ln(&h, &w, "norm"), mask, ids_restore]
        }
    };
    let v = encoder_variant.clone();
    ways.push(way(NB, "forward_encoder", "variant: convolution, indexing and scatters", move |c| v(c, true)));
    ways.push(way(NB, "forward_encoder", "bug: the CLS token without its position", move |c| {
        encoder_variant(c, false)
    }));
    let m = mae.clone();
    ways.push(way(NB, "forward_decoder", "reference", move |c| {
        vec![m.forward_decoder(&c["encoded"], &c["ids_restore"])]
    }));
    let decoder_variant = {
        let (w, dec) = (mae_w.clone(), mdec.clone());
        move |c: &Case, with_positions: bool| {
            let x = lin(&c["encoded"], &w, "decoder_embed"); // (B, 1+K, Dd)
            let (b, k1, _) = x.size3().expect("(B, 1+K, Dd)");
            let tokens = Tensor::cat(&[x.narrow(1, 1, k1 - 1), w["mask_token"].repeat([b, n + 1 - k1, 1])], 1);
            let rows = Tensor::arange(b, (Kind::Int64, Device::Cpu)).unsqueeze(1);
            let patches = tokens.index(&[Some(&rows), Some(&c["ids_restore"])]); // (B, N, Dd)
            let mut x = Tensor::cat(&[x.narrow(1, 0, 1), patches], 1);
            if with_positions {
                x += &w["decoder_pos_embed"];
            }
            let h = ln(&dec.forward(&x), &w, "decoder_norm");
            lin(&h, &w, "decoder_pred").narrow(1, 1, n)
        }
    };
    let v = decoder_variant.clone();
    ways.push(way(NB, "forward_decoder", "variant: indexing, matrix products, LayerNorm written out", move |c| {
        vec![v(c, true)]
    }));
    ways.push(way(NB, "forward_decoder", "bug: no decoder position embedding", move |c| {
        vec![decoder_variant(c, false)]
    }));
    let m = mae.clone();
    ways.push(way(NB, "forward_encoder_representation", "reference", move |c| {
        vec![m.forward_encoder_representation(&c["images"]).expect("representation")]
    }));
    let representation = {
        let (w, enc) = (mae_w.clone(), menc.clone());
        move |images: &Tensor, norm: bool| {
            let x = conv_patch_embed(images, &w, 4) + w["pos_embed"].narrow(1, 1, n);
            let b = x.size()[0];
            let cls = (&w["cls_token"] + w["pos_embed"].narrow(1, 0, 1)).repeat([b, 1, 1]);
            let h = enc.forward(&Tensor::cat(&[cls, x], 1));
            if norm {
                ln(&h, &w, "norm")
            } else {
                h
            }
        }
    };
    let r = representation.clone();
    ways.push(way(NB, "forward_encoder_representation", "variant: convolution, LayerNorm written out", move |c| {
        vec![r(&c["images"], true)]
    }));
    let r = representation.clone();
    ways.push(way(NB, "forward_encoder_representation", "bug: no final LayerNorm", move |c| {
        vec![r(&c["images"], false)]
    }));

    let mut hvs = nn::VarStore::new(Device::Cpu);
    let mut mvs2 = nn::VarStore::new(Device::Cpu);
    let inner = Mae::new(&mvs2.root(), &cfg).expect("mae");
    fx.load_weights("mae", &mut mvs2).expect("mae weights");
    let clf = Rc::new(MaeClassifier::new(&hvs.root(), inner, 10, true));
    fx.load_weights("mae_classifier", &mut hvs).expect("head weights");
    let head_w = Rc::new(fx.weights("mae_classifier").expect("head weights"));
    ways.push(way(NB, "mae_classifier", "reference", move |c| vec![clf.forward_t(&c["images"], false)]));
    let classifier = move |c: &Case, cls_only: bool| {
        let h = representation(&c["images"], true); // (B, 1+N, D)
        let pooled =
            if cls_only { h.select(1, 0) } else { h.sum_dim_intlist(1, false, Kind::Float) / h.size()[1] as f64 };
        lin(&ln(&pooled, &head_w, "norm"), &head_w, "head")
    };
    let cl = Rc::new(classifier);
    let c2 = cl.clone();
    ways.push(way(NB, "mae_classifier", "variant: the mean as a sum over the count", move |c| vec![c2(c, false)]));
    ways.push(way(NB, "mae_classifier", "bug: the CLS token instead of the mean", move |c| vec![cl(c, true)]));
    ways
}

// ---------------------------------------------------------------- 02_summarization

/// A scaled dot-product attention: `(q, k, v, key_padding_mask, causal)` → `(output, weights)`.
type Sdpa = fn(&Tensor, &Tensor, &Tensor, Option<&Tensor>, bool) -> (Tensor, Tensor);

/// The solution notebook's scaled dot-product attention.
fn solution_sdpa(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    key_padding_mask: Option<&Tensor>,
    causal: bool,
) -> (Tensor, Tensor) {
    let dh = q.size()[3] as f64;
    let mut scores = q.matmul(&k.transpose(-2, -1)) / dh.sqrt();
    if let Some(mask) = key_padding_mask {
        let s = mask.size()[1];
        scores = scores.masked_fill(&mask.to_kind(Kind::Bool).reshape([-1, 1, 1, s]), f64::NEG_INFINITY);
    }
    if causal {
        let (t, s) = (scores.size()[2], scores.size()[3]);
        let future = Tensor::ones([t, s], (Kind::Bool, q.device())).triu(1);
        scores = scores.masked_fill(&future, f64::NEG_INFINITY);
    }
    let weights = scores.softmax(-1, Kind::Float);
    (weights.matmul(v), weights)
}

/// A differently written attention: einsum, an additive mask of −1e9 built from the allowed
/// keys, the softmax written out, in float64 then back to float32.
fn variant_sdpa(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    key_padding_mask: Option<&Tensor>,
    causal: bool,
) -> (Tensor, Tensor) {
    let (t, s) = (q.size()[2], k.size()[2]);
    let (q64, k64, v64) = (q.to_kind(Kind::Double), k.to_kind(Kind::Double), v.to_kind(Kind::Double));
    let scores = Tensor::einsum("bhtd,bhsd->bhts", &[&q64, &k64], None::<i64>) * (1.0 / (q.size()[3] as f64).sqrt());
    // 1 where a key may be seen: (B or 1, 1, T or 1, S).
    let keys = match key_padding_mask {
        Some(m) => (m.to_kind(Kind::Double).neg() + 1.0).unsqueeze(1).unsqueeze(1),
        None => Tensor::ones([1, 1, 1, s], (Kind::Double, Device::Cpu)),
    };
    let allowed = if causal { keys * Tensor::ones([t, s], (Kind::Double, Device::Cpu)).tril(0) } else { keys };
    let e = (scores + (allowed - 1.0) * 1e9).softmax(-1, Kind::Double);
    let out = Tensor::einsum("bhts,bhsd->bhtd", &[&e, &v64], None::<i64>);
    (out.to_kind(Kind::Float), e.to_kind(Kind::Float))
}

/// Multi-head attention from the fixture's weights (names under `prefix`) around an attention
/// function; `mask` is the keys' padding and whether it is causal; `heads_by_reshape_only` plants
/// a bug (the heads cut out of the sequence).
fn mha_with(
    (w, prefix, h): (&HashMap<String, Tensor>, &str, i64),
    (query, kv): (&Tensor, &Tensor),
    (pad, causal): (Option<&Tensor>, bool),
    sdpa: Sdpa,
    heads_by_reshape_only: bool,
) -> (Tensor, Tensor) {
    let (b, t, d) = query.size3().expect("(B, T, D)");
    let s = kv.size()[1];
    let split = |x: Tensor, n: i64| {
        if heads_by_reshape_only {
            x.reshape([b, h, n, d / h]) // the bug: heads cut out of the sequence
        } else {
            x.reshape([b, n, h, d / h]).permute([0, 2, 1, 3])
        }
    };
    let q = split(lin(query, w, &format!("{prefix}q_proj")), t);
    let k = split(lin(kv, w, &format!("{prefix}k_proj")), s);
    let v = split(lin(kv, w, &format!("{prefix}v_proj")), s);
    let (out, weights) = sdpa(&q, &k, &v, pad, causal);
    (lin(&out.permute([0, 2, 1, 3]).reshape([b, t, d]), w, &format!("{prefix}out_proj")), weights)
}

/// A post-norm Transformer layer from the fixture's weights (`pre_norm`: the bug).
fn layer_with(w: &HashMap<String, Tensor>, c: &Case, decoder: bool, causal_self: bool, pre_norm: bool) -> Tensor {
    let sub = |x: &Tensor, norm: &str, f: &dyn Fn(&Tensor) -> Tensor| {
        if pre_norm {
            x + f(&ln(x, w, norm))
        } else {
            ln(&(x + f(x)), w, norm)
        }
    };
    let pad = c["padding_mask"].shallow_clone();
    let x = sub(&c["x"], "self_attn_layer_norm", &|x| {
        mha_with((w, "self_attn.", 4), (x, x), (Some(&pad), causal_self), variant_sdpa, false).0
    });
    let x = if decoder {
        let (enc, enc_pad) = (c["encoder_out"].shallow_clone(), c["encoder_padding_mask"].shallow_clone());
        sub(&x, "encoder_attn_layer_norm", &|x| {
            mha_with((w, "encoder_attn.", 4), (x, &enc), (Some(&enc_pad), false), variant_sdpa, false).0
        })
    } else {
        x
    };
    sub(&x, "final_layer_norm", &|x| lin(&lin(x, w, "fc1").clamp_min(0.0), w, "fc2"))
}

fn summarization(fx: &Fixtures) -> Vec<Way> {
    const NB: &str = "02_summarization";
    let sdpa_case = |c: &Case, f: Sdpa, causal: bool| {
        let (o, w) = f(&c["q"], &c["k"], &c["v"], Some(&c["key_padding_mask"]), causal);
        vec![o, w]
    };
    let crate_sdpa = |c: &Case, causal: bool| {
        let out =
            attention(&c["q"], &c["k"], &c["v"], Mask::padding(Some(&c["key_padding_mask"])).causal(causal), true);
        vec![out.context, out.weights.expect("weights")]
    };
    let mut ways = Vec::new();
    for (check, causal) in [("attention", false), ("attention_causal", true)] {
        ways.push(way(NB, check, "reference", move |c| crate_sdpa(c, causal)));
        ways.push(way(NB, check, "solution", move |c| sdpa_case(c, solution_sdpa, causal)));
        ways.push(way(NB, check, "variant: einsum, additive −1e9 mask, float64", move |c| {
            sdpa_case(c, variant_sdpa, causal)
        }));
    }
    ways.push(way(NB, "attention", "bug: the padding ignored", move |c| {
        let (o, w) = solution_sdpa(&c["q"], &c["k"], &c["v"], None, false);
        vec![o, w]
    }));
    ways.push(way(NB, "attention_causal", "bug: each query hides itself too", move |c| {
        let (q, k, v) = (&c["q"], &c["k"], &c["v"]);
        let dh = q.size()[3] as f64;
        let (t, s) = (q.size()[2], k.size()[2]);
        let pad = c["key_padding_mask"].to_kind(Kind::Bool).reshape([-1, 1, 1, s]);
        let scores = (q.matmul(&k.transpose(-2, -1)) / dh.sqrt())
            .masked_fill(&pad, f64::NEG_INFINITY)
            .masked_fill(&Tensor::ones([t, s], (Kind::Bool, Device::Cpu)).triu(0), -1e9);
        let w = scores.softmax(-1, Kind::Float);
        vec![w.matmul(v), w]
    }));
    ways.push(way(NB, "attention_causal", "bug: the padding ignored", move |c| {
        let (o, w) = solution_sdpa(&c["q"], &c["k"], &c["v"], None, true);
        vec![o, w]
    }));

    let mha_w = Rc::new(fx.weights("mha").expect("mha weights"));
    let mut vs = nn::VarStore::new(Device::Cpu);
    let mha = Rc::new(MultiheadAttention::new(&vs.root(), 16, 4));
    fx.load_weights("mha", &mut vs).expect("mha weights");
    ways.push(way(NB, "mha", "reference", move |c| {
        let (o, w) = mha.forward(
            &c["query"],
            &c["key_value"],
            &c["key_value"],
            Mask::padding(Some(&c["key_padding_mask"])),
            true,
        );
        vec![o, w.expect("weights")]
    }));
    for (who, sdpa, bug) in [
        ("variant: matrix products around the solution's attention", solution_sdpa as Sdpa, false),
        ("variant: permute, einsum, matrix products", variant_sdpa, false),
        ("bug: heads split by a reshape alone", solution_sdpa, true),
    ] {
        let w = mha_w.clone();
        ways.push(way(NB, "mha", who, move |c| {
            let (o, a) =
                mha_with((&w, "", 4), (&c["query"], &c["key_value"]), (Some(&c["key_padding_mask"]), false), sdpa, bug);
            vec![o, a]
        }));
    }

    let layer_cfg = LayerConfig { d_model: 16, n_heads: 4, d_ffn: 32, dropout: 0.0 };
    for (check, stack) in [("encoder_layer", Stack::Encoder), ("decoder_layer", Stack::Decoder)] {
        let mut vs = nn::VarStore::new(Device::Cpu);
        let layer = Rc::new(TransformerLayer::new(&vs.root(), &layer_cfg, stack));
        fx.load_weights(check, &mut vs).expect("layer weights");
        let w = Rc::new(fx.weights(check).expect("layer weights"));
        let decoder = stack == Stack::Decoder;
        // What the notebook's check cell does with the output: an encoder layer's padded rows are
        // left out (PyTorch's fast path leaves them at 0).
        let shown = move |c: &Case, y: Tensor| if decoder { y } else { y * c["padding_mask"].eq(0).unsqueeze(-1) };
        ways.push(way(NB, check, "reference", move |c| {
            let y = if decoder {
                layer.forward(
                    &c["x"],
                    Some(&c["padding_mask"]),
                    Some(&c["encoder_out"]),
                    Some(&c["encoder_padding_mask"]),
                    false,
                )
            } else {
                layer.forward(&c["x"], Some(&c["padding_mask"]), None, None, false)
            };
            vec![shown(c, y)]
        }));
        let w2 = w.clone();
        ways.push(way(NB, check, "variant: written from the weights", move |c| {
            vec![shown(c, layer_with(&w2, c, decoder, decoder, false))]
        }));
        let w2 = w.clone();
        ways.push(way(NB, check, "bug: pre-norm", move |c| vec![shown(c, layer_with(&w2, c, decoder, decoder, true))]));
        if decoder {
            ways.push(way(NB, check, "bug: decoder self-attention not causal", move |c| {
                vec![shown(c, layer_with(&w, c, true, false, false))]
            }));
        }
    }

    ways.push(way(NB, "make_positions", "reference", |c| vec![transformer::make_positions(&c["tokens"], 0)]));
    ways.push(way(NB, "make_positions", "variant: a loop over each row", |c| {
        let (b, t) = (c["tokens"].size()[0], c["tokens"].size()[1]);
        let tokens = i64s(&c["tokens"]);
        let mut out = vec![0i64; tokens.len()];
        for row in 0..b as usize {
            let mut count = 0;
            for j in 0..t as usize {
                let i = row * t as usize + j;
                if tokens[i] != 0 {
                    count += 1;
                    out[i] = count;
                }
            }
        }
        vec![Tensor::from_slice(&out).reshape([b, t])]
    }));
    ways.push(way(NB, "make_positions", "bug: 1, 2, 3 … masked (padding inside a row not skipped)", |c| {
        let t = c["tokens"].size()[1];
        let real = c["tokens"].ne(0).to_kind(Kind::Int64);
        vec![(Tensor::arange_start(1, t + 1, (Kind::Int64, Device::Cpu)).unsqueeze(0) * &real)]
    }));
    ways
}

// ---------------------------------------------------------------- 04_facenet

// distances_v, loss_v, semi_hard_v, batch_hard_v: notebook 4's TODOs written otherwise, shared
// with examples/threshold_spread.rs, which trains with them.
include!("variants/facenet.rs");

fn triplets(t: Triplets) -> Vec<Tensor> {
    vec![t.0, t.1, t.2]
}

fn semi_hard_loops(d: &[f64], labels: &[i64]) -> Vec<Tensor> {
    let b = labels.len();
    let (mut a_, mut p_, mut n_) = (vec![], vec![], vec![]);
    for a in 0..b {
        let negs: Vec<usize> = (0..b).filter(|&n| labels[n] != labels[a]).collect();
        for p in 0..b {
            if p == a || labels[p] != labels[a] {
                continue;
            }
            let dap = d[a * b + p];
            let farther: Vec<usize> = negs.iter().copied().filter(|&n| d[a * b + n] > dap).collect();
            let n = if farther.is_empty() {
                // the farthest negative, the first on a tie
                negs.iter().copied().fold(negs[0], |best, n| if d[a * b + n] > d[a * b + best] { n } else { best })
            } else {
                farther
                    .iter()
                    .copied()
                    .fold(farther[0], |best, n| if d[a * b + n] < d[a * b + best] { n } else { best })
            };
            a_.push(a as i64);
            p_.push(p as i64);
            n_.push(n as i64);
        }
    }
    vec![Tensor::from_slice(&a_), Tensor::from_slice(&p_), Tensor::from_slice(&n_)]
}

fn batch_hard_loops(d: &[f64], labels: &[i64], diagonal_is_positive: bool) -> Vec<Tensor> {
    let b = labels.len();
    let (mut a_, mut p_, mut n_) = (vec![], vec![], vec![]);
    for a in 0..b {
        let pos: Vec<usize> = (0..b).filter(|&p| (p != a || diagonal_is_positive) && labels[p] == labels[a]).collect();
        let negs: Vec<usize> = (0..b).filter(|&n| labels[n] != labels[a]).collect();
        if pos.is_empty() || negs.is_empty() {
            continue;
        }
        a_.push(a as i64);
        p_.push(
            pos.iter().copied().fold(pos[0], |best, p| if d[a * b + p] > d[a * b + best] { p } else { best }) as i64
        );
        n_.push(
            negs.iter().copied().fold(negs[0], |best, n| if d[a * b + n] < d[a * b + best] { n } else { best }) as i64
        );
    }
    vec![Tensor::from_slice(&a_), Tensor::from_slice(&p_), Tensor::from_slice(&n_)]
}

fn facenet_checks(fx: &Fixtures) -> Vec<Way> {
    const NB: &str = "04_facenet";
    let mut vs = nn::VarStore::new(Device::Cpu);
    let net = Rc::new(FaceNet::new(&vs.root(), &FacenetConfig::tiny()).expect("facenet"));
    fx.load_weights("embedding", &mut vs).expect("embedding weights");
    let w = Rc::new(fx.weights("embedding").expect("embedding weights"));
    let n2 = net.clone();
    let embed = move |c: &Case, normalise: bool| {
        let features = n2.trunk.forward_t(&c["images"], false); // the given trunk
        let e = lin(&features, &w, "head");
        if normalise {
            &e / (&e * &e).sum_dim_intlist(-1, true, Kind::Float).sqrt()
        } else {
            e
        }
    };
    let e2 = Rc::new(embed);
    let e3 = e2.clone();
    vec![
        way(NB, "embedding", "reference", move |c| vec![net.forward_t(&c["images"], false)]),
        way(NB, "embedding", "variant: the norm as √Σx²", move |c| vec![e2(c, true)]),
        way(NB, "embedding", "bug: not scaled to length 1", move |c| vec![e3(c, false)]),
        way(NB, "pairwise_distances", "reference", |c| vec![facenet::pairwise_squared_distances(&c["embeddings"])]),
        way(NB, "pairwise_distances", "variant: the summed (a−b)²", |c| vec![distances_v(&c["embeddings"])]),
        way(NB, "pairwise_distances", "variant: the expanded form, not clamped", |c| {
            let e = &c["embeddings"];
            let sq = (e * e).sum_dim_intlist(-1, true, Kind::Float);
            vec![&sq + sq.tr() - e.matmul(&e.tr()) * 2.0]
        }),
        way(NB, "pairwise_distances", "variant: torch.cdist, squared", |c| {
            let e = &c["embeddings"];
            vec![Tensor::cdist(e, e, 2.0, None::<i64>).square()]
        }),
        way(NB, "pairwise_distances", "bug: distances, not squared", |c| {
            let e = &c["embeddings"];
            vec![(e.unsqueeze(1) - e.unsqueeze(0)).square().sum_dim_intlist(-1, false, Kind::Float).sqrt()]
        }),
        way(NB, "triplet_loss", "reference", |c| {
            vec![facenet::triplet_loss(&c["anchor"], &c["positive"], &c["negative"], c["margin"].double_value(&[]))]
        }),
        way(NB, "triplet_loss", "variant: norms squared, clamp, sum over the count", |c| {
            vec![loss_v(&c["anchor"], &c["positive"], &c["negative"], c["margin"].double_value(&[]))]
        }),
        way(NB, "triplet_loss", "bug: not floored at 0", |c| {
            let m = c["margin"].double_value(&[]);
            let d = |x: &Tensor| x.square().sum_dim_intlist(-1, false, Kind::Float);
            vec![(d(&(&c["anchor"] - &c["positive"])) - d(&(&c["anchor"] - &c["negative"])) + m).mean(Kind::Float)]
        }),
        way(NB, "semi_hard_triplets", "reference", |c| {
            let (a, p, n) = facenet::semi_hard_triplets(&c["distances"], &c["labels"]);
            vec![a, p, n]
        }),
        way(NB, "semi_hard_triplets", "variant: loops", |c| {
            semi_hard_loops(&f64s(&c["distances"]), &i64s(&c["labels"]))
        }),
        way(NB, "semi_hard_triplets", "variant: each row sorted", |c| {
            triplets(semi_hard_v(&c["distances"], &c["labels"]))
        }),
        way(NB, "semi_hard_triplets", "bug: the hardest negative", |c| {
            let (a, p, _) = facenet::semi_hard_triplets(&c["distances"], &c["labels"]);
            let (_, _, n) = facenet::batch_hard_triplets(&c["distances"], &c["labels"]);
            let n = n.index_select(0, &a);
            vec![a, p, n]
        }),
        way(NB, "batch_hard_triplets", "reference", |c| {
            let (a, p, n) = facenet::batch_hard_triplets(&c["distances"], &c["labels"]);
            vec![a, p, n]
        }),
        way(NB, "batch_hard_triplets", "variant: loops", |c| {
            batch_hard_loops(&f64s(&c["distances"]), &i64s(&c["labels"]), false)
        }),
        way(NB, "batch_hard_triplets", "variant: masked by large constants", |c| {
            triplets(batch_hard_v(&c["distances"], &c["labels"]))
        }),
        way(NB, "batch_hard_triplets", "bug: an anchor counted as its own positive", |c| {
            batch_hard_loops(&f64s(&c["distances"]), &i64s(&c["labels"]), true)
        }),
    ]
}

// ---------------------------------------------------------------- the child: one kernel selection

/// Every way of every check of every notebook, with the notebook's fixtures.
fn all_ways() -> Vec<(Rc<Fixtures>, Way)> {
    let mut out = Vec::new();
    for (nb, make) in [
        ("00_setup_check", (|_: &Fixtures| setup_check()) as fn(&Fixtures) -> Vec<Way>),
        ("01_vit_mae", vit_mae),
        ("02_summarization", summarization),
        ("04_facenet", facenet_checks),
    ] {
        let fx = Rc::new(Fixtures::load(nb).expect("committed fixtures"));
        out.extend(make(&fx).into_iter().map(|w| (fx.clone(), w)));
    }
    out
}

fn spread(got: &[Values], want: &[Values]) -> (Option<f64>, Option<f64>) {
    let (mut abs, mut rel) = (0.0f64, 0.0f64);
    if got.len() != want.len() {
        return (None, None);
    }
    for (g, w) in got.iter().zip(want) {
        if g.data.len() != w.data.len() {
            return (None, None);
        }
        for (a, b) in g.data.iter().zip(&w.data) {
            if a == b {
                continue;
            }
            let d = (a - b).abs();
            abs = abs.max(d);
            if b.abs() >= 1e-3 {
                rel = rel.max(d / b.abs());
            }
        }
    }
    (Some(abs).filter(|a| a.is_finite()), Some(rel).filter(|r| r.is_finite()))
}

fn run_child() -> Vec<Seen> {
    if let Some(n) = std::env::var("HW9_MATRIX_THREADS").ok().and_then(|v| v.parse().ok()) {
        tch::set_num_threads(n);
    }
    let _no_grad = tch::no_grad_guard();
    let mut seen = Vec::new();
    for (fx, w) in all_ways() {
        let mut cases = fx.public_cases(w.check);
        cases.push("autograder".into());
        for case in cases {
            let c = fx.case(w.check, &case).expect("case");
            let want: Vec<Values> = c.expected().iter().map(|t| values(t).expect("expected")).collect();
            let got = hw9::grading::check::catch(|| (w.answer)(&c));
            let (passed, max_abs, max_rel, message) = match got {
                Err(why) => (false, None, None, why),
                Ok(outs) => {
                    let got: Vec<Values> = outs.iter().map(|t| values(t).expect("output")).collect();
                    let r = compare_all(
                        w.check,
                        &got.iter().collect::<Vec<_>>(),
                        &want.iter().collect::<Vec<_>>(),
                        c.tolerance(),
                    );
                    let (a, rel) = spread(&got, &want);
                    (r.passed, a, rel, r.message)
                }
            };
            seen.push(Seen {
                notebook: w.notebook.into(),
                check: w.check.into(),
                who: w.who.into(),
                case,
                passed,
                max_abs,
                max_rel,
                message,
            });
        }
    }
    seen
}

/// Run by [`every_correct_answer_passes_and_every_planted_bug_fails_under_every_kernel_selection`]
/// in a child process with the kernel selection in its environment; prints one JSON line per
/// answer and case.
#[test]
#[ignore = "a child of the kernel-selection matrix; run by the test below"]
fn matrix_child() {
    for s in run_child() {
        println!("SEEN {}", serde_json::to_string(&s).expect("json"));
    }
}

// ---------------------------------------------------------------- the parent: the matrix

fn configs() -> Vec<(String, Vec<(&'static str, &'static str)>)> {
    let mut out = Vec::new();
    for mkl in ["", "COMPATIBLE", "AVX2", "AVX512"] {
        for aten in ["", "default", "avx2"] {
            for threads in ["1", "2"] {
                let mut env =
                    vec![("OMP_NUM_THREADS", threads), ("MKL_NUM_THREADS", threads), ("HW9_MATRIX_THREADS", threads)];
                if !mkl.is_empty() {
                    env.push(("MKL_CBWR", mkl));
                }
                if !aten.is_empty() {
                    env.push(("ATEN_CPU_CAPABILITY", aten));
                }
                let label = format!(
                    "MKL_CBWR={} ATEN_CPU_CAPABILITY={} threads={threads}",
                    if mkl.is_empty() { "unset" } else { mkl },
                    if aten.is_empty() { "unset" } else { aten }
                );
                out.push((label, env));
            }
        }
    }
    out
}

#[test]
fn every_correct_answer_passes_and_every_planted_bug_fails_under_every_kernel_selection() {
    let exe = std::env::current_exe().expect("the test binary");
    let mut failures = Vec::new();
    // (notebook, check) -> (worst |Δ|, its config and answer, worst relative, tolerance)
    let mut worst: BTreeMap<(String, String), (f64, String, f64)> = BTreeMap::new();
    let mut bugs_caught: BTreeMap<(String, String, String), (usize, usize)> = BTreeMap::new();
    let configs = configs();
    for (label, env) in &configs {
        let mut cmd = Command::new(&exe);
        cmd.args(["--exact", "matrix_child", "--ignored", "--nocapture", "--test-threads", "1"]);
        for var in ["MKL_CBWR", "ATEN_CPU_CAPABILITY", "OMP_NUM_THREADS", "MKL_NUM_THREADS"] {
            cmd.env_remove(var);
        }
        cmd.envs(env.iter().copied());
        let out = cmd.output().expect("run the child");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{label}: the child failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        let seen: Vec<Seen> = stdout
            .lines()
            .filter_map(|l| l.strip_prefix("SEEN "))
            .map(|l| serde_json::from_str(l).expect("a SEEN line"))
            .collect();
        assert!(seen.len() > 100, "{label}: only {} results:\n{stdout}", seen.len());
        let mut caught_here = std::collections::BTreeSet::new();
        for s in seen {
            if s.who.starts_with("bug") {
                let key = (s.notebook.clone(), s.check.clone(), s.who.clone());
                if s.case.starts_with("public") && !s.passed && caught_here.insert(key.clone()) {
                    bugs_caught.entry(key.clone()).or_default().0 += 1; // a public case caught it here
                }
                bugs_caught.entry(key).or_default().1 += usize::from(s.case == "public");
                continue;
            }
            if !s.passed {
                failures.push(format!("{label}: {} {} ({}) on {}: {}", s.notebook, s.check, s.who, s.case, s.message));
            }
            let w = worst.entry((s.notebook.clone(), s.check.clone())).or_insert((0.0, String::new(), 0.0));
            let rel = s.max_rel.unwrap_or(0.0);
            match s.max_abs {
                Some(a) if a > w.0 || w.1.is_empty() => {
                    *w = (a, format!("{} on {}, {label}", s.who, s.case), w.2.max(rel))
                }
                _ => w.2 = w.2.max(rel),
            }
        }
    }
    let uncaught: Vec<String> = bugs_caught
        .iter()
        .filter(|(_, (caught, runs))| caught < runs)
        .map(|((nb, check, who), (caught, runs))| {
            format!("{nb} {check} {who}: failed a public case in {caught} of {runs} configurations")
        })
        .collect();

    // The table for BENCHMARKS.md.
    let fixtures: BTreeMap<&str, Fixtures> = ["00_setup_check", "01_vit_mae", "02_summarization", "04_facenet"]
        .into_iter()
        .map(|nb| (nb, Fixtures::load(nb).expect("fixtures")))
        .collect();
    let mut table = format!(
        "Checks across CPUs: {} kernel selections ({}), every correct answer on every public and graded case.\n\n\
         | notebook | check | largest \\|Δ\\| seen | where | largest \\|Δ\\|/\\|expected\\| | tolerance (atol + rtol·\\|expected\\|) | headroom |\n|---|---|---|---|---|---|---|\n",
        configs.len(),
        "MKL_CBWR unset/COMPATIBLE/AVX2/AVX512 × ATEN_CPU_CAPABILITY unset/default/avx2 × 1, 2 threads"
    );
    for ((nb, check), (abs, at, rel)) in &worst {
        let tol = fixtures[nb.as_str()].tolerance(check).expect("tolerance");
        let headroom = if *abs > 0.0 { format!("{:.0}×", tol.atol / abs) } else { "exact".into() };
        let tol = tol.to_string().replace('|', "\\|");
        table += &format!("| {nb} | {check} | {abs:.1e} | {at} | {rel:.1e} | {tol} | {headroom} |\n");
    }
    table += &format!(
        "\nPlanted bugs: {} of {} failed a public case in every configuration.\n",
        bugs_caught.len() - uncaught.len(),
        bugs_caught.len()
    );
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("build/checks-across-cpus.md");
    std::fs::create_dir_all(out.parent().expect("build/")).expect("build/");
    std::fs::write(&out, &table).expect("write the table");
    println!("{table}");
    assert!(failures.is_empty(), "correct answers failed:\n{}\n\n{table}", failures.join("\n"));
    assert!(uncaught.is_empty(), "planted bugs that a public case does not catch:\n{}", uncaught.join("\n"));
    // Every check of every notebook has a correct answer and a planted bug here.
    for (nb, fx) in &fixtures {
        for check in fx.checks() {
            assert!(
                worst.contains_key(&(nb.to_string(), check.clone())),
                "{nb} {check}: no correct answer in the matrix"
            );
            assert!(
                bugs_caught.keys().any(|(n, c, _)| n == nb && c == &check),
                "{nb} {check}: no planted bug in the matrix"
            );
        }
    }
}
