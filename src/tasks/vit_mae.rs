//! Notebook 1 end to end with the crate's models (the `hw9 vit-mae` command): the ViT, MAE
//! pretraining, the linear probe and finetuning, with the sizes of [`VitMaePlan`].

use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::{nn, Device};

use super::images::{train_classifier, train_mae};
use crate::data::images::Splits;
use crate::error::Result;
use crate::models::mae::{Mae, MaeClassifier};
use crate::models::vit::Vit;
use crate::plan::VitMaePlan;
use crate::profile::Profile;
use crate::train::{load_checkpoint_into, save_checkpoint, History};

/// What [`run_vit_mae`] measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VitMaeReport {
    /// The profile that ran.
    pub profile: Profile,
    /// The ViT's test accuracy.
    pub vit_acc: f64,
    /// The linear probe's test accuracy on the pretrained MAE.
    pub probe_acc: f64,
    /// The finetuned MAE's test accuracy.
    pub finetune_acc: f64,
    /// Seconds per stage: ViT, MAE pretraining, probe, finetune.
    pub seconds: [f64; 4],
    /// Each stage's training history, in that order.
    pub histories: Vec<History>,
}

/// Notebook 1's first stage alone (`hw9 vit-mae --vit-only`): the supervised ViT's test
/// accuracy and seconds.
pub fn run_vit(profile: Profile, device: Device) -> Result<(f64, f64)> {
    let plan = VitMaePlan::for_profile(profile);
    let (h, secs) = train_vit(&plan, &plan.data()?, device)?;
    Ok((h.final_val_acc().unwrap_or(0.0), secs))
}

/// The supervised ViT of `plan` trained on `data`: its history and seconds.
fn train_vit(plan: &VitMaePlan, data: &Splits, device: Device) -> Result<(History, f64)> {
    let t = Instant::now();
    let vs = nn::VarStore::new(device);
    let vit = Vit::new(&vs.root(), &plan.vit)?;
    let h = train_classifier(&vit, &vs, data, &plan.vit_train, "ViT")?;
    Ok((h, t.elapsed().as_secs_f64()))
}

/// Trains notebook 1's four stages with the crate's reference models (the `hw9 vit-mae`
/// command), saving the pretrained MAE to `out/mae`.
pub fn run_vit_mae(profile: Profile, device: Device, out: &std::path::Path) -> Result<VitMaeReport> {
    run_vit_mae_plan(profile, &VitMaePlan::for_profile(profile), device, out)
}

/// [`run_vit_mae`] with the sizes and stages of `plan` (which `profile` only labels): how other
/// sizes are tried (`examples/vit_mae_sizes.rs`).
pub fn run_vit_mae_plan(
    profile: Profile,
    plan: &VitMaePlan,
    device: Device,
    out: &std::path::Path,
) -> Result<VitMaeReport> {
    let data = plan.data()?;
    let mut seconds = [0.0; 4];
    let mut histories = Vec::new();

    let (h, secs) = train_vit(plan, &data, device)?;
    let vit_acc = h.final_val_acc().unwrap_or(0.0);
    histories.push(h);
    seconds[0] = secs;

    let t = Instant::now();
    let vs = nn::VarStore::new(device);
    let mae = Mae::new(&vs.root(), &plan.mae)?;
    histories.push(train_mae(&mae, &vs, &data, &plan.mae_train, "MAE pretraining")?);
    save_checkpoint(&vs, &plan.mae, &out.join("mae"))?;
    seconds[1] = t.elapsed().as_secs_f64();

    let mut accs = [0.0; 2];
    for (i, (detach, cfg, title)) in
        [(true, &plan.probe_train, "linear probe"), (false, &plan.finetune_train, "finetune")].into_iter().enumerate()
    {
        let t = Instant::now();
        let vs = nn::VarStore::new(device);
        let mae = Mae::new(&(vs.root() / "mae"), &plan.mae)?;
        let clf = MaeClassifier::new(&(vs.root() / "classifier"), mae, 10, detach);
        load_checkpoint_into(&vs, "mae", &plan.mae, &out.join("mae"))?;
        let h = train_classifier(&clf, &vs, &data, cfg, title)?;
        accs[i] = h.final_val_acc().unwrap_or(0.0);
        histories.push(h);
        seconds[2 + i] = t.elapsed().as_secs_f64();
    }
    Ok(VitMaeReport { profile, vit_acc, probe_acc: accs[0], finetune_acc: accs[1], seconds, histories })
}
