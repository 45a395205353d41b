//! ViT and MAE: invariants, parity with PyTorch fixtures, gradients, and loss on one batch.

#![cfg(feature = "reference")] // the reference models: not in the student handout

use hw9::grading::check::{check_case, Fixtures};
use hw9::models::mae::{
    forward_loss, random_masking, restore_masked, Mae, MaeClassifier, MaeConfig, MaskedAutoencoder,
};
use hw9::models::vit::{index_sequence, patchify, unpatchify, EncoderConfig, TransformerEncoder, Vit, VitConfig};
use tch::nn::{self, Module, ModuleT, OptimizerConfig};
use tch::{Device, Kind, Tensor};

fn fixtures() -> Fixtures {
    Fixtures::load("01_vit_mae").expect("committed fixtures")
}

#[test]
fn unpatchify_inverts_patchify_and_shapes_are_checked() {
    let x = Tensor::randn([3, 2, 12, 12], (Kind::Float, Device::Cpu));
    let p = patchify(&x, 4).unwrap();
    assert_eq!(p.size(), [3, 9, 32]);
    assert!(unpatchify(&p, 4, 2).unwrap().equal(&x));
    // Patch 0 is the top-left 4x4 block, channel 0 first.
    assert!(p.get(0).get(0).narrow(0, 0, 4).equal(&x.get(0).get(0).get(0).narrow(0, 0, 4)));
    assert!(patchify(&x, 5).unwrap_err().to_string().contains("must divide"));
    assert!(unpatchify(&p, 4, 3).unwrap_err().to_string().contains("48 values, got 9 patches of 32"));
}

#[test]
fn masking_keeps_k_patches_and_restore_inverts_the_shuffle() {
    let (b, n, d, k) = (4, 49, 8, 12);
    let x = Tensor::randn([b, n, d], (Kind::Float, Device::Cpu));
    let ids = Tensor::rand([b, n], (Kind::Float, Device::Cpu)).argsort(1, false);
    let (kept, mask, ids_restore) = random_masking(&x, k, &ids);
    assert_eq!(kept.size(), [b, k, d]);
    assert_eq!(mask.sum(Kind::Float).double_value(&[]), (b * (n - k)) as f64);
    // ids_restore inverts the shuffle.
    assert!(ids
        .gather(1, &ids_restore, false)
        .equal(&Tensor::arange(n, (Kind::Int64, Device::Cpu)).expand([b, n], false)));
    // The kept tokens are the unmasked ones, and restoring with the masked ones gives x back.
    let masked = hw9::models::vit::index_sequence(&x, &ids.narrow(1, k, n - k));
    assert!(restore_masked(&kept, &masked, &ids_restore).equal(&x));
    let unmasked = mask.eq(0.0).unsqueeze(-1).expand([b, n, d], false);
    assert!(x.masked_select(&unmasked).sort(0, false).0.equal(&kept.reshape([-1]).sort(0, false).0));
}

#[test]
fn every_fixture_check_passes_with_the_reference_models() {
    let fx = fixtures();
    let r = check_case("unpatchify", &fx.case("unpatchify", "public").unwrap(), |c| unpatchify(&c["patches"], 4, 1));
    assert!(r.passed, "{r}");
    for case in ["public", "autograder"] {
        let c = fx.case("random_masking", case).unwrap();
        let r = check_case("random_masking", &c, |c| {
            random_masking(&c["x"], c["keep_length"].int64_value(&[]), &c["ids_shuffle"])
        });
        assert!(r.passed, "{r}");
        let r = check_case("restore_masked", &fx.case("restore_masked", case).unwrap(), |c| {
            restore_masked(&c["kept"], &c["masked"], &c["ids_restore"])
        });
        assert!(r.passed, "{r}");
    }

    let mut vs = nn::VarStore::new(Device::Cpu);
    let vit = Vit::new(&vs.root(), &VitConfig::fixture()).unwrap();
    fx.load_weights("vit", &mut vs).unwrap();
    for case in ["public", "autograder"] {
        let r = check_case("vit", &fx.case("vit", case).unwrap(), |c| vit.logits(&c["images"]));
        assert!(r.passed, "{r}");
    }

    let mut vs = nn::VarStore::new(Device::Cpu);
    let mae = Mae::new(&vs.root(), &MaeConfig::fixture()).unwrap();
    fx.load_weights("mae", &mut vs).unwrap();
    for case in ["public", "autograder"] {
        let r = check_case("forward_encoder", &fx.case("forward_encoder", case).unwrap(), |c| {
            mae.forward_encoder(&c["images"], Some(&c["ids_shuffle"]))
        });
        assert!(r.passed, "{r}");
        let r = check_case("forward_decoder", &fx.case("forward_decoder", case).unwrap(), |c| {
            mae.forward_decoder(&c["encoded"], &c["ids_restore"])
        });
        assert!(r.passed, "{r}");
        let r = check_case("representation", &fx.case("forward_encoder_representation", case).unwrap(), |c| {
            mae.forward_encoder_representation(&c["images"])
        });
        assert!(r.passed, "{r}");
    }
    let mut head_vs = nn::VarStore::new(Device::Cpu);
    let clf = MaeClassifier::new(&head_vs.root(), mae, 10, true);
    fx.load_weights("mae_classifier", &mut head_vs).unwrap();
    let r = check_case("mae_classifier", &fx.case("mae_classifier", "public").unwrap(), |c| clf.logits(&c["images"]));
    assert!(r.passed, "{r}");
}

#[test]
fn fixture_weights_of_another_config_are_refused_with_the_difference() {
    let fx = fixtures();
    let mut vs = nn::VarStore::new(Device::Cpu);
    let cfg = VitConfig {
        encoder: EncoderConfig { d_model: 64, n_heads: 2, n_layers: 2, d_ffn: 64 },
        ..VitConfig::fixture()
    };
    let _vit = Vit::new(&vs.root(), &cfg).unwrap();
    let err = fx.load_weights("vit", &mut vs).unwrap_err().to_string();
    assert!(
        err.contains("\"cls_token\" (saved from another config?): expected shape (1, 1, 64), got (1, 1, 32)"),
        "{err}"
    );
}

fn grads_ok(vs: &nn::VarStore, what: &str) {
    for (name, var) in vs.trainable_variables().iter().zip(vs.variables().keys()) {
        let g = name.grad();
        assert!(g.defined(), "{what}: {var} got no gradient");
        assert!(g.isfinite().all().int64_value(&[]) == 1, "{what}: {var} has a non-finite gradient");
        assert!(g.abs().sum(Kind::Double).double_value(&[]) > 0.0, "{what}: {var} has an all-zero gradient");
    }
}

#[test]
fn every_parameter_gets_a_finite_nonzero_gradient_and_none_reaches_a_detached_mae() {
    tch::manual_seed(0);
    let x = Tensor::randn([4, 1, 8, 8], (Kind::Float, Device::Cpu));
    let y = Tensor::from_slice(&[0i64, 1, 2, 1]);
    let vs = nn::VarStore::new(Device::Cpu);
    let vit = Vit::new(&vs.root(), &VitConfig::tiny()).unwrap();
    vit.forward_t(&x, true).cross_entropy_for_logits(&y).backward();
    grads_ok(&vs, "ViT");

    let vs = nn::VarStore::new(Device::Cpu);
    let mae = Mae::new(&vs.root(), &MaeConfig::tiny()).unwrap();
    let (pred, mask) = mae.reconstruct(&x).unwrap();
    forward_loss(&x, &pred, &mask, 4).unwrap().backward();
    grads_ok(&vs, "MAE");

    // Linear probing: the head learns, the MAE gets nothing.
    let mae_vs = nn::VarStore::new(Device::Cpu);
    let mae = Mae::new(&mae_vs.root(), &MaeConfig::tiny()).unwrap();
    let head_vs = nn::VarStore::new(Device::Cpu);
    let probe = MaeClassifier::new(&head_vs.root(), mae, 3, true);
    probe.forward_t(&x, true).cross_entropy_for_logits(&y).backward();
    grads_ok(&head_vs, "probe head");
    for v in mae_vs.trainable_variables() {
        assert!(
            !v.grad().defined() || v.grad().abs().sum(Kind::Double).double_value(&[]) == 0.0,
            "a detached MAE got a gradient"
        );
    }
    // Finetuning: the MAE's encoder learns too (the decoder is not used by the classifier).
    let finetune = MaeClassifier { detach: false, ..probe };
    finetune.forward_t(&x, true).cross_entropy_for_logits(&y).backward();
    assert!(finetune.mae.encoder.layers[0].linear1.ws.grad().abs().sum(Kind::Double).double_value(&[]) > 0.0);
}

#[test]
fn the_loss_falls_on_one_repeated_batch() {
    tch::manual_seed(0);
    let x = Tensor::randn([16, 1, 8, 8], (Kind::Float, Device::Cpu));
    let y = Tensor::randint(3, [16], (Kind::Int64, Device::Cpu));
    let vs = nn::VarStore::new(Device::Cpu);
    let vit = Vit::new(&vs.root(), &VitConfig::tiny()).unwrap();
    let mut opt = nn::AdamW::default().build(&vs, 3e-3).unwrap();
    let first = vit.forward_t(&x, true).cross_entropy_for_logits(&y).double_value(&[]);
    for _ in 0..60 {
        opt.backward_step(&vit.forward_t(&x, true).cross_entropy_for_logits(&y));
    }
    let last = vit.forward_t(&x, true).cross_entropy_for_logits(&y).double_value(&[]);
    assert!(last < first * 0.2, "ViT loss {first} -> {last}");

    let vs = nn::VarStore::new(Device::Cpu);
    let mae = Mae::new(&vs.root(), &MaeConfig::tiny()).unwrap();
    let mut opt = nn::AdamW::default().build(&vs, 3e-3).unwrap();
    let ids = Tensor::rand([16, 4], (Kind::Float, Device::Cpu)).argsort(1, false);
    let loss = |mae: &Mae| {
        let (enc, mask, restore) = mae.forward_encoder(&x, Some(&ids)).unwrap();
        forward_loss(&x, &mae.forward_decoder(&enc, &restore), &mask, 4).unwrap()
    };
    let first = loss(&mae).double_value(&[]);
    for _ in 0..60 {
        opt.backward_step(&loss(&mae));
    }
    let last = loss(&mae).double_value(&[]);
    assert!(last < first * 0.7, "MAE loss {first} -> {last}");
}

#[test]
fn the_pruned_last_layers_equal_the_full_computation() {
    tch::manual_seed(0);
    let cfg = EncoderConfig { d_model: 16, n_heads: 2, n_layers: 2, d_ffn: 32 };
    let vs = nn::VarStore::new(Device::Cpu);
    let encoder = TransformerEncoder::new(&vs.root(), &cfg);
    let x = Tensor::randn([3, 7, 16], (Kind::Float, Device::Cpu));
    let full = encoder.forward(&x);
    let close = |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]);
    assert_eq!(encoder.forward_first(&x, 2).size(), [3, 2, 16]);
    assert!(close(&encoder.forward_first(&x, 2), &full.narrow(1, 0, 2)) < 1e-5);
    let ids = Tensor::from_slice(&[6i64, 0, 3, 1, 1, 5, 2, 4, 0]).reshape([3, 3]);
    assert!(close(&encoder.forward_at(&x, &ids), &index_sequence(&full, &ids)) < 1e-5);

    // The ViT's logits (CLS-only last layer) equal the full encoder's CLS row through the head.
    let vs = nn::VarStore::new(Device::Cpu);
    let vit = Vit::new(&vs.root(), &VitConfig::tiny()).unwrap();
    let images = Tensor::randn([4, 1, 8, 8], (Kind::Float, Device::Cpu));
    let tokens = Tensor::cat(
        &[vit.cls_token.expand([4, -1, -1], false), vit.patch_embed.forward(&patchify(&images, 4).unwrap())],
        1,
    ) + &vit.pos_embed;
    let reference = vit.head.forward(&vit.norm.forward(&vit.encoder.forward(&tokens).select(1, 0)));
    assert!(close(&vit.logits(&images).unwrap(), &reference) < 1e-5);

    // The MAE's pretraining loss on the masked patches only equals forward_loss on every patch.
    let vs = nn::VarStore::new(Device::Cpu);
    let mae = Mae::new(&vs.root(), &MaeConfig::tiny()).unwrap();
    let ids_shuffle = Tensor::rand([4, 4], (Kind::Float, Device::Cpu)).argsort(1, false);
    let (encoded, mask, ids_restore) = mae.forward_encoder(&images, Some(&ids_shuffle)).unwrap();
    let reference = forward_loss(&images, &mae.forward_decoder(&encoded, &ids_restore), &mask, 4).unwrap();
    let pruned = mae.loss(&images, Some(&ids_shuffle)).unwrap();
    assert!(close(&pruned, &reference) < 1e-6, "{} vs {}", pruned.double_value(&[]), reference.double_value(&[]));
    // And through the trait (a random masking): a finite loss whose gradient reaches every parameter.
    MaskedAutoencoder::pretraining_loss(&mae, &images).unwrap().backward();
    grads_ok(&vs, "MAE, pruned loss");
    assert!(mae.loss(&images.narrow(2, 0, 4), None).unwrap_err().to_string().contains("MAE input"));
    let err = mae.loss(&images, Some(&ids_shuffle.narrow(1, 0, 3))).unwrap_err().to_string();
    assert!(
        err.contains("MAE ids_shuffle (a permutation of the patches per image): expected shape (4, 4), got (4, 3)"),
        "{err}"
    );
}

#[test]
fn a_mask_ratio_that_hides_nothing_or_everything_is_refused() {
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = |mask_ratio| MaeConfig { mask_ratio, ..MaeConfig::fashion_mnist_full() };
    // 0 hides nothing; 0.99 keeps ⌊0.49⌋ = 0 patches; 1 keeps none.
    for ratio in [0.0, 0.99, 1.0] {
        let err = Mae::new(&vs.root(), &cfg(ratio)).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("mask_ratio must hide at least one of the 49 patches"), "{ratio}: {err:?}");
    }
    // 0.01 keeps ⌊48.51⌋ = 48 and hides one; 0.97 keeps one.
    assert!(Mae::new(&vs.root(), &cfg(0.01)).is_ok() && Mae::new(&vs.root(), &cfg(0.97)).is_ok());
}

/// `softmax(q·kᵀ/√Dh)` of one encoder layer, from its packed weights, written out here apart from
/// the crate's attention code.
fn attention_by_hand(layer: &hw9::models::vit::EncoderLayer, x: &Tensor) -> Tensor {
    let (b, n, d) = x.size3().unwrap();
    let h = layer.self_attn.n_heads;
    let w = &layer.self_attn.in_proj_weight;
    let bias = &layer.self_attn.in_proj_bias;
    let heads = |i: i64| {
        let y = x.matmul(&w.narrow(0, i * d, d).tr()) + bias.narrow(0, i * d, d);
        y.reshape([b, n, h, d / h]).permute([0, 2, 1, 3])
    };
    let scores = heads(0).matmul(&heads(1).transpose(-2, -1)) / ((d / h) as f64).sqrt();
    scores.softmax(-1, Kind::Float)
}

#[test]
fn the_encoders_attention_is_what_its_weights_give_and_its_output_unchanged() {
    tch::manual_seed(1);
    let cfg = EncoderConfig { d_model: 16, n_heads: 4, n_layers: 3, d_ffn: 32 };
    let vs = nn::VarStore::new(Device::Cpu);
    let encoder = TransformerEncoder::new(&vs.root(), &cfg);
    let x = Tensor::randn([2, 5, 16], (Kind::Float, Device::Cpu));
    let out = encoder.forward_with_attention(&x).unwrap();
    let close = |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]);
    assert!(close(&out.hidden, &encoder.forward(&x)) < 1e-5);
    assert_eq!(out.layers.len(), 3);
    let mut input = x.shallow_clone();
    for (i, (layer, att)) in encoder.layers.iter().zip(&out.layers).enumerate() {
        assert_eq!(att.probs.size(), [2, 4, 5, 5]);
        let by_hand = attention_by_hand(layer, &input);
        assert!(close(&att.probs, &by_hand) < 1e-6, "layer {i}: {}", close(&att.probs, &by_hand));
        input = layer.forward(&input);
    }
    // A model's own forward pass, with the encoder keeping its attention: the ViT's logits (its
    // last layer on the CLS row only) unchanged, the attention that of the whole stack.
    let vs = nn::VarStore::new(Device::Cpu);
    let vit = Vit::new(&vs.root(), &VitConfig::tiny()).unwrap();
    let images = Tensor::randn([3, 1, 8, 8], (Kind::Float, Device::Cpu));
    let tokens = Tensor::cat(
        &[vit.cls_token.expand([3, -1, -1], false), vit.patch_embed.forward(&patchify(&images, 4).unwrap())],
        1,
    ) + &vit.pos_embed;
    let (logits, layers) = vit.encoder.with_attention(|| vit.logits(&images).unwrap()).unwrap();
    assert!(close(&logits, &vit.logits(&images).unwrap()) < 1e-5);
    let direct = vit.encoder.forward_with_attention(&tokens).unwrap().layers;
    assert_eq!(layers.len(), direct.len());
    for (a, b) in layers.iter().zip(&direct) {
        assert_eq!(a.probs.size(), [3, VitConfig::tiny().encoder.n_heads, 5, 5]);
        assert!(close(&a.probs, &b.probs) < 1e-6);
    }
    // Outside with_attention nothing is kept; a closure that never runs the encoder is an error.
    let _ = vit.logits(&images).unwrap();
    let err = vit.encoder.with_attention(|| 1).unwrap_err().to_string();
    assert!(err.contains("the closure never ran this encoder"), "{err}");

    let err = encoder.forward_with_attention(&x.narrow(2, 0, 8)).unwrap_err().to_string();
    assert!(err.contains("expected tokens (B, N, 16), got shape (2, 5, 8)"), "{err}");
    let err = encoder.forward_with_attention(&x.get(0)).unwrap_err().to_string();
    assert!(err.contains("got shape (5, 16)"), "{err}");
}
