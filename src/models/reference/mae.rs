//! The reference answers of notebook 1's MAE TODO cells: masking and restoring, the MAE's three
//! passes, and the classifier on its representation. Compiled with the `reference` feature; the
//! student handout does not contain this file. Re-exported from [`crate::models::mae`].

use tch::nn::{self, Module, ModuleT};
use tch::{Kind, Tensor};

use super::vit::unpatchify;
use crate::error::Result;
use crate::models::mae::{MaeConfig, MaskedAutoencoder};
use crate::models::vit::{check_images, index_sequence, patchify, TransformerEncoder};

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

    fn unpatchify(&self, patches: &Tensor) -> Result<Tensor> {
        unpatchify(patches, self.cfg.patch_size, self.cfg.channels)
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
