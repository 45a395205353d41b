//! Grading by re-running (issue 29): the grader builds a submission's TODO cells into a harness
//! against the crate without its answers, runs it in the sandbox on the hidden cases
//! (`assets/hidden/`), and compares with answers the submission never had.
//!
//! - a correct notebook (the solution) passes every check;
//! - a notebook whose outputs and log were forged (PyTorch's own answers, every check "passed",
//!   re-hashed) but whose TODO cells are empty scores 0 on every check, where reading its outputs
//!   gave full marks;
//! - one notebook with a different fault in each TODO cell loses exactly those checks: a wrong
//!   formula, an endless loop (stopped at the wall-clock limit), a stack overflow (a crash),
//!   reading the hidden answers (not there), a network connection (none), and the one correct
//!   cell still passes;
//! - a TODO cell that does not compile (including one that tries to `include_bytes!` the hidden
//!   answers at compile time) costs its own checks only.
//!
//! The first harness build compiles hw9 without `reference` into `target/` (a minute or two,
//! sharing tch and torch-sys with the repository's build); each later one takes seconds.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use hw9_grade::rerun::{rerun, RerunConfig};
use hw9_grade::sandbox;
use serde_json::Value;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn config() -> Option<RerunConfig> {
    if let Err(why) = sandbox::available() {
        if std::env::var("HW9_SKIP_SANDBOX").is_ok_and(|v| v == "1") {
            eprintln!("SKIPPED (HW9_SKIP_SANDBOX=1): {why}");
            return None;
        }
        panic!("{why} (set HW9_SKIP_SANDBOX=1 to skip on a machine that cannot make namespaces)");
    }
    let mut cfg = RerunConfig::for_root(&root());
    cfg.work_dir = root().join("target").join("rerun-tests");
    cfg.run_limits.wall = Duration::from_secs(20);
    cfg.run_limits.cpu_seconds = 30;
    Some(cfg)
}

fn notebook(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("notebook")).expect("notebook JSON")
}

/// The solution notebook with the code of the cell `id` replaced by `code`.
fn with_cell(mut nb: Value, id: &str, code: &str) -> Value {
    let cells = nb["cells"].as_array_mut().expect("cells");
    let cell = cells.iter_mut().find(|c| c["id"] == id).unwrap_or_else(|| panic!("no cell {id}"));
    cell["source"] = Value::String(code.to_string());
    nb
}

fn outcome(report: &hw9_grade::rerun::RerunReport) -> Vec<(String, bool, String)> {
    report.results.iter().map(|r| (r.name.clone(), r.passed, r.message.clone())).collect()
}

fn solution(name: &str) -> Value {
    notebook(&root().join("notebooks/solutions").join(format!("{name}.ipynb")))
}

#[test]
fn a_correct_notebook_passes_every_check_on_the_hidden_cases() {
    let Some(cfg) = config() else { return };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    for name in ["00_setup_check", "01_vit_mae", "02_summarization", "04_facenet"] {
        let report = rerun(name, &solution(name), &cfg).expect("re-run");
        let all = outcome(&report);
        assert!(!all.is_empty());
        assert!(all.iter().all(|(_, ok, _)| *ok), "{name}: {all:#?}\nnotes: {:?}", report.notes);
        eprintln!(
            "{name}: built in {:.1} s, ran in {:.1} s, peak resident set {:.0} MiB (of any build or run so far)",
            report.build_seconds,
            report.run_seconds,
            report.peak_rss_bytes as f64 / (1 << 20) as f64
        );
    }
}

// The cell ids of 04_facenet's TODO cells (the release and the solution share them).
const EMBEDDING: &str = "51cda2e3";
const DISTANCES: &str = "31681ede";
const LOSS: &str = "a6da77e7";
const SEMI_HARD: &str = "dfa31980";

#[test]
fn each_fault_costs_its_own_check_and_nothing_leaks() {
    let Some(cfg) = config() else { return };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let hidden = root().join("assets/hidden/04_facenet.safetensors");
    let nb = solution("04_facenet");
    let embedding = format!(
        r#"#[derive(Debug)]
struct FaceNet {{ trunk: ConvTrunk, head: nn::Linear }}
impl FaceNet {{
    fn new(vs: &nn::Path, cfg: &FacenetConfig) -> Self {{
        FaceNet {{ trunk: ConvTrunk::new(&(vs / "trunk"), cfg).expect("cfg"), head: nn::linear(vs / "head", cfg.trunk_dim(), cfg.embedding_dim, Default::default()) }}
    }}
}}
impl nn::ModuleT for FaceNet {{
    fn forward_t(&self, images: &Tensor, train: bool) -> Tensor {{
        // Reads the grader's answers, then tries the network: neither is there.
        let answers = std::fs::read({hidden:?}).map(|b| b.len()).map_err(|e| e.to_string());
        let net = std::net::TcpStream::connect_timeout(&"1.1.1.1:80".parse().unwrap(), std::time::Duration::from_secs(2)).map_err(|e| e.to_string());
        panic!("LEAK CHECK answers={{answers:?}} network={{net:?}}");
    }}
}}"#
    );
    let nb = with_cell(nb, EMBEDDING, &embedding);
    // Wrong: distances, not squared.
    let nb = with_cell(
        nb,
        DISTANCES,
        "fn pairwise_squared_distances(e: &Tensor) -> Tensor {\n    let sq = e.square().sum_dim_intlist([-1].as_slice(), false, Kind::Float);\n    (sq.unsqueeze(1) + sq.unsqueeze(0) - e.matmul(&e.transpose(0, 1)) * 2.0).clamp_min(0.0).sqrt()\n}",
    );
    let nb = with_cell(
        nb,
        LOSS,
        "fn triplet_loss(a: &Tensor, p: &Tensor, n: &Tensor, margin: f64) -> Tensor {\n    while std::hint::black_box(true) {}\n    a.sum(Kind::Float)\n}",
    );
    let nb = with_cell(
        nb,
        SEMI_HARD,
        "fn deeper(n: u64) -> u64 { if n == u64::MAX { 0 } else { 1 + deeper(n + 1) } }\nfn semi_hard_triplets(d: &Tensor, l: &Tensor) -> (Tensor, Tensor, Tensor) {\n    let n = deeper(0) as i64;\n    (Tensor::from(n), Tensor::from(n), Tensor::from(n))\n}",
    );
    let report = rerun("04_facenet", &nb, &cfg).expect("re-run");
    let all = outcome(&report);
    let get = |name: &str| all.iter().find(|(n, ..)| n == name).unwrap_or_else(|| panic!("no {name} in {all:#?}"));
    assert!(get("batch_hard_triplets").1, "the correct cell passes: {all:#?}");
    let embedding = get("embedding");
    assert!(!embedding.1);
    assert!(embedding.2.contains("LEAK CHECK"), "{all:#?}");
    assert!(embedding.2.contains("No such file"), "the hidden answers are not there: {}", embedding.2);
    assert!(!embedding.2.contains("network=Ok"), "no network: {}", embedding.2);
    assert!(!get("pairwise_distances").1);
    assert!(get("pairwise_distances").2.contains("expected"), "{all:#?}");
    let looped = get("triplet_loss");
    assert!(!looped.1 && looped.2.contains("endless loop"), "{looped:?}");
    let crashed = get("semi_hard_triplets");
    assert!(
        !crashed.1
            && (crashed.2.contains("SIGSEGV") || crashed.2.contains("SIGABRT") || crashed.2.contains("overflow")),
        "{crashed:?}"
    );
    assert_eq!(all.iter().filter(|(_, ok, _)| *ok).count(), 1, "{all:#?}");
}

#[test]
fn a_cell_that_does_not_compile_costs_its_own_checks_only() {
    let Some(cfg) = config() else { return };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let hidden = root().join("assets/hidden/04_facenet.safetensors");
    let nb = with_cell(
        solution("04_facenet"),
        DISTANCES,
        &format!("static ANSWERS: &[u8] = include_bytes!({hidden:?});\nfn pairwise_squared_distances(e: &Tensor) -> Tensor {{ Tensor::from(ANSWERS.len() as f64) }}"),
    );
    let nb = with_cell(nb, LOSS, "fn triplet_loss(a: &Tensor, p: &Tensor, n: &Tensor, margin: f64) -> Tensor {\n    a + 1u8 == \"a type error\"\n}");
    let report = rerun("04_facenet", &nb, &cfg).expect("re-run");
    let all = outcome(&report);
    let failed: Vec<&str> = all.iter().filter(|(_, ok, _)| !ok).map(|(n, ..)| n.as_str()).collect();
    assert_eq!(failed, ["pairwise_distances", "triplet_loss"], "{all:#?}");
    let notes = report.notes.join("\n");
    assert!(notes.contains("does not compile") && notes.contains(DISTANCES) && notes.contains(LOSS), "{notes}");
    assert!(notes.contains("No such file") || notes.contains("couldn't read"), "include_bytes! found nothing: {notes}");
}

#[test]
fn a_forged_submission_scores_what_its_code_earns() {
    let Some(cfg) = config() else { return };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    use hw9::grading::check::Recorder;
    use hw9::grading::fixtures::Fixtures;
    // The student's machine reports PyTorch's own answers on every case (all checks pass) for a
    // notebook whose TODO cells are the release's `todo!`s.
    let dir = tempfile::tempdir().expect("tempdir");
    let fixtures = Fixtures::load("04_facenet").expect("fixtures");
    let mut rec = Recorder::new("04_facenet");
    for check in fixtures.checks() {
        rec.check(&fixtures, &check, |c| c.expected().into_iter().map(|t| t.shallow_clone()).collect::<Vec<_>>());
    }
    let nb_file = dir.path().join("04_facenet.ipynb");
    std::fs::copy(root().join("notebooks/04_facenet.ipynb"), &nb_file).expect("copy");
    let paths = hw9::grading::submission::write_submission_to(&rec, &nb_file, &dir.path().join("sub")).expect("zip");
    let mut assets = hw9_grade::Assets::default();
    let trusted = hw9_grade::grade(&paths.zip, &assets).expect("grade the outputs");
    assert_eq!(trusted.score(), (5, 5), "reading the outputs, the forgery passes: {:?}", trusted.items);
    assets.rerun = Some(cfg);
    let measured = hw9_grade::grade(&paths.zip, &assets).expect("grade by re-running");
    assert_eq!(measured.score(), (0, 5), "{:#?}", measured.items);
    assert!(measured.notes.iter().any(|n| n.contains("re-running")));
    // The command's own path (`hw9-grade <zip>`: re-running by default) grades it the same way.
    let args =
        hw9_grade::GradeArgs { path: paths.zip.clone(), out: None, assets: None, fixtures: None, read_outputs: false };
    args.run().expect("hw9-grade <zip> (re-running by default)");
}

#[test]
fn a_folder_is_graded_by_two_workers_into_the_gradebook_and_the_canvas_csv() {
    let Some(cfg) = config() else { return };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    use hw9::grading::check::Recorder;
    let dir = tempfile::tempdir().expect("tempdir");
    // alice hands in the solution, carol the untouched handout; both logs claim nothing.
    for (student, source) in
        [("alice", "notebooks/solutions/04_facenet.ipynb"), ("carol", "notebooks/04_facenet.ipynb")]
    {
        let work = dir.path().join("work").join(student);
        std::fs::create_dir_all(&work).expect("mkdir");
        let nb = work.join("04_facenet.ipynb");
        std::fs::copy(root().join(source), &nb).expect("copy");
        let rec = Recorder::new("04_facenet");
        let paths = hw9::grading::submission::write_submission_to(&rec, &nb, &work.join("sub")).expect("zip");
        let to = dir.path().join("uploads").join(student).join("hw9_submission.zip");
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        std::fs::copy(&paths.zip, &to).expect("copy zip");
    }
    std::env::set_var("HW9_GRADE_JOBS", "2");
    let assets = hw9_grade::Assets { rerun: Some(cfg), ..Default::default() };
    let book = hw9_grade::batch::grade_folder(&dir.path().join("uploads"), &assets).expect("batch");
    std::env::remove_var("HW9_GRADE_JOBS");
    let points: Vec<(&str, f64)> = book.rows.iter().map(|r| (r.student.as_str(), r.points)).collect();
    // The checks are 11 of notebook 4's 19 points; the thresholds were not recorded.
    assert_eq!(points, [("alice", 11.0), ("carol", 0.0)], "{:#?}", book.rows);
    let out = dir.path().join("grades");
    std::fs::create_dir_all(&out).expect("mkdir");
    book.write(&out).expect("write");
    let canvas = std::fs::read_to_string(out.join("canvas.csv")).expect("canvas.csv");
    assert!(canvas.contains("alice,,,alice,,11"), "{canvas}");
}

/// The figure in a threshold item's message: `measured by the grader: 0.8123 >= …`.
fn measured_in(message: &str) -> f64 {
    let rest = message.split("measured by the grader: ").nth(1).unwrap_or_else(|| panic!("not measured: {message}"));
    rest.split(' ').next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no figure in {message}"))
}

#[test]
fn thresholds_are_graded_on_what_the_grader_measures_of_the_submitted_weights() {
    let Some(cfg) = config() else { return };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    use hw9::grading::check::Recorder;
    use hw9::grading::submission::write_submission_to;
    use hw9::plan::FacenetPlan;
    use hw9::tasks::triplet::{train_triplets, TripletFns};
    use hw9::tasks::verification::evaluate_embedding;
    use hw9::Profile;
    use hw9_grade::grade::{grade, Status};
    use tch::{nn, Device};

    // A quick-profile FaceNet trained here with the crate's reference model (the solution
    // notebook's own model code: the same variables), and what it measures here.
    let plan = FacenetPlan::for_profile(Profile::Quick);
    let data = plan.data().expect("Fashion-MNIST");
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = hw9::models::facenet::FaceNet::new(&vs.root(), &plan.model).expect("model");
    train_triplets(&model, &vs, &data, &TripletFns::reference(), &plan.train, "FaceNet (test)", || Ok(0.0))
        .expect("train");
    let (here, _, _) = evaluate_embedding(&model, &data, &plan.eval, Device::Cpu).expect("evaluate");
    assert!(here.nn_accuracy < 0.95, "the quick model is not that good: {here:?}");

    // The grader's files: the repository's fixtures; the quick profile graded, with thresholds
    // this model's figures pass (VAL, purity) and fail (nearest-neighbour accuracy).
    let dir = tempfile::tempdir().expect("tempdir");
    let assets_dir = dir.path().join("assets");
    std::fs::create_dir_all(assets_dir.join("fixtures")).expect("mkdir");
    std::fs::create_dir_all(assets_dir.join("grading")).expect("mkdir");
    std::fs::copy(
        root().join("assets/fixtures/04_facenet.safetensors"),
        assets_dir.join("fixtures/04_facenet.safetensors"),
    )
    .expect("copy fixtures");
    let mut spec: Value =
        serde_json::from_slice(&std::fs::read(root().join("assets/grading/04_facenet.json")).expect("spec"))
            .expect("json");
    spec["graded_profiles"] = serde_json::json!(["quick", "cpu"]);
    spec["thresholds"]["val_at_far"]["at_least"] = serde_json::json!((here.verification.val - 0.1).max(0.0));
    spec["thresholds"]["nn_accuracy"]["at_least"] = serde_json::json!(0.99);
    spec["thresholds"]["kmeans_purity"]["at_least"] = serde_json::json!((here.purity - 0.15).max(0.0));
    std::fs::write(assets_dir.join("grading/04_facenet.json"), serde_json::to_vec(&spec).expect("json")).expect("spec");
    let assets = hw9_grade::Assets { dir: assets_dir, rerun: Some(cfg), ..Default::default() };

    // The student: the solution notebook; a log that claims 0.99 for every figure.
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).expect("mkdir");
    let nb = work.join("04_facenet.ipynb");
    std::fs::copy(root().join("notebooks/solutions/04_facenet.ipynb"), &nb).expect("copy");
    let submit = |profile: Profile, weights: bool, name: &str| {
        let mut rec = Recorder::new("04_facenet").with_profile(profile);
        for figure in ["val_at_far", "nn_accuracy", "kmeans_purity"] {
            rec.at_least(figure, figure, 0.99, 0.0);
        }
        if weights {
            rec.weights("facenet", &vs).expect("weights");
        }
        let paths = write_submission_to(&rec, &nb, &work.join(name)).expect("zip");
        let report = grade(&paths.zip, &assets).expect("grade");
        report
            .items
            .into_iter()
            .filter(|i| i.kind == "threshold")
            .map(|i| (i.name.clone(), i))
            .collect::<std::collections::BTreeMap<_, _>>()
    };

    let items = submit(Profile::Quick, true, "forged");
    let (val, nn, purity) = (&items["val_at_far"], &items["nn_accuracy"], &items["kmeans_purity"]);
    assert_eq!((val.status, nn.status, purity.status), (Status::Passed, Status::Failed, Status::Passed), "{items:#?}");
    assert_eq!(nn.points, 0.0, "the log's 0.99 earned nothing: {nn:?}");
    // The grader's figures are this model's (the same weights on the same held-out images, in
    // another order, one thread; k-means from other starts, which moves the purity of a model
    // this little trained by a few hundredths: the cpu profile's runs differ by 0.005).
    assert!((measured_in(&val.message) - here.verification.val).abs() < 0.02, "{val:?} vs {here:?}");
    assert!((measured_in(&nn.message) - here.nn_accuracy).abs() < 0.02, "{nn:?} vs {here:?}");
    assert!((measured_in(&purity.message) - here.purity).abs() < 0.08, "{purity:?} vs {here:?}");
    assert!(
        items.values().all(|i| i.message.contains("FLAGGED") && i.message.contains("recorded 0.9900")),
        "{items:#?}"
    );

    // No weights: nothing is measured, every threshold fails, and the message says what to do.
    let items = submit(Profile::Quick, false, "no-weights");
    assert!(
        items.values().all(|i| i.status == Status::Failed && i.message.contains("no trained weights")),
        "{items:#?}"
    );

    // The log's profile edited to `cpu`: the quick weights do not fit the cpu profile's model.
    let items = submit(Profile::Cpu, true, "profile-edited");
    assert!(
        items.values().all(|i| i.status == Status::Failed
            && i.message.contains("must fit the model your notebook builds in the cpu profile")),
        "{items:#?}"
    );
}

#[test]
fn every_notebooks_measurement_builds_against_its_solution_and_a_bad_weights_file_fails_alone() {
    let Some(cfg) = config() else { return };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    use hw9_grade::rerun::{rerun_submission, Submitted};
    // A safetensors file that holds one tensor no model has.
    let stray = {
        let t = tch::Tensor::from_slice(&[1.0f32, 2.0]);
        let file = tempfile::NamedTempFile::new().expect("tmp");
        tch::Tensor::write_safetensors(&[("stray", t)], file.path()).expect("write");
        std::fs::read(file.path()).expect("read")
    };
    for (nb, model, figures) in [
        ("01_vit_mae", "vit", vec!["vit_test_acc", "linear_probe_test_acc", "finetune_test_acc"]),
        ("02_summarization", "summarizer", vec!["val_loss", "val_acc", "val_loss_decrease"]),
        ("04_facenet", "facenet", vec!["val_at_far", "nn_accuracy", "kmeans_purity"]),
    ] {
        let submitted = Submitted { profile: "quick".into(), weights: [(model.to_string(), stray.clone())].into() };
        let report = rerun_submission(nb, &solution(nb), Some(&submitted), &cfg).expect("re-run");
        assert_eq!(
            report.measure_error, None,
            "{nb}: the measurement must build against the solution: {:?}",
            report.notes
        );
        assert!(report.results.iter().all(|r| r.passed), "{nb}: the checks are unaffected: {:#?}", report.results);
        let mut got: Vec<&str> = report.measured.keys().map(String::as_str).collect();
        got.sort();
        let mut want = figures.clone();
        want.sort();
        assert_eq!(got, want, "{nb}");
        for (figure, m) in &report.measured {
            let why = m.as_ref().expect_err("nothing can be measured");
            assert!(
                why.contains("has no tensor") || why.contains("no such weights") || why.contains("no output"),
                "{nb} {figure}: {why}"
            );
        }
        eprintln!("{nb}: measuring took {:.1} s beside the run ({:.1} s)", report.measure_seconds, report.run_seconds);
    }
}

/// Runs `script` with bash and `env`, returning (success, stdout + stderr, seconds).
fn bash(script: &Path, env: &[(&str, &Path)]) -> (bool, String, f64) {
    let started = std::time::Instant::now();
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(script);
    for (k, v) in env {
        cmd.env(k, v);
    }
    // The bundle must find its own crate and data, not the repository's.
    cmd.env_remove("HW9_ROOT");
    let out = cmd.output().expect("bash");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text, started.elapsed().as_secs_f64())
}

#[test]
fn a_gradescope_bundle_sets_itself_up_and_grades_uploads_by_re_running_them() {
    let Some(_) = config() else { return };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    use hw9::grading::check::Recorder;
    use hw9::grading::submission::write_submission_to;
    use hw9_grade::gradescope::Results;
    const NB: &str = "04_facenet";
    // A fixed place under target/: the bundle's paths stay the same from run to run, so its
    // warm build is reused (the harness's fingerprints name them).
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"));
    let base = target.join("gradescope-test");
    let handout = hw9::grading::handout::write_handout(&root(), &base.join("handout")).expect("handout");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = std::process::Command::new(cargo)
        .args(["build", "-q", "--locked", "-p", "hw9-grade", "--bin", "hw9-grade"])
        .current_dir(root())
        .status()
        .expect("cargo");
    assert!(built.success(), "hw9-grade does not build");
    let zips = hw9_grade::gradescope::write_bundles(
        &root(),
        &root().join("assets"),
        &target.join("debug/hw9-grade"),
        Some(&handout.dir),
        &base.join("bundles"),
    )
    .expect("bundles");
    let zip = zips.iter().find(|z| z.ends_with("hw9-code-facenet.zip")).expect("FaceNet's bundle");
    let size = std::fs::metadata(zip).expect("zip").len();

    // Gradescope unpacks the bundle into /autograder/source and runs setup.sh once, as root.
    let tree = base.join("autograder");
    let source = tree.join("source");
    for stale in [source.join("hw9"), source.join("assets"), tree.join("submission"), tree.join("results")] {
        let _ = std::fs::remove_dir_all(stale);
    }
    zip::ZipArchive::new(std::fs::File::open(zip).expect("zip")).expect("zip").extract(&source).expect("unzip");
    for f in ["hw9/Cargo.toml", "hw9/notebooks/04_facenet.ipynb", "assets/hidden/04_facenet.safetensors"] {
        assert!(source.join(f).exists(), "the bundle has no {f}");
    }
    assert!(
        !source.join("hw9/src/models/reference/facenet.rs").exists()
            && !source.join("hw9/notebooks/solutions").exists(),
        "the bundle holds the handout, not the answers"
    );
    // This machine's libtorch and target folder (shared: torch-sys is not built again); on
    // Gradescope setup.sh fetches libtorch itself.
    let libtorch = RerunConfig::for_root(&root()).libtorch;
    let env = [("LIBTORCH", libtorch.as_path()), ("CARGO_TARGET_DIR", target.as_path())];
    let (ok, log, setup_s) = bash(&source.join("setup.sh"), &env);
    assert!(ok, "setup.sh failed:\n{log}");
    let step_ok =
        |step: &str| log.lines().any(|l| l.starts_with(step) && l[step.len()..].trim_start().starts_with("ok:"));
    assert!(step_ok("sandbox") && step_ok("warm"), "{log}");

    // An upload: the solution notebook (quick profile). Gradescope puts it in /autograder/submission.
    let upload = |notebook: &Path, rec: &Recorder| -> (Results, f64) {
        let _ = std::fs::remove_dir_all(tree.join("submission"));
        let work = base.join("student");
        std::fs::create_dir_all(&work).expect("mkdir");
        let nb = work.join("04_facenet.ipynb");
        std::fs::copy(notebook, &nb).expect("copy");
        let paths = write_submission_to(rec, &nb, &work.join("sub")).expect("zip");
        std::fs::create_dir_all(tree.join("submission")).expect("mkdir");
        std::fs::copy(&paths.zip, tree.join("submission/hw9_submission.zip")).expect("copy");
        // Gradescope runs a copy of it as /autograder/run_autograder.
        std::fs::copy(source.join("run_autograder"), tree.join("run_autograder")).expect("copy run_autograder");
        let (ok, log, secs) = bash(&tree.join("run_autograder"), &[("GRADESCOPE_ROOT", tree.as_path())]);
        assert!(ok, "run_autograder failed:\n{log}");
        let results = std::fs::read(tree.join("results/results.json")).expect("results.json");
        (serde_json::from_slice(&results).expect("results"), secs)
    };
    let (correct, correct_s) = upload(&root().join("notebooks/solutions/04_facenet.ipynb"), &Recorder::new(NB));
    // The checks are 11 of notebook 4's 19 points; a quick run's thresholds are not graded.
    assert_eq!(correct.score, 11.0, "{correct:#?}");
    assert!(correct.output.contains("re-running your TODO cells"), "{}", correct.output);
    let checks: Vec<_> = correct.tests.iter().filter(|t| t.name.ends_with("(check)")).collect();
    assert!(!checks.is_empty() && checks.iter().all(|t| t.status == "passed" && t.visibility == "after_due_date"));

    // A forged upload: the handout's notebook, with PyTorch's own answers as its outputs.
    let fixtures = hw9::grading::fixtures::Fixtures::load(NB).expect("fixtures");
    let mut rec = Recorder::new(NB);
    for check in fixtures.checks() {
        rec.check(&fixtures, &check, |c| c.expected().into_iter().map(|t| t.shallow_clone()).collect::<Vec<_>>());
    }
    let (forged, forged_s) = upload(&root().join("notebooks/04_facenet.ipynb"), &rec);
    assert_eq!(forged.score, 0.0, "{forged:#?}");
    eprintln!(
        "FaceNet's bundle: {:.1} MB; setup.sh {setup_s:.0} s (libtorch and target folder given); \
         run_autograder {correct_s:.1} s (solution), {forged_s:.1} s (forged)",
        size as f64 / 1e6
    );
}

#[test]
fn the_setup_checks_line_fit_is_trained_again_with_the_notebooks_own_mse() {
    let Some(cfg) = config() else { return };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    use hw9_grade::rerun::{rerun_submission, Submitted};
    const NB: &str = "00_setup_check";
    let fit = |nb: &Value| {
        // No weights: the line is trained in the harness with the notebook's `mse`.
        let submitted = Submitted { profile: "quick".into(), weights: Default::default() };
        let report = rerun_submission(NB, nb, Some(&submitted), &cfg).expect("re-run");
        assert_eq!(report.measure_error, None, "{:?}", report.notes);
        report.measured["line_fit"].clone()
    };
    let right = fit(&solution(NB)).expect("the solution's fit");
    assert!(right > 0.9, "the solution's mse fits the line: {right}");
    // A sum instead of a mean: 64 times the gradient, SGD at 0.1 diverges.
    let summed = with_cell(
        solution(NB),
        "cf701ed1",
        "fn mse(pred: &Tensor, target: &Tensor) -> Tensor {\n    (pred - target).square().sum(Kind::Float)\n}\n",
    );
    match fit(&summed) {
        Ok(f) => assert!(f < 0.9, "a summed loss must not fit the line: {f}"),
        Err(why) => assert!(why.contains("not a number"), "{why}"),
    }
    // A loss that is not one number fails with what was expected.
    let unreduced = with_cell(
        solution(NB),
        "cf701ed1",
        "fn mse(pred: &Tensor, target: &Tensor) -> Tensor {\n    (pred - target).square()\n}\n",
    );
    let why = fit(&unreduced).expect_err("an unreduced loss");
    assert!(why.contains("expected the loss as one number"), "{why}");
}
