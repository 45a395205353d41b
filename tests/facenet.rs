//! FaceNet: the crate's answers against PyTorch fixtures (both cases), invariants of the
//! selections, gradients, and the triplet loss falling on real Fashion-MNIST-shaped batches.

#![cfg(feature = "reference")] // the reference answers: not in the student handout

use hw9::grading::check::{check_case, Fixtures};
use hw9::models::facenet::{
    batch_hard_triplets, pairwise_squared_distances, semi_hard_triplets, triplet_loss, FaceNet, FacenetConfig, Mining,
};
use hw9::plan::TripletTrain;
use hw9::tasks::triplet::{triplet_step, TripletFns};
use hw9::train::OptimConfig;
use tch::nn::{self, ModuleT, OptimizerConfig};
use tch::{Device, Kind, Tensor};

fn fixtures() -> Fixtures {
    Fixtures::load("04_facenet").expect("committed fixtures")
}

#[test]
fn the_reference_answers_match_pytorch_on_the_public_and_the_autograder_cases() {
    let f = fixtures();
    let mut vs = nn::VarStore::new(Device::Cpu);
    let net = FaceNet::new(&vs.root(), &FacenetConfig::tiny()).unwrap();
    f.load_weights("embedding", &mut vs).unwrap();
    for case in ["public", "autograder"] {
        let results = [
            check_case("embedding", &f.case("embedding", case).unwrap(), |c| net.forward_t(&c["images"], false)),
            check_case("pairwise_distances", &f.case("pairwise_distances", case).unwrap(), |c| {
                pairwise_squared_distances(&c["embeddings"])
            }),
            check_case("triplet_loss", &f.case("triplet_loss", case).unwrap(), |c| {
                triplet_loss(&c["anchor"], &c["positive"], &c["negative"], c["margin"].double_value(&[]))
            }),
            check_case("semi_hard_triplets", &f.case("semi_hard_triplets", case).unwrap(), |c| {
                semi_hard_triplets(&c["distances"], &c["labels"])
            }),
            check_case("batch_hard_triplets", &f.case("batch_hard_triplets", case).unwrap(), |c| {
                batch_hard_triplets(&c["distances"], &c["labels"])
            }),
        ];
        for r in results {
            assert!(r.passed, "{case}: {r:?}");
        }
    }
}

#[test]
fn a_wrong_selection_fails_its_check() {
    let f = fixtures();
    // Hardest negatives instead of semi-hard ones: a plausible student mistake.
    let r = check_case("semi_hard_triplets", &f.case("semi_hard_triplets", "public").unwrap(), |c| {
        let (a, p, _) = semi_hard_triplets(&c["distances"], &c["labels"]);
        let (_, _, n) = batch_hard_triplets(&c["distances"], &c["labels"]);
        (a.shallow_clone(), p, n.index_select(0, &a))
    });
    assert!(!r.passed, "{r:?}");
}

#[test]
fn selections_pick_what_they_promise() {
    tch::manual_seed(3);
    let labels = Tensor::from_slice(&[0i64, 1, 2, 0, 1, 2, 0, 1, 2, 3]);
    let e = Tensor::randn([10, 5], (Kind::Float, Device::Cpu));
    let d = pairwise_squared_distances(&(&e / e.norm_scalaropt_dim(2, [-1].as_slice(), true)));
    let l = Vec::<i64>::try_from(&labels).unwrap();
    let at = |a: i64, b: i64| d.double_value(&[a, b]);
    let (a, p, n) = semi_hard_triplets(&d, &labels);
    let (a, p, n) =
        (Vec::<i64>::try_from(&a).unwrap(), Vec::<i64>::try_from(&p).unwrap(), Vec::<i64>::try_from(&n).unwrap());
    assert_eq!(a.len(), 3 * 6, "every ordered same-label pair of labels 0, 1, 2 (label 3 is alone)");
    for i in 0..a.len() {
        assert!(l[a[i] as usize] == l[p[i] as usize] && a[i] != p[i] && l[n[i] as usize] != l[a[i] as usize]);
        let farther: Vec<i64> =
            (0..10).filter(|&j| l[j as usize] != l[a[i] as usize] && at(a[i], j) > at(a[i], p[i])).collect();
        if farther.is_empty() {
            assert!((0..10).filter(|&j| l[j as usize] != l[a[i] as usize]).all(|j| at(a[i], j) <= at(a[i], n[i])));
        } else {
            assert!(farther.contains(&n[i]) && farther.iter().all(|&j| at(a[i], j) >= at(a[i], n[i])));
        }
    }
    let (a, _, _) = batch_hard_triplets(&d, &labels);
    assert_eq!(Vec::<i64>::try_from(&a).unwrap(), (0..9).collect::<Vec<i64>>(), "anchor 9 has no positive");
}

#[test]
fn every_weight_gets_a_gradient_and_the_loss_falls_on_a_repeated_batch() {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = FaceNet::new(&vs.root(), &FacenetConfig { channels: 1, widths: vec![8, 16], embedding_dim: 16 }).unwrap();
    let cfg = TripletTrain {
        epochs: 1,
        steps_per_epoch: 1,
        classes_per_batch: 4,
        per_class: 4,
        margin: 0.2,
        mining: Mining::SemiHard,
        fraction: 1.0,
        optim: OptimConfig::adamw(3e-3, (0.9, 0.999), 0.0),
        resume: None,
    };
    // Four "classes" of noisy images around four random templates.
    let templates = Tensor::randn([4, 1, 16, 16], (Kind::Float, Device::Cpu));
    let labels = Tensor::arange(4, (Kind::Int64, Device::Cpu)).repeat_interleave_self_int(4, 0, None);
    let x = templates.index_select(0, &labels) + Tensor::randn([16, 1, 16, 16], (Kind::Float, Device::Cpu)) * 0.5;
    let fns = TripletFns::reference();
    let first = triplet_step(&net, &fns, &cfg, &x, &labels).unwrap();
    first.loss.backward();
    for (name, t) in vs.variables() {
        if t.requires_grad() {
            let g = t.grad();
            assert!(g.defined() && g.isfinite().all().int64_value(&[]) == 1, "{name}: no finite gradient");
            assert!(g.abs().sum(Kind::Float).double_value(&[]) > 0.0, "{name}: a zero gradient");
        }
    }
    let mut opt = nn::Adam::default().build(&vs, 3e-3).unwrap();
    let start = first.loss.double_value(&[]);
    let mut last = start;
    for _ in 0..60 {
        let step = triplet_step(&net, &fns, &cfg, &x, &labels).unwrap();
        opt.backward_step(&step.loss);
        last = step.loss.double_value(&[]);
    }
    assert!(last < start * 0.3, "the loss did not fall: {start} -> {last}");
}
