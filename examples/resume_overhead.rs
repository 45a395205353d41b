//! What saving a run's state costs (issue 17): notebook 4's main FaceNet training, `cpu` sizes,
//! 300 steps without `resume` (libtorch's AdamW), then the same with `resume` (the crate's AdamW,
//! per-step seeding, state every minute), back to back in one process; then the same pair for
//! notebook 1's ViT (cpu sizes, 60 steps) and notebook 2's summarizer (cpu sizes, 150 steps).
//! Run: `cargo run --release --example resume_overhead` (BENCHMARKS.md has its figures).

use std::time::Instant;

use hw9::models::facenet::FaceNet;
use hw9::models::vit::Vit;
use hw9::plan::{FacenetPlan, VitMaePlan};
use hw9::train::triplet::{train_triplets, TripletFns};
use hw9::train::{train_classifier, ResumeConfig};
use hw9::Profile;
use tch::nn;

fn main() -> hw9::Result<()> {
    let device = hw9::device();
    let dir = std::env::temp_dir().join(format!("hw9-resume-overhead-{}", std::process::id()));
    let plan = FacenetPlan::for_profile(Profile::Cpu);
    let data = plan.data()?;
    let fns = TripletFns::reference();
    let only_facenet = std::env::args().any(|a| a == "facenet");
    for round in 0..if only_facenet { 4 } else { 2 } {
        for resume in [false, true] {
            let _ = std::fs::remove_dir_all(&dir);
            let mut cfg = plan.train.clone();
            cfg.epochs = 1;
            cfg.steps_per_epoch = 300;
            cfg.resume = resume.then(|| ResumeConfig::every_minute(&dir, Profile::Cpu));
            hw9::seed(0);
            let vs = nn::VarStore::new(device);
            let model = FaceNet::new(&vs.root(), &plan.model)?;
            let t = Instant::now();
            train_triplets(&model, &vs, &data, &fns, &cfg, "facenet", || Ok(0.0))?;
            let s = t.elapsed().as_secs_f64();
            println!("round {round} FaceNet resume={resume}: {:.1} ms/step", s * 1000.0 / 300.0);
        }
    }
    if only_facenet {
        return Ok(());
    }
    let vplan = VitMaePlan::for_profile(Profile::Cpu);
    let vdata = vplan.data()?;
    let small = vdata.truncate(60 * vplan.vit_train.batch_size, 10);
    for round in 0..2 {
        for resume in [false, true] {
            let _ = std::fs::remove_dir_all(&dir);
            let mut cfg = vplan.vit_train.clone();
            cfg.epochs = 1;
            cfg.resume = resume.then(|| ResumeConfig::every_minute(&dir, Profile::Cpu));
            hw9::seed(0);
            let vs = nn::VarStore::new(device);
            let vit = Vit::new(&vs.root(), &vplan.vit)?;
            let t = Instant::now();
            train_classifier(&vit, &vs, &small, &cfg, "vit")?;
            let s = t.elapsed().as_secs_f64();
            println!("round {round} ViT resume={resume}: {:.1} ms/step", s * 1000.0 / 60.0);
        }
    }
    let tok = hw9::data::text::SubwordTokenizer::load_default()?;
    let splan = hw9::plan::SummarizationPlan::for_profile(Profile::Cpu, tok.vocab_size());
    let mut sdata = hw9::data::text::SummaryData::load(&splan)?;
    sdata.train.truncate(150 * splan.train.batch_size as usize);
    sdata.validation.truncate(16);
    for round in 0..2 {
        for resume in [false, true] {
            let _ = std::fs::remove_dir_all(&dir);
            let mut cfg = splan.train.clone();
            cfg.epochs = 1;
            cfg.resume = resume.then(|| ResumeConfig::every_minute(&dir, Profile::Cpu));
            hw9::seed(0);
            let vs = nn::VarStore::new(device);
            let model = hw9::models::summarizer::Summarizer::new(&vs.root(), &splan.model)?;
            let t = Instant::now();
            let h = hw9::tasks::summarization::train_summarizer(
                &model,
                &vs,
                &sdata,
                &cfg,
                &dir.join("ck"),
                &dir.join("tb"),
                false,
            )?;
            let s = t.elapsed().as_secs_f64();
            println!(
                "round {round} summarizer resume={resume}: {:.1} ms/step",
                s * 1000.0 / h.step_losses.len() as f64
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
