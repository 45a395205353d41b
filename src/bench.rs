//! Step-time benchmarks behind `hw9 bench` and `hw9 bench-summarizer` (and `make bench-compare`,
//! which runs them against PyTorch eager): one training step — forward, backward, AdamW — of
//! each model at the plans' sizes on random inputs, the median of several.

use std::time::Instant;

use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

use crate::data::seq2seq::Batch;
use crate::error::Result;
use crate::models::mae::Mae;
use crate::models::summarizer::{Summarizer, SummarizerConfig};
use crate::models::vit::Vit;
use crate::plan::VitMaePlan;
use crate::profile::Profile;
use crate::train::adamw::AdamW;
use crate::train::{autocast, OptimConfig, Precision};

/// The median wall time of `steps` calls of `step` (at least one) after `warmup` untimed ones,
/// waiting for the GPU after each call on CUDA.
pub fn median_step_seconds(device: Device, warmup: usize, steps: usize, step: &mut dyn FnMut()) -> f64 {
    let sync = || {
        if let Device::Cuda(i) = device {
            tch::Cuda::synchronize(i as i64);
        }
    };
    for _ in 0..warmup {
        step();
    }
    sync();
    let mut times: Vec<f64> = (0..steps.max(1))
        .map(|_| {
            let t = Instant::now();
            step();
            sync();
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Seconds per training step (forward, backward, AdamW update) of the ViT and the MAE of a
/// profile's sizes at `batch` random 28×28 images: the median of `steps` steps after `warmup`;
/// the forward pass and loss in `precision` ([`autocast`]).
pub fn vit_mae_steps(
    profile: Profile,
    batch: i64,
    warmup: usize,
    steps: usize,
    device: Device,
    precision: Precision,
) -> Result<(f64, f64)> {
    let plan = VitMaePlan::for_profile(profile);
    let x = Tensor::randn([batch, 1, 28, 28], (Kind::Float, device));
    let y = Tensor::randint(10, [batch], (Kind::Int64, device));
    let time = |step: &mut dyn FnMut()| median_step_seconds(device, warmup, steps, step);
    let vs = nn::VarStore::new(device);
    let vit = Vit::new(&vs.root(), &plan.vit)?;
    let optim = &plan.vit_train.optim;
    let mut opt = AdamW::new(&vs, optim);
    let vit_s = time(&mut || {
        let loss = autocast(precision, device, || vit.forward_t(&x, true).cross_entropy_for_logits(&y));
        opt.backward_step(&loss)
    });
    let vs = nn::VarStore::new(device);
    let mae = Mae::new(&vs.root(), &plan.mae)?;
    let optim = &plan.mae_train.optim;
    let mut opt = AdamW::new(&vs, optim);
    let mut err = None;
    let mae_s = time(&mut || match autocast(precision, device, || mae.loss(&x, None)) {
        Ok(loss) => opt.backward_step(&loss),
        Err(e) => err = Some(e),
    });
    match err {
        Some(e) => Err(e),
        None => Ok((vit_s, mae_s)),
    }
}

/// One training step's seconds (median of `steps` after `warmup`) for `cfg` on random batches of
/// `batch` documents of `src_len` tokens and summaries of `tgt_len`, the forward pass and loss in
/// `precision`.
#[allow(clippy::too_many_arguments)]
pub fn summarizer_step(
    cfg: &SummarizerConfig,
    batch: i64,
    src_len: i64,
    tgt_len: i64,
    warmup: usize,
    steps: usize,
    device: Device,
    precision: Precision,
) -> Result<f64> {
    crate::seed(0);
    let vs = nn::VarStore::new(device);
    let model = Summarizer::new(&vs.root(), cfg)?;
    let optim = OptimConfig::adamw(1e-4, (0.9, 0.999), 0.01).clip(1.0);
    let mut opt = AdamW::new(&vs, &optim);
    let ids = |n| Tensor::randint_low(3, cfg.vocab_size, [batch, n], (Kind::Int64, device));
    let b = Batch { src: ids(src_len), dec_in: ids(tgt_len), labels: ids(tgt_len) };
    let mut err = None;
    let secs =
        median_step_seconds(
            device,
            warmup,
            steps,
            &mut || match autocast(precision, device, || model.loss(&b, true)) {
                Ok((loss, _, _)) => opt.backward_step(&loss),
                Err(e) => err = Some(e),
            },
        );
    err.map_or(Ok(secs), Err)
}
