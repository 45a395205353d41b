//! What saving a run's state costs (issue 17): notebook 4's main FaceNet training, `cpu` sizes,
//! 300 steps without `resume`, then the same with `resume` (per-step seeding, state every
//! minute), back to back in one process — since issue 28 both step the crate's AdamW (before, the
//! runs without `resume` stepped libtorch's; BENCHMARKS.md, "The layering pass", compares the
//! two optimizers' step times) —; then the same pair for
//! notebook 1's ViT (cpu sizes, 60 steps) and notebook 2's summarizer (cpu sizes, 150 steps).
//! Run: `cargo run --release --example resume_overhead` (BENCHMARKS.md has its figures).

use std::time::Instant;

use hw9::data::text::{SubwordTokenizer, SummaryData};
use hw9::models::facenet::FaceNet;
use hw9::models::summarizer::Summarizer;
use hw9::models::vit::Vit;
use hw9::plan::TripletTrain;
use hw9::plan::{FacenetPlan, SummarizationPlan, VitMaePlan};
use hw9::tasks::images::train_classifier;
use hw9::tasks::summarization::train_summarizer;
use hw9::tasks::triplet::{train_triplets, TripletFns};
use hw9::train::{History, ResumeConfig, TrainConfig};
use hw9::Profile;
use tch::nn;

/// Trains `run` twice per round, without and then with `resume` (state under `dir`, emptied
/// first), each from seed 0, and prints the milliseconds per step of each.
fn compare(
    label: &str,
    rounds: usize,
    dir: &std::path::Path,
    mut run: impl FnMut(Option<ResumeConfig>) -> hw9::Result<History>,
) -> hw9::Result<()> {
    for round in 0..rounds {
        for resume in [false, true] {
            let _ = std::fs::remove_dir_all(dir);
            hw9::seed(0);
            let t = Instant::now();
            let h = run(resume.then(|| ResumeConfig::every_minute(dir, Profile::Cpu)))?;
            let ms = t.elapsed().as_secs_f64() * 1000.0 / h.step_losses.len().max(1) as f64;
            println!("round {round} {label} resume={resume}: {ms:.1} ms/step");
        }
    }
    Ok(())
}

fn main() -> hw9::Result<()> {
    let device = hw9::device();
    let dir = std::env::temp_dir().join(format!("hw9-resume-overhead-{}", std::process::id()));
    let plan = FacenetPlan::for_profile(Profile::Cpu);
    let data = plan.data()?;
    let fns = TripletFns::reference();
    let only_facenet = std::env::args().any(|a| a == "facenet");
    compare("FaceNet", if only_facenet { 4 } else { 2 }, &dir, |resume| {
        let cfg = TripletTrain { epochs: 1, steps_per_epoch: 300, resume, ..plan.train.clone() };
        let vs = nn::VarStore::new(device);
        let model = FaceNet::new(&vs.root(), &plan.model)?;
        train_triplets(&model, &vs, &data, &fns, &cfg, "facenet", || Ok(0.0))
    })?;
    if only_facenet {
        let _ = std::fs::remove_dir_all(&dir);
        return Ok(());
    }

    let vplan = VitMaePlan::for_profile(Profile::Cpu);
    let small = vplan.data()?.truncate(60 * vplan.vit_train.batch_size, 10);
    compare("ViT", 2, &dir, |resume| {
        let cfg = TrainConfig { epochs: 1, resume, ..vplan.vit_train.clone() };
        let vs = nn::VarStore::new(device);
        let vit = Vit::new(&vs.root(), &vplan.vit)?;
        train_classifier(&vit, &vs, &small, &cfg, "vit")
    })?;

    let tok = SubwordTokenizer::load_default()?;
    let splan = SummarizationPlan::for_profile(Profile::Cpu, tok.vocab_size());
    let mut sdata = SummaryData::load(&splan.data)?;
    sdata.train.truncate(150 * splan.train.batch_size as usize);
    sdata.validation.truncate(16);
    compare("summarizer", 2, &dir, |resume| {
        let cfg = TrainConfig { epochs: 1, resume, ..splan.train.clone() };
        let vs = nn::VarStore::new(device);
        let model = Summarizer::new(&vs.root(), &splan.model)?;
        train_summarizer(&model, &vs, &sdata, &cfg, &dir.join("ck"), &dir.join("tb"))
    })?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
