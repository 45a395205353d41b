//! Training an embedding with the triplet loss (notebook 4): batches of `P` classes × `K` images
//! each, as the paper builds them ("around 40 faces per identity per mini-batch"), triplets
//! chosen within each batch, AdamW on the core [`Fit`].
//!
//! The distances, the loss and the selections are passed in as [`TripletFns`]: in the notebook
//! they are the student's own functions; [`TripletFns::reference`] gives the crate's answers.

use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

use super::{Evaluation, Fit, History, OptimConfig, ResumeConfig, Step};
use crate::data::images::{ImageSet, Splits};
use crate::error::{Error, Result};
use crate::models::facenet::{check_distances, random_triplets, Mining, Triplets};

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

/// One triplet-training run's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TripletTrain {
    /// Passes of `steps_per_epoch` batches; the embedding is evaluated after each.
    pub epochs: i64,
    /// Batches per epoch.
    pub steps_per_epoch: usize,
    /// `P`: classes (identities) per batch.
    pub classes_per_batch: i64,
    /// `K`: images per class in a batch.
    pub per_class: i64,
    /// The margin α between positive and negative squared distances.
    pub margin: f64,
    /// How triplets are chosen in a batch.
    pub mining: Mining,
    /// The share of the training set used (the paper's data-size experiment): the first
    /// `fraction · N` images of a fixed shuffle.
    pub fraction: f64,
    /// AdamW and its schedule.
    pub optim: OptimConfig,
    /// Saves the run's state as it trains, to continue after an interrupt or a crash
    /// ([`super::Fit::resumable_in`]); `None`: nothing saved mid-run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<ResumeConfig>,
}

impl TripletTrain {
    /// Images per batch: `P · K`.
    pub fn batch_size(&self) -> i64 {
        self.classes_per_batch * self.per_class
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        if self.per_class < 2 || self.classes_per_batch < 2 || !(self.fraction > 0.0 && self.fraction <= 1.0) {
            return Err(Error::Config(format!(
                "triplet training: expected at least 2 classes per batch, at least 2 images per class (an anchor \
                 needs a positive) and a fraction in (0, 1]; got P = {}, K = {}, fraction = {}",
                self.classes_per_batch, self.per_class, self.fraction
            )));
        }
        Ok(())
    }
}

/// The training images, grouped by class, to draw `P × K` batches from.
#[derive(Debug)]
pub struct PkSampler {
    by_class: Vec<Tensor>,
}

impl PkSampler {
    /// Groups the first `fraction` of a fixed shuffle (seed 0, so every run of the data-size
    /// experiment sees a nested subset) of `set` by label.
    pub fn new(set: &ImageSet, fraction: f64) -> Result<Self> {
        let n = set.labels.size()[0];
        let keep = ((n as f64 * fraction).round() as i64).clamp(1, n.max(1));
        let order = fixed_shuffle(n);
        let kept = order.narrow(0, 0, keep);
        let labels = set.labels.index_select(0, &kept);
        let n_classes = set.classes.len().max(1) as i64;
        let by_class: Vec<Tensor> =
            (0..n_classes).map(|c| kept.masked_select(&labels.eq(c))).filter(|ids| ids.numel() >= 2).collect();
        if by_class.len() < 2 {
            return Err(Error::Input(format!(
                "triplet batches need at least 2 classes with 2 images each; {keep} training images have {}",
                by_class.len()
            )));
        }
        Ok(PkSampler { by_class })
    }

    /// Classes with at least two images.
    pub fn n_classes(&self) -> i64 {
        self.by_class.len() as i64
    }

    /// Images the sampler draws from.
    pub fn n_images(&self) -> i64 {
        self.by_class.iter().map(|t| t.numel() as i64).sum()
    }

    /// One batch's image indices: `p` classes drawn without replacement, `k` images of each drawn
    /// without replacement (with replacement when a class has fewer than `k`), class by class.
    pub fn draw(&self, p: i64, k: i64) -> Tensor {
        let classes = Tensor::randperm(self.n_classes(), (Kind::Int64, Device::Cpu));
        let picks: Vec<Tensor> = Vec::<i64>::try_from(classes.narrow(0, 0, p.min(self.n_classes())))
            .unwrap_or_default()
            .into_iter()
            .map(|c| {
                let ids = &self.by_class[c as usize];
                let m = ids.numel() as i64;
                let at = if m >= k {
                    Tensor::randperm(m, (Kind::Int64, Device::Cpu)).narrow(0, 0, k)
                } else {
                    Tensor::randint(m, [k], (Kind::Int64, Device::Cpu))
                };
                ids.index_select(0, &at)
            })
            .collect();
        Tensor::cat(&picks, 0)
    }
}

/// A permutation of `0..n` that does not depend on libtorch's global seed (so the data-size
/// experiment's subsets stay nested whatever ran before).
fn fixed_shuffle(n: i64) -> Tensor {
    // A fixed pseudo-random key per image.
    let mut keyed: Vec<(u64, i64)> =
        (0..n).map(|i| (super::splitmix64((i as u64).wrapping_add(0x9E37_79B9_7F4A_7C15)), i)).collect();
    keyed.sort_unstable();
    Tensor::from_slice(&keyed.into_iter().map(|(_, i)| i).collect::<Vec<_>>())
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
    let fit = Fit::epochs(title, cfg.epochs, cfg.steps_per_epoch, &cfg.optim).resumable_in(
        cfg.resume.as_ref(),
        vs,
        &TripletTrain { resume: None, ..cfg.clone() },
    )?;
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

    fn set(n: i64, classes: i64) -> ImageSet {
        ImageSet {
            images: Tensor::randint(255, [n, 1, 12, 12], (Kind::Uint8, Device::Cpu)),
            labels: Tensor::arange(n, (Kind::Int64, Device::Cpu)).remainder(classes),
            classes: (0..classes).map(|c| c.to_string()).collect(),
        }
    }

    #[test]
    fn pk_batches_hold_p_classes_of_k_images() {
        tch::manual_seed(0);
        let s = set(200, 10);
        let sampler = PkSampler::new(&s, 1.0).unwrap();
        let ids = sampler.draw(4, 6);
        let labels = Vec::<i64>::try_from(s.labels.index_select(0, &ids)).unwrap();
        assert_eq!(labels.len(), 24);
        for chunk in labels.chunks(6) {
            assert!(chunk.iter().all(|&l| l == chunk[0]), "{labels:?}");
        }
        let distinct: std::collections::BTreeSet<_> = labels.iter().collect();
        assert_eq!(distinct.len(), 4);
    }

    #[test]
    fn data_fractions_are_nested_and_sized() {
        let s = set(1000, 10);
        let small = PkSampler::new(&s, 0.1).unwrap();
        let big = PkSampler::new(&s, 0.3).unwrap();
        assert_eq!((small.n_images(), big.n_images()), (100, 300));
        let members = |p: &PkSampler| {
            p.by_class.iter().flat_map(|t| Vec::<i64>::try_from(t).unwrap()).collect::<std::collections::BTreeSet<_>>()
        };
        assert!(members(&small).is_subset(&members(&big)));
    }

    #[test]
    fn one_class_is_an_error_that_says_what_is_needed() {
        let s = set(20, 1);
        let err = PkSampler::new(&s, 1.0).unwrap_err().to_string();
        assert!(err.contains("at least 2 classes with 2 images each"), "{err}");
    }

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
