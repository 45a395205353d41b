//! A resumable run (`Fit::resumable`) stopped at any step and continued ends with the same
//! weights, bit for bit, as a run that was never stopped — stopped by an error in-process here,
//! and by `kill -9` of a real process (`hw9 fit-demo`).

use std::path::Path;
use std::process::Command;

use hw9::error::Error;
use hw9::train::{Evaluation, Every, Fit, OptimConfig, Schedule, Step};
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

mod common;
use common::rng_lock;

/// A small MLP with dropout, libtorch's and hw9's (randomness in every step), on fixed synthetic
/// data shuffled each epoch (randomness in every epoch); `fail_at` makes the step with that call
/// number an error.
fn train(dir: &Path, fail_at: Option<usize>) -> Result<Vec<(String, Tensor)>, Error> {
    tch::manual_seed(12345); // a different init every time: resuming must overwrite it
    let vs = nn::VarStore::new(Device::Cpu);
    let net = nn::seq_t()
        .add(nn::linear(vs.root() / "a", 6, 16, Default::default()))
        .add_fn(|x| x.relu())
        .add_fn_t(|x, train| x.dropout(0.3, train))
        .add_fn_t(|x, train| hw9::models::transformer::dropout(x, 0.2, train))
        .add(nn::linear(vs.root() / "b", 16, 1, Default::default()));
    let g = Tensor::arange(240, (Kind::Float, Device::Cpu)).reshape([40, 6]).sin();
    let y = g.sum_dim_intlist([1].as_slice(), true, Kind::Float).cos();
    let optim = OptimConfig::adamw(1e-2, (0.9, 0.999), 0.01).schedule(Schedule::WarmupCosine { warmup: 0.1 }).clip(1.0);
    let fit = Fit::epochs("demo", 3, 5, &optim).resumable(dir, &"mlp-6-16-1", Every::Steps(2), 7)?;
    let mut calls = 0usize;
    let batches = |_epoch| {
        let order = Tensor::randperm(40, (Kind::Int64, Device::Cpu));
        (0..5).map(move |b| order.narrow(0, b * 8, 8))
    };
    let step = |idx: Tensor| {
        calls += 1;
        if Some(calls) == fail_at {
            return Err(Error::Input(format!("stopped on purpose at call {calls}")));
        }
        let pred = net.forward_t(&g.index_select(0, &idx), true);
        Ok(Step { loss: (pred - y.index_select(0, &idx)).square().mean(Kind::Float), weight: 8.0, correct: None })
    };
    fit.run(&vs, batches, step, || {
        Ok(Evaluation { loss: Some(net.forward_t(&g, false).mean(Kind::Float).double_value(&[])), accuracy: None })
    })?;
    let mut w: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    w.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(w)
}

#[test]
fn stopped_at_any_step_and_resumed_it_ends_bit_for_bit_where_an_unstopped_run_does() {
    let _rng = rng_lock();
    let whole = tempfile::tempdir().unwrap();
    let want = train(whole.path(), None).unwrap();
    // One stop mid-epoch, on an epoch's last step, on an epoch's first; then several in one run.
    for stops in [vec![3], vec![5], vec![6], vec![2, 4, 3, 1]] {
        let dir = tempfile::tempdir().unwrap();
        for &at in &stops {
            let err = train(dir.path(), Some(at)).unwrap_err().to_string();
            assert!(err.contains("stopped on purpose"), "{err}");
        }
        let got = train(dir.path(), None).unwrap();
        for ((n, a), (_, b)) in want.iter().zip(&got) {
            assert!(a.equal(b), "stops {stops:?}: {n} differs from the uninterrupted run");
        }
    }
}

#[test]
fn a_corrupt_newest_state_falls_back_to_the_one_before() {
    let _rng = rng_lock();
    let whole = tempfile::tempdir().unwrap();
    let want = train(whole.path(), None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    train(dir.path(), Some(9)).unwrap_err();
    let mut states: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
    states.sort();
    let newest = states
        .iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("step-"))
        .max_by_key(|p| p.file_name().unwrap().to_string_lossy().trim_start_matches("step-").parse::<usize>().unwrap());
    std::fs::write(newest.unwrap().join("optimizer.safetensors"), b"not safetensors").unwrap();
    let got = train(dir.path(), None).unwrap();
    for ((n, a), (_, b)) in want.iter().zip(&got) {
        assert!(a.equal(b), "{n} differs after falling back past the corrupt state");
    }
}

/// `hw9 fit-demo` killed with SIGKILL at random moments, then run again until it finishes: the
/// final weights equal an uninterrupted run's, byte for byte.
#[test]
fn killed_with_sigkill_and_resumed_it_ends_with_the_same_weights() {
    let run =
        |dir: &Path| Command::new(env!("CARGO_BIN_EXE_hw9")).args(["fit-demo", "--dir"]).arg(dir).spawn().unwrap();
    let whole = tempfile::tempdir().unwrap();
    let t0 = std::time::Instant::now();
    assert!(run(whole.path()).wait().unwrap().success());
    let span = t0.elapsed();
    let want = std::fs::read(whole.path().join("final.safetensors")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut kills = 0;
    for k in 0..40u32 {
        let mut child = run(dir.path());
        // Spread over the run; a fixed sequence keeps the test reproducible.
        std::thread::sleep(span.mul_f64(0.15 + 0.2 * ((k * 7919 % 10) as f64 / 10.0)));
        match child.try_wait().unwrap() {
            Some(status) => {
                assert!(status.success());
                break;
            }
            None => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                kills += 1;
            }
        }
    }
    if !dir.path().join("final.safetensors").exists() {
        assert!(run(dir.path()).wait().unwrap().success());
    }
    assert!(kills >= 2, "the runs ended before they could be killed ({kills} kills)");
    assert_eq!(std::fs::read(dir.path().join("final.safetensors")).unwrap(), want, "after {kills} kills");
}
