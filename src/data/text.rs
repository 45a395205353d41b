//! Data for the summarizer (notebook 2): the subword tokenizer, tokenized (document → summary)
//! examples, padding-aware batches, and a loader for XSum / CNN-DailyMail exported by Hugging
//! Face `datasets` as JSON lines (`document`, `summary`).
//!
//! Token ids follow T5's layout: `<pad>` = 0, `</s>` (EOS) = 1, `<unk>` = 2. A source is the
//! document's tokens then EOS; a target is the summary's tokens then EOS; the decoder reads EOS
//! followed by the target shifted right, and the loss ignores label -100 (padding).
//!
//! (Over 400 lines: about 80 of them are its unit tests, kept beside the code they test.)

use std::io::BufRead;
use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use crate::data::corpus::{corpus_path, read_pairs, split, Pair};
use crate::data::token_cache;
use crate::data::tokenize::read_tokenizer_json;
use crate::error::{Error, Result};
use crate::plan::SummarizationPlan;

/// Padding id.
pub const PAD: i64 = 0;
/// End of sequence; also the decoder's first input.
pub const EOS: i64 = 1;
/// Unknown (byte-level BPE never needs it; kept for T5's layout).
pub const UNK: i64 = 2;
/// Labels with this value are ignored by the loss and the accuracy.
pub const IGNORE: i64 = -100;
const SPECIALS: [&str; 3] = ["<pad>", "</s>", "<unk>"];

/// The committed tokenizer, trained on the corpus' training split (`hw9 tokenizer`).
pub fn tokenizer_path() -> PathBuf {
    crate::paths::assets().join("corpus/tokenizer.json")
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
                return Err(Error::Corrupt { what: "tokenizer".into(), path: path.into(), detail });
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

/// One tokenized pair: `src` = document tokens + EOS, `tgt` = summary tokens + EOS.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// Document tokens, then EOS.
    pub src: Vec<i64>,
    /// Summary tokens, then EOS.
    pub tgt: Vec<i64>,
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

/// A padded batch.
#[derive(Debug)]
pub struct Batch {
    /// `(B, S)` document ids, padded with [`PAD`].
    pub src: Tensor,
    /// `(B, T)` decoder input: EOS, then the target shifted right; padded with [`PAD`].
    pub dec_in: Tensor,
    /// `(B, T)` next-token labels (the target), padded with [`IGNORE`] = -100.
    pub labels: Tensor,
}

impl Batch {
    /// Pads `examples` to the longest of each side.
    pub fn new(examples: &[&Example], device: Device) -> Batch {
        let s = examples.iter().map(|e| e.src.len()).max().unwrap_or(1);
        let t = examples.iter().map(|e| e.tgt.len()).max().unwrap_or(1);
        let (mut src, mut dec_in, mut labels) = (Vec::new(), Vec::new(), Vec::new());
        for e in examples {
            src.extend(e.src.iter().copied().chain(std::iter::repeat(PAD)).take(s));
            dec_in.extend(
                std::iter::once(EOS)
                    .chain(e.tgt[..e.tgt.len() - 1].iter().copied())
                    .chain(std::iter::repeat(PAD))
                    .take(t),
            );
            labels.extend(e.tgt.iter().copied().chain(std::iter::repeat(IGNORE)).take(t));
        }
        let b = examples.len() as i64;
        let to = |v: Vec<i64>, n: usize| Tensor::from_slice(&v).reshape([b, n as i64]).to_device(device);
        Batch { src: to(src, s), dec_in: to(dec_in, t), labels: to(labels, t) }
    }

    /// Examples in the batch `B`.
    pub fn size(&self) -> i64 {
        self.src.size()[0]
    }
}

/// Padding-aware batches: examples of similar document length go together, so little compute
/// goes to padding. With `shuffle`, examples are shuffled (libtorch's seeded generator), sorted
/// by length within pools of 50 batches, and the batches' order is shuffled again; without,
/// batches follow the sorted order of the whole set. Returns indices into `examples`.
pub fn batch_indices(examples: &[Example], batch_size: usize, shuffle: bool) -> Vec<Vec<usize>> {
    let n = examples.len();
    let batch_size = batch_size.max(1);
    let perm = |n: usize| -> Vec<usize> {
        Vec::<i64>::try_from(Tensor::randperm(n as i64, (Kind::Int64, Device::Cpu)))
            .unwrap_or_default()
            .into_iter()
            .map(|i| i as usize)
            .collect()
    };
    let mut order: Vec<usize> = if shuffle { perm(n) } else { (0..n).collect() };
    let pool = if shuffle { batch_size * 50 } else { n.max(1) };
    for chunk in order.chunks_mut(pool) {
        chunk.sort_by_key(|&i| std::cmp::Reverse(examples[i].src.len()));
    }
    let mut batches: Vec<Vec<usize>> = order.chunks(batch_size).map(<[usize]>::to_vec).collect();
    if shuffle {
        let p = perm(batches.len());
        batches = p.into_iter().map(|i| std::mem::take(&mut batches[i])).collect();
    }
    batches
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
        let corrupt = |detail: String| Error::Corrupt {
            what: "summarization JSON lines".into(),
            path: path.into(),
            detail: format!("line {}: {detail}", i + 1),
        };
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
    /// `$HW9_SUMMARIZATION_DATA`; cut to the plan's subset and truncation lengths.
    pub fn load(plan: &SummarizationPlan) -> Result<Self> {
        Self::load_with(SubwordTokenizer::load_default()?, plan)
    }

    /// The same pairs as [`SummaryData::load`], tokenized with `tokenizer`.
    pub fn load_with(tokenizer: SubwordTokenizer, plan: &SummarizationPlan) -> Result<Self> {
        let pairs = match std::env::var_os(DATA_VAR) {
            Some(dir) => ["train", "validation", "test"]
                .iter()
                .map(|s| read_hf_jsonl(&PathBuf::from(&dir).join(format!("{s}.jsonl")), s))
                .collect::<Result<Vec<_>>>()?
                .concat(),
            None => read_pairs(&corpus_path())?,
        };
        Self::from_pairs(tokenizer, &pairs, plan)
    }

    /// Tokenizes `pairs` (with their `split`) with `tokenizer`, cut as `plan` says; a second
    /// call with the same content reads the tokenisation back from the disk cache
    /// ([`token_cache`]).
    pub fn from_pairs(tokenizer: SubwordTokenizer, pairs: &[Pair], plan: &SummarizationPlan) -> Result<Self> {
        let (n_train, n_val, n_test) = plan.subset.unwrap_or((usize::MAX, usize::MAX, usize::MAX));
        let take = |name: &str, n: usize| split(pairs, name).into_iter().take(n).collect::<Vec<_>>();
        let (train, val, test) = (take("train", n_train), take("validation", n_val), take("test", n_test));
        if train.is_empty() || val.is_empty() {
            return Err(Error::Input(format!(
                "expected training and validation pairs, got {} and {}",
                train.len(),
                val.len()
            )));
        }
        let tok = |p: &[&Pair]| tokenize(&tokenizer, p, plan.max_src, plan.max_tgt);
        let json =
            tokenizer.inner.to_string(false).map_err(|e| Error::Input(format!("serialising the tokenizer: {e}")))?;
        let key = token_cache::key(&json, [&train, &val, &test], plan.max_src, plan.max_tgt);
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

    fn ex(src: usize, tgt: usize) -> Example {
        Example { src: (10..10 + src as i64).collect(), tgt: (20..20 + tgt as i64).collect() }
    }

    #[test]
    fn a_batch_pads_shifts_and_ignores_padding() {
        let (a, b) =
            (Example { src: vec![5, 6, EOS], tgt: vec![7, 8, EOS] }, Example { src: vec![9, EOS], tgt: vec![3, EOS] });
        let batch = Batch::new(&[&a, &b], Device::Cpu);
        assert_eq!(Vec::<i64>::try_from(batch.src.flatten(0, 1)).unwrap(), vec![5, 6, EOS, 9, EOS, PAD]);
        assert_eq!(Vec::<i64>::try_from(batch.dec_in.flatten(0, 1)).unwrap(), vec![EOS, 7, 8, EOS, 3, PAD]);
        assert_eq!(Vec::<i64>::try_from(batch.labels.flatten(0, 1)).unwrap(), vec![7, 8, EOS, 3, EOS, IGNORE]);
    }

    #[test]
    fn batches_cover_every_example_once_and_group_lengths() {
        tch::manual_seed(0);
        let examples: Vec<Example> = (0..1000).map(|i| ex(1 + (i * 37) % 200, 3)).collect();
        let batches = batch_indices(&examples, 16, true);
        let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..1000).collect::<Vec<_>>());
        // Sorting within pools keeps padding low: far less than random batches would have.
        let pad: usize = batches
            .iter()
            .map(|b| {
                b.iter().map(|&i| examples[i].src.len()).max().unwrap() * b.len()
                    - b.iter().map(|&i| examples[i].src.len()).sum::<usize>()
            })
            .sum();
        let real: usize = examples.iter().map(|e| e.src.len()).sum();
        assert!(pad * 10 < real, "padding {pad} vs real tokens {real}");
    }

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
