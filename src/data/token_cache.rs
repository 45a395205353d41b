//! The tokenised corpus, cached on disk: re-running notebook 2 after a kernel restart reads the
//! tokenised splits back in a fraction of a second instead of tokenising 54,227 pairs again (51 s
//! in the kernel, which builds the `tokenizers` crate unoptimised).
//!
//! The cache is keyed by content: the SHA-256 of the tokenizer's JSON, every pair of the splits
//! used, the truncation lengths and the subset. Anything different is another key, so a stale
//! file is never read; a file that does not parse (truncated, corrupt) is ignored with a warning
//! and rewritten. Files live in `$HW9_CACHE/tokenized/` (outside the clone), written atomically.
//!
//! Format: `HW9TOK1\n`, then little-endian u32s: for each of train, validation, test: the count
//! of examples, then per example the source length, its ids, the target length, its ids.

use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::data::corpus::Pair;
use crate::data::seq2seq::Example;

const MAGIC: &[u8] = b"HW9TOK1\n";

/// The cache key of tokenising `splits` (train, validation, test) with `tokenizer_json` and the
/// truncation lengths.
pub fn key(tokenizer_json: &str, splits: [&[&Pair]; 3], max_src: usize, max_tgt: usize) -> String {
    let mut h = Sha256::new();
    h.update(tokenizer_json.as_bytes());
    h.update(format!("\0{max_src}\0{max_tgt}\0").as_bytes());
    for pairs in splits {
        h.update((pairs.len() as u64).to_le_bytes());
        for p in pairs {
            for field in [&p.split, &p.document, &p.summary] {
                h.update((field.len() as u64).to_le_bytes());
                h.update(field.as_bytes());
            }
        }
    }
    format!("{:x}", h.finalize())
}

/// Where the cache file of `key` lives.
pub fn path_of(key: &str) -> PathBuf {
    hw9_env::paths::cache().join("tokenized").join(format!("{key}.bin"))
}

fn encode(splits: &[&[Example]; 3]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    let mut put = |v: u32| out.extend_from_slice(&v.to_le_bytes());
    for examples in splits {
        put(examples.len() as u32);
        for e in examples.iter() {
            for ids in [&e.src, &e.tgt] {
                put(ids.len() as u32);
                for &id in ids.iter() {
                    put(id as u32);
                }
            }
        }
    }
    out
}

fn decode(bytes: &[u8]) -> Option<[Vec<Example>; 3]> {
    let body = bytes.strip_prefix(MAGIC)?;
    if body.len() % 4 != 0 {
        return None;
    }
    let words: Vec<u32> = body.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let mut at = 0usize;
    let mut next = || {
        let v = words.get(at).copied();
        at += 1;
        v
    };
    let mut splits: [Vec<Example>; 3] = Default::default();
    for split in splits.iter_mut() {
        let n = next()? as usize;
        for _ in 0..n {
            let mut read = || -> Option<Vec<i64>> {
                let len = next()? as usize;
                (0..len).map(|_| next().map(i64::from)).collect()
            };
            let src = read()?;
            let tgt = read()?;
            split.push(Example { src, tgt });
        }
    }
    (at == words.len()).then_some(splits)
}

/// The cached tokenisation of `key`, if a valid file is there (a corrupt one is reported and
/// left to be rewritten).
pub fn read(key: &str) -> Option<[Vec<Example>; 3]> {
    let path = path_of(key);
    let bytes = std::fs::read(&path).ok()?;
    let got = decode(&bytes);
    if got.is_none() {
        eprintln!("ignoring the corrupt tokenised-corpus cache {} (it will be rewritten)", path.display());
    }
    got
}

/// Writes the tokenisation of `key` (atomically). A cache that cannot be written (a full or
/// read-only disk) is reported and otherwise ignored: it only costs the next run the tokenising
/// time.
pub fn write(key: &str, splits: [&[Example]; 3]) {
    let path = path_of(key);
    if let Err(e) = crate::io::write_atomic(&path, &encode(&splits)) {
        eprintln!("could not write the tokenised-corpus cache {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(s: &[i64], t: &[i64]) -> Example {
        Example { src: s.to_vec(), tgt: t.to_vec() }
    }

    #[test]
    fn examples_round_trip_and_a_truncated_file_is_rejected() {
        let train = vec![ex(&[5, 6, 1], &[7, 1]), ex(&[7999, 1], &[1])];
        let val = vec![ex(&[9, 1], &[3, 1])];
        let bytes = encode(&[&train, &val, &[]]);
        let [a, b, c] = decode(&bytes).unwrap();
        assert_eq!((a, b, c), (train, val, vec![]));
        assert!(decode(&bytes[..bytes.len() - 4]).is_none());
        assert!(decode(&bytes[..bytes.len() - 1]).is_none());
        assert!(decode(b"something else").is_none());
    }

    #[test]
    fn the_key_changes_with_any_input() {
        let p = |d: &str| Pair { package: "p".into(), document: d.into(), summary: "s".into(), split: "train".into() };
        let (a, b) = (p("doc"), p("doc2"));
        let base = key("{}", [&[&a], &[], &[]], 96, 32);
        assert_eq!(base, key("{}", [&[&a], &[], &[]], 96, 32));
        for other in [
            key("{ }", [&[&a], &[], &[]], 96, 32),
            key("{}", [&[&b], &[], &[]], 96, 32),
            key("{}", [&[&a], &[], &[]], 97, 32),
            key("{}", [&[], &[&a], &[]], 96, 32),
        ] {
            assert_ne!(base, other);
        }
    }
}
