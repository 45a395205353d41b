//! Notebook 4 end to end: train an embedding with triplets, evaluate it as FaceNet does
//! ([`super::verification`]), and the paper's experiments, small — embedding size, amount of
//! training data, and how triplets are chosen — each a run of [`experiment`] on one budget.
//!
//! [`run_facenet`] (with the `reference` feature; the `hw9 facenet` command) does all of it with
//! the crate's answers to the notebook's TODOs.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT};
use tch::Device;

use super::triplet::{train_triplets, TripletFns};
use super::verification::{embed, evaluate_embedding, nearest_neighbour_accuracy, EmbeddingReport};
use crate::data::images::Splits;
use crate::error::Result;
use crate::plan::{EvalSizes, TripletTrain};
use crate::train::History;
use crate::visuals::LineChart;

/// One training run and its evaluation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Experiment {
    /// What was varied, e.g. `dim 32` or `10 % of the data`.
    pub label: String,
    /// The run's settings.
    pub train: TripletTrain,
    /// The embedding size.
    pub embedding_dim: i64,
    /// What the evaluation measured.
    pub report: EmbeddingReport,
    /// Training losses and per-epoch nearest-neighbour accuracy.
    pub history: History,
    /// Wall time of training and evaluation.
    pub seconds: f64,
}

/// The nearest-neighbour accuracy of 1,000 test images against 5,000 training images: the quick
/// per-epoch number on the progress bar.
pub fn quick_nn_accuracy<M: ModuleT>(model: &M, data: &Splits, device: Device) -> Result<f64> {
    let (q, ql) = embed(model, data, &data.test, Some(1000), device)?;
    let (g, gl) = embed(model, data, &data.train, Some(5000), device)?;
    Ok(nearest_neighbour_accuracy(&g, &gl, &q, &ql))
}

/// Builds a model with `build` on a fresh `VarStore`, trains it with `cfg` and evaluates it
/// (the embedding size is read from its output).
pub fn experiment<M: ModuleT>(
    label: &str,
    data: &Splits,
    fns: &TripletFns,
    cfg: &TripletTrain,
    sizes: &EvalSizes,
    device: Device,
    build: impl FnOnce(&nn::Path) -> Result<M>,
) -> Result<Experiment> {
    let start = Instant::now();
    let vs = nn::VarStore::new(device);
    let model = build(&vs.root())?;
    let history = train_triplets(&model, &vs, data, fns, cfg, label, || quick_nn_accuracy(&model, data, device))?;
    let (report, emb, _) = evaluate_embedding(&model, data, sizes, device)?;
    Ok(Experiment {
        label: label.to_string(),
        train: cfg.clone(),
        embedding_dim: emb.size()[1],
        report,
        history,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// A Markdown table of experiments: VAL at the target FAR, nearest-neighbour accuracy, purity,
/// AUC and time.
pub fn experiments_table(runs: &[Experiment]) -> String {
    let mut out = String::from(
        "| run | VAL @ FAR 1e-3 | NN accuracy | k-means purity | AUC | seconds |\n|---|---|---|---|---|---|\n",
    );
    for r in runs {
        let v = &r.report.verification;
        out.push_str(&format!(
            "| {} | {:.3} | {:.3} | {:.3} | {:.4} | {:.0} |\n",
            r.label, v.val, r.report.nn_accuracy, r.report.purity, v.auc, r.seconds
        ));
    }
    out
}

/// VAL, nearest-neighbour accuracy and purity against an experiment's variable (`xs`, one per run).
pub fn experiments_chart(title: &str, x_label: &str, xs: &[f64], runs: &[Experiment]) -> LineChart {
    let pick = |f: fn(&Experiment) -> f64| runs.iter().map(f).collect::<Vec<f64>>();
    LineChart::new(title)
        .x_label(x_label)
        .y_label("score")
        .series_xy("VAL @ FAR 1e-3", xs, &pick(|r| r.report.verification.val))
        .series_xy("NN accuracy", xs, &pick(|r| r.report.nn_accuracy))
        .series_xy("k-means purity", xs, &pick(|r| r.report.purity))
}

/// What [`run_facenet`] measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FacenetReport {
    /// The profile that ran.
    pub profile: crate::Profile,
    /// The main run.
    pub main: Experiment,
    /// The embedding-size runs, in the plan's order.
    pub dims: Vec<Experiment>,
    /// The data-size runs.
    pub fractions: Vec<Experiment>,
    /// Semi-hard, batch-hard and random selection.
    pub minings: Vec<Experiment>,
}

/// Notebook 4 with the crate's answers (the `hw9 facenet` command): the main run and every
/// experiment of [`crate::plan::FacenetPlan`].
#[cfg(feature = "reference")]
pub fn run_facenet(profile: crate::Profile, device: Device) -> Result<FacenetReport> {
    use crate::models::facenet::{FaceNet, Mining};
    let plan = crate::plan::FacenetPlan::for_profile(profile);
    let data = plan.data()?;
    let fns = TripletFns::reference();
    let run = |label: &str, cfg: &TripletTrain, dim: i64| {
        let model = plan.model.with_dim(dim);
        experiment(label, &data, &fns, cfg, &plan.eval, device, |p| FaceNet::new(p, &model))
    };
    let main = run("main (semi-hard)", &plan.train, plan.model.embedding_dim)?;
    let mut dims = Vec::new();
    for &d in &plan.dims {
        dims.push(run(&format!("dim {d}"), &plan.experiment, d)?);
    }
    let mut fractions = Vec::new();
    for &f in &plan.fractions {
        let cfg = TripletTrain { fraction: f, ..plan.experiment.clone() };
        fractions.push(run(&format!("{:.0} % of the data", f * 100.0), &cfg, plan.model.embedding_dim)?);
    }
    let mut minings = Vec::new();
    for m in [Mining::SemiHard, Mining::BatchHard, Mining::Random] {
        let cfg = TripletTrain { mining: m, ..plan.experiment.clone() };
        minings.push(run(&m.to_string(), &cfg, plan.model.embedding_dim)?);
    }
    Ok(FacenetReport { profile, main, dims, fractions, minings })
}
