//! The committed student notebooks are exactly what `hw9 release` makes from the solution
//! sources, and carry no solution text.

use hw9::grading::release::{release_all, release_notebook, secret_lines, source_of};

#[test]
fn committed_student_notebooks_match_their_sources() {
    let root = hw9::paths::root();
    let done =
        release_all(&root.join("notebooks/solutions"), &root.join("notebooks"), &root.join("assets/grading"), true)
            .unwrap();
    assert!(!done.is_empty(), "no solution sources found");
    let stale: Vec<_> = done.iter().filter(|r| r.changed).map(|r| r.student.display().to_string()).collect();
    assert!(stale.is_empty(), "out of date (run `make release`): {stale:?}");
}

#[test]
fn student_notebooks_hold_no_solution_text_and_a_todo_per_region() {
    let root = hw9::paths::root();
    for entry in std::fs::read_dir(root.join("notebooks/solutions")).unwrap().flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "ipynb") {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let solution: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let (_, regions) = release_notebook(&solution, &name).unwrap();
        let student: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(root.join("notebooks").join(&name)).unwrap()).unwrap();
        let text: String = student["cells"].as_array().unwrap().iter().map(source_of).collect::<Vec<_>>().join("\n");
        for secret in secret_lines(&regions) {
            assert!(!text.contains(&secret), "{name} contains solution text {secret:?}");
        }
        assert!(!text.contains("BEGIN SOLUTION") && !text.contains("END SOLUTION"), "{name} has markers left");
        let code_regions = regions.iter().filter(|r| !r.hint.is_empty()).count();
        assert!(text.matches("todo!(\"TODO: ").count() >= code_regions, "{name}: a TODO per code region");
        assert!(!text.contains(r#"path = "../..""#), "{name}: the hw9 path was not rewritten");
        for cell in student["cells"].as_array().unwrap() {
            if cell["cell_type"] == "code" {
                assert_eq!(cell["outputs"], serde_json::json!([]), "{name}: outputs left in a student cell");
            }
        }
    }
}

#[test]
fn grading_specs_match_the_fixtures_the_plans_and_the_readme() {
    let root = hw9::paths::root();
    let assets = hw9::paths::assets();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    for entry in std::fs::read_dir(root.join("notebooks/solutions")).unwrap().flatten() {
        if entry.path().extension().is_none_or(|e| e != "ipynb") {
            continue;
        }
        let name = entry.path().file_stem().unwrap().to_string_lossy().into_owned();
        let spec = hw9::grading::spec::GradingSpec::load(&assets, &name).unwrap();
        // Every fixture check is graded, and nothing else is.
        let checks: Vec<String> = match hw9::grading::fixtures::Fixtures::load(&name) {
            Ok(fx) => fx.checks(),
            Err(_) => Vec::new(),
        };
        assert_eq!(spec.checks.keys().cloned().collect::<Vec<_>>(), checks, "{name}");
        let total = spec.max_points();
        assert!(readme.contains(&format!("`{name}` {total}")), "README: the total of {name} ({total})");
    }
    // The grader's thresholds are the notebook's (cpu and full profiles).
    let spec = hw9::grading::spec::GradingSpec::load(&assets, "01_vit_mae").unwrap();
    for profile in [hw9::Profile::Cpu, hw9::Profile::Full] {
        let (v, p, f) = hw9::plan::VitMaePlan::for_profile(profile).thresholds;
        assert_eq!(spec.thresholds["vit_test_acc"].at_least, Some(v));
        assert_eq!(spec.thresholds["linear_probe_test_acc"].at_least, Some(p));
        assert_eq!(spec.thresholds["finetune_test_acc"].at_least, Some(f));
    }
}
