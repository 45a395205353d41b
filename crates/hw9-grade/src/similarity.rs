//! How much TODO code two submissions share, with the handout's template taken out: winnowing
//! fingerprints as MOSS computes them (Schleimer, Wilkerson, Aiken, "Winnowing: local algorithms
//! for document fingerprinting", SIGMOD 2003).
//!
//! Each submission's TODO cells ([`crate::harness`]: the student's code for each TODO of the
//! release) are cut into tokens with comments and layout dropped and names, numbers and strings
//! each made one token kind (renaming a variable or reformatting changes nothing); every run of
//! [`K`] tokens is hashed and the smallest hash of every window of [`W`] hashes kept. Fingerprints
//! of the release's own cells (the signatures, structs and doc comments every student starts
//! from) are removed, so an untouched template shares nothing. Two submissions' overlap is their
//! shared fingerprints over the smaller set. Why not a tool: MOSS is a web service (student code
//! would leave the course's machines) and JPlag needs a JVM and has no Rust front end.
//!
//! A high overlap is a reason to read two notebooks side by side, not a verdict: short TODOs
//! (a one-line `mse`) have few fingerprints and close answers by nature, which is why pairs are
//! reported with their number of shared fingerprints too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::harness::{Harness, Source};
use crate::upload::{read_upload, Limits};
use crate::written::escape;
use crate::{Error, Result};

/// Tokens in a fingerprinted run (MOSS's default noise threshold is of this order).
pub const K: usize = 12;
/// Window of hashes from which one fingerprint is kept: any run shared over `K + W - 1` tokens
/// is found.
pub const W: usize = 8;

/// The tokens of Rust source, normalised: comments and whitespace gone, identifiers `v`
/// (keywords kept), numbers `0`, strings and chars `"`, punctuation as is.
pub fn tokens(source: &str) -> Vec<String> {
    const KEYWORDS: &[&str] = &[
        "as", "break", "const", "continue", "else", "enum", "false", "fn", "for", "if", "impl", "in", "let", "loop",
        "match", "mod", "move", "mut", "pub", "ref", "return", "self", "Self", "static", "struct", "trait", "true",
        "type", "unsafe", "use", "where", "while",
    ];
    let c: Vec<char> = source.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && c.get(i + 1) == Some(&'*') {
            i += 2;
            while i < c.len() && !(c[i] == '*' && c.get(i + 1) == Some(&'/')) {
                i += 1;
            }
            i += 2;
        } else if ch == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push("\"".to_string());
        } else if ch == '\'' && c.get(i + 2) == Some(&'\'') {
            i += 3;
            out.push("\"".to_string());
        } else if ch.is_alphabetic() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            out.push(if KEYWORDS.contains(&word.as_str()) { word } else { "v".to_string() });
        } else if ch.is_ascii_digit() {
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '.' || c[i] == '_') {
                i += 1;
            }
            out.push("0".to_string());
        } else {
            out.push(ch.to_string());
            i += 1;
        }
    }
    out
}

fn hash(tokens: &[String]) -> u64 {
    // FNV-1a: stable across runs and machines (std's hasher is seeded per process).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for t in tokens {
        for b in t.bytes().chain(std::iter::once(0xff)) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The winnowing fingerprints of `source`.
pub fn fingerprints(source: &str) -> BTreeSet<u64> {
    let t = tokens(source);
    if t.len() < K {
        return BTreeSet::new();
    }
    let hashes: Vec<u64> = t.windows(K).map(hash).collect();
    if hashes.len() <= W {
        return hashes.iter().min().copied().into_iter().collect();
    }
    hashes.windows(W).filter_map(|w| w.iter().min().copied()).collect()
}

/// One submission's TODO code, fingerprinted.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Who (as in the gradebook).
    pub student: String,
    /// The notebook.
    pub notebook: String,
    /// Fingerprints of the TODO cells, the template's removed.
    pub prints: BTreeSet<u64>,
}

/// A pair of submissions of one notebook and what they share.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    /// The notebook.
    pub notebook: String,
    /// One student.
    pub a: String,
    /// The other.
    pub b: String,
    /// Shared fingerprints.
    pub shared: usize,
    /// Shared over the smaller set of the two (0 to 1).
    pub overlap: f64,
}

/// The fingerprints of a submitted notebook's TODO code, minus the release's.
pub fn entry(student: &str, notebook: &str, release: &Value, submitted: &Value) -> Result<Entry> {
    let h = Harness::new(notebook, release, submitted)?;
    let template: BTreeSet<u64> = crate::harness::code_cells(release)?
        .iter()
        .filter(|c| c.source.contains(crate::harness::TODO_MARK))
        .flat_map(|c| fingerprints(&c.source))
        .collect();
    let prints = h
        .todos
        .iter()
        .filter(|t| t.source != Source::Missing)
        .flat_map(|t| fingerprints(&t.code))
        .filter(|p| !template.contains(p))
        .collect();
    Ok(Entry { student: student.into(), notebook: notebook.into(), prints })
}

/// Every pair of entries of the same notebook, most overlap first.
pub fn pairs(entries: &[Entry]) -> Vec<Pair> {
    let mut out = Vec::new();
    for (i, a) in entries.iter().enumerate() {
        for b in &entries[i + 1..] {
            if a.notebook != b.notebook {
                continue;
            }
            let shared = a.prints.intersection(&b.prints).count();
            let smaller = a.prints.len().min(b.prints.len());
            let overlap = if smaller == 0 { 0.0 } else { shared as f64 / smaller as f64 };
            out.push(Pair {
                notebook: a.notebook.clone(),
                a: a.student.clone(),
                b: b.student.clone(),
                shared,
                overlap,
            });
        }
    }
    out.sort_by(|x, y| y.overlap.total_cmp(&x.overlap).then(y.shared.cmp(&x.shared)));
    out
}

/// The report: one HTML page, a table of pairs sorted by overlap.
pub fn html(pairs: &[Pair], skipped: &[(String, String)]) -> String {
    let mut rows = String::new();
    for p in pairs {
        let shade = (p.overlap * 100.0).round() as u32;
        rows.push_str(&format!(
            "<tr style=\"background: hsl(0, 80%, {}%)\"><td>{}</td><td>{}</td><td>{}</td><td>{:.0} %</td><td>{}</td></tr>\n",
            100 - shade / 3,
            escape(&p.notebook),
            escape(&p.a),
            escape(&p.b),
            p.overlap * 100.0,
            p.shared
        ));
    }
    let mut skipped_html = String::new();
    for (who, why) in skipped {
        skipped_html.push_str(&format!("<li>{}: {}</li>\n", escape(who), escape(why)));
    }
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>hw9: TODO code shared between submissions</title>\n\
         <style>body{{font-family:sans-serif}} table{{border-collapse:collapse}} td,th{{padding:4px 10px;border:1px solid #ccc}}</style></head>\n\
         <body><h1>TODO code shared between submissions</h1>\n\
         <p>Winnowing fingerprints ({K}-token runs, window {W}) of each submission's TODO cells, with \
         the handout's template removed; overlap = shared fingerprints / the smaller submission's. \
         A high overlap is a reason to read the two notebooks, not a verdict.</p>\n\
         <table><tr><th>notebook</th><th>student</th><th>student</th><th>overlap</th><th>shared</th></tr>\n{rows}</table>\n\
         {}</body></html>\n",
        if skipped.is_empty() { String::new() } else { format!("<h2>Not compared</h2><ul>{skipped_html}</ul>\n") }
    )
}

/// Compares every submission zip under `dir` against the others of its notebook, with the
/// released notebooks in `release_dir`; writes `out` (HTML) and returns the pairs.
pub fn report(dir: &Path, release_dir: &Path, out: &Path) -> Result<Vec<Pair>> {
    let mut entries = Vec::new();
    let mut skipped = Vec::new();
    let mut releases: BTreeMap<String, Value> = BTreeMap::new();
    for zip in crate::batch::find_zips(dir)? {
        let rel: PathBuf = zip.strip_prefix(dir).unwrap_or(&zip).to_path_buf();
        let who = crate::batch::student_of(&rel);
        let found = (|| -> Result<Entry> {
            let members = read_upload(&zip, &Limits::default())?;
            let (name, bytes) = members
                .iter()
                .find(|(n, _)| n.ends_with(".ipynb") && !n.contains('/'))
                .ok_or_else(|| Error::Input("no notebook in the zip".into()))?;
            let notebook = name.trim_end_matches(".ipynb").to_string();
            let submitted: Value = serde_json::from_slice(bytes)?;
            if !releases.contains_key(&notebook) {
                let path = release_dir.join(name);
                let text = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
                releases.insert(notebook.clone(), serde_json::from_slice(&text)?);
            }
            entry(&who, &notebook, &releases[&notebook], &submitted)
        })();
        match found {
            Ok(e) => entries.push(e),
            Err(e) => skipped.push((who, e.to_string())),
        }
    }
    let pairs = pairs(&entries);
    crate::write_atomic(out, html(&pairs, &skipped).as_bytes())?;
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SOLUTION: &str = "fn mse(pred: &Tensor, target: &Tensor) -> Tensor {\n    let diff = pred - target; // the error\n    let sq = diff.square();\n    let total = sq.sum(Kind::Float);\n    let n = pred.numel() as f64;\n    total / n\n}\n";

    fn nb(code: &str) -> Value {
        json!({"cells": [
            {"cell_type": "code", "id": "setup", "source": "use hw9::prelude::*;\nlet fixtures = Fixtures::load(\"00_x\")?;", "metadata": {}},
            {"cell_type": "code", "id": "t", "source": code, "metadata": {}},
            {"cell_type": "code", "id": "c", "source": "rec.check(&fixtures, \"mse\", |c| mse(&c[\"a\"], &c[\"b\"]));", "metadata": {}},
        ]})
    }

    fn release() -> Value {
        nb("/// Mean squared error of `pred` against `target`.\nfn mse(pred: &Tensor, target: &Tensor) -> Tensor {\n    todo!(\"TODO: the mean of the squared differences\")\n}\n")
    }

    #[test]
    fn renaming_and_reformatting_change_nothing_and_the_template_is_not_shared() {
        let renamed = "fn mse(p: &Tensor, t: &Tensor) -> Tensor\n{\n    /* mine */ let d = p - t;\n    let s = d.square();\n    let tot = s.sum(Kind::Float);\n    let count = p.numel() as f64;\n    tot / count\n}\n";
        assert_eq!(tokens(SOLUTION), tokens(renamed));
        let a = entry("alice", "00_x", &release(), &nb(SOLUTION)).unwrap();
        let b = entry("bob", "00_x", &release(), &nb(renamed)).unwrap();
        let other = entry(
            "carol",
            "00_x",
            &release(),
            &nb("fn mse(pred: &Tensor, target: &Tensor) -> Tensor {\n    (pred - target).pow_tensor_scalar(2).mean(Kind::Float)\n}\n"),
        )
        .unwrap();
        let untouched = entry("dave", "00_x", &release(), &release()).unwrap();
        assert!(!a.prints.is_empty());
        assert!(untouched.prints.is_empty(), "the template is removed: {:?}", untouched.prints);
        let p = pairs(&[a, b, other, untouched]);
        assert_eq!((p[0].a.as_str(), p[0].b.as_str()), ("alice", "bob"));
        assert_eq!(p[0].overlap, 1.0);
        let carol = p.iter().find(|x| x.a == "alice" && x.b == "carol").unwrap();
        assert!(carol.overlap < 0.5, "{carol:?}");
        assert!(p.iter().filter(|x| x.a == "dave" || x.b == "dave").all(|x| x.overlap == 0.0));
        let page = html(&p, &[("eve".into(), "no notebook in the zip".into())]);
        assert!(page.contains("<td>00_x</td><td>alice</td><td>bob</td><td>100 %</td>"), "{page}");
        assert!(page.contains("eve: no notebook"));
    }

    #[test]
    fn strings_comments_and_numbers_are_one_token_kind() {
        assert_eq!(
            tokens("let x = \"a \\\" b\"; // hi\nlet y = 3.5e-2;"),
            ["let", "v", "=", "\"", ";", "let", "v", "=", "0", "-", "0", ";"]
        );
        assert!(fingerprints("fn f() {}").is_empty());
    }
}
