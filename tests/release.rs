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
    // The grader's thresholds are the notebooks' plans' (cpu and full profiles), every notebook.
    let spec = hw9::grading::spec::GradingSpec::load(&assets, "01_vit_mae").unwrap();
    for profile in [hw9::Profile::Cpu, hw9::Profile::Full] {
        let (v, p, f) = hw9::plan::VitMaePlan::for_profile(profile).thresholds;
        assert_eq!(spec.thresholds["vit_test_acc"].at_least, Some(v));
        assert_eq!(spec.thresholds["linear_probe_test_acc"].at_least, Some(p));
        assert_eq!(spec.thresholds["finetune_test_acc"].at_least, Some(f));
    }
    let spec = hw9::grading::spec::GradingSpec::load(&assets, "02_summarization").unwrap();
    for profile in [hw9::Profile::Cpu, hw9::Profile::Full] {
        let (loss, acc) = hw9::plan::SummarizationPlan::for_profile(profile, 8000).expected;
        assert_eq!(spec.thresholds["val_loss"].at_most, Some(loss), "{profile}");
        assert_eq!(spec.thresholds["val_acc"].at_least, Some(acc), "{profile}");
    }
    let spec = hw9::grading::spec::GradingSpec::load(&assets, "04_facenet").unwrap();
    for profile in [hw9::Profile::Cpu, hw9::Profile::Full] {
        let (val, nn, purity) = hw9::plan::FacenetPlan::for_profile(profile).thresholds;
        assert_eq!(spec.thresholds["val_at_far"].at_least, Some(val), "{profile}");
        assert_eq!(spec.thresholds["nn_accuracy"].at_least, Some(nn), "{profile}");
        assert_eq!(spec.thresholds["kmeans_purity"].at_least, Some(purity), "{profile}");
    }
    // Every notebook: each threshold the solution records (`rec.at_least` / `rec.at_most`) is in
    // the grader's spec under its name, direction and title, with its bound when the notebook
    // writes it as a number (the plans' bounds are compared above), and the spec has no other.
    for name in ["00_setup_check", "01_vit_mae", "02_summarization", "03_visualizing_attention", "04_facenet"] {
        let path = root.join("notebooks/solutions").join(format!("{name}.ipynb"));
        let nb: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let code: String = nb["cells"].as_array().unwrap().iter().map(source_of).collect::<Vec<_>>().join("\n");
        let spec = hw9::grading::spec::GradingSpec::load(&assets, name).unwrap();
        let mut recorded = Vec::new();
        for (direction, call) in [("at_least", "rec.at_least("), ("at_most", "rec.at_most(")] {
            for (at, _) in code.match_indices(call) {
                let args = top_level_args(&code[at + call.len()..]);
                let (key, title, bound) = (args[0].trim_matches('"'), args[1].trim_matches('"'), &args[3]);
                let t = spec.thresholds.get(key).unwrap_or_else(|| panic!("{name}: {key} is not in the spec"));
                let spec_bound = if direction == "at_least" { t.at_least } else { t.at_most };
                assert!(spec_bound.is_some(), "{name}: {key} is {direction} in the notebook");
                assert_eq!(t.title, title, "{name}: {key}'s title");
                if let Ok(v) = bound.parse::<f64>() {
                    assert_eq!(spec_bound, Some(v), "{name}: {key}'s bound");
                } else {
                    assert!(bound.starts_with("plan."), "{name}: {key}'s bound is {bound}: a number or the plan's");
                }
                recorded.push(key.to_string());
            }
        }
        recorded.sort();
        assert_eq!(recorded, spec.thresholds.keys().cloned().collect::<Vec<_>>(), "{name}: thresholds");
    }
}

/// The comma-separated arguments of a call whose text starts at `text` (after its `(`), up to
/// its closing `)`: commas inside brackets or strings do not split.
fn top_level_args(text: &str) -> Vec<String> {
    let (mut args, mut cur, mut depth, mut quoted) = (Vec::new(), String::new(), 0, false);
    for c in text.chars() {
        match c {
            '"' => quoted = !quoted,
            '(' | '[' | '{' if !quoted => depth += 1,
            ')' | ']' | '}' if !quoted && depth == 0 => break,
            ')' | ']' | '}' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                args.push(cur.trim().to_string());
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    args.push(cur.trim().to_string());
    args
}
