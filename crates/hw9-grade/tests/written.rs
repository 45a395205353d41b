//! `hw9 written`: the written questions gathered from notebooks, filled and unfilled, into the
//! expected document and list of unanswered questions.

use std::path::{Path, PathBuf};

use hw9_grade::written::{gather, write_written};
use serde_json::json;

/// A 1x1 red PNG.
const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC";

fn question(id: &str, text: &str, answer: Option<&str>) -> serde_json::Value {
    let body = match answer {
        Some(a) => format!("**Question {id}.** {text}\n\n**Your answer:** {a}"),
        None => format!("**Question {id}.** {text}\n\n**Your answer:** *(write it here)*"),
    };
    json!({"cell_type": "markdown", "metadata": {"hw9": {"question": id}}, "source": body})
}

fn notebook(dir: &Path, name: &str, cells: Vec<serde_json::Value>) {
    let mut all = vec![json!({"cell_type": "markdown", "metadata": {}, "source": "# A notebook"})];
    all.extend(cells);
    all.push(
        json!({"cell_type": "code", "metadata": {}, "source": "let x = 1;", "outputs": [], "execution_count": null}),
    );
    let nb = json!({"cells": all, "metadata": {}, "nbformat": 4, "nbformat_minor": 5});
    std::fs::write(dir.join(format!("{name}.ipynb")), serde_json::to_vec_pretty(&nb).unwrap()).unwrap();
}

/// Two notebooks whose questions are out of homework order; `filled` answers all of them (one
/// with a pasted screenshot), else 1(b) and 5(a) are left unanswered.
fn set(filled: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut screenshot = question("3(a)", "Paste the loss curves.", Some("Here:\n\n![loss](attachment:loss.png)"));
    screenshot["attachments"] = json!({"loss.png": {"image/png": PNG}});
    notebook(
        dir.path(),
        "02_summarization",
        vec![screenshot, question("4(a.10)", "Tenth.", Some("ten")), question("4(a.2)", "Second.", Some("two"))],
    );
    notebook(
        dir.path(),
        "04_facenet",
        vec![
            question("1(a)", "Which architectures?", Some("NN1 and NN2.")),
            question("1(b)", "The triplet loss?", filled.then_some("A margin between distances.")),
            question("5(a)", "Sources?", filled.then_some("The paper.")),
        ],
    );
    dir
}

#[test]
fn a_filled_set_gives_every_answer_in_homework_order_with_its_figure() {
    let notebooks = set(true);
    let out = tempfile::tempdir().unwrap();
    let w = write_written(notebooks.path(), out.path()).unwrap();
    assert_eq!((w.questions, w.unanswered.len()), (6, 0));
    let md = std::fs::read_to_string(&w.markdown).unwrap();
    let order: Vec<usize> = ["### 1(a)", "### 1(b)", "### 3(a)", "### 4(a.2)", "### 4(a.10)", "### 5(a)"]
        .iter()
        .map(|h| md.find(h).unwrap())
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{md}");
    for heading in [
        "## 1. Read a Research Paper: FaceNet",
        "## 3. Coding Question: Summarization (Part I)",
        "## 5. Homework Process",
    ] {
        assert!(md.contains(heading), "{heading} missing from {md}");
    }
    assert!(md.contains("### 1(a) — Which architectures?") && md.contains("NN1 and NN2."), "{md}");
    assert!(!md.contains("Unanswered") && !md.contains("write it here"), "{md}");
    // The pasted screenshot: a file beside the Markdown, inline in the HTML.
    let figure: Vec<PathBuf> =
        std::fs::read_dir(out.path().join("figures")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(figure.len(), 1);
    assert_eq!(&std::fs::read(&figure[0]).unwrap()[..4], b"\x89PNG");
    let name = figure[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(md.contains(&format!("](figures/{name})")), "{md}");
    let html = std::fs::read_to_string(&w.html).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>") && html.contains(&format!("src=\"data:image/png;base64,{PNG}\"")));
    assert!(!html.contains("attachment:"), "the HTML must not depend on the notebook");
}

#[test]
fn an_unfilled_set_lists_what_is_unanswered() {
    let notebooks = set(false);
    let out = tempfile::tempdir().unwrap();
    let w = write_written(notebooks.path(), out.path()).unwrap();
    assert_eq!(w.unanswered, vec!["1(b) (04_facenet)".to_string(), "5(a) (04_facenet)".to_string()]);
    let md = std::fs::read_to_string(&w.markdown).unwrap();
    assert!(md.contains("### 1(b) — The triplet loss?\n\n*04_facenet*\n\n**(unanswered)**"), "{md}");
    assert!(md.trim_end().ends_with("## Unanswered\n\n- 1(b) (04_facenet)\n- 5(a) (04_facenet)"), "{md}");
    let html = std::fs::read_to_string(&w.html).unwrap();
    assert!(html.contains("<li>1(b) (04_facenet)</li>") && html.contains("(unanswered)"));
}

#[test]
fn raw_html_in_an_answer_is_shown_not_run_and_a_folder_without_questions_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    notebook(dir.path(), "x", vec![question("1(a)", "Q?", Some("<script>alert(1)</script> done"))]);
    let out = tempfile::tempdir().unwrap();
    let w = write_written(dir.path(), out.path()).unwrap();
    let html = std::fs::read_to_string(&w.html).unwrap();
    assert!(!html.contains("<script>") && html.contains("&lt;script&gt;"), "{html}");
    let empty = tempfile::tempdir().unwrap();
    let err = write_written(empty.path(), out.path()).unwrap_err().to_string();
    assert!(err.contains("no written questions"), "{err}");
}

/// The repository's own notebooks: the student versions leave every question open, the solution
/// sources answer every one, and together they hold the homework's written questions.
#[test]
fn the_repository_notebooks_hold_every_question_of_the_homework() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../notebooks");
    let students = gather(&root).unwrap();
    let ids: Vec<&str> = students.iter().map(|a| a.id.as_str()).collect();
    let expected = [
        "1(a)", "1(b)", "1(c)", "1(d)", "1(e)", "1(f)", "1(g)", "1(h)", "1(i)", "3(a)", "4(a.1)", "4(a.2)", "4(b.1)",
        "4(b.2)", "4(b.3)", "4(b.4)", "4(c.1)", "4(c.2)", "4(d.1)", "4(d.2)", "4(e)", "5(a)", "5(b)", "5(c)",
    ];
    assert_eq!(ids, expected);
    assert!(students.iter().all(|a| !a.answered()), "a student notebook holds an answer");
    let solutions = root.join("solutions");
    if solutions.exists() {
        // (The student handout has no solution sources.)
        let answered = gather(&solutions).unwrap();
        assert_eq!(answered.len(), expected.len());
        assert!(answered.iter().all(|a| a.answered()), "a solution source leaves a question open");
    }
}
