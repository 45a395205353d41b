//! The image trainers on the core: a classifier ([`train_classifier`]) and a masked autoencoder
//! ([`train_mae`]) on shuffled, normalised (optionally augmented) batches of an image set.

use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

use crate::data::images::{augment, batches, n_batches, ImageSet, Splits};
use crate::error::{Error, Result};
use crate::models::mae::MaskedAutoencoder;
use crate::train::{Evaluation, Fit, History, Precision, Step, TrainConfig};

/// Accuracy of `model` on `set` (normalised as `data` does), without gradients.
pub fn evaluate<M: ModuleT>(model: &M, data: &Splits, set: &ImageSet, device: Device) -> f64 {
    tch::no_grad(|| {
        let (mut correct, mut total) = (0i64, 0i64);
        for (x, y) in batches(set, 500, false, device) {
            let logits = model.forward_t(&data.normalize(&x), false);
            correct += logits.argmax(-1, false).eq_tensor(&y).sum(Kind::Int64).int64_value(&[]);
            total += y.size()[0];
        }
        correct as f64 / total.max(1) as f64
    })
}

/// The core over an image set: shuffled batches, normalised (and augmented when `cfg` says so).
fn fit_images(
    vs: &nn::VarStore,
    data: &Splits,
    cfg: &TrainConfig,
    title: &str,
    auto: Precision,
    mut batch_loss: impl FnMut(&Tensor, &Tensor) -> Result<Step>,
    evaluate: impl FnMut() -> Result<Evaluation>,
) -> Result<History> {
    let device = vs.device();
    let fit = Fit::epochs(title, cfg.epochs, n_batches(&data.train, cfg.batch_size) as usize, &cfg.optim)
        .precision(Precision::requested(auto)?)
        .resumable_in(cfg.resume.as_ref(), vs, &TrainConfig { resume: None, ..cfg.clone() })?;
    let step = |(x, y): (Tensor, Tensor)| {
        let x = data.normalize(&x);
        let x = if cfg.augment { augment(&x, true, 2) } else { x };
        batch_loss(&x, &y)
    };
    fit.run(vs, |_| batches(&data.train, cfg.batch_size, true, device), step, evaluate)
}

/// Trains a classifier with cross-entropy and AdamW, evaluating on the test split each epoch.
pub fn train_classifier<M: ModuleT>(
    model: &M,
    vs: &nn::VarStore,
    data: &Splits,
    cfg: &TrainConfig,
    title: &str,
) -> Result<History> {
    let batch_loss = |x: &Tensor, y: &Tensor| {
        let logits = model.forward_t(x, true);
        let b = y.size()[0];
        if logits.dim() != 2 || logits.size()[0] != b {
            return Err(Error::Shape { what: format!("{title}: logits"), expected: vec![b, -1], got: logits.size() });
        }
        let correct = logits.argmax(-1, false).eq_tensor(y).sum(Kind::Int64).int64_value(&[]);
        Ok(Step { loss: logits.cross_entropy_for_logits(y), weight: b as f64, correct: Some((correct, b)) })
    };
    let eval = || Ok(Evaluation { loss: None, accuracy: Some(evaluate(model, data, &data.test, vs.device())) });
    // bf16 pays for the ViT's `full` sizes (0.80x a step), not the `cpu` ones (BENCHMARKS.md).
    fit_images(vs, data, cfg, title, Precision::Bf16, batch_loss, eval)
}

/// Pretrains a masked autoencoder: MSE on the masked patches, AdamW.
pub fn train_mae<M: MaskedAutoencoder>(
    model: &M,
    vs: &nn::VarStore,
    data: &Splits,
    cfg: &TrainConfig,
    title: &str,
) -> Result<History> {
    let batch_loss = |x: &Tensor, y: &Tensor| {
        Ok(Step { loss: model.pretraining_loss(x)?, weight: y.size()[0] as f64, correct: None })
    };
    // The MAE's step is slower in bf16 at both sizes (BENCHMARKS.md): fp32 unless asked.
    fit_images(vs, data, cfg, title, Precision::Fp32, batch_loss, || Ok(Evaluation::default()))
}
