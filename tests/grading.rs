//! Grading with points: threshold items graded by the grader's own threshold and only in a grading
//! profile; a folder of uploads (right, wrong, tampered, malformed, foreign, nested) becomes one
//! gradebook whose CSV and JSON read back; hostile zips are refused with the reason.

use std::io::Write;
use std::path::{Path, PathBuf};

use hw9::grading::batch::{grade_folder, Gradebook};
use hw9::grading::check::{Fixtures, Recorder};
use hw9::grading::grade::{grade, Assets, GradeReport, Status};
use hw9::grading::spec::GradingSpec;
use hw9::grading::submission::write_submission_to;
use hw9::grading::upload::{read_upload, Limits};
use hw9::Profile;
use tch::Tensor;

fn mse(pred: &Tensor, target: &Tensor) -> Tensor {
    (pred - target).square().mean(tch::Kind::Float)
}

fn attention(q: &Tensor, k: &Tensor) -> Tensor {
    (q.matmul(&k.transpose(0, 1)) / (q.size()[1] as f64).sqrt()).softmax(-1, tch::Kind::Float)
}

/// A notebook-0 submission in `dir`: both checks right or the second one wrong.
fn setup_check_zip(dir: &Path, right: bool) -> PathBuf {
    let fx = Fixtures::load("00_setup_check").unwrap();
    let mut rec = Recorder::new("00_setup_check").with_profile(Profile::Quick);
    rec.check(&fx, "mse", |c| mse(&c["pred"], &c["target"]));
    let scale = if right { 1.0 } else { 1.1 };
    rec.check(&fx, "attention_weights", |c| attention(&c["q"], &c["k"]) * scale);
    rec.at_least("line_fit", "fit", 0.97, 0.9);
    std::fs::create_dir_all(dir).unwrap();
    let nb = dir.join("00_setup_check.ipynb");
    std::fs::write(&nb, "{\"cells\": []}").unwrap();
    write_submission_to(&rec, &nb, dir).unwrap().zip
}

/// A notebook-1 submission that recorded only its thresholds, `value` each, in `profile`, each
/// checked in the notebook against `claimed` (which the grader must ignore).
fn thresholds_zip(dir: &Path, profile: Profile, value: f64, claimed: f64) -> PathBuf {
    let mut rec = Recorder::new("01_vit_mae").with_profile(profile);
    for name in ["vit_test_acc", "linear_probe_test_acc", "finetune_test_acc"] {
        rec.at_least(name, name, value, claimed);
    }
    std::fs::create_dir_all(dir).unwrap();
    let nb = dir.join("01_vit_mae.ipynb");
    std::fs::write(&nb, "{\"cells\": []}").unwrap();
    write_submission_to(&rec, &nb, dir).unwrap().zip
}

fn zip_of(path: &Path, members: &[(&str, &[u8])]) {
    let mut w = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    for (name, bytes) in members {
        w.start_file(*name, zip::write::SimpleFileOptions::default()).unwrap();
        w.write_all(bytes).unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn every_item_gets_its_points_from_the_released_spec() {
    let dir = tempfile::tempdir().unwrap();
    let report = grade(&setup_check_zip(dir.path(), true), &Assets::default()).unwrap();
    let spec = GradingSpec::load(&hw9::paths::assets(), "00_setup_check").unwrap();
    assert_eq!(report.points(), (spec.max_points(), spec.max_points()), "{:#?}", report.items);
    let names: Vec<&str> = report.items.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["attention_weights", "mse", "line_fit"]);
    let wrong = grade(&setup_check_zip(&dir.path().join("wrong"), false), &Assets::default()).unwrap();
    let item = wrong.items.iter().find(|i| i.name == "attention_weights").unwrap();
    assert_eq!((item.status, item.points), (Status::Failed, 0.0));
    assert_eq!(wrong.points().0, spec.max_points() - spec.checks["attention_weights"]);
}

#[test]
fn thresholds_count_only_in_a_grading_profile_and_against_the_graders_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let spec = GradingSpec::load(&hw9::paths::assets(), "01_vit_mae").unwrap();
    let threshold_points: f64 = spec.thresholds.values().map(|t| t.points).sum();
    let item = |r: &GradeReport, name: &str| r.items.iter().find(|i| i.name == name).unwrap().clone();

    let quick = grade(&thresholds_zip(&dir.path().join("q"), Profile::Quick, 0.95, 0.0), &Assets::default()).unwrap();
    let vit = item(&quick, "vit_test_acc");
    assert_eq!((vit.status, vit.points), (Status::NotGraded, 0.0));
    assert!(vit.message.contains("quick profile, which is not graded"), "{}", vit.message);

    let cpu = grade(&thresholds_zip(&dir.path().join("c"), Profile::Cpu, 0.95, 0.85), &Assets::default()).unwrap();
    let thresholds: f64 = cpu.items.iter().filter(|i| i.kind == "threshold").map(|i| i.points).sum();
    assert_eq!(thresholds, threshold_points);
    // Checks without outputs are missing, not failed.
    assert!(cpu.items.iter().filter(|i| i.kind == "check").all(|i| i.status == Status::NotSubmitted));

    // A notebook that lowered its own threshold still fails against the grader's.
    let forged = grade(&thresholds_zip(&dir.path().join("f"), Profile::Full, 0.5, 0.0), &Assets::default()).unwrap();
    let vit = item(&forged, "vit_test_acc");
    assert_eq!((vit.status, vit.points), (Status::Failed, 0.0));
    assert!(vit.message.contains("0.5000 < 0.85"), "{}", vit.message);
}

#[test]
fn a_folder_becomes_one_gradebook_and_bad_uploads_get_their_row() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("uploads");
    let ok = setup_check_zip(&root.join("alice"), true);
    setup_check_zip(&root.join("bob"), false);
    setup_check_zip(&root.join("section2/frank"), true);
    // carol: tampered (the log edited after the manifest was written).
    let carol = root.join("carol_00_setup_check.zip");
    let mut members = read_upload(&ok, &Limits::default()).unwrap();
    members.insert("submission_log.json".into(), b"{\"edited\": true}".to_vec());
    let refs: Vec<(&str, &[u8])> = members.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
    zip_of(&carol, &refs);
    std::fs::create_dir_all(root.join("dave")).unwrap();
    std::fs::write(root.join("dave/hw9_submission.zip"), b"not a zip at all").unwrap();
    std::fs::create_dir_all(root.join("eve")).unwrap();
    zip_of(&root.join("eve/homework.zip"), &[("essay.txt", b"hello")]);

    let book = grade_folder(&root, &Assets::default()).unwrap();
    let students: Vec<&str> = book.rows.iter().map(|r| r.student.as_str()).collect();
    assert_eq!(students, ["alice", "bob", "carol_00_setup_check", "dave", "eve/homework", "section2/frank"]);
    let row = |s: &str| book.rows.iter().find(|r| r.student == s).unwrap();
    let max = GradingSpec::load(&hw9::paths::assets(), "00_setup_check").unwrap().max_points();
    assert_eq!((row("alice").points, row("alice").max_points), (max, max));
    assert_eq!(row("section2/frank").points, max);
    assert!(row("bob").points < max && row("bob").error.is_none());
    assert!(row("carol_00_setup_check").error.as_deref().unwrap().contains("does not match the manifest"));
    assert!(row("dave").error.as_deref().unwrap().contains("not a zip archive"));
    assert!(row("eve/homework").error.as_deref().unwrap().contains("has no manifest.json"));

    let (csv_path, json_path) = book.write(&dir.path().join("out")).unwrap();
    let back: Gradebook = serde_json::from_str(&std::fs::read_to_string(json_path).unwrap()).unwrap();
    assert_eq!(back, book);
    let mut csv = csv::Reader::from_path(csv_path).unwrap();
    let header = csv.headers().unwrap().clone();
    assert!(header.iter().any(|h| h == "00_setup_check:attention_weights"), "{header:?}");
    let records: Vec<csv::StringRecord> = csv.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), 6);
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    assert_eq!(&records[0][col("student")], "alice");
    assert_eq!(records[0][col("points")].parse::<f64>().unwrap(), max);
    assert!(records[3][col("error")].contains("not a zip archive"));
}

#[test]
fn hostile_zips_are_refused_before_they_cost_memory() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_zip_bytes: 1 << 20,
        max_entries: 4,
        max_entry_bytes: 1 << 16,
        max_weights_bytes: 1 << 16,
        max_total_bytes: 1 << 17,
    };
    let refused = |members: &[(&str, &[u8])], why: &str| {
        let path = dir.path().join("x.zip");
        zip_of(&path, members);
        let err = read_upload(&path, &limits).unwrap_err().to_string();
        assert!(err.contains(why), "expected {why:?} in {err}");
    };
    let zeros = vec![0u8; 1 << 20];
    refused(&[("outputs.safetensors", &zeros)], "inflates past the limit");
    let half = vec![0u8; 60_000];
    refused(&[("a", &half), ("b", &half), ("c", &half)], "inflates past the limit");
    refused(&[("../escape.json", b"{}")], "not a plain relative file name");
    refused(&[("/etc/passwd", b"x")], "not a plain relative file name");
    refused(&[("a", b"1"), ("b", b"2"), ("c", b"3"), ("d", b"4"), ("e", b"5")], "5 entries");
    let big = dir.path().join("big.zip");
    std::fs::write(&big, vec![7u8; (1 << 20) + 1]).unwrap();
    assert!(read_upload(&big, &limits).unwrap_err().to_string().contains("more than the 1048576 allowed"));
}
