//! ROUGE-1, ROUGE-2 and ROUGE-L (Lin, 2004) as Google's `rouge-score` package computes them
//! (without stemming): lowercase, every run of characters other than `a-z0-9` is a separator,
//! n-gram overlaps clipped by count, and ROUGE-L from the longest common subsequence. The tests
//! compare with values that `rouge-score` itself printed (`tools/gen_fixtures.py rouge`).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Precision, recall and F1 of one score.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// Shared n-grams (or LCS length) over the prediction's.
    pub precision: f64,
    /// Shared n-grams (or LCS length) over the reference's.
    pub recall: f64,
    /// Their harmonic mean (F1).
    pub fmeasure: f64,
}

impl Score {
    fn new(overlap: usize, predicted: usize, reference: usize) -> Self {
        let precision = overlap as f64 / predicted.max(1) as f64;
        let recall = overlap as f64 / reference.max(1) as f64;
        let fmeasure = if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 };
        Score { precision, recall, fmeasure }
    }
}

/// ROUGE-1, ROUGE-2 and ROUGE-L of one prediction against one reference.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Rouge {
    /// Unigram overlap.
    pub rouge1: Score,
    /// Bigram overlap.
    pub rouge2: Score,
    /// Longest common subsequence.
    pub rouge_l: Score,
}

/// Lowercased alphanumeric tokens, as `rouge-score` splits text.
pub fn tokenize(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit()))
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

fn ngrams(tokens: &[String], n: usize) -> HashMap<&[String], usize> {
    let mut counts = HashMap::new();
    for g in tokens.windows(n) {
        *counts.entry(g).or_insert(0) += 1;
    }
    counts
}

fn rouge_n(pred: &[String], reference: &[String], n: usize) -> Score {
    let (p, r) = (ngrams(pred, n), ngrams(reference, n));
    let overlap: usize = p.iter().map(|(g, c)| (*c).min(*r.get(g).unwrap_or(&0))).sum();
    Score::new(overlap, p.values().sum(), r.values().sum())
}

fn lcs(a: &[String], b: &[String]) -> usize {
    let mut row = vec![0usize; b.len() + 1];
    for x in a {
        let mut diag = 0;
        for (j, y) in b.iter().enumerate() {
            let up = row[j + 1];
            row[j + 1] = if x == y { diag + 1 } else { up.max(row[j]) };
            diag = up;
        }
    }
    row[b.len()]
}

/// Scores `prediction` against `reference`.
pub fn score(prediction: &str, reference: &str) -> Rouge {
    let (p, r) = (tokenize(prediction), tokenize(reference));
    let rouge_l =
        if p.is_empty() || r.is_empty() { Score::default() } else { Score::new(lcs(&p, &r), p.len(), r.len()) };
    Rouge { rouge1: rouge_n(&p, &r, 1), rouge2: rouge_n(&p, &r, 2), rouge_l }
}

/// Mean F1 of ROUGE-1, ROUGE-2 and ROUGE-L over pairs of (prediction, reference), in [0, 1].
pub fn corpus_f1<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> (f64, f64, f64) {
    let (mut sums, mut n) = ((0.0, 0.0, 0.0), 0usize);
    for (p, r) in pairs {
        let s = score(p, r);
        sums = (sums.0 + s.rouge1.fmeasure, sums.1 + s.rouge2.fmeasure, sums.2 + s.rouge_l.fmeasure);
        n += 1;
    }
    let n = n.max(1) as f64;
    (sums.0 / n, sums.1 / n, sums.2 / n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example in rouge-score's README: rouge1 P 0.75 R 0.6667 F 0.7059, rougeL P 0.625
    /// R 0.5556 F 0.5882.
    #[test]
    fn matches_the_published_example() {
        let s = score("The quick brown dog jumps on the log.", "The quick brown fox jumps over the lazy dog");
        let close = |a: f64, b: f64| (a - b).abs() < 1e-4;
        assert!(
            close(s.rouge1.precision, 0.75) && close(s.rouge1.recall, 0.66667) && close(s.rouge1.fmeasure, 0.70588),
            "{s:?}"
        );
        assert!(
            close(s.rouge_l.precision, 0.625) && close(s.rouge_l.recall, 0.55556) && close(s.rouge_l.fmeasure, 0.58824),
            "{s:?}"
        );
    }

    #[test]
    fn edge_cases() {
        assert_eq!(score("", "a b").rouge1.fmeasure, 0.0);
        assert_eq!(score("a b c", "a b c").rouge2.fmeasure, 1.0);
        assert_eq!(tokenize("GPU-accelerated (v2.0) tool!"), vec!["gpu", "accelerated", "v2", "0", "tool"]);
        // Counts are clipped: "the the the" against "the cat" overlaps once.
        assert!((score("the the the", "the cat").rouge1.precision - 1.0 / 3.0).abs() < 1e-12);
    }

    /// Every pair `rouge-score` scored in `assets/fixtures/rouge.json`.
    #[test]
    fn matches_rouge_score_on_its_fixture() {
        let path = hw9_env::paths::assets().join("fixtures/rouge.json");
        let text = std::fs::read_to_string(&path).unwrap();
        let cases: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
        assert!(cases.len() >= 10);
        for c in cases {
            let s = score(c["prediction"].as_str().unwrap(), c["reference"].as_str().unwrap());
            for (name, got) in [("rouge1", s.rouge1), ("rouge2", s.rouge2), ("rougeL", s.rouge_l)] {
                let want = &c[name];
                for (field, g) in [("precision", got.precision), ("recall", got.recall), ("fmeasure", got.fmeasure)] {
                    let w = want[field].as_f64().unwrap();
                    assert!((g - w).abs() < 1e-9, "{name} {field} of {c}: got {g}, rouge-score says {w}");
                }
            }
        }
    }
}
