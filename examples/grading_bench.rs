//! What grading by re-running costs (BENCHMARKS.md, "Grading by re-running"): a submission of
//! each notebook in the `cpu` profile — the solution notebook and its models' weights at the `cpu`
//! sizes — graded by `hw9-grade`'s re-running path: build, run in the sandbox, measure the models.
//!
//!     cargo run --example grading_bench -- one                # each notebook once (01, 02, 04)
//!     cargo run --example grading_bench -- batch 300 04_facenet   # 300 uploads of it in a folder
//!
//! The weights are freshly initialised, not trained: evaluating a model costs the same whatever
//! its weights, and the figures (printed) are then a chance model's. The dev build (as the
//! tests), the repository's `target/` shared with the harness (warm after the first build).
//! `HW9_GRADE_JOBS` sets the batch's workers (default: the cores, at most one per 2 GiB).

use std::path::{Path, PathBuf};
use std::time::Instant;

use hw9::data::text::SubwordTokenizer;
use hw9::grading::check::Recorder;
use hw9::grading::submission::write_submission_to;
use hw9::models::facenet::FaceNet;
use hw9::models::reference::mae::{Mae, MaeClassifier};
use hw9::models::reference::vit::Vit;
use hw9::models::summarizer::Summarizer;
use hw9::plan::{FacenetPlan, SummarizationPlan, VitMaePlan};
use hw9::{Error, Profile, Result};
use tch::nn::VarStore;
use tch::Device;

/// The notebook's graded models at `profile`'s sizes, freshly initialised, as its last cells
/// record them.
fn recorder(notebook: &str, profile: Profile) -> Result<Recorder> {
    let mut rec = Recorder::new(notebook).with_profile(profile);
    match notebook {
        "01_vit_mae" => {
            let plan = VitMaePlan::for_profile(profile);
            let vs = VarStore::new(Device::Cpu);
            Vit::new(&vs.root(), &plan.vit)?;
            rec.weights("vit", &vs)?;
            for (name, detach) in [("probe", true), ("finetune", false)] {
                let vs = VarStore::new(Device::Cpu);
                let mae = Mae::new(&(vs.root() / "mae"), &plan.mae)?;
                MaeClassifier::new(&(vs.root() / "classifier"), mae, 10, detach);
                rec.weights(name, &vs)?;
            }
        }
        "02_summarization" => {
            let plan = SummarizationPlan::for_profile(profile, SubwordTokenizer::load_default()?.vocab_size());
            let vs = VarStore::new(Device::Cpu);
            Summarizer::new(&vs.root(), &plan.model)?;
            rec.weights("summarizer", &vs)?;
            rec.weights("summarizer_previous", &vs)?;
        }
        "04_facenet" => {
            let vs = VarStore::new(Device::Cpu);
            FaceNet::new(&vs.root(), &FacenetPlan::for_profile(profile).model)?;
            rec.weights("facenet", &vs)?;
        }
        other => return Err(Error::Input(format!("no graded models in {other}"))),
    }
    Ok(rec)
}

/// Writes a `cpu`-profile submission of `notebook` (its solution) under `dir`.
fn submission(notebook: &str, dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let nb = dir.join(format!("{notebook}.ipynb"));
    let solution = hw9::paths::root().join("notebooks/solutions").join(format!("{notebook}.ipynb"));
    std::fs::copy(&solution, &nb).map_err(|e| Error::io(&solution, e))?;
    Ok(write_submission_to(&recorder(notebook, Profile::Cpu)?, &nb, &dir.join("sub"))?.zip)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = hw9::paths::root();
    let out = root.join("build/grading-bench");
    let mut cfg = hw9_grade::rerun::RerunConfig::for_root(&root);
    cfg.work_dir = out.join("work");
    let assets = hw9_grade::Assets { rerun: Some(cfg), ..Default::default() };
    let grade_err = |e: hw9_grade::Error| Error::Input(e.to_string());
    match args.first().map(String::as_str) {
        Some("one") => {
            for nb in ["01_vit_mae", "02_summarization", "04_facenet"] {
                let zip = submission(nb, &out.join(nb))?;
                let size = std::fs::metadata(&zip).map_err(|e| Error::io(&zip, e))?.len();
                let started = Instant::now();
                let report = hw9_grade::grade(&zip, &assets).map_err(grade_err)?;
                let (got, max) = report.points();
                println!(
                    "{nb}: upload {:.1} MB, graded in {:.1} s ({got}/{max} points); {}",
                    size as f64 / 1e6,
                    started.elapsed().as_secs_f64(),
                    report.notes.iter().rev().take(2).rev().cloned().collect::<Vec<_>>().join("; ")
                );
                for item in report.items.iter().filter(|i| i.kind == "threshold") {
                    println!("    {item}");
                }
            }
        }
        Some("batch") => {
            let n: usize = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(300);
            let nb = args.get(2).map(String::as_str).unwrap_or("04_facenet");
            let zip = submission(nb, &out.join(nb))?;
            let uploads = out.join("uploads");
            let _ = std::fs::remove_dir_all(&uploads);
            for i in 0..n {
                let to = uploads.join(format!("student{i:03}")).join("hw9_submission.zip");
                std::fs::create_dir_all(to.parent().unwrap_or(&uploads)).map_err(|e| Error::io(&to, e))?;
                std::fs::copy(&zip, &to).map_err(|e| Error::io(&to, e))?;
            }
            let started = Instant::now();
            let book = hw9_grade::batch::grade_folder(&uploads, &assets).map_err(grade_err)?;
            let secs = started.elapsed().as_secs_f64();
            let graded = book.rows.iter().filter(|r| r.error.is_none()).count();
            println!(
                "{n} uploads of {nb} ({} workers): {secs:.0} s, {:.1} s an upload; {graded} graded",
                hw9_grade::batch::rerun_jobs().min(n),
                secs / n as f64
            );
            book.write(&out).map_err(grade_err)?;
        }
        _ => return Err(Error::Input("usage: grading_bench one | batch [N] [NOTEBOOK]".into())),
    }
    Ok(())
}
