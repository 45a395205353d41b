//! The pretrained models' tokenizers: a Hugging Face `tokenizer.json` (BERT's WordPiece, with
//! sentence pairs) through the `tokenizers` crate, and GPT-2's byte-level BPE (`tiktoken-rs`'s
//! `r50k_base`, GPT-2's own encoding, embedded in that crate: nothing is downloaded). The
//! summarizer's own tokenizer, trained here, is [`crate::data::text::SubwordTokenizer`].

use std::path::Path;

use tch::{Device, Tensor};

use crate::error::{Error, Result};

/// A tokenized sentence or sentence pair, ready for [`Bert::forward`].
#[derive(Debug, Clone, PartialEq)]
pub struct Tokenized {
    /// The token pieces, special tokens included (`[CLS]`, `[SEP]`).
    pub tokens: Vec<String>,
    /// Their ids.
    pub ids: Vec<i64>,
    /// Segment ids: 0 for sentence A, 1 for sentence B.
    pub type_ids: Vec<i64>,
    /// The index of sentence B's first token (`None` for a single sentence).
    pub sentence_b_start: Option<usize>,
}

impl Tokenized {
    /// `(input_ids, token_type_ids)`, each `(1, T)` on `device`.
    pub fn tensors(&self, device: Device) -> (Tensor, Tensor) {
        (
            Tensor::from_slice(&self.ids).unsqueeze(0).to_device(device),
            Tensor::from_slice(&self.type_ids).unsqueeze(0).to_device(device),
        )
    }
}

/// Reads a Hugging Face `tokenizer.json` (every tokenizer the crate loads comes through here): a
/// missing file is an error saying `fix`, one that does not parse is reported as corrupt.
pub fn read_tokenizer_json(path: &Path, what: &str, fix: &str) -> Result<tokenizers::Tokenizer> {
    if !path.exists() {
        return Err(Error::missing(what, path.to_path_buf(), fix));
    }
    tokenizers::Tokenizer::from_file(path).map_err(|e| Error::corrupt(what, path.to_path_buf(), e.to_string()))
}

/// A Hugging Face `tokenizer.json` (WordPiece for BERT, byte-level BPE for GPT-2).
pub struct Tokenizer(tokenizers::Tokenizer);

impl Tokenizer {
    /// Loads `tokenizer.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let mut tok = read_tokenizer_json(path, "tokenizer", "make setup (installs MiniLM's tokenizer.json)")?;
        // Some tokenizer.json files (MiniLM's) pad every input to a fixed length: we look at
        // real tokens only, one sentence (pair) at a time.
        tok.with_padding(None);
        Ok(Tokenizer(tok))
    }

    /// Encodes one sentence, or a pair (`[CLS] a [SEP] b [SEP]` for BERT), with special tokens.
    pub fn encode(&self, a: &str, b: Option<&str>) -> Result<Tokenized> {
        let enc = match b {
            Some(b) => self.0.encode((a, b), true),
            None => self.0.encode(a, true),
        }
        .map_err(|e| Error::Input(format!("could not tokenize {a:?}: {e}")))?;
        let type_ids: Vec<i64> = enc.get_type_ids().iter().map(|&t| t as i64).collect();
        let sentence_b_start = b.and_then(|_| type_ids.iter().position(|&t| t == 1));
        Ok(Tokenized {
            tokens: enc.get_tokens().to_vec(),
            ids: enc.get_ids().iter().map(|&i| i as i64).collect(),
            type_ids,
            sentence_b_start,
        })
    }
}

/// GPT-2's byte-level BPE tokenizer (`r50k_base`).
pub struct Gpt2Tokenizer(tiktoken_rs::CoreBPE);

impl Gpt2Tokenizer {
    /// GPT-2's encoding (embedded in `tiktoken-rs`).
    pub fn new() -> Result<Self> {
        tiktoken_rs::r50k_base().map(Gpt2Tokenizer).map_err(|e| Error::Input(format!("GPT-2 tokenizer: {e}")))
    }

    /// Token ids and their text pieces (a leading space belongs to its token, as in GPT-2).
    pub fn encode(&self, text: &str) -> (Vec<i64>, Vec<String>) {
        let ids = self.0.encode_ordinary(text);
        // A piece may be part of a multi-byte character: shown lossily.
        let pieces = ids
            .iter()
            .map(|&i| String::from_utf8_lossy(&self.0.decode_bytes(&[i]).unwrap_or_default()).into_owned())
            .collect();
        (ids.into_iter().map(|i| i as i64).collect(), pieces)
    }

    /// The text of `ids` (bytes that are not UTF-8 shown lossily).
    pub fn decode(&self, ids: &[i64]) -> Result<String> {
        let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
        let bytes = self.0.decode_bytes(&ids).map_err(|e| Error::Input(format!("GPT-2 decode: {e}")))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// A LLaMA-family byte-level BPE `tokenizer.json` (SmolLM2's, converted by setup from the GGUF
/// file's metadata): ids and readable pieces, decoding, and the instruct model's chat prompt.
pub struct LlamaTokenizer(tokenizers::Tokenizer);

impl LlamaTokenizer {
    /// Loads `tokenizer.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let fix = "make setup (converts SmolLM2's tokenizer into assets/models/smollm2-135m-instruct)";
        read_tokenizer_json(path, "tokenizer", fix).map(LlamaTokenizer)
    }

    /// Token ids of `text` (special tokens such as `<|im_start|>` written in the text are kept
    /// whole; none is added) and each token's text (a leading space belongs to its token; a piece
    /// that is part of a multi-byte character is shown lossily).
    pub fn encode(&self, text: &str) -> Result<(Vec<i64>, Vec<String>)> {
        let enc = self.0.encode(text, false).map_err(|e| Error::Input(format!("could not tokenize {text:?}: {e}")))?;
        let ids: Vec<i64> = enc.get_ids().iter().map(|&i| i as i64).collect();
        let pieces = enc.get_ids().iter().map(|&i| self.0.decode(&[i], false).unwrap_or_default()).collect();
        Ok((ids, pieces))
    }

    /// The text of `ids`, special tokens left out.
    pub fn decode(&self, ids: &[i64]) -> Result<String> {
        let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
        self.0.decode(&ids, true).map_err(|e| Error::Input(format!("could not decode {} ids: {e}", ids.len())))
    }

    /// The id of a token (e.g. `<|im_end|>`), if the vocabulary has it.
    pub fn id(&self, token: &str) -> Option<i64> {
        self.0.token_to_id(token).map(i64::from)
    }

    /// Vocabulary size, special tokens included.
    pub fn vocab_size(&self) -> i64 {
        self.0.get_vocab_size(true) as i64
    }

    /// Ids that end an answer: `<|im_end|>` and `<|endoftext|>` when present.
    pub fn stop_ids(&self) -> Vec<i64> {
        ["<|im_end|>", "<|endoftext|>"].iter().filter_map(|t| self.id(t)).collect()
    }

    /// SmolLM2-Instruct's chat template for one user message (its default system line, as the
    /// template in the GGUF file writes it), ending where the assistant's answer starts.
    pub fn chat_prompt(message: &str) -> String {
        format!(
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
             <|im_start|>user\n{message}<|im_end|>\n<|im_start|>assistant\n"
        )
    }
}
