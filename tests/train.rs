//! Training loops, NaN losses, and checkpoints that reload to identical outputs or refuse
//! another config.

#![cfg(feature = "reference")] // the reference models: not in the student handout

use hw9::data::images::{ImageSet, Splits};
use hw9::models::vit::{Vit, VitConfig};
use hw9::train::{load_checkpoint, save_checkpoint, train_classifier, TrainConfig};
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

/// 8×8 images whose class is which quarter of the image is bright: learnable in a few steps.
fn quarters(n: i64) -> ImageSet {
    let labels = Tensor::randint(3, [n], (Kind::Int64, Device::Cpu));
    let images = Tensor::zeros([n, 1, 8, 8], (Kind::Uint8, Device::Cpu));
    for i in 0..n {
        let q = labels.int64_value(&[i]);
        let _ = images.get(i).get(0).narrow(0, (q % 2) * 4, 4).narrow(1, (q / 2) * 4, 4).fill_(255);
    }
    ImageSet { images, labels, classes: vec!["a".into(), "b".into(), "c".into()] }
}

fn splits() -> Splits {
    Splits { train: quarters(256), test: quarters(64), mean: vec![0.2], std: vec![0.4] }
}

#[test]
fn a_classifier_learns_a_separable_task() {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    // The loop is under test, not the model: a linear classifier on the pixels.
    let model =
        nn::seq_t().add_fn(|x| x.flatten(1, -1)).add(nn::linear(vs.root() / "linear", 64, 3, Default::default()));
    let history = train_classifier(&model, &vs, &splits(), &TrainConfig::adamw(4, 32, 1e-2, 0.0), "test").unwrap();
    assert_eq!(history.epochs.len(), 4);
    assert_eq!(history.step_losses.len(), 4 * 8);
    assert!(history.epochs[3].train_loss < history.epochs[0].train_loss * 0.5, "{:?}", history.epochs);
    assert!(history.final_val_acc().unwrap() > 0.95, "{:?}", history.epochs);
}

#[derive(Debug)]
struct NanModel;
impl ModuleT for NanModel {
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Tensor {
        (xs.flatten(1, -1).narrow(1, 0, 3) * 0.0 + f64::NAN).set_requires_grad(true)
    }
}

#[test]
fn a_nan_loss_stops_training_with_where_and_what_to_do() {
    let vs = nn::VarStore::new(Device::Cpu);
    let err = train_classifier(&NanModel, &vs, &splits(), &TrainConfig::adamw(1, 32, 1e-3, 0.0), "nan")
        .unwrap_err()
        .to_string();
    assert!(err.contains("the loss became NaN at epoch 1, step 0") && err.contains("lower the learning rate"), "{err}");
}

#[test]
fn a_checkpoint_reloads_to_identical_outputs_and_refuses_another_config() {
    tch::manual_seed(0);
    let dir = std::env::temp_dir().join(format!("hw9-ckpt-{}", std::process::id()));
    let cfg = VitConfig::tiny();
    let vs = nn::VarStore::new(Device::Cpu);
    let vit = Vit::new(&vs.root(), &cfg).unwrap();
    save_checkpoint(&vs, &cfg, &dir).unwrap();
    let x = Tensor::randn([2, 1, 8, 8], (Kind::Float, Device::Cpu));

    let vs2 = nn::VarStore::new(Device::Cpu);
    let vit2 = Vit::new(&vs2.root(), &cfg).unwrap();
    assert!(!vit2.forward_t(&x, false).equal(&vit.forward_t(&x, false)));
    load_checkpoint(&vs2, &cfg, &dir).unwrap();
    assert!(vit2.forward_t(&x, false).equal(&vit.forward_t(&x, false)));

    let other = VitConfig { n_classes: 5, ..cfg };
    let vs3 = nn::VarStore::new(Device::Cpu);
    let _vit3 = Vit::new(&vs3.root(), &other).unwrap();
    let err = load_checkpoint(&vs3, &other, &dir).unwrap_err().to_string();
    assert!(
        err.contains("was saved with another config") && err.contains("n_classes: 3") && err.contains("n_classes: 5"),
        "{err}"
    );
    std::fs::write(dir.join("model.safetensors"), b"garbage").unwrap();
    let err = hw9::train::load_weights(&vs3, &dir.join("model.safetensors")).unwrap_err().to_string();
    assert!(err.contains("not a readable safetensors file"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_bf16_run_computes_its_products_in_bf16_keeps_fp32_weights_and_learns() {
    use hw9::train::precision::cpu_has_bf16;
    use hw9::train::{Evaluation, Fit, OptimConfig, Precision, Step};
    tch::manual_seed(0);
    let data = splits();
    let vs = nn::VarStore::new(Device::Cpu);
    let model =
        nn::seq_t().add_fn(|x| x.flatten(1, -1)).add(nn::linear(vs.root() / "linear", 64, 3, Default::default()));
    let fit = Fit::epochs("bf16", 4, 8, &OptimConfig::adamw(1e-2, (0.9, 0.95), 0.0)).precision(Precision::Bf16);
    let expected = if cpu_has_bf16() { Kind::BFloat16 } else { Kind::Float };
    assert_eq!(fit.resolved_precision(Device::Cpu).unwrap() == Precision::Bf16, cpu_has_bf16());
    let mut kinds = Vec::new();
    let batches = |_| hw9::data::images::batches(&data.train, 32, true, Device::Cpu);
    let step = |(x, y): (Tensor, Tensor)| {
        let logits = model.forward_t(&data.normalize(&x), true);
        kinds.push(logits.kind());
        Ok(Step { loss: logits.cross_entropy_for_logits(&y), weight: 32.0, correct: None })
    };
    let history = fit.run(&vs, batches, step, || Ok(Evaluation::default())).unwrap();
    assert!(kinds.iter().all(|k| *k == expected), "the products ran in {kinds:?}, expected {expected:?}");
    for (name, w) in vs.variables() {
        assert_eq!(w.kind(), Kind::Float, "{name}: master weights stay fp32");
    }
    assert!(history.epochs[3].train_loss < history.epochs[0].train_loss * 0.5, "{:?}", history.epochs);
    let acc = hw9::train::evaluate(&model, &data, &data.test, Device::Cpu);
    assert!(acc > 0.95, "accuracy {acc} after bf16 training");
    assert!(!hw9::train::precision::autocast_enabled(Device::Cpu), "autocast is off again after the run");
}
