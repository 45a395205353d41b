//! Data: image datasets and their batches ([`images`]), the Debian descriptions corpus
//! ([`corpus`]), the summarizer's token ids, examples and padded batches ([`seq2seq`], a leaf),
//! its tokenizer and data ([`text`]) with the tokenised corpus cached on disk ([`token_cache`]), and the pretrained models' tokenizers
//! ([`tokenize`]). Everything is read from files setup installed or
//! the repository holds: nothing is downloaded at run time.

pub mod corpus;
pub mod images;
pub mod seq2seq;
pub mod text;
pub mod token_cache;
pub mod tokenize;
