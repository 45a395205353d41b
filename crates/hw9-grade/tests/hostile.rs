//! The grader on hostile uploads: a zip bomb is refused by `hw9-grade` within 200 MB of memory,
//! and random mutations of a real submission — of the zip's bytes, and of the safetensors file
//! inside it (with a manifest that matches, so parsing is reached) — give a result or an error,
//! never a panic. Gradescope's `run_autograder` grades the five kinds of upload. (Submissions
//! are built here from the reference fixtures: no libtorch.)

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use hw9_grade::fixtures::Fixtures;
use hw9_grade::gradescope::Results;
use hw9_grade::log::{sha256_hex, Manifest, SubmissionLog};
use hw9_grade::{grade, Assets};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use safetensors::tensor::{Dtype, TensorView};

const NB: &str = "00_setup_check";

/// The zip members of a notebook-0 submission whose outputs are the reference's own (`right`) or
/// off by 10 %, recorded in `profile`.
fn members(right: bool, profile: &str) -> BTreeMap<String, Vec<u8>> {
    let fx = Fixtures::load(&hw9_env::paths::assets(), NB).unwrap();
    let mut data: Vec<(String, Vec<i64>, Vec<u8>)> = Vec::new();
    for check in fx.checks() {
        let e = fx.expected(&check, "autograder")[0];
        let scale = if right { 1.0 } else { 1.1 };
        let bytes = e.data.iter().flat_map(|v| ((v * scale) as f32).to_le_bytes()).collect();
        data.push((check, e.shape.clone(), bytes));
    }
    let views: Vec<(String, TensorView)> = data
        .iter()
        .map(|(n, s, b)| (n.clone(), TensorView::new(Dtype::F32, s.iter().map(|&d| d as usize).collect(), b).unwrap()))
        .collect();
    let outputs = safetensors::tensor::serialize(views, &None).unwrap();
    let log = SubmissionLog {
        notebook: NB.into(),
        crate_version: "test".into(),
        timestamp: "2026-11-27T00:00:00Z".into(),
        profile: profile.into(),
        checks: vec![],
        outputs: BTreeMap::new(),
        not_submitted: BTreeMap::new(),
        values: BTreeMap::new(),
        thresholds: BTreeMap::new(),
        written: vec![],
    };
    let mut m = BTreeMap::new();
    m.insert("00_setup_check.ipynb".to_string(), b"{\"cells\": []}".to_vec());
    m.insert("outputs.safetensors".to_string(), outputs);
    m.insert("submission_log.json".to_string(), serde_json::to_vec(&log).unwrap());
    seal(&mut m);
    m
}

/// (Re)writes `manifest.json` to match the other members.
fn seal(m: &mut BTreeMap<String, Vec<u8>>) {
    m.remove("manifest.json");
    let manifest = Manifest {
        notebook: NB.into(),
        crate_version: "test".into(),
        timestamp: "2026-11-27T00:00:00Z".into(),
        files: m.iter().map(|(k, v)| (k.clone(), sha256_hex(v))).collect(),
    };
    m.insert("manifest.json".to_string(), serde_json::to_vec(&manifest).unwrap());
}

fn zip_of(path: &Path, members: &BTreeMap<String, Vec<u8>>) -> PathBuf {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut w = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in members {
        w.start_file(name.as_str(), opts).unwrap();
        w.write_all(bytes).unwrap();
    }
    w.finish().unwrap();
    path.to_path_buf()
}

#[test]
fn a_built_submission_grades_full_and_a_wrong_one_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let ok = grade(&zip_of(&dir.path().join("ok.zip"), &members(true, "quick")), &Assets::default()).unwrap();
    let (got, max) = ok.points();
    assert!(max > 0.0 && ok.score().0 == ok.score().1, "{:#?}", ok.items);
    // The threshold item was not recorded: its points are missing, the checks' are there.
    assert_eq!(got, max - 1.0);
    let wrong = grade(&zip_of(&dir.path().join("w.zip"), &members(false, "quick")), &Assets::default()).unwrap();
    assert_eq!(wrong.score().0, 0);
}

#[test]
fn a_zip_bomb_is_refused_within_200_mb() {
    bomb("outputs.safetensors", 200.0);
}

/// A model's weights may be 160 MiB (the `full` profile's summarizer is 136 MB): a bomb named
/// as weights costs that much, and no more.
#[test]
fn a_zip_bomb_named_as_weights_is_refused_within_its_limit() {
    bomb("weights/summarizer.safetensors", 200.0 + 160.0);
}

fn bomb(name: &str, max_mb: f64) {
    let dir = tempfile::tempdir().unwrap();
    let bomb = dir.path().join("bomb.zip");
    // 1.5 GB of zeros deflate to about 1.5 MB, written in slices.
    let mut w = zip::ZipWriter::new(std::fs::File::create(&bomb).unwrap());
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated).large_file(true);
    w.start_file(name, opts).unwrap();
    let slice = vec![0u8; 1 << 24];
    for _ in 0..90 {
        w.write_all(&slice).unwrap();
    }
    w.finish().unwrap();
    let start = std::time::Instant::now();
    // Reaped by the `wait4` below (which also gives its rusage), not by `Child::wait`.
    #[allow(clippy::zombie_processes)]
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hw9-grade"))
        .arg("--read-outputs") // the bounded reader, whatever the machine can re-run
        .arg(&bomb)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    // This child's own peak (tests run in parallel: RUSAGE_CHILDREN would mix in the others').
    let (mut status, mut usage): (libc::c_int, libc::rusage) = (0, unsafe { std::mem::zeroed() });
    // SAFETY: waits for our own child, filling the status and rusage we own.
    assert_eq!(unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) }, child.id() as i32);
    let secs = start.elapsed().as_secs_f64();
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 2, "{stderr}");
    assert!(stderr.contains("inflates past the limit"), "{stderr}");
    let max_rss_mb = usage.ru_maxrss as f64 / 1024.0;
    assert!(max_rss_mb < max_mb, "hw9-grade used {max_rss_mb:.0} MB on the bomb ({name})");
    println!(
        "bomb of {} bytes as {name}: refused in {secs:.2} s, peak RSS {max_rss_mb:.1} MB",
        std::fs::metadata(&bomb).unwrap().len()
    );
}

#[test]
fn mutated_submissions_never_panic_the_grader() {
    let dir = tempfile::tempdir().unwrap();
    let real = members(true, "quick");
    let bytes = std::fs::read(zip_of(&dir.path().join("real.zip"), &real)).unwrap();
    let target = dir.path().join("mutant.zip");
    let assets = Assets::default();
    let mut runner = TestRunner::new(Config { cases: 400, failure_persistence: None, ..Config::default() });

    // The zip's own bytes: flipped and truncated.
    let strategy = (proptest::collection::vec((0..bytes.len(), any::<u8>()), 1..8), 1..=bytes.len());
    runner
        .run(&strategy, |(flips, cut)| {
            let mut b = bytes[..cut].to_vec();
            for (at, v) in flips {
                if at < b.len() {
                    b[at] = v;
                }
            }
            std::fs::write(&target, &b).unwrap();
            let _ = grade(&target, &assets); // a result or an error; a panic fails the test
            Ok(())
        })
        .unwrap();

    // The safetensors file inside, resealed so that its parsing is reached.
    let outputs = real["outputs.safetensors"].clone();
    let strategy = (proptest::collection::vec((0..outputs.len(), any::<u8>()), 1..6), any::<u64>(), any::<bool>());
    runner
        .run(&strategy, |(flips, header_len, set_len)| {
            let mut st = outputs.clone();
            if set_len {
                st[..8].copy_from_slice(&header_len.to_le_bytes());
            }
            for (at, v) in flips {
                st[at] = v;
            }
            let mut m = real.clone();
            m.insert("outputs.safetensors".into(), st);
            seal(&mut m);
            let _ = grade(&zip_of(&target, &m), &assets);
            Ok(())
        })
        .unwrap();
}

#[test]
fn run_autograder_grades_every_kind_of_upload() {
    let dir = tempfile::tempdir().unwrap();
    let assets = Assets::default();
    let max_of = |nb: &str| hw9_grade::spec::GradingSpec::load(&assets.dir, nb).unwrap().max_points();
    let max = max_of(NB);
    let autograde_nb = |name: &str, nb: &str, upload: &dyn Fn(&Path)| -> Results {
        let root = dir.path().join(name);
        std::fs::create_dir_all(root.join("submission")).unwrap();
        upload(&root.join("submission"));
        // Run the binary as run_autograder does, with Gradescope's root moved here.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_hw9-grade"))
            .args(["gradescope", "--notebook", nb])
            .env("GRADESCOPE_ROOT", &root)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let results: Results =
            serde_json::from_slice(&std::fs::read(root.join("results/results.json")).unwrap()).unwrap();
        assert_eq!(results.tests.iter().map(|t| t.max_score).sum::<f64>(), max_of(nb), "{name}: every item listed");
        // The checks (graded inputs) show after the due date, the rest at once (the default policy).
        let want = |t: &hw9_grade::gradescope::TestResult| {
            if t.name.ends_with("(check)") {
                "after_due_date"
            } else {
                "visible"
            }
        };
        assert!(results.tests.iter().all(|t| t.visibility == want(t) && !t.output.is_empty()), "{results:#?}");
        results
    };
    let autograde = |name: &str, upload: &dyn Fn(&Path)| autograde_nb(name, NB, upload);
    let correct = autograde("correct", &|s| {
        zip_of(&s.join("hw9_submission.zip"), &members(true, "quick"));
    });
    assert_eq!(correct.score, max - 1.0, "{correct:#?}"); // no threshold recorded
    assert!(correct.output.contains("Graded hw9_submission.zip"));
    let wrong = autograde("wrong", &|s| {
        zip_of(&s.join("hw9_submission.zip"), &members(false, "quick"));
    });
    assert_eq!(wrong.score, 0.0);
    assert!(wrong.tests.iter().any(|t| t.status == "failed" && t.output.contains("elements differ")));
    let tampered = autograde("tampered", &|s| {
        let mut m = members(false, "quick");
        m.insert("outputs.safetensors".into(), members(true, "quick")["outputs.safetensors"].clone());
        zip_of(&s.join("nested/hw9_submission.zip"), &m);
    });
    assert_eq!(tampered.score, 0.0);
    assert!(tampered.output.contains("does not match the manifest"), "{}", tampered.output);
    let foreign = autograde("foreign", &|s| {
        let mut m = BTreeMap::new();
        m.insert("essay.txt".to_string(), b"hello".to_vec());
        zip_of(&s.join("upload.zip"), &m);
    });
    assert!(foreign.score == 0.0 && foreign.output.contains("has no manifest.json"), "{}", foreign.output);
    // A notebook-1 log (the lone-JSON upload the original Summarization assignment asked for),
    // run in the quick profile: its thresholds are listed but not graded.
    let quick = autograde_nb("quick", "01_vit_mae", &|s| {
        let mut log: SubmissionLog = serde_json::from_slice(&members(true, "quick")["submission_log.json"]).unwrap();
        log.notebook = "01_vit_mae".into();
        for name in ["vit_test_acc", "linear_probe_test_acc", "finetune_test_acc"] {
            let r = hw9_grade::log::ThresholdRecord { title: name.into(), value: 0.99, threshold: 0.0 };
            log.thresholds.insert(name.into(), r);
        }
        std::fs::write(s.join("submission_log.json"), serde_json::to_vec(&log).unwrap()).unwrap();
    });
    assert_eq!(quick.score, 0.0);
    let vit = quick.tests.iter().find(|t| t.name == "vit_test_acc (threshold)").unwrap();
    assert!(vit.output.contains("NOT GRADED") && vit.output.contains("quick profile"), "{}", vit.output);
    let empty = autograde("empty", &|_| {});
    assert!(empty.score == 0.0 && empty.output.contains("No upload to grade"), "{}", empty.output);
}

#[test]
fn an_unpacked_gradescope_bundle_grades_through_its_own_run_autograder() {
    let dir = tempfile::tempdir().unwrap();
    let exe = Path::new(env!("CARGO_BIN_EXE_hw9-grade"));
    let zips = hw9_grade::gradescope::write_bundles(
        &hw9_env::paths::root(),
        &hw9_env::paths::assets(),
        exe,
        None,
        &dir.path().join("bundles"),
    )
    .unwrap();
    assert_eq!(zips.len(), hw9_grade::gradescope::ASSIGNMENTS.len());
    let setup_check = zips.iter().find(|z| z.ends_with("hw9-setup-check.zip")).unwrap();
    // Gradescope unpacks the bundle into /autograder/source.
    let root = dir.path().join("autograder");
    let source = root.join("source");
    zip::ZipArchive::new(std::fs::File::open(setup_check).unwrap()).unwrap().extract(&source).unwrap();
    for f in [
        "setup.sh",
        "run_autograder",
        "bin/hw9-grade",
        "assets/fixtures/00_setup_check.safetensors",
        "assets/grading/00_setup_check.json",
        "grader/Cargo.toml",
        "grader/Cargo.lock",
        "grader/crates/hw9-grade/src/lib.rs",
    ] {
        assert!(source.join(f).exists(), "the bundle has no {f}");
    }
    let syntax = std::process::Command::new("bash").arg("-n").arg(source.join("setup.sh")).status().unwrap();
    assert!(syntax.success(), "setup.sh is not valid bash");
    zip_of(&root.join("submission/hw9_submission.zip"), &members(true, "quick"));
    let out = std::process::Command::new("bash")
        .arg({
            // Gradescope runs a copy of it as /autograder/run_autograder.
            std::fs::copy(source.join("run_autograder"), root.join("run_autograder")).unwrap();
            root.join("run_autograder")
        })
        .env("GRADESCOPE_ROOT", &root)
        .env("HW9_ROOT", dir.path().join("not-the-repository")) // the bundle's own assets must serve
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let results: Results = serde_json::from_slice(&std::fs::read(root.join("results/results.json")).unwrap()).unwrap();
    let max = hw9_grade::spec::GradingSpec::load(&source.join("assets"), NB).unwrap().max_points();
    assert_eq!(results.score, max - 1.0, "{results:#?}");
}

#[test]
fn late_and_rate_limited_uploads_follow_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let grade_with = |name: &str, metadata: serde_json::Value| -> Results {
        let root = dir.path().join(name);
        std::fs::create_dir_all(root.join("submission")).unwrap();
        zip_of(&root.join("submission/hw9_submission.zip"), &members(true, "quick"));
        std::fs::write(root.join("submission_metadata.json"), metadata.to_string()).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_hw9-grade"))
            .args(["gradescope", "--notebook", NB])
            .env("GRADESCOPE_ROOT", &root)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&std::fs::read(root.join("results/results.json")).unwrap()).unwrap()
    };
    let meta = |created: &str, previous: Vec<(&str, f64)>| {
        serde_json::json!({
            "created_at": created,
            "assignment": {"due_date": "2026-12-10T23:59:00.000000-08:00", "late_due_date": "2026-12-13T23:59:00.000000-08:00"},
            "previous_submissions": previous.iter().map(|(t, s)| serde_json::json!({"submission_time": t, "score": s})).collect::<Vec<_>>(),
        })
    };
    let on_time = grade_with("on-time", meta("2026-12-10T10:00:00.000000-08:00", vec![]));
    assert!(on_time.score > 0.0 && !on_time.output.contains("Late"));
    // 1 day and 1 minute late: two days' penalty (parts of a day count), 80 % kept.
    let late = grade_with("late", meta("2026-12-12T00:00:00.000000-08:00", vec![]));
    assert!((late.score - on_time.score * 0.8).abs() < 1e-9, "{} vs {}", late.score, on_time.score);
    assert!(late.output.contains("Late by 2 day(s)"), "{}", late.output);
    let too_late = grade_with("too-late", meta("2026-12-14T00:00:00.000000-08:00", vec![]));
    assert_eq!(too_late.score, 0.0);
    assert!(too_late.output.contains("after the late due date"));
    // Ten uploads in the last 24 hours (the default limit): the last score stands, nothing re-run.
    let earlier: Vec<(&str, f64)> = (0..10).map(|_| ("2026-12-10T01:00:00.000000-08:00", 7.0)).collect();
    let limited = grade_with("limited", meta("2026-12-10T10:00:00.000000-08:00", earlier.clone()));
    assert_eq!(limited.score, 7.0);
    assert!(
        limited.output.contains("10 uploads in the last 24 hours") && limited.tests.is_empty(),
        "{}",
        limited.output
    );
    // The same ten a day and more before: graded.
    let later = grade_with("next-day", meta("2026-12-11T02:00:00.000000-08:00", earlier));
    assert!(later.score > 0.0 && !later.tests.is_empty());
}
