//! Masked Autoencoder (He et al., 2021), after facebookresearch/mae's `models_mae.py`:
//! `random_masking`, `forward_encoder`, `forward_decoder`, `forward_loss`, and a classifier on
//! the encoder's representation for linear probing (frozen MAE) or finetuning.

use serde::{Deserialize, Serialize};
use tch::nn::{self, Module, ModuleT};
use tch::{Kind, Tensor};

use super::vit::{check_images, index_sequence, patchify, unpatchify, EncoderConfig, TransformerEncoder};
use crate::error::{Error, Result};

/// Keeps the first `keep_length` patches of each shuffled sequence.
///
/// # Shapes
/// `x: (B, N, D)`, `ids_shuffle: (B, N)` (a permutation per row, int64) →
/// `kept: (B, K, D)` (`K = keep_length`), `mask: (B, N)` (**1 = masked (removed), 0 = kept**, in
/// the original patch order), `ids_restore: (B, N)` (the inverse permutation).
pub fn random_masking(x: &Tensor, keep_length: i64, ids_shuffle: &Tensor) -> (Tensor, Tensor, Tensor) {
    let (b, n, _) = x.size3().expect("x: (B, N, D)");
    let ids_restore = ids_shuffle.argsort(1, false); // (B, N)
    let kept = index_sequence(x, &ids_shuffle.narrow(1, 0, keep_length)); // (B, K, D)
    let mask = Tensor::ones([b, n], (Kind::Float, x.device()));
    let _ = mask.narrow(1, 0, keep_length).fill_(0.0);
    let mask = mask.gather(1, &ids_restore, false); // back to the original order
    (kept, mask, ids_restore)
}

/// Puts kept and masked tokens back in the original order: the inverse of [`random_masking`]'s
/// selection.
///
/// # Shapes
/// `kept: (B, K, D)`, `masked: (B, N−K, D)`, `ids_restore: (B, N)` → `(B, N, D)`.
pub fn restore_masked(kept: &Tensor, masked: &Tensor, ids_restore: &Tensor) -> Tensor {
    index_sequence(&Tensor::cat(&[kept, masked], 1), ids_restore)
}

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

/// The Masked Autoencoder: a ViT encoder on the visible patches and a light decoder that
/// predicts every patch's pixels.
#[derive(Debug)]
pub struct Mae {
    /// Its sizes.
    pub cfg: MaeConfig,
    /// Patch pixels → encoder width.
    pub patch_embed: nn::Linear,
    /// `(1, 1, D)` the CLS token.
    pub cls_token: Tensor,
    /// `(1, 1+N, D)` learned encoder positions, CLS first.
    pub pos_embed: Tensor,
    /// The encoder (visible patches only while pretraining).
    pub encoder: TransformerEncoder,
    /// The encoder's final LayerNorm.
    pub norm: nn::LayerNorm,
    /// Encoder width → decoder width.
    pub decoder_embed: nn::Linear,
    /// `(1, 1, Dd)` what the decoder sees in a hidden patch's place.
    pub mask_token: Tensor,
    /// `(1, 1+N, Dd)` learned decoder positions, CLS first.
    pub decoder_pos_embed: Tensor,
    /// The light decoder.
    pub decoder: TransformerEncoder,
    /// The decoder's final LayerNorm.
    pub decoder_norm: nn::LayerNorm,
    /// Decoder width → patch pixels.
    pub decoder_pred: nn::Linear,
}

impl Mae {
    /// An MAE of `cfg`'s sizes under `vs` (the original's parameter names).
    pub fn new(vs: &nn::Path, cfg: &MaeConfig) -> Result<Self> {
        cfg.validate()?;
        let (d, dd, p, c, n) =
            (cfg.encoder.d_model, cfg.decoder.d_model, cfg.patch_size, cfg.channels, cfg.n_patches());
        let init = nn::Init::Randn { mean: 0.0, stdev: 0.02 };
        Ok(Mae {
            cfg: cfg.clone(),
            patch_embed: nn::linear(vs / "patch_embed", c * p * p, d, Default::default()),
            cls_token: vs.var("cls_token", &[1, 1, d], init),
            pos_embed: vs.var("pos_embed", &[1, n + 1, d], init),
            encoder: TransformerEncoder::new(&(vs / "encoder"), &cfg.encoder),
            norm: nn::layer_norm(vs / "norm", vec![d], Default::default()),
            decoder_embed: nn::linear(vs / "decoder_embed", d, dd, Default::default()),
            mask_token: vs.var("mask_token", &[1, 1, dd], init),
            decoder_pos_embed: vs.var("decoder_pos_embed", &[1, n + 1, dd], init),
            decoder: TransformerEncoder::new(&(vs / "decoder"), &cfg.decoder),
            decoder_norm: nn::layer_norm(vs / "decoder_norm", vec![dd], Default::default()),
            decoder_pred: nn::linear(vs / "decoder_pred", dd, c * p * p, Default::default()),
        })
    }

    /// Encodes the visible patches. Without `ids_shuffle` the patches are shuffled at random
    /// (`argsort` of uniform noise).
    ///
    /// # Shapes
    /// `images: (B, C, H, W)`, `ids_shuffle: (B, N)` → `(encoded (B, 1+K, D), mask (B, N) with
    /// 1 = masked, ids_restore (B, N))`; token 0 of `encoded` is the CLS token.
    pub fn forward_encoder(&self, images: &Tensor, ids_shuffle: Option<&Tensor>) -> Result<(Tensor, Tensor, Tensor)> {
        check_images("MAE input", images, self.cfg.channels, self.cfg.image_size)?;
        let x = self.patch_embed.forward(&patchify(images, self.cfg.patch_size)?)
            + self.pos_embed.narrow(1, 1, self.cfg.n_patches()); // (B, N, D)
        let (b, n) = (x.size()[0], x.size()[1]);
        let ids_shuffle = ids_shuffle.map_or_else(|| random_shuffle(b, n, x.device()), Tensor::shallow_clone);
        let (kept, mask, ids_restore) = random_masking(&x, self.cfg.keep_length(), &ids_shuffle); // (B, K, D)
        let cls = (&self.cls_token + self.pos_embed.narrow(1, 0, 1)).expand([b, -1, -1], false); // (B, 1, D)
        let x = self.encoder.forward(&Tensor::cat(&[cls, kept], 1)); // (B, 1+K, D)
        Ok((self.norm.forward(&x), mask, ids_restore))
    }

    /// Predicts every patch's pixels from the encoded visible patches.
    ///
    /// # Shapes
    /// `encoded: (B, 1+K, D)`, `ids_restore: (B, N)` → `(B, N, C·P·P)`.
    pub fn forward_decoder(&self, encoded: &Tensor, ids_restore: &Tensor) -> Tensor {
        let n = ids_restore.size()[1];
        let x = self.decoder.forward(&self.decoder_input(encoded, ids_restore)); // (B, 1+N, Dd)
        let x = self.decoder_norm.forward(&x);
        self.decoder_pred.forward(&x.narrow(1, 1, n)) // (B, N, C·P·P)
    }

    /// The whole MAE, as the original's `forward`: encode the visible patches of a random (or
    /// given) masking, decode every patch.
    ///
    /// # Shapes
    /// `images: (B, C, H, W)`, `ids_shuffle: (B, N)` → `(pred (B, N, C·P·P), mask (B, N), 1 = masked)`.
    pub fn forward(&self, images: &Tensor, ids_shuffle: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let (encoded, mask, ids_restore) = self.forward_encoder(images, ids_shuffle)?;
        Ok((self.forward_decoder(&encoded, &ids_restore), mask))
    }

    /// The pretraining loss of [`forward_loss`] on a random (or given) masking, computed for the
    /// masked patches only: the decoder's last layer, `decoder_norm` and `decoder_pred` skip the
    /// visible patches and the CLS token, whose predictions the loss never reads. Equal, up to
    /// float rounding, to `forward_loss(images, forward_decoder(forward_encoder(images)), mask)`.
    ///
    /// # Shapes
    /// `images: (B, C, H, W)`, `ids_shuffle: (B, N)` → a scalar.
    pub fn loss(&self, images: &Tensor, ids_shuffle: Option<&Tensor>) -> Result<Tensor> {
        check_images("MAE input", images, self.cfg.channels, self.cfg.image_size)?;
        let (b, n) = (images.size()[0], self.cfg.n_patches());
        let ids_shuffle = ids_shuffle.map_or_else(|| random_shuffle(b, n, images.device()), Tensor::shallow_clone);
        crate::error::expect_shape("MAE ids_shuffle (a permutation of the patches per image)", &ids_shuffle, &[b, n])?;
        let (encoded, _mask, ids_restore) = self.forward_encoder(images, Some(&ids_shuffle))?;
        let k = self.cfg.keep_length();
        let masked_ids = ids_shuffle.narrow(1, k, n - k); // (B, N−K) patch indices
        let x = self.decoder_input(&encoded, &ids_restore); // (B, 1+N, Dd)
                                                            // (B, N−K, Dd); +1 skips CLS
        let x = self.decoder_norm.forward(&self.decoder.forward_at(&x, &(&masked_ids + 1)));
        let pred = self.decoder_pred.forward(&x); // (B, N−K, C·P·P)
        let target = index_sequence(&patchify(images, self.cfg.patch_size)?, &masked_ids);
        Ok((pred - target).square().mean(Kind::Float))
    }

    /// The decoder's input: the encoded tokens projected to the decoder's width, mask tokens in
    /// the hidden patches' places, the original patch order restored, positions added.
    ///
    /// # Shapes
    /// `encoded: (B, 1+K, D)`, `ids_restore: (B, N)` → `(B, 1+N, Dd)`, token 0 the CLS token.
    fn decoder_input(&self, encoded: &Tensor, ids_restore: &Tensor) -> Tensor {
        let x = self.decoder_embed.forward(encoded); // (B, 1+K, Dd)
        let (b, k1, dd) = x.size3().expect("(B, 1+K, Dd)");
        let n = ids_restore.size()[1];
        let masked = self.mask_token.expand([b, n + 1 - k1, dd], false); // (B, N−K, Dd)
        let patches = restore_masked(&x.narrow(1, 1, k1 - 1), &masked, ids_restore); // (B, N, Dd)
        Tensor::cat(&[x.narrow(1, 0, 1), patches], 1) + &self.decoder_pos_embed // (B, 1+N, Dd)
    }

    /// Encodes all patches, unmasked: the representation used for probing and finetuning.
    ///
    /// # Shapes
    /// `images: (B, C, H, W)` → `(B, 1+N, D)`, token 0 the CLS token.
    pub fn forward_encoder_representation(&self, images: &Tensor) -> Result<Tensor> {
        check_images("MAE input", images, self.cfg.channels, self.cfg.image_size)?;
        let x = self.patch_embed.forward(&patchify(images, self.cfg.patch_size)?)
            + self.pos_embed.narrow(1, 1, self.cfg.n_patches());
        let b = x.size()[0];
        let cls = (&self.cls_token + self.pos_embed.narrow(1, 0, 1)).expand([b, -1, -1], false);
        Ok(self.norm.forward(&self.encoder.forward(&Tensor::cat(&[cls, x], 1))))
    }
}

/// A random permutation of `0..n` per row (`argsort` of uniform noise, as the original): `(b, n)`.
fn random_shuffle(b: i64, n: i64, device: tch::Device) -> Tensor {
    Tensor::rand([b, n], (Kind::Float, device)).argsort(1, false)
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

/// For each image, a row of: original | masked input | reconstruction | reconstruction with the
/// visible patches pasted back, in pixel space (`images` are normalised with `mean`/`std`).
///
/// # Shapes
/// `images: (B, C, H, W)` normalised; `mean`, `std`: per channel.
pub fn reconstruction_grid<M: MaskedAutoencoder>(
    model: &M,
    images: &Tensor,
    mean: &[f64],
    std: &[f64],
    channels: i64,
) -> Result<crate::visuals::Figure> {
    let p = model.patch_size();
    let (pred, mask) = tch::no_grad(|| model.reconstruct(images))?;
    let patches = patchify(images, p)?; // (B, N, C·P·P)
    let keep = mask.neg().g_add_scalar(1.0).unsqueeze(-1); // (B, N, 1), 1 = visible
    let masked_in = unpatchify(&(&patches * &keep), p, channels)?;
    let pasted = unpatchify(&(&patches * &keep + &pred * mask.unsqueeze(-1)), p, channels)?;
    let recon = unpatchify(&pred, p, channels)?;
    let dev = images.device();
    let m = Tensor::from_slice(mean).to_kind(Kind::Float).to_device(dev).reshape([1, channels, 1, 1]);
    let s = Tensor::from_slice(std).to_kind(Kind::Float).to_device(dev).reshape([1, channels, 1, 1]);
    let pix = |x: &Tensor| x * &s + &m;
    // Masked patches show as mid-grey in the input column.
    let grey = (&mask.unsqueeze(-1) * 0.5).expand_as(&patches);
    let masked_in =
        pix(&masked_in) * unpatchify(&keep.expand_as(&patches), p, channels)? + unpatchify(&grey, p, channels)?;
    let (orig, recon, pasted) = (pix(images), pix(&recon), pix(&pasted)); // (B, C, H, W) each
    let b = images.size()[0];
    let rows: Vec<Tensor> = (0..b).flat_map(|i| [orig.get(i), masked_in.get(i), recon.get(i), pasted.get(i)]).collect();
    let labels: Vec<String> =
        (0..b).flat_map(|_| ["original", "masked input", "reconstruction", "+ visible"].map(String::from)).collect();
    crate::visuals::image_grid(&Tensor::stack(&rows, 0), 4, &labels, 3)
}

/// What MAE pretraining needs of a model: predictions and the mask for a batch.
pub trait MaskedAutoencoder {
    /// `images: (B, C, H, W)` → `(pred (B, N, C·P·P), mask (B, N), 1 = masked)`.
    fn reconstruct(&self, images: &Tensor) -> Result<(Tensor, Tensor)>;
    /// The patch side `P`.
    fn patch_size(&self) -> i64;

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

impl MaskedAutoencoder for Mae {
    fn reconstruct(&self, images: &Tensor) -> Result<(Tensor, Tensor)> {
        self.forward(images, None)
    }

    fn pretraining_loss(&self, images: &Tensor) -> Result<Tensor> {
        self.loss(images, None)
    }

    fn patch_size(&self) -> i64 {
        self.cfg.patch_size
    }
}

/// A classifier on an MAE's representation: mean of the encoder's tokens → LayerNorm → Linear.
/// With `detach`, no gradient reaches the MAE (linear probing); without, the MAE is finetuned.
#[derive(Debug)]
pub struct MaeClassifier {
    /// The MAE whose encoder gives the representation.
    pub mae: Mae,
    /// LayerNorm over the mean token.
    pub norm: nn::LayerNorm,
    /// The linear classifier.
    pub head: nn::Linear,
    /// Linear probing (no gradient reaches the MAE) when true, finetuning when false.
    pub detach: bool,
}

impl MaeClassifier {
    /// Builds the head under `vs` on top of `mae` (whose variables live in their own `VarStore`).
    pub fn new(vs: &nn::Path, mae: Mae, n_classes: i64, detach: bool) -> Self {
        let d = mae.cfg.encoder.d_model;
        MaeClassifier {
            norm: nn::layer_norm(vs / "norm", vec![d], Default::default()),
            head: nn::linear(vs / "head", d, n_classes, Default::default()),
            mae,
            detach,
        }
    }

    /// # Shapes
    /// `images: (B, C, H, W)` → logits `(B, n_classes)`.
    pub fn logits(&self, images: &Tensor) -> Result<Tensor> {
        // Linear probing needs no graph through the MAE: compute its representation without one.
        let rep = if self.detach {
            tch::no_grad(|| self.mae.forward_encoder_representation(images))?
        } else {
            self.mae.forward_encoder_representation(images)?
        }; // (B, 1+N, D)
        Ok(self.head.forward(&self.norm.forward(&rep.mean_dim(1, false, Kind::Float))))
        // (B, n_classes)
    }
}

impl ModuleT for MaeClassifier {
    fn forward_t(&self, images: &Tensor, _train: bool) -> Tensor {
        self.logits(images).unwrap_or_else(|e| panic!("{e}"))
    }
}
