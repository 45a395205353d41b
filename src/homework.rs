//! Each notebook's sizes and budgets per compute profile, and the reference runs behind the
//! `hw9` commands that train what the notebooks train.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::nn;
use tch::Device;

use crate::data::{fashion_mnist_dir, load_fashion_mnist, Splits};
use crate::error::Result;
use crate::mae::{Mae, MaeClassifier, MaeConfig};
use crate::profile::Profile;
use crate::train::{load_checkpoint_into, save_checkpoint, Schedule, train_classifier, train_mae, History, TrainConfig};
use crate::vit::{EncoderConfig, Vit, VitConfig};

/// Notebook 1's models, training stages and data subset for one profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VitMaePlan {
    pub vit: VitConfig,
    pub mae: MaeConfig,
    pub vit_train: TrainConfig,
    pub mae_train: TrainConfig,
    pub probe_train: TrainConfig,
    pub finetune_train: TrainConfig,
    /// `(train, test)` images kept, or `None` for all of them.
    pub subset: Option<(i64, i64)>,
    /// The accuracy thresholds checked in the notebook: ViT, linear probe, finetune.
    pub thresholds: (f64, f64, f64),
}

impl VitMaePlan {
    pub fn for_profile(profile: Profile) -> Self {
        let enc = |d, l, f| EncoderConfig { d_model: d, n_heads: 4, n_layers: l, d_ffn: f };
        let fmnist = |e: EncoderConfig| VitConfig { image_size: 28, channels: 1, patch_size: 4, encoder: e, n_classes: 10 };
        let mae = |e: EncoderConfig, d: EncoderConfig| MaeConfig { image_size: 28, channels: 1, patch_size: 4, encoder: e, decoder: d, mask_ratio: 0.75 };
        let adamw = |epochs, lr, wd| TrainConfig::adamw(epochs, 128, lr, wd);
        let cosine = |t: TrainConfig| TrainConfig { schedule: Schedule::WarmupCosine { warmup: 0.05 }, ..t };
        match profile {
            Profile::Quick => VitMaePlan {
                vit: fmnist(enc(32, 2, 64)),
                mae: mae(enc(32, 2, 64), enc(16, 1, 32)),
                vit_train: adamw(1, 1e-3, 0.01),
                mae_train: adamw(1, 1e-3, 0.05),
                probe_train: adamw(1, 1e-3, 0.01),
                finetune_train: adamw(1, 1e-3, 0.01),
                subset: Some((1024, 512)),
                thresholds: (0.0, 0.0, 0.0),
            },
            // Sized for about 20 minutes on 2 cores; warmup + cosine decay gets more out of few epochs.
            Profile::Cpu => VitMaePlan {
                vit: fmnist(enc(128, 4, 256)),
                mae: mae(enc(128, 4, 256), enc(64, 2, 128)),
                vit_train: cosine(adamw(5, 1e-3, 0.01)),
                mae_train: cosine(adamw(5, 1e-3, 0.05)),
                probe_train: cosine(adamw(3, 1e-3, 0.01)),
                finetune_train: cosine(adamw(3, 3e-4, 0.01)),
                subset: None,
                thresholds: (0.85, 0.70, 0.86),
            },
            Profile::Full => VitMaePlan {
                vit: VitConfig::fashion_mnist_full(),
                mae: MaeConfig::fashion_mnist_full(),
                vit_train: adamw(10, 1e-3, 0.01),
                mae_train: adamw(20, 1e-4, 0.05),
                probe_train: adamw(20, 1e-4, 0.01),
                finetune_train: adamw(20, 1e-4, 0.01),
                subset: None,
                thresholds: (0.85, 0.70, 0.86),
            },
        }
    }

    /// Fashion-MNIST as installed by setup, cut to this plan's subset.
    pub fn data(&self) -> Result<Splits> {
        let data = load_fashion_mnist(&fashion_mnist_dir())?;
        Ok(match self.subset {
            Some((train, test)) => data.truncate(train, test),
            None => data,
        })
    }
}

/// What [`run_vit_mae`] measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VitMaeReport {
    pub profile: Profile,
    pub vit_acc: f64,
    pub probe_acc: f64,
    pub finetune_acc: f64,
    /// Seconds per stage: ViT, MAE pretraining, probe, finetune.
    pub seconds: [f64; 4],
    pub histories: Vec<History>,
}

/// Trains notebook 1's four stages with the crate's reference models (the `hw9 vit-mae`
/// command), saving the pretrained MAE to `out/mae`.
pub fn run_vit_mae(profile: Profile, device: Device, out: &std::path::Path) -> Result<VitMaeReport> {
    let plan = VitMaePlan::for_profile(profile);
    let data = plan.data()?;
    let mut seconds = [0.0; 4];
    let mut histories = Vec::new();

    let t = Instant::now();
    let vs = nn::VarStore::new(device);
    let vit = Vit::new(&vs.root(), &plan.vit)?;
    let h = train_classifier(&vit, &vs, &data, &plan.vit_train, "ViT")?;
    let vit_acc = h.final_val_acc().unwrap_or(0.0);
    histories.push(h);
    seconds[0] = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let vs = nn::VarStore::new(device);
    let mae = Mae::new(&vs.root(), &plan.mae)?;
    histories.push(train_mae(&mae, &vs, &data, &plan.mae_train, "MAE pretraining")?);
    save_checkpoint(&vs, &plan.mae, &out.join("mae"))?;
    seconds[1] = t.elapsed().as_secs_f64();

    let mut accs = [0.0; 2];
    for (i, (detach, cfg, title)) in [(true, &plan.probe_train, "linear probe"), (false, &plan.finetune_train, "finetune")].into_iter().enumerate() {
        let t = Instant::now();
        let mut vs = nn::VarStore::new(device);
        let mae = Mae::new(&(vs.root() / "mae"), &plan.mae)?;
        let clf = MaeClassifier::new(&(vs.root() / "classifier"), mae, 10, detach);
        load_checkpoint_into(&mut vs, "mae", &plan.mae, &out.join("mae"))?;
        let h = train_classifier(&clf, &vs, &data, cfg, title)?;
        accs[i] = h.final_val_acc().unwrap_or(0.0);
        histories.push(h);
        seconds[2 + i] = t.elapsed().as_secs_f64();
    }
    Ok(VitMaeReport { profile, vit_acc, probe_acc: accs[0], finetune_acc: accs[1], seconds, histories })
}

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
/// profile's sizes at `batch` random 28×28 images: the median of `steps` steps after `warmup`.
pub fn bench_steps(profile: Profile, batch: i64, warmup: usize, steps: usize, device: Device) -> Result<(f64, f64)> {
    use tch::nn::{ModuleT, OptimizerConfig};
    use tch::{Kind, Tensor};
    let plan = VitMaePlan::for_profile(profile);
    let x = Tensor::randn([batch, 1, 28, 28], (Kind::Float, device));
    let y = Tensor::randint(10, [batch], (Kind::Int64, device));
    let time = |step: &mut dyn FnMut()| median_step_seconds(device, warmup, steps, step);
    let vs = nn::VarStore::new(device);
    let vit = Vit::new(&vs.root(), &plan.vit)?;
    let mut opt = nn::AdamW { beta1: 0.9, beta2: 0.95, wd: 0.01, eps: 1e-8, amsgrad: false }.build(&vs, 1e-3)?;
    let vit_s = time(&mut || opt.backward_step(&vit.forward_t(&x, true).cross_entropy_for_logits(&y)));
    let vs = nn::VarStore::new(device);
    let mae = Mae::new(&vs.root(), &plan.mae)?;
    let mut opt = nn::AdamW { beta1: 0.9, beta2: 0.95, wd: 0.05, eps: 1e-8, amsgrad: false }.build(&vs, 1e-4)?;
    let mut err = None;
    let mae_s = time(&mut || match mae.pretraining_loss(&x, None) {
        Ok(loss) => opt.backward_step(&loss),
        Err(e) => err = Some(e),
    });
    match err {
        Some(e) => Err(e),
        None => Ok((vit_s, mae_s)),
    }
}
