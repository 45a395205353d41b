//! Notebook 2's pipeline on a tiny model and a slice of the committed corpus: training writes a
//! checkpoint per epoch and TensorBoard scalars, resuming continues after the newest checkpoint,
//! a checkpoint reloads to identical outputs, and one from another config is refused.

#![cfg(feature = "reference")] // the reference models: not in the student handout

use std::path::Path;

use hw9::data::corpus::{corpus_path, read_pairs};
use hw9::data::seq2seq::Batch;
use hw9::data::text::SubwordTokenizer;
use hw9::data::text::SummaryData;
use hw9::models::summarizer::{Summarizer, SummarizerConfig};
use hw9::plan::SummarizationPlan;
use hw9::tasks::summarization::{evaluate, train_summarizer};
use hw9::train::{latest_checkpoint, load_checkpoint};
use hw9::Profile;
use tch::{nn, Device};

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

#[test]
fn trains_checkpoints_each_epoch_and_resumes() {
    let (mut plan, data) = plan_and_data();
    assert_eq!((data.train.len(), data.validation.len(), data.test.len()), (96, 32, 8));
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, runs) = (dir.path().join("ckpt"), dir.path().join("runs"));
    hw9::seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Summarizer::new(&vs.root(), &plan.model).unwrap();
    let (loss0, _) = evaluate(&model, &data.validation, 16, Device::Cpu).unwrap();
    let first = train_summarizer(&model, &vs, &data, &plan.train, &ckpt, &runs, false).unwrap();
    assert_eq!(first.epochs.len(), 1);
    assert_eq!(first.step_losses.len(), 6, "96 pairs in batches of 16");
    let val = |e: &hw9::train::EpochStats| e.val_loss.unwrap();
    assert!(val(&first.epochs[0]) < loss0, "validation loss {loss0} -> {}", val(&first.epochs[0]));
    assert_eq!(latest_checkpoint(&ckpt).unwrap().0, 1);

    // Resume into a fresh model: it loads epoch 1 and trains only epoch 2.
    plan.train.epochs = 2;
    hw9::seed(1);
    let vs2 = nn::VarStore::new(Device::Cpu);
    let model2 = Summarizer::new(&vs2.root(), &plan.model).unwrap();
    let resumed = train_summarizer(&model2, &vs2, &data, &plan.train, &ckpt, &runs, true).unwrap();
    assert_eq!(resumed.epochs.len(), 2);
    assert_eq!(resumed.epochs[0], first.epochs[0], "epoch 1 comes from the checkpoint's history");
    assert_eq!(resumed.step_losses.len(), 12);
    assert_eq!(&resumed.step_losses[..6], &first.step_losses[..]);
    assert!(val(&resumed.epochs[1]) < val(&resumed.epochs[0]), "{:?}", resumed.epochs);
    assert_eq!(latest_checkpoint(&ckpt).unwrap().0, 2);
    assert_eq!(event_files(&runs), 2, "one event file per run");

    // Everything already trained: resuming again changes nothing and writes no new run.
    let again = train_summarizer(&model2, &vs2, &data, &plan.train, &ckpt, &runs, true).unwrap();
    assert_eq!(again, resumed);
    assert_eq!(event_files(&runs), 2);
}

#[test]
fn a_checkpoint_reloads_to_identical_outputs_and_another_config_is_refused() {
    let (plan, data) = plan_and_data();
    let dir = tempfile::tempdir().unwrap();
    hw9::seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Summarizer::new(&vs.root(), &plan.model).unwrap();
    train_summarizer(&model, &vs, &data, &plan.train, dir.path(), &dir.path().join("runs"), false).unwrap();
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
fn a_corrupt_newest_checkpoint_is_skipped_with_a_warning_and_the_one_before_resumes() {
    let (mut plan, data) = plan_and_data();
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, runs) = (dir.path().join("ckpt"), dir.path().join("runs"));
    plan.train.epochs = 2;
    hw9::seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Summarizer::new(&vs.root(), &plan.model).unwrap();
    let two = train_summarizer(&model, &vs, &data, &plan.train, &ckpt, &runs, false).unwrap();
    assert_eq!(latest_checkpoint(&ckpt).unwrap().0, 2);

    // A crash while epoch 2's weights were written: a truncated file.
    let weights = ckpt.join("epoch-2/model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 3]).unwrap();
    hw9::seed(1);
    let vs2 = nn::VarStore::new(Device::Cpu);
    let model2 = Summarizer::new(&vs2.root(), &plan.model).unwrap();
    let resumed = train_summarizer(&model2, &vs2, &data, &plan.train, &ckpt, &runs, true).unwrap();
    // It resumed from epoch 1 (its history) and trained epoch 2 again, over the bad checkpoint.
    assert_eq!(resumed.epochs.len(), 2);
    assert_eq!(resumed.epochs[0], two.epochs[0]);
    assert!(hw9::train::load_checkpoint(&vs2, &plan.model, &ckpt.join("epoch-2")).is_ok(), "epoch 2 was rewritten");
}
