//! The reference answers of notebook 1's ViT TODO cells: `unpatchify` and the ViT's forward.
//! Compiled with the `reference` feature; the student handout does not contain this file.
//! Re-exported from [`crate::models::vit`].

use tch::nn::{self, Module, ModuleT};
use tch::Tensor;

use crate::error::{Error, Result};
use crate::models::vit::{check_images, patchify, TransformerEncoder, VitConfig};

/// Puts patches back into square images: the inverse of [`patchify`].
///
/// # Shapes
/// `patches: (B, N, C·P·P)` with `N` a square → `(B, C, √N·P, √N·P)`.
pub fn unpatchify(patches: &Tensor, p: i64, channels: i64) -> Result<Tensor> {
    let size = patches.size();
    let [b, n, d] = size[..] else {
        return Err(Error::Input(format!(
            "unpatchify: expected patches (B, N, C*P*P), got shape {}",
            crate::error::fmt_shape(&size)
        )));
    };
    let side = (n as f64).sqrt().round() as i64;
    if side * side != n || d != channels * p * p {
        return Err(Error::Input(format!(
            "unpatchify: expected a square number of patches of {channels}*{p}*{p} = {} values, got {n} patches of {d}",
            channels * p * p
        )));
    }
    Ok(patches
        .reshape([b, side, side, channels, p, p]) // (B, h, w, C, P, P)
        .permute([0, 3, 1, 4, 2, 5]) // (B, C, h, P, w, P)
        .reshape([b, channels, side * p, side * p])) // (B, C, H, W)
}

/// The ViT classifier: patchify → linear projection → prepend the CLS token → add the learned
/// position embedding → Transformer encoder → LayerNorm + Linear on the CLS output.
#[derive(Debug)]
pub struct Vit {
    /// Its sizes.
    pub cfg: VitConfig,
    /// Patch pixels → `D`.
    pub patch_embed: nn::Linear,
    /// `(1, 1, D)` the CLS token.
    pub cls_token: Tensor,
    /// `(1, 1+N, D)` learned positions, CLS first.
    pub pos_embed: Tensor,
    /// The encoder.
    pub encoder: TransformerEncoder,
    /// LayerNorm on the CLS output.
    pub norm: nn::LayerNorm,
    /// `D → n_classes`.
    pub head: nn::Linear,
}

impl Vit {
    /// A ViT of `cfg`'s sizes under `vs` (checked first).
    pub fn new(vs: &nn::Path, cfg: &VitConfig) -> Result<Self> {
        cfg.validate()?;
        let (d, p, c) = (cfg.encoder.d_model, cfg.patch_size, cfg.channels);
        let init = nn::Init::Randn { mean: 0.0, stdev: 0.02 };
        Ok(Vit {
            cfg: cfg.clone(),
            patch_embed: nn::linear(vs / "patch_embed", c * p * p, d, Default::default()),
            cls_token: vs.var("cls_token", &[1, 1, d], init),
            pos_embed: vs.var("pos_embed", &[1, cfg.n_patches() + 1, d], init),
            encoder: TransformerEncoder::new(&(vs / "encoder"), &cfg.encoder),
            norm: nn::layer_norm(vs / "norm", vec![d], Default::default()),
            head: nn::linear(vs / "head", d, cfg.n_classes, Default::default()),
        })
    }
}

impl Vit {
    /// The classifier's logits, with the input's shape checked.
    ///
    /// # Shapes
    /// `images: (B, C, H, W)` → logits `(B, n_classes)`.
    pub fn logits(&self, images: &Tensor) -> Result<Tensor> {
        check_images("ViT input", images, self.cfg.channels, self.cfg.image_size)?;
        let b = images.size()[0];
        let x = self.patch_embed.forward(&patchify(images, self.cfg.patch_size)?); // (B, N, D)
        let cls = self.cls_token.expand([b, -1, -1], false); // (B, 1, D)
        let x = Tensor::cat(&[cls, x], 1) + &self.pos_embed; // (B, N+1, D)
        let cls = self.encoder.forward_first(&x, 1).squeeze_dim(1); // (B, D): only the CLS output is read
        Ok(self.head.forward(&self.norm.forward(&cls))) // (B, n_classes)
    }
}

impl ModuleT for Vit {
    /// [`Vit::logits`]; a wrong input shape panics with the same message (`ModuleT` cannot
    /// return an error).
    fn forward_t(&self, images: &Tensor, _train: bool) -> Tensor {
        self.logits(images).unwrap_or_else(|e| panic!("{e}"))
    }
}
