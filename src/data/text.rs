//! Data for the summarizer (notebook 2): the subword tokenizer, tokenized (document → summary)
//! examples, padding-aware batches, and a loader for XSum / CNN-DailyMail exported by Hugging
//! Face `datasets` as JSON lines (`document`, `summary`).
//!
//! The token ids, examples and batches themselves are in [`super::seq2seq`]; the sizes the data is
//! cut to ([`TextSizes`]) are the data's own, which notebook 2's plan embeds.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use crate::data::corpus::{corpus_path, read_pairs, split, Pair};
use crate::data::seq2seq::{Example, EOS, PAD};
use crate::data::token_cache;
use crate::data::tokenize::read_tokenizer_json;
use crate::error::{Error, Result};

const SPECIALS: [&str; 3] = ["<pad>", "</s>", "<unk>"];

/// The committed tokenizer, trained on the corpus' training split (`hw9 tokenizer`).
pub fn tokenizer_path() -> PathBuf {
    hw9_env::paths::assets().join("corpus/tokenizer.json")
}

/// A byte-level BPE tokenizer (the `tokenizers` crate) with T5's special ids.
#[derive(Debug, Clone)]
pub struct SubwordTokenizer {
    inner: Tokenizer,
}

impl SubwordTokenizer {
    /// Trains a byte-level BPE of `vocab_size` ids on `texts` (deterministic for the same texts).
    pub fn train<'a>(texts: impl Iterator<Item = &'a str> + Send, vocab_size: usize) -> Result<Self> {
        let tok_err = |e: tokenizers::Error| Error::Input(format!("training the tokenizer: {e}"));
        let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .show_progress(false)
            .special_tokens(SPECIALS.iter().map(|s| AddedToken::from(s.to_string(), true)).collect())
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build()
            .into();
        let mut inner = Tokenizer::new(BPE::default());
        inner.with_pre_tokenizer(Some(ByteLevel::new(true, true, true)));
        inner.with_decoder(Some(ByteLevel::default()));
        inner.train(&mut trainer, texts).map_err(tok_err)?;
        let tok = SubwordTokenizer { inner };
        tok.check_specials(Path::new("(trained)"))?;
        Ok(tok)
    }

    /// Loads a `tokenizer.json`; a missing or broken file, or one without T5's special ids, is an
    /// error saying how to rebuild it.
    pub fn load(path: &Path) -> Result<Self> {
        let fix =
            "git checkout -- assets/corpus (it is committed), or rebuild it with `cargo run --bin hw9 -- tokenizer`";
        let inner = read_tokenizer_json(path, "tokenizer", fix)?;
        let tok = SubwordTokenizer { inner };
        tok.check_specials(path)?;
        Ok(tok)
    }

    /// A BERT WordPiece `tokenizer.json` (MiniLM's) for the warm-started summarizer
    /// ([`crate::models::warm_start::warm_start_from_bert`]): its ids as they are, so that the
    /// encoder's pretrained embeddings line up. `[PAD]` is id 0 already; id 1 (`[unused0]`, a
    /// token BERT never saw) becomes EOS. Its fixed-length padding and truncation are turned off,
    /// and no `[CLS]`/`[SEP]` is added.
    pub fn bert_wordpiece(path: &Path) -> Result<Self> {
        let mut inner = read_tokenizer_json(path, "BERT tokenizer", "make setup (installs MiniLM's tokenizer.json)")?;
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| Error::Input(format!("turning off the truncation of {}: {e}", path.display())))?;
        let tok = SubwordTokenizer { inner };
        tok.expect_ids(path, &[(PAD, "[PAD]"), (EOS, "[unused0]")])?;
        Ok(tok)
    }

    /// The committed tokenizer.
    pub fn load_default() -> Result<Self> {
        Self::load(&tokenizer_path())
    }

    fn check_specials(&self, path: &Path) -> Result<()> {
        let specials: Vec<(i64, &str)> = SPECIALS.iter().enumerate().map(|(id, s)| (id as i64, *s)).collect();
        self.expect_ids(path, &specials)
    }

    /// Each `(id, token)` must be in the vocabulary at that id.
    fn expect_ids(&self, path: &Path, ids: &[(i64, &str)]) -> Result<()> {
        for &(id, s) in ids {
            if self.inner.token_to_id(s) != Some(id as u32) {
                let detail = format!("expected {s:?} to have id {id}, got {:?}", self.inner.token_to_id(s));
                return Err(Error::corrupt("tokenizer", path, detail));
            }
        }
        Ok(())
    }

    /// Writes `tokenizer.json`.
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = self.inner.to_string(true).map_err(|e| Error::Input(format!("serialising the tokenizer: {e}")))?;
        crate::io::write_atomic(path, json.as_bytes())
    }

    /// Token ids, special ones included.
    pub fn vocab_size(&self) -> i64 {
        self.inner.get_vocab_size(true) as i64
    }

    /// Token ids of `text` (no EOS), at most `max_len` of them.
    pub fn encode(&self, text: &str, max_len: usize) -> Result<Vec<i64>> {
        let enc = self.inner.encode(text, false).map_err(|e| Error::Input(format!("tokenizing {text:?}: {e}")))?;
        Ok(enc.get_ids().iter().take(max_len).map(|&i| i as i64).collect())
    }

    /// Token ids of each text (no EOS), at most `max_len` each; spread over the CPU cores.
    pub fn encode_batch(&self, texts: &[&str], max_len: usize) -> Result<Vec<Vec<i64>>> {
        let encs = self
            .inner
            .encode_batch(texts.to_vec(), false)
            .map_err(|e| Error::Input(format!("tokenizing {} texts: {e}", texts.len())))?;
        Ok(encs.iter().map(|e| e.get_ids().iter().take(max_len).map(|&i| i as i64).collect()).collect())
    }

    /// Text of `ids`, stopping at the first EOS and skipping padding.
    pub fn decode(&self, ids: &[i64]) -> Result<String> {
        let ids: Vec<u32> = ids.iter().take_while(|&&i| i != EOS).filter(|&&i| i != PAD).map(|&i| i as u32).collect();
        let text = self.inner.decode(&ids, true).map_err(|e| Error::Input(format!("decoding {ids:?}: {e}")))?;
        Ok(text.trim().to_string())
    }

    /// The subword pieces of `text`, for display.
    pub fn pieces(&self, text: &str) -> Result<Vec<String>> {
        let enc = self.inner.encode(text, false).map_err(|e| Error::Input(format!("tokenizing {text:?}: {e}")))?;
        Ok(enc.get_tokens().iter().map(|t| t.replace('Ġ', "▁")).collect())
    }
}

/// Tokenizes pairs, truncating documents to `max_src` and summaries to `max_tgt` tokens (EOS
/// included; the original homework used 1024 / 128).
pub fn tokenize(tok: &SubwordTokenizer, pairs: &[&Pair], max_src: usize, max_tgt: usize) -> Result<Vec<Example>> {
    if max_src < 2 || max_tgt < 2 {
        return Err(Error::Config(format!(
            "truncation lengths must leave room for a token and EOS; got max_src {max_src}, max_tgt {max_tgt}"
        )));
    }
    let docs = tok.encode_batch(&pairs.iter().map(|p| p.document.as_str()).collect::<Vec<_>>(), max_src - 1)?;
    let sums = tok.encode_batch(&pairs.iter().map(|p| p.summary.as_str()).collect::<Vec<_>>(), max_tgt - 1)?;
    Ok(docs
        .into_iter()
        .zip(sums)
        .map(|(mut src, mut tgt)| {
            src.push(EOS);
            tgt.push(EOS);
            Example { src, tgt }
        })
        .collect())
}

/// Reads XSum or CNN-DailyMail exported by Hugging Face `datasets` (`ds.to_json(path)`): one JSON
/// object per line with the document under `document` (XSum) or `article` (CNN-DailyMail) and the
/// summary under `summary` or `highlights`. Every pair gets `split`.
pub fn read_hf_jsonl(path: &Path, split: &str) -> Result<Vec<Pair>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut pairs = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| Error::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let corrupt =
            |detail: String| Error::corrupt("summarization JSON lines", path, format!("line {}: {detail}", i + 1));
        let v: serde_json::Value = serde_json::from_str(&line).map_err(|e| corrupt(e.to_string()))?;
        let field =
            |names: [&str; 2]| names.iter().find_map(|n| v.get(*n).and_then(|x| x.as_str()).map(str::to_string));
        let document = field(["document", "article"]).ok_or_else(|| {
            corrupt("expected a string field \"document\" (XSum) or \"article\" (CNN-DailyMail)".into())
        })?;
        let summary = field(["summary", "highlights"]).ok_or_else(|| {
            corrupt("expected a string field \"summary\" (XSum) or \"highlights\" (CNN-DailyMail)".into())
        })?;
        let package = v
            .get("id")
            .map(|x| x.as_str().map_or(x.to_string(), str::to_string))
            .unwrap_or_else(|| format!("line-{}", i + 1));
        pairs.push(Pair { package, document, summary, split: split.to_string() });
    }
    Ok(pairs)
}

/// How the summarization data is cut: truncation lengths and how many pairs of each split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextSizes {
    /// Documents are truncated to this many tokens, EOS included (original: 1024).
    pub max_src: usize,
    /// Summaries are truncated to this many tokens, EOS included (original: 128).
    pub max_tgt: usize,
    /// `(train, validation, test)` pairs kept, or `None` for all of them.
    pub subset: Option<(usize, usize, usize)>,
}

/// The tokenized splits and their texts.
#[derive(Debug)]
pub struct SummaryData {
    /// The tokenizer the examples were made with.
    pub tokenizer: SubwordTokenizer,
    /// Tokenized training pairs.
    pub train: Vec<Example>,
    /// Tokenized validation pairs.
    pub validation: Vec<Example>,
    /// Tokenized test pairs.
    pub test: Vec<Example>,
    /// The validation pairs' texts, in the order of `validation`.
    pub validation_pairs: Vec<Pair>,
    /// The test pairs' texts, in the order of `test`.
    pub test_pairs: Vec<Pair>,
}

/// Where a user's own XSum / CNN-DailyMail JSON lines are (`train.jsonl`, `validation.jsonl`,
/// `test.jsonl`); unset, the committed Debian corpus is used.
pub const DATA_VAR: &str = "HW9_SUMMARIZATION_DATA";

impl SummaryData {
    /// The committed Debian corpus with the committed tokenizer, or the JSON lines in
    /// `$HW9_SUMMARIZATION_DATA`; cut to `sizes` (notebook 2: `plan.data`).
    pub fn load(sizes: &TextSizes) -> Result<Self> {
        Self::load_with(SubwordTokenizer::load_default()?, sizes)
    }

    /// The same pairs as [`SummaryData::load`], tokenized with `tokenizer`.
    pub fn load_with(tokenizer: SubwordTokenizer, sizes: &TextSizes) -> Result<Self> {
        let pairs = match std::env::var_os(DATA_VAR) {
            Some(dir) => ["train", "validation", "test"]
                .iter()
                .map(|s| read_hf_jsonl(&PathBuf::from(&dir).join(format!("{s}.jsonl")), s))
                .collect::<Result<Vec<_>>>()?
                .concat(),
            None => read_pairs(&corpus_path())?,
        };
        Self::from_pairs(tokenizer, &pairs, sizes)
    }

    /// Tokenizes `pairs` (with their `split`) with `tokenizer`, cut to `sizes`; a second
    /// call with the same content reads the tokenisation back from the disk cache
    /// ([`token_cache`]).
    pub fn from_pairs(tokenizer: SubwordTokenizer, pairs: &[Pair], sizes: &TextSizes) -> Result<Self> {
        let (n_train, n_val, n_test) = sizes.subset.unwrap_or((usize::MAX, usize::MAX, usize::MAX));
        let take = |name: &str, n: usize| split(pairs, name).into_iter().take(n).collect::<Vec<_>>();
        let (train, val, test) = (take("train", n_train), take("validation", n_val), take("test", n_test));
        if train.is_empty() || val.is_empty() {
            return Err(Error::Input(format!(
                "expected training and validation pairs, got {} and {}",
                train.len(),
                val.len()
            )));
        }
        let tok = |p: &[&Pair]| tokenize(&tokenizer, p, sizes.max_src, sizes.max_tgt);
        let json =
            tokenizer.inner.to_string(false).map_err(|e| Error::Input(format!("serialising the tokenizer: {e}")))?;
        let key = token_cache::key(&json, [&train, &val, &test], sizes.max_src, sizes.max_tgt);
        let [train_ex, val_ex, test_ex] = match token_cache::read(&key) {
            Some(cached) => cached,
            None => {
                let made = [tok(&train)?, tok(&val)?, tok(&test)?];
                token_cache::write(&key, [&made[0], &made[1], &made[2]]);
                made
            }
        };
        Ok(SummaryData {
            train: train_ex,
            validation: val_ex,
            test: test_ex,
            validation_pairs: val.into_iter().cloned().collect(),
            test_pairs: test.into_iter().cloned().collect(),
            tokenizer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::seq2seq::UNK;

    #[test]
    fn reads_xsum_and_cnn_json_lines_and_names_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("xsum.jsonl");
        std::fs::write(&path, "{\"document\": \"A long text.\", \"summary\": \"Short.\", \"id\": \"3\"}\n\n{\"article\": \"Another.\", \"highlights\": \"H.\", \"id\": 4}\n").unwrap();
        let pairs = read_hf_jsonl(&path, "train").unwrap();
        assert_eq!(pairs.len(), 2);
        assert_eq!(
            (pairs[0].document.as_str(), pairs[0].summary.as_str(), pairs[0].package.as_str()),
            ("A long text.", "Short.", "3")
        );
        assert_eq!((pairs[1].document.as_str(), pairs[1].package.as_str()), ("Another.", "4"));
        std::fs::write(&path, "{\"document\": \"x\"}\n").unwrap();
        let msg = read_hf_jsonl(&path, "train").unwrap_err().to_string();
        assert!(msg.contains("line 1") && msg.contains("\"summary\""), "{msg}");
    }

    #[test]
    fn the_committed_tokenizer_has_t5_ids_and_round_trips() {
        let tok = SubwordTokenizer::load_default().unwrap();
        assert_eq!(tok.vocab_size(), 8000);
        let text = "A command-line tool for converting images (PNG, JPEG) to PDF.";
        let ids = tok.encode(text, 1000).unwrap();
        assert!(ids.len() < text.split_whitespace().count() * 2, "{ids:?}");
        assert!(ids.iter().all(|&i| i > UNK));
        let mut with_eos = ids.clone();
        with_eos.extend([EOS, 42, 43]);
        assert_eq!(tok.decode(&with_eos).unwrap(), text);
        assert_eq!(tok.encode(text, 3).unwrap().len(), 3);
        assert_eq!(tok.encode_batch(&[text, "x"], 1000).unwrap(), vec![ids.clone(), tok.encode("x", 1000).unwrap()]);
    }

    #[test]
    fn a_corrupt_tokenizer_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        std::fs::write(&path, "{").unwrap();
        assert!(SubwordTokenizer::load(&path).unwrap_err().to_string().contains("corrupt tokenizer"));
        assert!(SubwordTokenizer::load(&dir.path().join("none.json"))
            .unwrap_err()
            .to_string()
            .contains("hw9 -- tokenizer"));
    }
}
