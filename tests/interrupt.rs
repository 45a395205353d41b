//! The stop button (SIGINT) during a `Fit`: the run stops after the step in progress with
//! `Error::Interrupted`, its state saved; run again it continues and ends bit for bit where an
//! uninterrupted run ends; and once no run is armed, SIGINT has its default action again.
//!
//! One test in its own binary (its own process): SIGINT is process-wide, and another test's
//! training in a parallel thread would see it.

use std::path::Path;

use hw9::error::Error;
use hw9::train::{Evaluation, Every, Fit, OptimConfig, Step};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// Trains a linear model 2 epochs of 6 steps, resumable in `dir`; the step with call number
/// `sigint_at` raises SIGINT in this process (as the kernel's interrupt does).
fn train(dir: &Path, sigint_at: Option<usize>) -> Result<Vec<(String, Tensor)>, Error> {
    tch::manual_seed(99);
    let vs = nn::VarStore::new(Device::Cpu);
    let lin = nn::linear(vs.root() / "l", 5, 1, Default::default());
    let x = Tensor::arange(60, (Kind::Float, Device::Cpu)).reshape([12, 5]).cos();
    let y = x.sum_dim_intlist([1].as_slice(), true, Kind::Float).sin();
    let fit = Fit::epochs("stoppable", 2, 6, &OptimConfig::adamw(1e-2, (0.9, 0.999), 0.0)).resumable(
        dir,
        &"lin-5-1",
        Every::Steps(100),
        5,
    )?;
    let mut calls = 0usize;
    let batches = |_epoch| {
        let order = Tensor::randperm(12, (Kind::Int64, Device::Cpu));
        (0..6).map(move |b| order.narrow(0, b * 2, 2))
    };
    let step = |idx: Tensor| {
        calls += 1;
        if Some(calls) == sigint_at {
            // SAFETY: raise only sends a signal to this process.
            unsafe { libc::raise(libc::SIGINT) };
        }
        let loss = (lin.forward(&x.index_select(0, &idx)) - y.index_select(0, &idx)).square().mean(Kind::Float);
        Ok(Step { loss, weight: 2.0, correct: None })
    };
    fit.run(&vs, batches, step, || Ok(Evaluation::default()))?;
    let mut w: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    w.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(w)
}

/// SIGINT's disposition now is the default one.
fn sigint_is_default() -> bool {
    // SAFETY: reads the disposition only (a null new action).
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGINT, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_DFL
    }
}

#[test]
fn sigint_stops_a_run_between_steps_which_then_resumes_bit_for_bit() {
    // Started in the background (`make test &`), the process inherits SIGINT ignored: begin from
    // the default, as the hw9 kernel's process does.
    // SAFETY: sets this process's SIGINT disposition to the default.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_DFL) };
    assert!(sigint_is_default());
    let whole = tempfile::tempdir().unwrap();
    let want = train(whole.path(), None).unwrap();
    assert!(sigint_is_default(), "the run left its SIGINT handler installed");

    // Stopped mid-epoch (step 4) and on the second epoch (step 9 of the resumed run's count).
    let dir = tempfile::tempdir().unwrap();
    for at in [4, 5] {
        match train(dir.path(), Some(at)) {
            Err(Error::Interrupted { title, steps, resume }) => {
                assert_eq!(title, "stoppable");
                assert!(steps >= at, "stopped after {steps} steps, before the step that was interrupted ({at})");
                assert!(resume.contains("run the cell again to continue"), "{resume}");
            }
            other => panic!("expected Error::Interrupted, got {:?}", other.map(|_| ())),
        }
        assert!(sigint_is_default(), "an interrupted run left its SIGINT handler installed");
    }
    let got = train(dir.path(), None).unwrap();
    for ((name, a), (_, b)) in want.iter().zip(&got) {
        assert!(a.equal(b), "{name} differs from the uninterrupted run's");
    }
    let msg = Error::Interrupted { title: "t".into(), steps: 3, resume: "r".into() }.to_string();
    assert_eq!(msg, "t: stopped by the interrupt after 3 step(s); r");
}
