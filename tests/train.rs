//! Training loops, NaN losses, and checkpoints that reload to identical outputs or refuse
//! another config.

#![cfg(feature = "reference")] // the reference models: not in the student handout

use hw9::data::images::{ImageSet, Splits};
use hw9::models::vit::{Vit, VitConfig};
use hw9::tasks::images::train_classifier;
use hw9::train::{load_checkpoint, save_checkpoint, TrainConfig};
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

mod common;
use common::rng_lock;

/// 8×8 images whose class is which quarter of the image is bright: learnable in a few steps.
fn quarters(n: i64) -> ImageSet {
    let labels = Tensor::randint(3, [n], (Kind::Int64, Device::Cpu));
    let images = Tensor::zeros([n, 1, 8, 8], (Kind::Uint8, Device::Cpu));
    for i in 0..n {
        let q = labels.int64_value(&[i]);
        let _ = images.get(i).get(0).narrow(0, (q % 2) * 4, 4).narrow(1, (q / 2) * 4, 4).fill_(255);
    }
    ImageSet { images, labels, classes: vec!["a".into(), "b".into(), "c".into()] }
}

fn splits() -> Splits {
    Splits { train: quarters(256), test: quarters(64), mean: vec![0.2], std: vec![0.4] }
}

#[test]
fn a_classifier_learns_a_separable_task() {
    let _rng = rng_lock();
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    // The loop is under test, not the model: a linear classifier on the pixels.
    let model =
        nn::seq_t().add_fn(|x| x.flatten(1, -1)).add(nn::linear(vs.root() / "linear", 64, 3, Default::default()));
    let history = train_classifier(&model, &vs, &splits(), &TrainConfig::adamw(4, 32, 1e-2, 0.0), "test").unwrap();
    assert_eq!(history.epochs.len(), 4);
    assert_eq!(history.step_losses.len(), 4 * 8);
    assert!(history.epochs[3].train_loss < history.epochs[0].train_loss * 0.5, "{:?}", history.epochs);
    assert!(history.final_val_acc().unwrap() > 0.95, "{:?}", history.epochs);
}

/// A panic inside `tch::no_grad` leaves the thread's grad mode off (tch restores it only when the
/// closure returns): what a notebook cell that panicked there does to its kernel. Training must
/// still work afterwards.
#[test]
fn training_after_a_panic_inside_no_grad_still_learns() {
    let _rng = rng_lock();
    let panicked = std::thread::scope(|s| {
        s.spawn(|| {
            let caught = std::panic::catch_unwind(|| tch::no_grad(|| panic!("a TODO inside no_grad")));
            assert!(caught.is_err());
            assert!(
                !Tensor::ones([1], (Kind::Float, Device::Cpu))
                    .set_requires_grad(true)
                    .f_mul(&Tensor::ones([1], (Kind::Float, Device::Cpu)))
                    .unwrap()
                    .requires_grad(),
                "grad mode stays off after the panic (what this test is about)"
            );
            tch::manual_seed(0);
            let vs = nn::VarStore::new(Device::Cpu);
            let model = nn::seq_t().add_fn(|x| x.flatten(1, -1)).add(nn::linear(
                vs.root() / "linear",
                64,
                3,
                Default::default(),
            ));
            let history =
                train_classifier(&model, &vs, &splits(), &TrainConfig::adamw(4, 32, 1e-2, 0.0), "test").unwrap();
            assert!(history.final_val_acc().unwrap() > 0.95, "{:?}", history.epochs);
        })
        .join()
    });
    panicked.unwrap();
}

#[derive(Debug)]
struct NanModel;
impl ModuleT for NanModel {
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Tensor {
        (xs.flatten(1, -1).narrow(1, 0, 3) * 0.0 + f64::NAN).set_requires_grad(true)
    }
}

#[test]
fn a_nan_loss_stops_training_with_where_and_what_to_do() {
    let _rng = rng_lock();
    let vs = nn::VarStore::new(Device::Cpu);
    let err = train_classifier(&NanModel, &vs, &splits(), &TrainConfig::adamw(1, 32, 1e-3, 0.0), "nan")
        .unwrap_err()
        .to_string();
    assert!(err.contains("the loss became NaN at epoch 1, step 0") && err.contains("lower the learning rate"), "{err}");
}

#[test]
fn a_checkpoint_reloads_to_identical_outputs_and_refuses_another_config() {
    let _rng = rng_lock();
    tch::manual_seed(0);
    let dir_tmp = tempfile::tempdir().unwrap();
    let dir = dir_tmp.path().to_path_buf();
    let cfg = VitConfig::tiny();
    let vs = nn::VarStore::new(Device::Cpu);
    let vit = Vit::new(&vs.root(), &cfg).unwrap();
    save_checkpoint(&vs, &cfg, &dir).unwrap();
    let x = Tensor::randn([2, 1, 8, 8], (Kind::Float, Device::Cpu));

    let vs2 = nn::VarStore::new(Device::Cpu);
    let vit2 = Vit::new(&vs2.root(), &cfg).unwrap();
    assert!(!vit2.forward_t(&x, false).equal(&vit.forward_t(&x, false)));
    load_checkpoint(&vs2, &cfg, &dir).unwrap();
    assert!(vit2.forward_t(&x, false).equal(&vit.forward_t(&x, false)));

    let other = VitConfig { n_classes: 5, ..cfg };
    let vs3 = nn::VarStore::new(Device::Cpu);
    let _vit3 = Vit::new(&vs3.root(), &other).unwrap();
    let err = load_checkpoint(&vs3, &other, &dir).unwrap_err().to_string();
    assert!(
        err.contains("was saved with another config") && err.contains("n_classes: 3") && err.contains("n_classes: 5"),
        "{err}"
    );
    std::fs::write(dir.join("model.safetensors"), b"garbage").unwrap();
    let err = hw9::train::load_weights(&vs3, &dir.join("model.safetensors")).unwrap_err().to_string();
    assert!(err.contains("not a readable safetensors file"), "{err}");
}

#[test]
fn a_bf16_run_computes_its_products_in_bf16_keeps_fp32_weights_and_learns() {
    let _rng = rng_lock();
    use hw9::train::precision::cpu_has_bf16;
    use hw9::train::{Evaluation, Fit, OptimConfig, Precision, Step};
    tch::manual_seed(0);
    let data = splits();
    let vs = nn::VarStore::new(Device::Cpu);
    let model =
        nn::seq_t().add_fn(|x| x.flatten(1, -1)).add(nn::linear(vs.root() / "linear", 64, 3, Default::default()));
    let fit = Fit::epochs("bf16", 4, 8, &OptimConfig::adamw(1e-2, (0.9, 0.95), 0.0)).precision(Precision::Bf16);
    let expected = if cpu_has_bf16() { Kind::BFloat16 } else { Kind::Float };
    assert_eq!(fit.resolved_precision(Device::Cpu) == Precision::Bf16, cpu_has_bf16());
    let mut kinds = Vec::new();
    let batches = |_| hw9::data::images::batches(&data.train, 32, true, Device::Cpu);
    let step = |(x, y): (Tensor, Tensor)| {
        let logits = model.forward_t(&data.normalize(&x), true);
        kinds.push(logits.kind());
        Ok(Step { loss: logits.cross_entropy_for_logits(&y), weight: 32.0, correct: None })
    };
    let history = fit.run(&vs, batches, step, || Ok(Evaluation::default())).unwrap();
    assert!(kinds.iter().all(|k| *k == expected), "the products ran in {kinds:?}, expected {expected:?}");
    for (name, w) in vs.variables() {
        assert_eq!(w.kind(), Kind::Float, "{name}: master weights stay fp32");
    }
    assert!(history.epochs[3].train_loss < history.epochs[0].train_loss * 0.5, "{:?}", history.epochs);
    let acc = hw9::tasks::images::evaluate(&model, &data, &data.test, Device::Cpu);
    assert!(acc > 0.95, "accuracy {acc} after bf16 training");
    assert!(!hw9::train::precision::autocast_enabled(Device::Cpu), "autocast is off again after the run");
}

/// A linear classifier on the quarters whose training-mode forward can fail at a chosen call (a
/// wrong-shaped output, as a student's bug or an interrupt would stop the run).
struct Stoppable {
    linear: nn::Linear,
    calls: std::cell::Cell<usize>,
    fail_at: Option<usize>,
}
impl std::fmt::Debug for Stoppable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Stoppable")
    }
}
impl ModuleT for Stoppable {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        if train {
            self.calls.set(self.calls.get() + 1);
            if Some(self.calls.get()) == self.fail_at {
                return Tensor::zeros([1], (Kind::Float, Device::Cpu));
            }
        }
        xs.flatten(1, -1).apply(&self.linear)
    }
}

/// Trains the stoppable classifier (3 epochs of 8 steps, state every 3 steps) with its state
/// under `dir`; the same initial weights every time.
fn train_stoppable(
    dir: &std::path::Path,
    epochs: i64,
    fail_at: Option<usize>,
) -> (hw9::Result<hw9::train::History>, Vec<(String, Tensor)>, usize) {
    use hw9::train::{Every, ResumeConfig};
    tch::manual_seed(7);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Stoppable {
        linear: nn::linear(vs.root() / "linear", 64, 3, Default::default()),
        calls: std::cell::Cell::new(0),
        fail_at,
    };
    let mut cfg = TrainConfig::adamw(epochs, 32, 1e-2, 0.01);
    cfg.augment = true; // draws random numbers in every step: the resumed run must draw the same
    cfg.resume = Some(ResumeConfig { dir: dir.into(), every: Every::Steps(3), seed: 5 });
    let data = Splits { train: quarters_seeded(256, 1), test: quarters_seeded(64, 2), mean: vec![0.2], std: vec![0.4] };
    let h = train_classifier(&model, &vs, &data, &cfg, "quarters probe");
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    (h, vars, model.calls.get())
}

/// The quarters with a fixed seed (the same data in every run).
fn quarters_seeded(n: i64, seed: i64) -> ImageSet {
    tch::manual_seed(seed);
    quarters(n)
}

#[test]
fn an_image_trainer_stopped_mid_run_resumes_from_its_saved_state_and_ends_bit_for_bit_the_same() {
    let _rng = rng_lock();
    let root_tmp = tempfile::tempdir().unwrap();
    let root = root_tmp.path().to_path_buf();
    let (whole, expected, _) = train_stoppable(&root.join("whole"), 3, None);
    let whole = whole.unwrap();
    assert_eq!(whole.step_losses.len(), 24);
    // The state sits in <dir>/<title>-<key>.
    let runs: Vec<_> = std::fs::read_dir(root.join("whole")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(runs.len(), 1);
    assert!(runs[0].to_string_lossy().starts_with("quarters-probe-"), "{runs:?}");

    // Stopped at the 11th step (mid-epoch 2), then at the 5th step of the resumed run.
    let dir = root.join("stopped");
    let (err, _, _) = train_stoppable(&dir, 3, Some(11));
    assert!(err.unwrap_err().to_string().contains("logits"));
    let (err, _, _) = train_stoppable(&dir, 3, Some(5));
    assert!(err.is_err());
    let (resumed, got, calls) = train_stoppable(&dir, 3, None);
    let resumed = resumed.unwrap();
    // States: steps 3, 6, 8 (epoch 1's end) in the first run, 11 (3 after 8) in the second: the
    // last run trained the 13 steps after step 11, no more.
    assert_eq!(calls, 13, "the resumed run trained {calls} steps");
    assert_eq!(resumed.step_losses, whole.step_losses, "the resumed run's history is the whole run's");
    for ((n, a), (_, b)) in expected.iter().zip(&got) {
        assert!(a.equal(b), "{n} differs from the uninterrupted run");
    }
    // Run again when finished: loads the trained weights, trains nothing.
    let (again, got, _) = train_stoppable(&dir, 3, Some(1));
    assert_eq!(again.unwrap().step_losses.len(), 24);
    assert!(expected.iter().zip(&got).all(|((_, a), (_, b))| a.equal(b)));
    // Another config (4 epochs) gets a folder of its own and trains from the start.
    let (longer, _, _) = train_stoppable(&dir, 4, None);
    assert_eq!(longer.unwrap().step_losses.len(), 32);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
}

/// A time-budgeted run (2 s, each step at least 50 ms) whose step fails at call `fail_at`,
/// state every 2 steps under `dir`: the history and how many steps this call trained.
fn train_for_a_second(dir: &std::path::Path, fail_at: Option<usize>) -> (hw9::Result<hw9::train::History>, usize) {
    use hw9::train::{Evaluation, Every, Fit, OptimConfig, Step};
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let linear = nn::linear(vs.root() / "linear", 4, 1, Default::default());
    let optim = OptimConfig::adamw(1e-2, (0.9, 0.999), 0.0);
    let fit = Fit::seconds("budget", 2.0, &optim).resumable(dir, &"budget", Every::Steps(2), 9).unwrap();
    let calls = std::cell::Cell::new(0);
    let batches = |_| std::iter::repeat_with(|| Tensor::randn([8, 4], (Kind::Float, Device::Cpu)));
    let step = |x: Tensor| {
        calls.set(calls.get() + 1);
        if Some(calls.get()) == fail_at {
            return Err(hw9::Error::Input("stopped on purpose".into()));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        let loss = (x.apply(&linear) - x.sum_dim_intlist(1, true, Kind::Float)).square().mean(Kind::Float);
        Ok(Step { loss, weight: 1.0, correct: None })
    };
    let h = fit.run(&vs, batches, step, || Ok(Evaluation::default()));
    (h, calls.get())
}

#[test]
fn a_time_budgeted_run_resumed_trains_for_the_rest_of_its_budget_only() {
    let _rng = rng_lock();
    let dir_tmp = tempfile::tempdir().unwrap();
    let dir = dir_tmp.path().to_path_buf();
    let (err, calls) = train_for_a_second(&dir, Some(8));
    assert!(err.unwrap_err().to_string().contains("stopped on purpose") && calls == 8);
    // Saved after steps 2, 4, 6 (at least 0.3 s of training): the rest of the budget is at most
    // 1.7 s, so at most 35 steps of 50 ms (an unstopped run takes up to 40). The budget leaves
    // the first run ample time to reach its 8th step even on a loaded machine.
    let (resumed, calls) = train_for_a_second(&dir, None);
    let resumed = resumed.unwrap();
    assert_eq!(resumed.step_losses.len(), 6 + calls, "continued after step 6");
    assert!((1..=35).contains(&calls), "the resumed run trained {calls} steps: more than the budget left");
    assert_eq!(resumed.epochs.len(), 1);
    // The epoch's time counts the training before the interruption too: the whole budget.
    assert!(resumed.epochs[0].seconds >= 2.0, "{:?}", resumed.epochs);
    // Run again once the budget is spent: trains nothing, gives the same history.
    let (again, calls) = train_for_a_second(&dir, Some(1));
    assert_eq!((again.unwrap(), calls), (resumed, 0));
}
