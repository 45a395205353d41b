//! The summarization corpus: Debian's English package descriptions, each a (long description →
//! one-line synopsis) pair, cleaned and split deterministically, committed as a pinned subset
//! (`assets/corpus/debian-descriptions.jsonl.gz`). Also the text the local GPT-2 learns from.
//!
//! Build it from apt's Translation-en index (`make corpus`):
//! `apt-get -o Acquire::Languages=en update`, then `/usr/lib/apt/apt-helper cat-file
//! /var/lib/apt/lists/*_main_i18n_Translation-en.lz4 > Translation-en`.

use std::collections::HashSet;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One document and its summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pair {
    /// The Debian package the description belongs to.
    pub package: String,
    /// The long description: paragraphs joined by blank lines.
    pub document: String,
    /// The one-line synopsis.
    pub summary: String,
    /// `train`, `validation` or `test`.
    pub split: String,
}

/// Parses a Translation-en file: stanzas of `Package:`, `Description-en: <synopsis>` and the long
/// description's continuation lines (` .` is a paragraph break).
pub fn parse_translation(text: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let (mut package, mut summary, mut lines) = (None, None, Vec::new());
        for line in stanza.lines() {
            if let Some(p) = line.strip_prefix("Package: ") {
                package = Some(p.trim().to_string());
            } else if let Some(s) = line.strip_prefix("Description-en: ") {
                summary = Some(s.trim().to_string());
            } else if summary.is_some() && line.starts_with(' ') {
                lines.push(if line.trim() == "." { String::new() } else { line.trim().to_string() });
            }
        }
        if let (Some(p), Some(s)) = (package, summary) {
            let document =
                lines.join("\n").split("\n\n").map(|para| para.replace('\n', " ")).collect::<Vec<_>>().join("\n\n");
            out.push((p, document.trim().to_string(), s));
        }
    }
    out
}

/// FNV-1a: a stable hash for the deterministic split (unlike std's, fixed across releases).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// The split of a package: 90 % train, 5 % validation, 5 % test, by a hash of its name.
pub fn split_of(package: &str) -> &'static str {
    match fnv1a(package) % 100 {
        0..=89 => "train",
        90..=94 => "validation",
        _ => "test",
    }
}

/// Keeps real documents: drops debcargo's generated Rust crate descriptions, documents under
/// `min_words`, and repeated documents (the first package keeps it, in name order).
pub fn clean(raw: Vec<(String, String, String)>, min_words: usize) -> Vec<Pair> {
    let mut raw = raw;
    raw.sort();
    let mut seen = HashSet::new();
    raw.into_iter()
        .filter(|(_, doc, sum)| {
            !doc.contains("packaged by debcargo") && doc.split_whitespace().count() >= min_words && !sum.is_empty()
        })
        .filter(|(_, doc, _)| seen.insert(doc.clone()))
        .map(|(package, document, summary)| Pair { split: split_of(&package).to_string(), package, document, summary })
        .collect()
}

/// Where the committed corpus is.
pub fn corpus_path() -> PathBuf {
    hw9_env::paths::assets().join("corpus/debian-descriptions.jsonl.gz")
}

/// Writes pairs as gzipped JSON lines.
pub fn write_pairs(pairs: &[Pair], path: &Path) -> Result<()> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    for p in pairs {
        serde_json::to_writer(&mut gz, p)?;
        gz.write_all(b"\n").map_err(|e| Error::io(path, e))?;
    }
    let bytes = gz.finish().map_err(|e| Error::io(path, e))?;
    crate::io::write_atomic(path, &bytes)
}

/// Reads gzipped JSON lines of pairs; a broken line is an error naming it.
pub fn read_pairs(path: &Path) -> Result<Vec<Pair>> {
    let raw = std::fs::read(path).map_err(|_| {
        Error::missing(
            "summarization corpus",
            path.to_path_buf(),
            "git checkout -- assets/corpus (it is committed), or rebuild it with make corpus",
        )
    })?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(&raw[..])
        .read_to_string(&mut text)
        .map_err(|e| Error::corrupt("corpus", path.to_path_buf(), format!("not gzip-compressed JSON lines ({e})")))?;
    text.as_bytes()
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let line = line.map_err(|e| Error::io(path, e))?;
            serde_json::from_str(&line)
                .map_err(|e| Error::corrupt("corpus", path.to_path_buf(), format!("line {}: {e}", i + 1)))
        })
        .collect()
}

/// The pairs of one split.
pub fn split<'a>(pairs: &'a [Pair], name: &str) -> Vec<&'a Pair> {
    pairs.iter().filter(|p| p.split == name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Package: zzz\nDescription-md5: 1\nDescription-en: A tool\n First line of the\n long text.\n .\n Second paragraph here.\n\nPackage: librust-x-dev\nDescription-md5: 2\nDescription-en: X - Rust source code\n This package contains the source for the Rust x crate, packaged by debcargo\n for use with cargo and dh-cargo.\n\nPackage: aaa\nDescription-md5: 3\nDescription-en: Same tool\n First line of the\n long text.\n .\n Second paragraph here.\n";

    #[test]
    fn parses_paragraphs_and_cleans_boilerplate_and_duplicates() {
        let raw = parse_translation(SAMPLE);
        assert_eq!(raw.len(), 3);
        assert_eq!(
            raw[0],
            ("zzz".into(), "First line of the long text.\n\nSecond paragraph here.".into(), "A tool".into())
        );
        let pairs = clean(raw, 3);
        // debcargo's text is dropped; of the two identical documents, "aaa" (first by name) stays.
        assert_eq!(pairs.len(), 1);
        assert_eq!(pairs[0].package, "aaa");
        assert_eq!(pairs[0].summary, "Same tool");
    }

    #[test]
    fn the_split_is_stable_and_roughly_90_5_5() {
        assert_eq!(split_of("0ad"), split_of("0ad"));
        let names: Vec<String> = (0..10000).map(|i| format!("pkg{i}")).collect();
        let train = names.iter().filter(|n| split_of(n) == "train").count();
        assert!((8800..9200).contains(&train), "{train}");
    }

    #[test]
    fn pairs_round_trip_through_gzipped_json_lines() {
        let path = std::env::temp_dir().join(format!("hw9-corpus-{}.jsonl.gz", std::process::id()));
        let pairs = clean(parse_translation(SAMPLE), 1);
        write_pairs(&pairs, &path).unwrap();
        assert_eq!(read_pairs(&path).unwrap(), pairs);
        std::fs::write(&path, b"not gzip").unwrap();
        assert!(read_pairs(&path).unwrap_err().to_string().contains("not gzip-compressed"));
        std::fs::remove_file(&path).unwrap();
    }
}
