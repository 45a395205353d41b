//! Masked Autoencoder (He et al., 2021), after facebookresearch/mae's `models_mae.py`:
//! `random_masking`, `forward_encoder`, `forward_decoder`, `forward_loss`, and a classifier on
//! the encoder's representation for linear probing (frozen MAE) or finetuning.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::vit::{patchify, EncoderConfig};
use crate::error::{Error, Result};

/// An MAE's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaeConfig {
    /// Image side in pixels (square images).
    pub image_size: i64,
    /// Image channels `C`.
    pub channels: i64,
    /// Patch side `P`.
    pub patch_size: i64,
    /// The encoder (original: 256 × 4 layers, 4 heads, ffn 1024).
    pub encoder: EncoderConfig,
    /// The decoder (original: 128 × 2 layers, 4 heads, ffn 512).
    pub decoder: EncoderConfig,
    /// Fraction of patches masked during pretraining (original: 0.75).
    pub mask_ratio: f64,
}

impl MaeConfig {
    /// The original homework's sizes on Fashion-MNIST (28×28×1, patch 4).
    pub fn fashion_mnist_full() -> Self {
        MaeConfig {
            image_size: 28,
            channels: 1,
            patch_size: 4,
            encoder: EncoderConfig { d_model: 256, n_heads: 4, n_layers: 4, d_ffn: 1024 },
            decoder: EncoderConfig { d_model: 128, n_heads: 4, n_layers: 2, d_ffn: 512 },
            mask_ratio: 0.75,
        }
    }

    /// The model of notebook 1's MAE checks (their fixture weights, `tools/gen_fixtures.py`): the
    /// full model's 28×28 images, patches and mask ratio, an encoder of 2 layers of 32 and a
    /// decoder of 1 layer of 16.
    pub fn fixture() -> Self {
        MaeConfig {
            encoder: EncoderConfig { d_model: 32, n_heads: 2, n_layers: 2, d_ffn: 64 },
            decoder: EncoderConfig { d_model: 16, n_heads: 2, n_layers: 1, d_ffn: 32 },
            ..MaeConfig::fashion_mnist_full()
        }
    }

    /// A tiny model for tests.
    pub fn tiny() -> Self {
        MaeConfig {
            image_size: 8,
            channels: 1,
            patch_size: 4,
            encoder: EncoderConfig { d_model: 16, n_heads: 2, n_layers: 2, d_ffn: 32 },
            decoder: EncoderConfig { d_model: 8, n_heads: 2, n_layers: 1, d_ffn: 16 },
            mask_ratio: 0.75,
        }
    }

    /// Patches per image `N`.
    pub fn n_patches(&self) -> i64 {
        (self.image_size / self.patch_size).pow(2)
    }

    /// Patches kept visible: `⌊N (1 − mask_ratio)⌋`.
    pub fn keep_length(&self) -> i64 {
        (self.n_patches() as f64 * (1.0 - self.mask_ratio)).floor() as i64
    }

    /// Checks the sizes.
    pub fn validate(&self) -> Result<()> {
        self.encoder.validate()?;
        self.decoder.validate()?;
        if self.patch_size <= 0 || self.image_size % self.patch_size != 0 {
            return Err(Error::Config(format!(
                "patch_size {} must divide image_size {}",
                self.patch_size, self.image_size
            )));
        }
        if !(0.0..1.0).contains(&self.mask_ratio) || self.keep_length() < 1 || self.keep_length() >= self.n_patches() {
            return Err(Error::Config(format!(
                "mask_ratio must hide at least one of the {} patches (the loss is on the hidden ones) and leave one visible, got {}",
                self.n_patches(),
                self.mask_ratio
            )));
        }
        Ok(())
    }
}

/// The MAE loss: mean squared error of the predicted pixels, on the masked patches only.
///
/// # Shapes
/// `images: (B, C, H, W)`, `pred: (B, N, C·P·P)`, `mask: (B, N)` (1 = masked) → a scalar.
pub fn forward_loss(images: &Tensor, pred: &Tensor, mask: &Tensor, patch_size: i64) -> Result<Tensor> {
    let target = patchify(images, patch_size)?;
    let per_patch = (pred - target).square().mean_dim(-1, false, Kind::Float); // (B, N)
    Ok((per_patch * mask).sum(Kind::Float) / mask.sum(Kind::Float))
}

/// What MAE pretraining needs of a model: predictions and the mask for a batch.
pub trait MaskedAutoencoder {
    /// `images: (B, C, H, W)` → `(pred (B, N, C·P·P), mask (B, N), 1 = masked)`.
    fn reconstruct(&self, images: &Tensor) -> Result<(Tensor, Tensor)>;
    /// The patch side `P`.
    fn patch_size(&self) -> i64;
    /// Patches back to images, the inverse of `patchify`: `(B, N, C·P·P)` → `(B, C, H, W)` (the
    /// reconstruction grid shows pixels with it).
    fn unpatchify(&self, patches: &Tensor) -> Result<Tensor>;

    /// The pretraining loss on a batch: [`forward_loss`] of [`MaskedAutoencoder::reconstruct`],
    /// with the prediction's and the mask's shapes checked (a student's model names what is
    /// wrong). [`Mae`] computes it for the masked patches only.
    fn pretraining_loss(&self, images: &Tensor) -> Result<Tensor> {
        let (pred, mask) = self.reconstruct(images)?;
        let target_shape = patchify(images, self.patch_size())?.size();
        if pred.size() != target_shape {
            return Err(Error::Shape {
                what: "MAE predicted patches".into(),
                expected: target_shape,
                got: pred.size(),
            });
        }
        if mask.size() != target_shape[..2] {
            return Err(Error::Shape {
                what: "MAE mask (1 = masked)".into(),
                expected: target_shape[..2].to_vec(),
                got: mask.size(),
            });
        }
        forward_loss(images, &pred, &mask, self.patch_size())
    }
}

#[cfg(feature = "reference")]
pub use super::reference::mae::{random_masking, restore_masked, Mae, MaeClassifier};
