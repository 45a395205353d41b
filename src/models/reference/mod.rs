//! The crate's answers to the notebooks' TODO cells — `unpatchify`, the ViT's forward, the MAE's
//! masking and passes, multi-head attention, the Transformer layer, position ids — compiled only
//! with the `reference` feature (on in the repository, off in the student handout, which does not
//! contain these files). Each is re-exported where it belongs (`models::vit`, `models::mae`,
//! `models::transformer`), so the paths are the same with the feature on.

pub mod facenet;
pub mod mae;
pub mod transformer;
pub mod vit;
