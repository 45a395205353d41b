//! Training an embedding with the triplet loss (notebook 4): batches of `P` classes × `K` images
//! each ([`PkSampler`]), as the paper builds them ("around 40 faces per identity per mini-batch"),
//! triplets chosen within each batch, AdamW on the core [`Fit`].
//!
//! The distances, the loss and the selections are passed in as [`TripletFns`]: in the notebook
//! they are the student's own functions; [`TripletFns::reference`] gives the crate's answers. The
//! run's settings are [`TripletTrain`], which notebook 4's plan holds.

use tch::nn::{self, ModuleT};
use tch::{Kind, Tensor};

use crate::data::images::{PkSampler, Splits};
use crate::error::{Error, Result};
use crate::models::facenet::{check_distances, random_triplets, Mining, Triplets};
use crate::plan::TripletTrain;
use crate::train::{Evaluation, Fit, History, Precision, Step};

/// The functions a triplet step calls: the notebook's TODOs (or the crate's answers).
#[derive(Debug, Clone, Copy)]
pub struct TripletFns {
    /// Embeddings `(B, D)` → squared distances `(B, B)`.
    pub distances: fn(&Tensor) -> Tensor,
    /// Anchors, positives, negatives `(M, D)` and the margin → the mean triplet loss.
    pub loss: fn(&Tensor, &Tensor, &Tensor, f64) -> Tensor,
    /// Distances `(B, B)` and labels `(B,)` → semi-hard triplets.
    pub semi_hard: fn(&Tensor, &Tensor) -> Triplets,
    /// Distances `(B, B)` and labels `(B,)` → batch-hard triplets.
    pub batch_hard: fn(&Tensor, &Tensor) -> Triplets,
}

impl TripletFns {
    /// The crate's answers to the notebook's TODOs.
    #[cfg(feature = "reference")]
    pub fn reference() -> Self {
        use crate::models::facenet as f;
        TripletFns {
            distances: f::pairwise_squared_distances,
            loss: f::triplet_loss,
            semi_hard: f::semi_hard_triplets,
            batch_hard: f::batch_hard_triplets,
        }
    }

    /// The selection `mining` names.
    pub fn selection(&self, mining: Mining) -> fn(&Tensor, &Tensor) -> Triplets {
        match mining {
            Mining::SemiHard => self.semi_hard,
            Mining::BatchHard => self.batch_hard,
            Mining::Random => random_triplets,
        }
    }
}

/// Checks what the triplet functions returned for a batch of `b`.
fn check_triplets(triplets: &Triplets, b: i64, mining: Mining) -> Result<i64> {
    let (a, p, n) = triplets;
    let m = a.size().first().copied().unwrap_or(0);
    for (what, t) in [("anchors", a), ("positives", p), ("negatives", n)] {
        if t.dim() != 1 || t.size()[0] != m {
            return Err(Error::Shape { what: format!("{mining} triplets: {what}"), expected: vec![m], got: t.size() });
        }
        if t.kind() != Kind::Int64 {
            return Err(Error::Kind {
                what: format!("{mining} triplets: {what}"),
                expected: Kind::Int64,
                got: t.kind(),
            });
        }
    }
    if m == 0 {
        return Err(Error::Input(format!("{mining} selection chose no triplet in a batch of {b}")));
    }
    let all = Tensor::cat(&[a, p, n], 0);
    let (lo, hi) = (all.min().int64_value(&[]), all.max().int64_value(&[]));
    if lo < 0 || hi >= b {
        return Err(Error::Input(format!(
            "{mining} triplets: expected indices into the batch (0 to {}), got {lo} to {hi}",
            b - 1
        )));
    }
    Ok(m)
}

/// The loss of one batch: embed, distances, select (on detached distances), triplet loss.
pub fn triplet_step<M: ModuleT>(
    model: &M,
    fns: &TripletFns,
    cfg: &TripletTrain,
    images: &Tensor,
    labels: &Tensor,
) -> Result<Step> {
    let b = labels.size()[0];
    let emb = model.forward_t(images, true);
    if emb.dim() != 2 || emb.size()[0] != b {
        return Err(Error::Shape { what: "embeddings".into(), expected: vec![b, -1], got: emb.size() });
    }
    let d = (fns.distances)(&emb);
    check_distances(&d, labels)?;
    let triplets = fns.selection(cfg.mining)(&d.detach(), labels);
    let m = check_triplets(&triplets, b, cfg.mining)?;
    let (a, p, n) = &triplets;
    let loss = (fns.loss)(&emb.index_select(0, a), &emb.index_select(0, p), &emb.index_select(0, n), cfg.margin);
    if loss.numel() != 1 {
        return Err(Error::Shape { what: "triplet loss".into(), expected: vec![], got: loss.size() });
    }
    Ok(Step { loss: loss.reshape([] as [i64; 0]), weight: m as f64, correct: None })
}

/// Trains `model` (images → embeddings) with the triplet loss on `P × K` batches of the training
/// set; after each epoch `evaluate` gives the accuracy shown on the progress bar (for example the
/// nearest-neighbour accuracy of [`crate::tasks::verification`]).
pub fn train_triplets<M: ModuleT>(
    model: &M,
    vs: &nn::VarStore,
    data: &Splits,
    fns: &TripletFns,
    cfg: &TripletTrain,
    title: &str,
    mut evaluate: impl FnMut() -> Result<f64>,
) -> Result<History> {
    cfg.validate()?;
    let sampler = PkSampler::new(&data.train, cfg.fraction)?;
    let device = vs.device();
    let fit = Fit::epochs(title, cfg.epochs, cfg.steps_per_epoch, &cfg.optim)
        .precision(Precision::requested(Precision::Fp32)?)
        .resumable_in(cfg.resume.as_ref(), vs, &TripletTrain { resume: None, ..cfg.clone() })?;
    let batches = |_epoch| {
        (0..cfg.steps_per_epoch).map(|_| {
            let ids = sampler.draw(cfg.classes_per_batch, cfg.per_class);
            (
                data.train.images.index_select(0, &ids).to_device(device),
                data.train.labels.index_select(0, &ids).to_device(device),
            )
        })
    };
    let step = |(x, y): (Tensor, Tensor)| triplet_step(model, fns, cfg, &data.normalize(&x), &y);
    fit.run(vs, batches, step, || Ok(Evaluation { loss: None, accuracy: Some(evaluate()?) }))
}

#[cfg(all(test, feature = "reference"))]
mod tests {
    use super::*;
    use crate::models::facenet::{FaceNet, FacenetConfig};
    use crate::train::OptimConfig;
    use tch::Device;

    #[test]
    fn a_selection_that_returns_too_few_negatives_is_a_shape_error() {
        fn broken(d: &Tensor, l: &Tensor) -> Triplets {
            let (a, p, n) = crate::models::facenet::semi_hard_triplets(d, l);
            let m = n.size()[0];
            (a, p, n.narrow(0, 0, m - 1))
        }
        let vs = nn::VarStore::new(Device::Cpu);
        let model = FaceNet::new(&vs.root(), &FacenetConfig::tiny()).unwrap();
        let fns = TripletFns { semi_hard: broken, ..TripletFns::reference() };
        let cfg = TripletTrain {
            epochs: 1,
            steps_per_epoch: 1,
            classes_per_batch: 2,
            per_class: 3,
            margin: 0.2,
            mining: Mining::SemiHard,
            fraction: 1.0,
            optim: OptimConfig::adamw(1e-3, (0.9, 0.999), 0.0),
            resume: None,
        };
        let x = Tensor::randn([6, 1, 12, 12], (Kind::Float, Device::Cpu));
        let y = Tensor::from_slice(&[0i64, 0, 0, 1, 1, 1]);
        let err = triplet_step(&model, &fns, &cfg, &x, &y).unwrap_err().to_string();
        assert!(err.contains("semi-hard triplets: negatives: expected shape (12,), got (11,)"), "{err}");
    }
}
