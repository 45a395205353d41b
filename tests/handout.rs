//! The student handout holds no answer: no line of a solution region, no line of the reference
//! answers' sources, and no autograder expected output appears in any of its files (text or
//! binary); it has no solution notebooks and no reference files, builds without the `reference`
//! feature, and the grader's files beside it do hold the expected outputs the scan looks for.
//! (`make test-handout` then runs `make test` inside the unpacked handout.)

#![cfg(feature = "reference")] // it compares the handout with the repository's answers

use std::path::{Path, PathBuf};

use aho_corasick::AhoCorasick;
use hw9::grading::handout::{secrets, write_handout};

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn the_handout_holds_no_answer_and_the_grader_files_hold_the_expected_outputs() {
    let root = hw9::paths::root();
    let out = tempfile::tempdir().unwrap();
    let h = write_handout(&root, out.path()).unwrap();
    assert!(h.archive.metadata().unwrap().len() > 1_000_000, "the .tar.gz is written");
    for gone in [
        "notebooks/solutions",
        "src/models/reference/vit.rs",
        "src/models/reference/mae.rs",
        "src/models/reference/transformer.rs",
        "src/models/reference/facenet.rs",
        "tests/vit_mae.rs",
        "tools/gen_fixtures.py",
    ] {
        assert!(!h.dir.join(gone).exists(), "the handout has {gone}");
    }
    for kept in [
        "notebooks/01_vit_mae.ipynb",
        "src/models/vit.rs",
        "assets/fixtures/01_vit_mae.safetensors",
        "notebooks/04_facenet.ipynb",
        "assets/fixtures/04_facenet.safetensors",
        "Makefile",
        "tools/setup.sh",
    ] {
        assert!(h.dir.join(kept).exists(), "the handout lacks {kept}");
    }
    let manifest = std::fs::read_to_string(h.dir.join("Cargo.toml")).unwrap();
    assert!(manifest.contains("default = []") && !manifest.contains("default = [\"reference\"]"));

    let secrets = secrets(&root).unwrap();
    for kind in ["solution region line", "reference source line", "grader-only expected output"] {
        assert!(
            secrets.get(kind).is_some_and(|s| s.len() > 5),
            "too few {kind}s to scan for: {:?}",
            secrets.get(kind).map(Vec::len)
        );
    }
    let patterns: Vec<(&str, &Vec<u8>)> = secrets.iter().flat_map(|(k, v)| v.iter().map(move |p| (*k, p))).collect();
    let ac = AhoCorasick::new(patterns.iter().map(|(_, p)| p.as_slice())).unwrap();
    let files = files_under(&h.dir);
    assert!(files.len() > 50);
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        if let Some(m) = ac.find(&bytes) {
            let (kind, p) = patterns[m.pattern().as_usize()];
            panic!("{} holds a {kind}: {:?}", file.display(), String::from_utf8_lossy(&p[..p.len().min(80)]));
        }
    }
    // The scan finds what it looks for: the grader's fixtures hold every expected output.
    let grader: Vec<u8> = files_under(&h.grader).iter().flat_map(|f| std::fs::read(f).unwrap()).collect();
    let expected = &secrets["grader-only expected output"];
    let found = AhoCorasick::new(expected)
        .unwrap()
        .find_iter(&grader)
        .map(|m| m.pattern())
        .collect::<std::collections::BTreeSet<_>>();
    assert_eq!(found.len(), expected.len(), "the grader's files hold every autograder expected output");
}
