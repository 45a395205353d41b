//! What each notebook does end to end, as library functions that the notebooks and the `hw9`
//! commands call: [`images`] (the image classifier's and the MAE's training), [`triplet`] (the
//! embedding's triplet training), `vit_mae` (notebook 1's four stages with the crate's reference models), [`summarization`] (notebook 2's
//! training, summaries and [`rouge`]), [`language_model`] (the small GPT-2 of notebook 3), [`heads`] (induction heads, previous-token heads and attention sinks, notebook 3), [`interpret`] (the logit lens, head ablation and attribution on SmolLM2, notebook 3), [`verification`]
//! (notebook 4's evaluation of an embedding as FaceNet does), `facenet` (notebook 4 end to end).

pub mod facenet;
pub mod heads;
pub mod images;
pub mod interpret;
pub mod language_model;
pub mod lm_summarizer;
pub mod measure;
pub mod rouge;
pub mod summarization;
pub mod triplet;
pub mod verification;
#[cfg(feature = "reference")]
pub mod vit_mae;
