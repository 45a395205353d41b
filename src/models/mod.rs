//! The models, each in its own file, leaf layers first; all attend through [`attention`].
//!
//! | module | what | notebook |
//! |---|---|---|
//! | [`attention`] | the one attention function (fused, or with the weights), heads split/merged | all |
//! | [`vit`] | patches, a Transformer encoder equal to `nn.TransformerEncoder`, the ViT classifier | 1 |
//! | [`mae`] | the Masked Autoencoder, its loss, the classifier on its representation | 1 |
//! | [`transformer`] | multi-head attention, the encoder/decoder layer, position ids, dropout | 2 |
//! | [`summarizer`] | the encoder-decoder summarizer (shared positions, tied embeddings) | 2 |
//! | [`decoding`] | greedy and beam-search decoding with cached layers | 2 |
//! | [`bert`] | BERT (`BertModel` names) returning every layer's attention | 3 |
//! | [`gpt2`] | GPT-2 (`GPT2Model` names) returning every layer's attention | 3 |
//! | [`llama`] | LLaMA (`LlamaForCausalLM` names: RMSNorm, RoPE, grouped-query attention, SwiGLU), SmolLM2-135M, with attention and cached greedy generation | 3 |
//! | [`facenet`] | FaceNet: a CNN embedding, triplets, semi-hard and batch-hard selection | 4 |
//!
//! The answers to the notebooks' TODO cells (`unpatchify`, `Vit`, `Mae`, masking,
//! `MultiheadAttention`, `TransformerLayer`, `make_positions`, FaceNet's head, distances, loss and
//! selections) live in `reference/`, compiled with
//! the `reference` feature (on by default; off in the student handout, which leaves those files
//! out) and re-exported from the modules above.

pub mod attention;
pub mod bert;
pub mod decoding;
pub mod facenet;
pub mod gpt2;
pub mod llama;
pub mod mae;
#[cfg(feature = "reference")]
pub mod reference;
pub mod summarizer;
pub mod transformer;
pub mod vit;
pub mod warm_start;
