//! Evaluating an embedding as FaceNet does (its section 4 and 5): verification on held-out pairs
//! (the validation rate VAL at a false accept rate FAR, and the ROC), nearest-neighbour
//! identification, clustering (k-means purity), a 2-D projection, and the hardest mistakes.
//!
//! Distances are squared Euclidean, as the paper's; a pair is "same" when its two images have the
//! same label (a class stands in for an identity).
//!
//! k-means and PCA are written here on libtorch (a few lines each) rather than taken from
//! `linfa`: they run on the tensors the notebook already has, and `linfa`'s `ndarray` dependency
//! tree would add to the kernel's first build of hw9 in every student's notebook.
//!
//! (Over 400 lines: about 65 are its unit tests, kept beside the measures they check.)

use serde::{Deserialize, Serialize};
use tch::nn::ModuleT;
use tch::{Device, Kind, Tensor};

use crate::data::images::{ImageSet, Splits};
use crate::error::{Error, Result};
use crate::plan::EvalSizes;
use crate::visuals::{image_grid, Figure, LineChart};

/// Embeds the first `n` images of `set` (all with `None`) in batches, without gradients, in
/// evaluation mode: `(embeddings (N, D) float on the CPU, labels (N,))`.
pub fn embed<M: ModuleT>(
    model: &M,
    data: &Splits,
    set: &ImageSet,
    n: Option<i64>,
    device: Device,
) -> Result<(Tensor, Tensor)> {
    let total = set.images.size()[0];
    let n = n.unwrap_or(total).clamp(0, total);
    if n < 2 {
        return Err(Error::Input(format!("embed: expected at least 2 images, got {n}")));
    }
    let chunks: Vec<Tensor> = tch::no_grad(|| {
        (0..n)
            .step_by(500)
            .map(|s| {
                let x = data.normalize(&set.images.narrow(0, s, 500.min(n - s)).to_device(device));
                model.forward_t(&x, false).to_device(Device::Cpu).to_kind(Kind::Float)
            })
            .collect()
    });
    let emb = Tensor::cat(&chunks, 0);
    if emb.dim() != 2 || emb.size()[0] != n {
        return Err(Error::Shape { what: "embeddings".into(), expected: vec![n, -1], got: emb.size() });
    }
    Ok((emb, set.labels.narrow(0, 0, n).to_device(Device::Cpu)))
}

/// Squared Euclidean distances between the rows of `x (N, D)` and `y (M, D)`: `(N, M)`.
/// Crate-private: it is the answer to notebook 4's `pairwise_squared_distances` TODO.
pub(crate) fn squared_distances(x: &Tensor, y: &Tensor) -> Tensor {
    let xx = x.square().sum_dim_intlist([-1].as_slice(), true, Kind::Float); // (N, 1)
    let yy = y.square().sum_dim_intlist([-1].as_slice(), true, Kind::Float).transpose(0, 1); // (1, M)
    (xx + yy - x.matmul(&y.transpose(0, 1)) * 2.0).clamp_min(0.0) // (N, M)
}

/// Verification on every pair of a held-out set: accept a pair as "same" when its distance is at
/// most a threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    /// The false accept rate asked for.
    pub target_far: f64,
    /// The largest threshold whose FAR is at most `target_far`.
    pub threshold: f64,
    /// VAL at that threshold: the share of same pairs accepted (the paper's VAL(d)).
    pub val: f64,
    /// FAR at that threshold: the share of different pairs accepted.
    pub far: f64,
    /// The ROC: FAR and VAL at thresholds spread over FAR from 1e-5 to 1.
    pub roc_far: Vec<f64>,
    /// VAL at each of `roc_far`.
    pub roc_val: Vec<f64>,
    /// Area under the ROC: the chance that a same pair is closer than a different pair.
    pub auc: f64,
    /// Same pairs (`P_same`).
    pub same_pairs: i64,
    /// Different pairs (`P_diff`).
    pub different_pairs: i64,
}

/// Pairs `i < j` of `n` items with their distance (from the `(n, n)` matrix `distances`) and
/// whether their labels agree, sorted by distance: `(i, j, d, same)`, each `(n(n−1)/2,)`.
fn sorted_pairs(distances: &Tensor, labels: &Tensor) -> (Tensor, Tensor, Tensor, Tensor) {
    let n = distances.size()[0];
    let ij = Tensor::triu_indices(n, n, 1, (Kind::Int64, Device::Cpu)); // (2, P)
    let (i, j) = (ij.get(0), ij.get(1));
    let d = distances.index(&[Some(&i), Some(&j)]);
    let same = labels.index_select(0, &i).eq_tensor(&labels.index_select(0, &j));
    let order = d.argsort(0, false);
    (i.index_select(0, &order), j.index_select(0, &order), d.index_select(0, &order), same.index_select(0, &order))
}

/// VAL at `target_far` and the ROC over every pair of `emb (N, D)` with `labels (N,)`.
pub fn verification(emb: &Tensor, labels: &Tensor, target_far: f64) -> Result<Verification> {
    let n = emb.size()[0];
    if emb.dim() != 2 || labels.size() != [n] || n < 2 {
        return Err(Error::Shape {
            what: "verification: embeddings and labels".into(),
            expected: vec![n, -1],
            got: emb.size(),
        });
    }
    let (_, _, d, same) = sorted_pairs(&squared_distances(emb, emb), labels);
    let same_f = same.to_kind(Kind::Double);
    let tp = same_f.cumsum(0, Kind::Double); // same pairs accepted when the first k+1 pairs are
    let k = Tensor::arange_start(1, d.size()[0] + 1, (Kind::Double, Device::Cpu));
    let fp = &k - &tp;
    let n_same = same_f.sum(Kind::Double).double_value(&[]);
    let n_diff = d.size()[0] as f64 - n_same;
    if n_same < 1.0 || n_diff < 1.0 {
        return Err(Error::Input(format!(
            "verification needs same and different pairs; {n} images give {n_same} same and {n_diff} different"
        )));
    }
    let val_all = Vec::<f64>::try_from(&tp / n_same)?;
    let far_all = Vec::<f64>::try_from(&fp / n_diff)?;
    let d_all = Vec::<f64>::try_from(d.to_kind(Kind::Double))?;
    // The last accepted pair whose FAR stays within the target (ties in distance accepted together).
    let mut at = None;
    for (idx, &f) in far_all.iter().enumerate() {
        if f > target_far {
            break;
        }
        if idx + 1 == d_all.len() || d_all[idx + 1] > d_all[idx] {
            at = Some(idx);
        }
    }
    let (threshold, val, far) = match at {
        Some(i) => (d_all[i], val_all[i], far_all[i]),
        None => (0.0, 0.0, 0.0),
    };
    let mut roc_far = Vec::new();
    let mut roc_val = Vec::new();
    for e in 0..=100 {
        let target = 10f64.powf(-5.0 + 5.0 * e as f64 / 100.0);
        let i = far_all.partition_point(|&f| f <= target);
        if i > 0 {
            roc_far.push(far_all[i - 1].max(1e-6));
            roc_val.push(val_all[i - 1]);
        }
    }
    // AUC = P(a same pair is closer than a different one): at each different pair, the share of
    // same pairs already accepted.
    let auc = (tp * same_f.neg().g_add_scalar(1.0)).sum(Kind::Double).double_value(&[]) / (n_same * n_diff);
    Ok(Verification {
        target_far,
        threshold,
        val,
        far,
        roc_far,
        roc_val,
        auc,
        same_pairs: n_same as i64,
        different_pairs: n_diff as i64,
    })
}

/// The ROC curves of several runs in one chart: VAL against log10 FAR.
pub fn roc_chart(title: &str, runs: &[(&str, &Verification)]) -> LineChart {
    runs.iter().fold(
        LineChart::new(title).x_label("log10 FAR (different pairs accepted)").y_label("VAL (same pairs accepted)"),
        |chart, (name, v)| {
            let xs: Vec<f64> = v.roc_far.iter().map(|f| f.log10()).collect();
            chart.series_xy(format!("{name} (VAL {:.3} at FAR {:.0e})", v.val, v.target_far), &xs, &v.roc_val)
        },
    )
}

/// Identification: each query takes the label of its nearest gallery embedding; the share right.
pub fn nearest_neighbour_accuracy(
    gallery: &Tensor,
    gallery_labels: &Tensor,
    query: &Tensor,
    query_labels: &Tensor,
) -> f64 {
    let q = query.size()[0];
    let mut correct = 0i64;
    for s in (0..q).step_by(1000) {
        let len = 1000.min(q - s);
        let nearest = squared_distances(&query.narrow(0, s, len), gallery).argmin(1, false); // (len,)
        let predicted = gallery_labels.index_select(0, &nearest);
        correct += predicted.eq_tensor(&query_labels.narrow(0, s, len)).sum(Kind::Int64).int64_value(&[]);
    }
    correct as f64 / q.max(1) as f64
}

/// k-means (Lloyd's iterations from a k-means++ start), the best of `restarts` runs by inertia:
/// the cluster of each row of `x (N, D)`, `(N,)` int64.
///
/// The starts are drawn from a generator seeded here, not from wherever the caller's code left
/// libtorch's: the same embedding gets the same clusters whatever ran before (a student's code
/// that draws one random number more must not move a graded purity). The global generator goes
/// on from a seed drawn from it first, so the caller's later draws stay random.
pub fn kmeans(x: &Tensor, k: i64, restarts: usize, iterations: usize) -> Result<Tensor> {
    let n = x.size()[0];
    if k < 1 || n < k {
        return Err(Error::Input(format!("k-means: expected at least k = {k} points, got {n}")));
    }
    let next_seed = Tensor::randint(i64::MAX, [1], (Kind::Int64, Device::Cpu)).int64_value(&[0]);
    tch::manual_seed(KMEANS_SEED);
    let result = kmeans_seeded(x, k, restarts, iterations);
    tch::manual_seed(next_seed);
    result
}

/// The seed of [`kmeans`]'s starts.
const KMEANS_SEED: i64 = 0x6b6d_6561_6e73; // "kmeans"

fn kmeans_seeded(x: &Tensor, k: i64, restarts: usize, iterations: usize) -> Result<Tensor> {
    let n = x.size()[0];
    let mut best: Option<(f64, Tensor)> = None;
    for _ in 0..restarts.max(1) {
        // k-means++: each next centre drawn with probability proportional to the squared distance.
        let first = Tensor::randint(n, [1], (Kind::Int64, Device::Cpu));
        let mut centres = x.index_select(0, &first);
        for _ in 1..k {
            let d = squared_distances(x, &centres).min_dim(1, false).0; // (N,)
            let next = d.clamp_min(1e-12).multinomial(1, false);
            centres = Tensor::cat(&[centres, x.index_select(0, &next)], 0);
        }
        let mut assign = squared_distances(x, &centres).argmin(1, false);
        for _ in 0..iterations {
            let onehot = assign.one_hot(k).to_kind(Kind::Float); // (N, k)
            let counts = onehot.sum_dim_intlist([0].as_slice(), false, Kind::Float).unsqueeze(1); // (k, 1)
            let sums = onehot.transpose(0, 1).matmul(x); // (k, N) x (N, D) -> (k, D)
                                                         // An empty cluster keeps its centre.
            centres = (sums / counts.clamp_min(1.0)).where_self(&counts.gt(0.0), &centres);
            let next = squared_distances(x, &centres).argmin(1, false);
            let stable = next.eq_tensor(&assign).all().int64_value(&[]) == 1;
            assign = next;
            if stable {
                break;
            }
        }
        let inertia = squared_distances(x, &centres).min_dim(1, false).0.sum(Kind::Double).double_value(&[]);
        if best.as_ref().is_none_or(|(b, _)| inertia < *b) {
            best = Some((inertia, assign));
        }
    }
    best.map(|(_, a)| a).ok_or_else(|| Error::Input("k-means ran no restart".into()))
}

/// Cluster purity: each cluster counts its most common label; the share of points counted.
pub fn purity(clusters: &Tensor, labels: &Tensor) -> f64 {
    let n = labels.size()[0];
    let k = clusters.max().int64_value(&[]) + 1;
    let c = labels.max().int64_value(&[]) + 1;
    let counts = Tensor::zeros([k * c], (Kind::Int64, Device::Cpu)).index_add(
        0,
        &(clusters * c + labels),
        &Tensor::ones([n], (Kind::Int64, Device::Cpu)),
    ); // (k·c,)
    let best = counts.reshape([k, c]).amax([1].as_slice(), false).sum(Kind::Int64).int64_value(&[]);
    best as f64 / n.max(1) as f64
}

/// The first two principal components of `x (N, D)`: `(N, 2)` coordinates (`(N, 1)` when `D = 1`).
pub fn pca_2d(x: &Tensor) -> Tensor {
    let centred = x - x.mean_dim([0].as_slice(), true, Kind::Float);
    let (_, _, v) = centred.to_kind(Kind::Double).svd(true, true); // v: (D, D), columns by singular value
    let d = v.size()[1].min(2);
    centred.matmul(&v.narrow(1, 0, d).to_kind(Kind::Float)) // (N, D) x (D, 2) -> (N, 2)
}

/// A pair of held-out images and their distance.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Pair {
    /// First image (index into the evaluated set).
    pub i: i64,
    /// Second image.
    pub j: i64,
    /// Their squared distance.
    pub distance: f64,
}

/// The hardest mistakes: the `k` same pairs farthest apart (false rejects at any threshold below
/// them) and the `k` different pairs closest together (false accepts), by the distances your
/// `pairwise_squared_distances` gives (notebook 4's TODO: the crate does not hold its answer).
///
/// # Shapes
/// `emb: (N, D)`, `labels: (N,)`; `distances` maps `(N, D)` to `(N, N)`.
pub fn hardest_pairs(
    emb: &Tensor,
    labels: &Tensor,
    k: usize,
    distances: impl Fn(&Tensor) -> Tensor,
) -> Result<(Vec<Pair>, Vec<Pair>)> {
    let n = emb.size().first().copied().unwrap_or(0);
    if emb.dim() != 2 || labels.size() != [n] {
        return Err(Error::Shape {
            what: "hardest_pairs: embeddings (N, D) and labels (N,)".into(),
            expected: vec![n, -1],
            got: emb.size(),
        });
    }
    let d = distances(emb);
    if d.size() != [n, n] {
        return Err(Error::Shape {
            what: "hardest_pairs: the distances your function gives".into(),
            expected: vec![n, n],
            got: d.size(),
        });
    }
    let (i, j, d, same) = sorted_pairs(&d, labels);
    let (i, j, d, same) = (
        Vec::<i64>::try_from(&i)?,
        Vec::<i64>::try_from(&j)?,
        Vec::<f64>::try_from(d.to_kind(Kind::Double))?,
        Vec::<bool>::try_from(&same)?,
    );
    let pair = |x: usize| Pair { i: i[x], j: j[x], distance: d[x] };
    let rejects = (0..d.len()).rev().filter(|&x| same[x]).take(k).map(pair).collect();
    let accepts = (0..d.len()).filter(|&x| !same[x]).take(k).map(pair).collect();
    Ok((rejects, accepts))
}

/// Image pairs side by side (two images per pair, `per_row` pairs a row), each labelled with its
/// class and the pair's distance.
pub fn pairs_figure(set: &ImageSet, pairs: &[Pair], per_row: usize) -> Result<Figure> {
    if pairs.is_empty() {
        return Err(Error::Input("pairs_figure: expected at least one pair, got none".into()));
    }
    let ids: Vec<i64> = pairs.iter().flat_map(|p| [p.i, p.j]).collect();
    let images = set.images.index_select(0, &Tensor::from_slice(&ids)).to_kind(Kind::Float) / 255.0;
    let labels = Vec::<i64>::try_from(set.labels.index_select(0, &Tensor::from_slice(&ids)))?;
    let name = |l: i64| set.classes.get(l as usize).cloned().unwrap_or_else(|| l.to_string());
    let captions: Vec<String> = pairs
        .iter()
        .zip(labels.chunks(2))
        .flat_map(|(p, l)| [format!("{} d={:.2}", name(l[0]), p.distance), name(l[1])])
        .collect();
    image_grid(&images, 2 * per_row.max(1), &captions, 3)
}

/// What [`evaluate_embedding`] measures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingReport {
    /// Verification over every pair of the held-out images.
    pub verification: Verification,
    /// Nearest-neighbour identification accuracy (test queries, training gallery).
    pub nn_accuracy: f64,
    /// k-means purity of the held-out embeddings (k = number of classes).
    pub purity: f64,
    /// Held-out images evaluated.
    pub test_images: i64,
    /// Gallery images.
    pub gallery_images: i64,
}

/// Embeds held-out and gallery images with `model` and measures verification, identification and
/// clustering. Returns the report and the held-out embeddings with their labels.
pub fn evaluate_embedding<M: ModuleT>(
    model: &M,
    data: &Splits,
    sizes: &EvalSizes,
    device: Device,
) -> Result<(EmbeddingReport, Tensor, Tensor)> {
    let (emb, labels) = embed(model, data, &data.test, Some(sizes.test), device)?;
    let (gallery, gallery_labels) = embed(model, data, &data.train, Some(sizes.gallery), device)?;
    let verification = verification(&emb, &labels, sizes.target_far)?;
    let nn_accuracy = nearest_neighbour_accuracy(&gallery, &gallery_labels, &emb, &labels);
    let k = data.test.classes.len().max(1) as i64;
    let purity = purity(&kmeans(&emb, k, sizes.kmeans_restarts, 50)?, &labels);
    let report = EmbeddingReport {
        verification,
        nn_accuracy,
        purity,
        test_images: emb.size()[0],
        gallery_images: gallery.size()[0],
    };
    Ok((report, emb, labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blobs(per: i64, classes: i64, spread: f64) -> (Tensor, Tensor) {
        tch::manual_seed(0);
        let centres = Tensor::randn([classes, 8], (Kind::Float, Device::Cpu)) * 3.0;
        let labels = Tensor::arange(classes, (Kind::Int64, Device::Cpu)).repeat_interleave_self_int(per, 0, None);
        let x =
            centres.index_select(0, &labels) + Tensor::randn([classes * per, 8], (Kind::Float, Device::Cpu)) * spread;
        (x, labels)
    }

    #[test]
    fn separated_blobs_verify_identify_and_cluster_perfectly() {
        let (x, y) = blobs(30, 4, 0.05);
        let v = verification(&x, &y, 1e-3).unwrap();
        assert_eq!((v.same_pairs, v.different_pairs), (4 * 435, 120 * 119 / 2 - 4 * 435));
        assert!((v.val - 1.0).abs() < 1e-12 && v.far <= 1e-3 && (v.auc - 1.0).abs() < 1e-12, "{v:?}");
        assert_eq!(nearest_neighbour_accuracy(&x, &y, &x.shallow_clone(), &y), 1.0);
        assert_eq!(purity(&kmeans(&x, 4, 3, 50).unwrap(), &y), 1.0);
    }

    #[test]
    fn random_embeddings_give_chance_auc_and_low_val() {
        tch::manual_seed(1);
        let x = Tensor::randn([400, 16], (Kind::Float, Device::Cpu));
        let y = Tensor::randint(4, [400], (Kind::Int64, Device::Cpu));
        let v = verification(&x, &y, 1e-3).unwrap();
        assert!((v.auc - 0.5).abs() < 0.03, "{}", v.auc);
        assert!(v.val < 0.01 && v.far <= 1e-3, "{v:?}");
    }

    #[test]
    fn val_and_far_match_a_count_by_hand() {
        // 1-D points: labels 0 0 1 1 at 0, 1, 3, 3.5. Pairs by distance: (2,3) 0.25 same,
        // (0,1) 1 same, (1,2) 4 diff, (1,3) 6.25 diff, (0,2) 9 diff, (0,3) 12.25 diff.
        let x = Tensor::from_slice(&[0.0f32, 1.0, 3.0, 3.5]).unsqueeze(1);
        let y = Tensor::from_slice(&[0i64, 0, 1, 1]);
        let v = verification(&x, &y, 0.25).unwrap();
        assert_eq!((v.same_pairs, v.different_pairs), (2, 4));
        assert_eq!((v.val, v.far, v.threshold), (1.0, 0.25, 4.0));
        assert_eq!(verification(&x, &y, 0.0).unwrap().threshold, 1.0);
        let (rejects, accepts) = hardest_pairs(&x, &y, 1, |e| squared_distances(e, e)).unwrap();
        assert_eq!((rejects[0].i, rejects[0].j, accepts[0].i, accepts[0].j), (0, 1, 1, 2));
    }

    #[test]
    fn purity_counts_the_majority_label_per_cluster() {
        let clusters = Tensor::from_slice(&[0i64, 0, 0, 1, 1, 1]);
        let labels = Tensor::from_slice(&[2i64, 2, 1, 0, 0, 0]);
        assert!((purity(&clusters, &labels) - 5.0 / 6.0).abs() < 1e-12);
    }

    #[test]
    fn pca_finds_the_direction_of_largest_variance() {
        tch::manual_seed(2);
        let t = Tensor::randn([200, 1], (Kind::Float, Device::Cpu)) * 10.0;
        let x = Tensor::cat(&[&t, &(Tensor::randn([200, 2], (Kind::Float, Device::Cpu)) * 0.1)], 1);
        let p = pca_2d(&x);
        assert_eq!(p.size(), vec![200, 2]);
        let first = p.select(1, 0).abs().mean(Kind::Float).double_value(&[]);
        assert!(first > 5.0, "{first}");
    }
}
