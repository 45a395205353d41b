//! The reference answers of notebook 4's TODO cells: the L2-normalised embedding head, pairwise
//! squared distances, the triplet loss and the semi-hard and batch-hard selections. Compiled with
//! the `reference` feature; the student handout does not contain this file. Re-exported from
//! [`crate::models::facenet`].
//!
//! They have the notebook's signatures (tensors in, tensors out); the trainer checks their
//! outputs' shapes ([`crate::tasks::triplet`]).

use tch::nn::{self, Module, ModuleT};
use tch::{Kind, Tensor};

use crate::error::Result;
use crate::models::facenet::{positive_pairs, ConvTrunk, FacenetConfig, Triplets};

/// Scales each row to unit length: `x / max(‖x‖₂, 1e-12)`, as PyTorch's `F.normalize`.
///
/// # Shapes
/// `x: (B, D)` → `(B, D)`.
pub fn l2_normalize(x: &Tensor) -> Tensor {
    x / x.norm_scalaropt_dim(2, [-1].as_slice(), true).clamp_min(1e-12)
}

/// The embedding network: the trunk, a linear layer to the embedding size, L2 normalisation (the
/// embedding lives on the unit hypersphere, as in the paper's figure 2).
#[derive(Debug)]
pub struct FaceNet {
    /// The convolutional trunk (`trunk.*`).
    pub trunk: ConvTrunk,
    /// The linear layer to the embedding (`head.*`).
    pub head: nn::Linear,
}

impl FaceNet {
    /// The network of `cfg` under `vs`.
    pub fn new(vs: &nn::Path, cfg: &FacenetConfig) -> Result<Self> {
        Ok(FaceNet {
            trunk: ConvTrunk::new(&(vs / "trunk"), cfg)?,
            head: nn::linear(vs / "head", cfg.trunk_dim(), cfg.embedding_dim, Default::default()),
        })
    }
}

impl ModuleT for FaceNet {
    /// # Shapes
    /// `images: (B, C, H, W)` → embeddings `(B, embedding_dim)`, each of unit length.
    fn forward_t(&self, images: &Tensor, train: bool) -> Tensor {
        l2_normalize(&self.head.forward(&self.trunk.forward_t(images, train)))
    }
}

/// Squared Euclidean distances between every two rows: `‖a‖² + ‖b‖² − 2 a·b`, clamped at 0
/// (rounding can make it slightly negative), from one matrix product.
///
/// # Shapes
/// `embeddings: (B, D)` → `(B, B)`.
pub fn pairwise_squared_distances(embeddings: &Tensor) -> Tensor {
    let sq = embeddings.square().sum_dim_intlist([-1].as_slice(), false, Kind::Float); // (B,)
    let dots = embeddings.matmul(&embeddings.transpose(0, 1)); // (B, D) x (D, B) -> (B, B)
    (sq.unsqueeze(1) + sq.unsqueeze(0) - dots * 2.0).clamp_min(0.0)
}

/// The triplet loss of the paper's equation 3, averaged over the triplets:
/// `mean(max(‖a − p‖² − ‖a − n‖² + α, 0))`.
///
/// # Shapes
/// `anchor, positive, negative: (M, D)` → a scalar.
pub fn triplet_loss(anchor: &Tensor, positive: &Tensor, negative: &Tensor, margin: f64) -> Tensor {
    let d_ap = (anchor - positive).square().sum_dim_intlist([-1].as_slice(), false, Kind::Float); // (M,)
    let d_an = (anchor - negative).square().sum_dim_intlist([-1].as_slice(), false, Kind::Float); // (M,)
    (d_ap - d_an + margin).relu().mean(Kind::Float)
}

/// The paper's online selection (section 3.2): every anchor-positive pair of the batch, each with
/// its **semi-hard** negative — the closest negative that is farther from the anchor than the
/// positive (`d(a, p) < d(a, n)`; if it is within the margin it still gives a loss). A pair with no
/// such negative takes its farthest negative (as TensorFlow Addons' `triplet_semihard_loss`).
///
/// # Shapes
/// `distances: (B, B)`, `labels: (B,)` int64 → triplets `(M,)` each, pairs in row-major order.
pub fn semi_hard_triplets(distances: &Tensor, labels: &Tensor) -> Triplets {
    let (a, p) = positive_pairs(labels);
    let d_ap = distances.index(&[Some(&a), Some(&p)]).unsqueeze(1); // (M, 1)
    let d_an = distances.index_select(0, &a); // (M, B)
    let negative = labels.index_select(0, &a).unsqueeze(1).ne_tensor(&labels.unsqueeze(0)); // (M, B)
    let farther = negative.logical_and(&d_an.gt_tensor(&d_ap)); // (M, B)
    let semi_hard = d_an.masked_fill(&farther.logical_not(), f64::INFINITY).argmin(1, false); // (M,)
    let farthest = d_an.masked_fill(&negative.logical_not(), f64::NEG_INFINITY).argmax(1, false); // (M,)
    let any = farther.any_dim(1, false); // (M,)
    (a, p, semi_hard.where_self(&any, &farthest))
}

/// Batch-hard selection (Hermans, Beyer and Leibe, 2017): each anchor with its farthest positive
/// and its closest negative. Anchors without a positive or a negative in the batch are left out.
///
/// # Shapes
/// `distances: (B, B)`, `labels: (B,)` int64 → triplets `(M,)` each, anchors ascending.
pub fn batch_hard_triplets(distances: &Tensor, labels: &Tensor) -> Triplets {
    let b = labels.size()[0];
    let same = labels.unsqueeze(1).eq_tensor(&labels.unsqueeze(0)); // (B, B)
    let positive = same.logical_and(&Tensor::eye(b, (Kind::Bool, labels.device())).logical_not());
    let negative = same.logical_not();
    let hardest_p = distances.masked_fill(&positive.logical_not(), f64::NEG_INFINITY).argmax(1, false); // (B,)
    let hardest_n = distances.masked_fill(&negative.logical_not(), f64::INFINITY).argmin(1, false); // (B,)
    let keep = positive.any_dim(1, false).logical_and(&negative.any_dim(1, false)).nonzero().squeeze_dim(1);
    (keep.shallow_clone(), hardest_p.index_select(0, &keep), hardest_n.index_select(0, &keep))
}
