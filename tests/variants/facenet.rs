// Notebook 4's TODOs written otherwise: the summed (a−b)² distances, the loss from norms,
// semi-hard negatives by sorting each row, batch-hard by adding large constants. Included by
// tests/checks_across_cpus.rs (checked against PyTorch on every kernel selection) and by
// examples/threshold_spread.rs (trained, to measure the thresholds' margins). Needs in scope:
// `tch::{Device, Kind, Tensor}` and `hw9::models::facenet::{positive_pairs, Triplets}`.

fn distances_v(e: &Tensor) -> Tensor {
    (e.unsqueeze(1) - e.unsqueeze(0)).square().sum_dim_intlist(-1, false, Kind::Float)
}

fn loss_v(a: &Tensor, p: &Tensor, n: &Tensor, margin: f64) -> Tensor {
    let d = |x: &Tensor| x.norm_scalaropt_dim(2, [-1].as_slice(), false).square();
    let per = (d(&(a - p)) - d(&(a - n)) + margin).clamp_min(0.0);
    per.sum(Kind::Float) / per.numel().max(1) as f64
}

/// Semi-hard negatives by sorting each anchor's row: the first negative farther than the
/// positive, else the farthest negative.
fn semi_hard_v(distances: &Tensor, labels: &Tensor) -> Triplets {
    let (a, p) = positive_pairs(labels);
    let b = labels.size()[0];
    let (sorted, order) = distances.index_select(0, &a).sort_stable(true, 1, false); // (M, B) ascending
    let neg = labels.index_select(0, &a).unsqueeze(1).ne_tensor(&labels.index_select(0, &order.reshape([-1])).reshape([-1, b]));
    let d_ap = distances.index(&[Some(&a), Some(&p)]).unsqueeze(1);
    let ok = neg.logical_and(&sorted.gt_tensor(&d_ap)).to_kind(Kind::Int64);
    // First qualifying column: argmax of the 0/1 row (0 when none); else the last negative.
    let first = ok.argmax(1, false);
    let last_neg = (neg.to_kind(Kind::Int64) * Tensor::arange(b, (Kind::Int64, Device::Cpu)).to_device(a.device())).argmax(1, false);
    let col = first.where_self(&ok.any_dim(1, false), &last_neg);
    let n = order.gather(1, &col.unsqueeze(1), false).squeeze_dim(1);
    (a, p, n)
}

fn batch_hard_v(distances: &Tensor, labels: &Tensor) -> Triplets {
    let b = labels.size()[0];
    let same = labels.unsqueeze(0).eq_tensor(&labels.unsqueeze(1));
    let eye = Tensor::eye(b, (Kind::Bool, labels.device()));
    let pos = same.logical_and(&eye.logical_not());
    let big = distances.max().double_value(&[]) + 1.0;
    let hardest_p = (distances - pos.logical_not().to_kind(Kind::Float) * big).argmax(1, false);
    let hardest_n = (distances + same.to_kind(Kind::Float) * big).argmin(1, false);
    let keep = pos.any_dim(1, false).logical_and(&same.logical_not().any_dim(1, false)).nonzero().squeeze_dim(1);
    (keep.shallow_clone(), hardest_p.index_select(0, &keep), hardest_n.index_select(0, &keep))
}
