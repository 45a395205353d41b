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
        "tests/variants/facenet.rs",
        "tests/checks_across_cpus.rs",
        "tools/gen_fixtures.py",
        "tools/fixtures",
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
    for kind in ["solution region line", "reference source line", "test answer line", "grader-only expected output"] {
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

/// What a signature must mention to be listed: tensors, or the crate's types that hold them.
const TENSOR_TYPES: [&str; 5] = ["Tensor", "Triplets", "Attention", "ModelOutput", "LayerAttention"];

/// The type an `impl` line is for, and its trait: `impl<T> Foo for Bar<T> {` → (`Bar`, `Foo`).
fn impl_target(line: &str) -> (String, Option<String>) {
    let mut rest = line.trim_start_matches("impl").trim_start();
    if rest.starts_with('<') {
        let mut depth = 0;
        let end = rest.char_indices().find(|&(_, c)| {
            depth += i32::from(c == '<') - i32::from(c == '>');
            depth == 0
        });
        rest = &rest[end.map_or(0, |(i, _)| i + 1)..];
    }
    let rest = rest.split(" where").next().unwrap_or(rest).trim_end_matches('{').trim();
    let name = |s: &str| s.trim().split('<').next().unwrap_or("").rsplit("::").next().unwrap_or("").to_string();
    match rest.split_once(" for ") {
        Some((tr, ty)) => (name(ty), Some(name(tr))),
        None => (name(rest), None),
    }
}

/// Every function of the handout's crate (the `reference` feature off) that students can call
/// and whose signature takes or returns a tensor: `pub fn`s at module level (`file: name`), in
/// inherent impls (`file: Type::name`) and every method of a trait impl (`file: Type::name
/// [Trait]`), skipping unit tests, crate-private items and items compiled only with the
/// `reference` feature (on the item or on its impl block). Sorted, with repeats: compared as a
/// multiset.
fn public_tensor_functions(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let src = dir.join("src");
    let files = files_under(&src).into_iter().filter(|p| p.extension().is_some_and(|x| x == "rs"));
    let gates = |attrs: &[String]| {
        attrs
            .iter()
            .any(|a| a.contains("cfg(feature = \"reference\")") || a.contains("cfg(all(feature = \"reference\""))
    };
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        // Unit tests sit at the end of a file.
        let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or_default();
        let rel = file.strip_prefix(dir).unwrap().display().to_string();
        let lines: Vec<&str> = text.lines().collect();
        let mut attrs: Vec<String> = Vec::new(); // the attributes just above the current line
        let mut block: Option<(String, Option<String>, bool)> = None; // (type, trait, gated)
        for (n, line) in lines.iter().enumerate() {
            let t = line.trim();
            if line.starts_with("impl") {
                let (ty, tr) = impl_target(line);
                block = Some((ty, tr, gates(&attrs)));
            } else if *line == "}" {
                block = None;
            }
            let is_fn =
                ["pub fn ", "pub const fn ", "pub unsafe fn ", "pub async fn "].iter().any(|p| t.starts_with(p))
                    || (t.starts_with("fn ") && block.as_ref().is_some_and(|b| b.1.is_some()));
            if is_fn && !gates(&attrs) && !block.as_ref().is_some_and(|b| b.2) {
                let sig: String = lines[n..].iter().take(12).copied().collect::<Vec<_>>().join(" ");
                let sig = &sig[..sig.find(['{', ';']).unwrap_or(sig.len())];
                let after = &t[t.find("fn ").unwrap_or(0) + 3..];
                let name: String = after.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if TENSOR_TYPES.iter().any(|ty| sig.contains(ty)) {
                    out.push(match &block {
                        Some((ty, Some(tr), _)) => format!("{rel}: {ty}::{name} [{tr}]"),
                        Some((ty, None, _)) => format!("{rel}: {ty}::{name}"),
                        None => format!("{rel}: {name}"),
                    });
                }
            }
            if t.starts_with("#[") || t.starts_with("///") || t.starts_with("//!") {
                attrs.push(t.to_string());
            } else if !t.is_empty() {
                attrs.clear();
            }
        }
    }
    out.sort();
    out
}

/// A new public function that takes or returns tensors could answer a TODO (as
/// `squared_distances` and `self_attention_with_weights` once did): each must be reviewed and
/// listed in `tests/handout_api.txt`; `tests/api_probe.rs` (run by the handout's own `make test`,
/// where the answers are absent) tries the closest ones on the TODOs' checks.
#[test]
fn every_public_tensor_function_of_the_students_crate_has_been_reviewed() {
    let root = hw9::paths::root();
    let out = tempfile::tempdir().unwrap();
    let h = write_handout(&root, out.path()).unwrap();
    let found = public_tensor_functions(&h.dir);
    assert!(found.len() > 30, "the scan found only {found:?}");
    let listed_path = root.join("tests/handout_api.txt");
    let listed_text = std::fs::read_to_string(&listed_path).unwrap_or_default();
    let mut listed: Vec<&str> = listed_text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).collect();
    listed.sort();
    // As multisets: a second function of the same name in the same file is new too.
    let mut unmatched: Vec<&str> = listed.clone();
    let mut new: Vec<&String> = Vec::new();
    for f in &found {
        match unmatched.iter().position(|l| l == f) {
            Some(i) => {
                unmatched.remove(i);
            }
            None => new.push(f),
        }
    }
    let gone = unmatched;
    assert!(
        new.is_empty() && gone.is_empty(),
        "the student handout's public tensor functions changed.\nNew (check that none answers a TODO — try it in \
         tests/api_probe.rs — then add it to tests/handout_api.txt): {new:#?}\nNo longer there (remove from the list): {gone:#?}"
    );
    for private in [
        "src/models/attention.rs: split_heads",
        "src/models/attention.rs: merge_heads",
        "src/models/attention.rs: self_attention_with_weights",
        "src/tasks/verification.rs: squared_distances",
        "src/models/attention.rs: attention",
    ] {
        assert!(!found.iter().any(|f| f == private), "{private} answers a TODO and is public in the handout");
    }
}
