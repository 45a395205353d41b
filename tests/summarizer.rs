//! Notebook 2's pipeline on a tiny model and a slice of the committed corpus: training exports
//! the weights after each epoch and writes TensorBoard scalars, a run stopped mid-epoch continues
//! from its saved state bit for bit (past a corrupt newest state), an export reloads to identical
//! outputs, and one from another config is refused.

#![cfg(feature = "reference")] // the reference models: not in the student handout

use std::path::{Path, PathBuf};

use hw9::data::corpus::{corpus_path, read_pairs};
use hw9::data::seq2seq::Batch;
use hw9::data::text::SubwordTokenizer;
use hw9::data::text::SummaryData;
use hw9::models::summarizer::{Summarizer, SummarizerConfig};
use hw9::plan::SummarizationPlan;
use hw9::tasks::summarization::{evaluate, train_summarizer};
use hw9::train::{latest_checkpoint, load_checkpoint, Every, History, ResumeConfig};
use hw9::Profile;
use tch::{nn, Device};

mod common;
use common::rng_lock;

fn plan_and_data() -> (SummarizationPlan, SummaryData) {
    let tok = SubwordTokenizer::load_default().unwrap();
    let mut plan = SummarizationPlan::for_profile(Profile::Quick, tok.vocab_size());
    plan.model =
        SummarizerConfig { d_model: 32, n_heads: 2, encoder_layers: 1, decoder_layers: 1, d_ffn: 64, ..plan.model };
    plan.data.subset = Some((96, 32, 8));
    plan.train.epochs = 1;
    let pairs = read_pairs(&corpus_path()).unwrap();
    let data = SummaryData::from_pairs(tok, &pairs, &plan.data).unwrap();
    (plan, data)
}

fn event_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("events.out.tfevents."))
        .count()
}

/// Trains `plan` for its epochs with its state saved every 4 steps in `state` (exports in
/// `<dir>/ckpt`, TensorBoard in `<dir>/runs`), from a model seeded with `seed`.
fn train(plan: &SummarizationPlan, data: &SummaryData, dir: &Path, seed: u64) -> (nn::VarStore, History) {
    let mut cfg = plan.train.clone();
    cfg.resume = Some(ResumeConfig { dir: dir.join("state"), every: Every::Steps(4), seed: 0 });
    hw9::seed(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Summarizer::new(&vs.root(), &plan.model).unwrap();
    let h = train_summarizer(&model, &vs, data, &cfg, &dir.join("ckpt"), &dir.join("runs")).unwrap();
    (vs, h)
}

fn state_steps(dir: &Path) -> Vec<PathBuf> {
    let run = std::fs::read_dir(dir.join("state")).unwrap().next().unwrap().unwrap().path();
    let mut steps: Vec<PathBuf> = std::fs::read_dir(&run).unwrap().map(|e| e.unwrap().path()).collect();
    steps.sort_by_key(|p| p.file_name().unwrap().to_string_lossy()[5..].parse::<usize>().unwrap());
    steps
}

/// The history without its wall times.
fn untimed(h: &History) -> History {
    let mut h = h.clone();
    h.epochs.iter_mut().for_each(|e| e.seconds = 0.0);
    h
}

fn same_weights(a: &nn::VarStore, b: &nn::VarStore) -> bool {
    let (a, b) = (a.variables(), b.variables());
    a.len() == b.len() && a.iter().all(|(k, v)| b[k].equal(v))
}

#[test]
fn trains_exports_each_epoch_and_a_stopped_run_continues_bit_for_bit() {
    let _rng = rng_lock();
    let (mut plan, data) = plan_and_data();
    assert_eq!((data.train.len(), data.validation.len(), data.test.len()), (96, 32, 8));
    plan.train.epochs = 2;
    let whole = tempfile::tempdir().unwrap();
    hw9::seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Summarizer::new(&vs.root(), &plan.model).unwrap();
    let (loss0, _) = evaluate(&model, &data.validation, 16, Device::Cpu).unwrap();
    let (vs, first) = train(&plan, &data, whole.path(), 0);
    assert_eq!(first.epochs.len(), 2);
    assert_eq!(first.step_losses.len(), 12, "96 pairs in batches of 16, two epochs");
    let val = |e: &hw9::train::EpochStats| e.val_loss.unwrap();
    assert!(val(&first.epochs[0]) < loss0, "validation loss {loss0} -> {}", val(&first.epochs[0]));
    assert!(val(&first.epochs[1]) < val(&first.epochs[0]), "{:?}", first.epochs);
    assert_eq!(latest_checkpoint(&whole.path().join("ckpt")).unwrap().0, 2, "each epoch exported");

    // A run killed after step 10 (mid-epoch 2): its newest state is step-10 (saved every 4
    // steps after the end of epoch 1's). Run again, from a model seeded otherwise, it loads that
    // state and trains only the 2 steps left.
    let stopped = tempfile::tempdir().unwrap();
    let _ = train(&plan, &data, stopped.path(), 0);
    let steps = state_steps(stopped.path());
    let names: Vec<String> = steps.iter().map(|p| p.file_name().unwrap().to_string_lossy().into()).collect();
    assert_eq!(names, ["step-10", "step-12"], "the two newest states are kept");
    std::fs::remove_dir_all(&steps[1]).unwrap();
    let (vs2, resumed) = train(&plan, &data, stopped.path(), 1);
    assert_eq!(resumed.step_losses[..10], first.step_losses[..10], "the first 10 steps come from the state");
    assert_eq!(untimed(&resumed), untimed(&first), "the same history, step for step");
    assert!(same_weights(&vs, &vs2), "the same weights, bit for bit");
    assert_eq!(event_files(&stopped.path().join("runs")), 2, "one event file per run");

    // Everything already trained: running again changes nothing and writes no new run.
    let (_, again) = train(&plan, &data, stopped.path(), 2);
    assert_eq!(untimed(&again), untimed(&first));
    assert_eq!(event_files(&stopped.path().join("runs")), 2);
}

#[test]
fn a_checkpoint_reloads_to_identical_outputs_and_another_config_is_refused() {
    let _rng = rng_lock();
    let (plan, data) = plan_and_data();
    let dir = tempfile::tempdir().unwrap();
    hw9::seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Summarizer::new(&vs.root(), &plan.model).unwrap();
    train_summarizer(&model, &vs, &data, &plan.train, dir.path(), &dir.path().join("runs")).unwrap();
    let batch = Batch::new(&data.validation.iter().take(4).collect::<Vec<_>>(), Device::Cpu);
    let want = model.forward_t(&batch.src, &batch.dec_in, false).unwrap();

    hw9::seed(5);
    let vs2 = nn::VarStore::new(Device::Cpu);
    let model2 = Summarizer::new(&vs2.root(), &plan.model).unwrap();
    load_checkpoint(&vs2, &plan.model, &dir.path().join("epoch-1")).unwrap();
    let got = model2.forward_t(&batch.src, &batch.dec_in, false).unwrap();
    assert_eq!((got - want).abs().max().double_value(&[]), 0.0);

    let other = SummarizerConfig { d_model: 48, ..plan.model.clone() };
    let vs3 = nn::VarStore::new(Device::Cpu);
    let _m3 = Summarizer::new(&vs3.root(), &other).unwrap();
    let msg = load_checkpoint(&vs3, &other, &dir.path().join("epoch-1")).unwrap_err().to_string();
    assert!(msg.contains("another config") && msg.contains("d_model: 32") && msg.contains("d_model: 48"), "{msg}");
}

#[test]
fn a_corrupt_newest_state_is_skipped_and_the_one_before_resumes() {
    let _rng = rng_lock();
    let (mut plan, data) = plan_and_data();
    plan.train.epochs = 2;
    let dir = tempfile::tempdir().unwrap();
    let (vs, two) = train(&plan, &data, dir.path(), 0);
    // A crash while the newest state's weights were written: a truncated file.
    let steps = state_steps(dir.path());
    let weights = steps[1].join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 3]).unwrap();
    let (vs2, resumed) = train(&plan, &data, dir.path(), 1);
    // It resumed from step 10 and trained the rest again, over the bad state.
    assert_eq!(untimed(&resumed), untimed(&two));
    assert!(same_weights(&vs, &vs2));
    assert!(hw9::train::load_checkpoint(&vs2, &plan.model, &dir.path().join("ckpt/epoch-2")).is_ok());
}
