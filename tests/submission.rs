//! Submissions: written by a recorder, graded by `hw9 grade`, rejected when malformed or changed.

use std::io::Write;
use std::path::{Path, PathBuf};

use hw9::grading::check::{Fixtures, Recorder};
use hw9::grading::grade::{grade, Assets};
use hw9::grading::submission::{write_submission_to, SubmissionLog};
use tch::Tensor;

/// A fresh folder, removed when the guard drops (also when the test fails).
fn temp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn setup_check_fixtures() -> Fixtures {
    Fixtures::load("00_setup_check").expect("committed fixtures")
}

fn mse(pred: &Tensor, target: &Tensor) -> Tensor {
    (pred - target).square().mean(tch::Kind::Float)
}

fn attention(q: &Tensor, k: &Tensor) -> Tensor {
    (q.matmul(&k.transpose(0, 1)) / (q.size()[1] as f64).sqrt()).softmax(-1, tch::Kind::Float)
}

fn submit(dir: &Path, right: bool) -> PathBuf {
    let fx = setup_check_fixtures();
    let mut rec = Recorder::new("00_setup_check");
    assert!(rec.check(&fx, "mse", |c| mse(&c["pred"], &c["target"])));
    if right {
        assert!(rec.check(&fx, "attention_weights", |c| attention(&c["q"], &c["k"])));
    } else {
        assert!(!rec.check(&fx, "attention_weights", |c| attention(&c["q"], &c["k"]) * 1.1));
    }
    rec.value("final_loss", 0.01).unwrap();
    let nb = dir.join("00_setup_check.ipynb");
    std::fs::write(&nb, "{\"cells\": []}").unwrap();
    write_submission_to(&rec, &nb, &dir.join("submission")).unwrap().zip
}

#[test]
fn a_correct_submission_grades_full_and_its_log_records_shapes_and_values() {
    let tmp = temp();
    let dir = tmp.path().to_path_buf();
    let zip = submit(&dir, true);
    let report = grade(&zip, &Assets::default()).unwrap();
    assert_eq!(report.score(), (2, 2), "{:?}", report.results);
    let log: SubmissionLog =
        serde_json::from_str(&std::fs::read_to_string(dir.join("submission/submission_log.json")).unwrap()).unwrap();
    assert_eq!(log.notebook, "00_setup_check");
    assert_eq!(log.crate_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(log.outputs["attention_weights"].shape, vec![7, 9]);
    assert_eq!(log.outputs["attention_weights"].values.len(), 63);
    assert_eq!(log.outputs["mse"].shape, Vec::<i64>::new());
    assert_eq!(log.values["final_loss"], serde_json::json!(0.01));
    assert!(log.timestamp.ends_with('Z') && log.timestamp.starts_with("20"), "{}", log.timestamp);
}

#[test]
fn a_wrong_answer_fails_its_check_when_graded() {
    let tmp = temp();
    let dir = tmp.path().to_path_buf();
    let report = grade(&submit(&dir, false), &Assets::default()).unwrap();
    assert_eq!(report.score(), (1, 2));
    let bad = report.results.iter().find(|r| !r.passed).unwrap();
    assert_eq!(bad.name, "attention_weights");
    assert!(bad.message.contains("elements differ beyond"), "{}", bad.message);
}

#[test]
fn the_written_answers_go_into_the_zip_and_the_log_in_homework_order() {
    let tmp = temp();
    let dir = tmp.path().to_path_buf();
    let q = |id: &str, answer: &str| {
        serde_json::json!({"cell_type": "markdown", "metadata": {"hw9": {"question": id}},
            "source": format!("**Question {id}.** Why?\n\n**Your answer:** {answer}"),
            "attachments": {"shot.png": {"image/png": "iVBORw0KGgo="}}})
    };
    let nb =
        serde_json::json!({"cells": [q("5(a)", "*(write it here)*"), q("1(b)", "Because. ![s](attachment:shot.png)")]});
    let path = dir.join("04_facenet.ipynb");
    std::fs::write(&path, serde_json::to_vec(&nb).unwrap()).unwrap();
    let paths = write_submission_to(&Recorder::new("04_facenet"), &path, &dir.join("submission")).unwrap();
    let log: SubmissionLog = serde_json::from_str(&std::fs::read_to_string(&paths.log).unwrap()).unwrap();
    let ids: Vec<(&str, bool)> = log.written.iter().map(|a| (a.id.as_str(), a.answered())).collect();
    assert_eq!(ids, vec![("1(b)", true), ("5(a)", false)]);
    assert!(log.written.iter().all(|a| a.attachments.is_empty()), "images stay in the notebook, not the log");
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&paths.zip).unwrap()).unwrap();
    let mut md = String::new();
    std::io::Read::read_to_string(&mut zip.by_name("written_answers.md").unwrap(), &mut md).unwrap();
    assert!(md.find("### 1(b)").unwrap() < md.find("### 5(a)").unwrap(), "{md}");
    assert!(md.contains("![s](attachment:shot.png)") && md.contains("- 5(a) (04_facenet)"), "{md}");
}

/// Rewrites a zip with one member replaced (and the manifest left as it was).
fn replace_member(zip: &Path, member: &str, bytes: &[u8]) {
    let mut archive = zip::ZipArchive::new(std::fs::File::open(zip).unwrap()).unwrap();
    let mut members = Vec::new();
    for i in 0..archive.len() {
        let mut f = archive.by_index(i).unwrap();
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut b).unwrap();
        members.push((f.name().to_string(), if f.name() == member { bytes.to_vec() } else { b }));
    }
    let mut w = zip::ZipWriter::new(std::fs::File::create(zip).unwrap());
    for (name, b) in members {
        w.start_file(name, zip::write::SimpleFileOptions::default()).unwrap();
        w.write_all(&b).unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn tampered_and_malformed_zips_are_rejected_with_a_reason() {
    let tmp = temp();
    let dir = tmp.path().to_path_buf();
    let zip = submit(&dir, false);
    // Replace the outputs with the right answers, keeping the old manifest.
    let fx = setup_check_fixtures();
    let expected: Vec<(String, Tensor)> = ["mse", "attention_weights"]
        .iter()
        .map(|c| (c.to_string(), fx.case(c, "autograder").unwrap().expected()[0].shallow_clone()))
        .collect();
    let forged = dir.join("forged.safetensors");
    Tensor::write_safetensors(&expected, &forged).unwrap();
    replace_member(&zip, "outputs.safetensors", &std::fs::read(&forged).unwrap());
    let err = grade(&zip, &Assets::default()).unwrap_err().to_string();
    assert!(err.contains("outputs.safetensors does not match the manifest's SHA-256"), "{err}");

    replace_member(&zip, "manifest.json", b"{ not json");
    assert!(grade(&zip, &Assets::default()).unwrap_err().to_string().contains("manifest.json is malformed"));

    std::fs::write(&zip, b"PK but not really a zip").unwrap();
    assert!(grade(&zip, &Assets::default()).unwrap_err().to_string().contains("not a zip archive"));
}

/// The trained weights a graded profile's submission carries (issue 29): every notebook's models,
/// at the `cpu` and `full` profiles' sizes, recorded as the solution notebooks record them and
/// written into a submission, which the grader's bounded reader then accepts. Prints each size.
#[test]
fn every_graded_profiles_weights_fit_the_graders_upload_limits() {
    use hw9::data::text::SubwordTokenizer;
    use hw9::models::facenet::FaceNet;
    use hw9::models::reference::mae::{Mae, MaeClassifier};
    use hw9::models::reference::vit::Vit;
    use hw9::models::summarizer::Summarizer;
    use hw9::plan::{FacenetPlan, SummarizationPlan, VitMaePlan};
    use hw9::Profile;
    use tch::nn::VarStore;
    use tch::Device;

    let limits = hw9_grade::upload::Limits::default();
    let vocab = SubwordTokenizer::load_default().expect("the committed tokenizer").vocab_size();
    let dir = temp();
    for profile in [Profile::Cpu, Profile::Full] {
        let mut recs = Vec::new();
        let vm = VitMaePlan::for_profile(profile);
        let mut rec = Recorder::new("01_vit_mae").with_profile(profile);
        let vs = VarStore::new(Device::Cpu);
        Vit::new(&vs.root(), &vm.vit).expect("ViT");
        rec.weights("vit", &vs).expect("vit");
        for (name, detach) in [("probe", true), ("finetune", false)] {
            let vs = VarStore::new(Device::Cpu);
            let mae = Mae::new(&(vs.root() / "mae"), &vm.mae).expect("MAE");
            MaeClassifier::new(&(vs.root() / "classifier"), mae, 10, detach);
            rec.weights(name, &vs).expect(name);
        }
        recs.push(rec);
        let sp = SummarizationPlan::for_profile(profile, vocab);
        let mut rec = Recorder::new("02_summarization").with_profile(profile);
        let vs = VarStore::new(Device::Cpu);
        Summarizer::new(&vs.root(), &sp.model).expect("summarizer");
        rec.weights("summarizer", &vs).expect("summarizer");
        rec.weights("summarizer_previous", &vs).expect("summarizer_previous");
        recs.push(rec);
        let fp = FacenetPlan::for_profile(profile);
        let mut rec = Recorder::new("04_facenet").with_profile(profile);
        let vs = VarStore::new(Device::Cpu);
        FaceNet::new(&vs.root(), &fp.model).expect("FaceNet");
        rec.weights("facenet", &vs).expect("facenet");
        recs.push(rec);

        for rec in recs {
            let nb = rec.notebook().to_string();
            let work = dir.path().join(format!("{profile:?}-{nb}"));
            std::fs::create_dir_all(&work).unwrap();
            let file = work.join(format!("{nb}.ipynb"));
            std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("notebooks").join(format!("{nb}.ipynb")), &file)
                .unwrap();
            let paths = write_submission_to(&rec, &file, &work.join("sub")).expect("submission");
            let members = hw9_grade::upload::read_upload(&paths.zip, &limits)
                .unwrap_or_else(|e| panic!("{profile:?} {nb}: the grader refuses the submission: {e}"));
            let weights: Vec<String> = members
                .iter()
                .filter(|(n, _)| n.starts_with("weights/"))
                .map(|(n, b)| format!("{} {:.2} MB", n, b.len() as f64 / 1e6))
                .collect();
            let zip = std::fs::metadata(&paths.zip).unwrap().len();
            eprintln!("{profile:?} {nb}: zip {:.2} MB; {}", zip as f64 / 1e6, weights.join(", "));
        }
    }
}
