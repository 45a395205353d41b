//! [`image_grid`]: images in a grid, each under its label; [`reconstruction_grid`]: what an MAE
//! sees and rebuilds.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::figure::{plot_err, Figure, FONT_NAME};
use crate::error::{Error, Result};
use crate::models::mae::MaskedAutoencoder;
use crate::models::vit::patchify;
use tch::{Kind, Tensor};

/// A grid of images, `cols` per row, each scaled up `scale` times (nearest neighbour) under its
/// label.
///
/// # Shapes
/// `images: (N, C, H, W)` with `C` = 1 (grey) or 3 (RGB), values in [0, 1] (clamped);
/// `labels`: none, or one per image.
pub fn image_grid(images: &tch::Tensor, cols: usize, labels: &[String], scale: u32) -> Result<Figure> {
    let size = images.size();
    let [n, c, h, w] = size[..] else {
        return Err(Error::Input(format!(
            "image_grid: expected images (N, C, H, W), got shape {}",
            crate::error::fmt_shape(&size)
        )));
    };
    if !(c == 1 || c == 3) || n == 0 {
        return Err(Error::Input(format!(
            "image_grid: expected 1 or 3 channels and at least one image, got shape {}",
            crate::error::fmt_shape(&size)
        )));
    }
    if !labels.is_empty() && labels.len() != n as usize {
        return Err(Error::Input(format!("image_grid: expected {n} labels (one per image), got {}", labels.len())));
    }
    let (cols, scale) = (cols.clamp(1, n as usize), scale.max(1));
    let rows = (n as usize).div_ceil(cols);
    let (cell_w, cell_h) = (w as u32 * scale, h as u32 * scale);
    let label_h = if labels.is_empty() { 0 } else { 18 };
    let pad = 6;
    let width = cols as u32 * (cell_w + pad) + pad;
    let height = rows as u32 * (cell_h + label_h + pad) + pad;
    let pixels = (images.detach().to_device(tch::Device::Cpu).to_kind(tch::Kind::Float).clamp(0.0, 1.0) * 255.0)
        .round()
        .to_kind(tch::Kind::Uint8)
        .expand([n, 3, h, w], false)
        .permute([0, 2, 3, 1])
        .contiguous(); // (N, H, W, 3)
    let pixels = Vec::<u8>::try_from(pixels.reshape([-1]))?;
    let mut rgb = vec![255u8; width as usize * height as usize * 3];
    for i in 0..n as usize {
        let (x0, y0) =
            (pad + (i % cols) as u32 * (cell_w + pad), pad + (i / cols) as u32 * (cell_h + label_h + pad) + label_h);
        for y in 0..cell_h {
            for x in 0..cell_w {
                let src = ((i * h as usize + (y / scale) as usize) * w as usize + (x / scale) as usize) * 3;
                let dst = (((y0 + y) * width + x0 + x) * 3) as usize;
                rgb[dst..dst + 3].copy_from_slice(&pixels[src..src + 3]);
            }
        }
    }
    Figure::render_over(width, height, rgb, |root| {
        for (i, label) in labels.iter().enumerate() {
            let (x0, y0) =
                (pad + (i % cols) as u32 * (cell_w + pad), pad + (i / cols) as u32 * (cell_h + label_h + pad));
            let style =
                TextStyle::from((FONT_NAME, 13).into_font()).color(&BLACK).pos(Pos::new(HPos::Center, VPos::Top));
            root.draw(&Text::new(label.clone(), ((x0 + cell_w / 2) as i32, y0 as i32 + 1), style)).map_err(plot_err)?;
        }
        Ok(())
    })
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
) -> Result<Figure> {
    let p = model.patch_size();
    let unpatchify = |x: &Tensor| model.unpatchify(x);
    let (pred, mask) = tch::no_grad(|| model.reconstruct(images))?;
    let patches = patchify(images, p)?; // (B, N, C·P·P)
    let keep = mask.neg().g_add_scalar(1.0).unsqueeze(-1); // (B, N, 1), 1 = visible
    let masked_in = unpatchify(&(&patches * &keep))?;
    let pasted = unpatchify(&(&patches * &keep + &pred * mask.unsqueeze(-1)))?;
    let recon = unpatchify(&pred)?;
    let dev = images.device();
    let m = Tensor::from_slice(mean).to_kind(Kind::Float).to_device(dev).reshape([1, channels, 1, 1]);
    let s = Tensor::from_slice(std).to_kind(Kind::Float).to_device(dev).reshape([1, channels, 1, 1]);
    let pix = |x: &Tensor| x * &s + &m;
    // Masked patches show as mid-grey in the input column.
    let grey = (&mask.unsqueeze(-1) * 0.5).expand_as(&patches);
    let masked_in = pix(&masked_in) * unpatchify(&keep.expand_as(&patches))? + unpatchify(&grey)?;
    let (orig, recon, pasted) = (pix(images), pix(&recon), pix(&pasted)); // (B, C, H, W) each
    let b = images.size()[0];
    let rows: Vec<Tensor> = (0..b).flat_map(|i| [orig.get(i), masked_in.get(i), recon.get(i), pasted.get(i)]).collect();
    let labels: Vec<String> =
        (0..b).flat_map(|_| ["original", "masked input", "reconstruction", "+ visible"].map(String::from)).collect();
    image_grid(&Tensor::stack(&rows, 0), 4, &labels, 3)
}

/// Images with a per-patch weight laid over them in red (attention rollout's "which patches the
/// CLS token draws on"): each image's weights are stretched from its smallest patch (the grey
/// image alone) to its largest (70 % red over it); weights all alike show no red. Pass the result
/// to [`image_grid`].
///
/// # Shapes
/// `images: (B, C, H, W)`, uint8 pixels or floats in [0, 1], `C` = 1 or 3; `weights: (B, N)` with
/// `N = g²` patches in row-major order, `g` dividing `H` and `W` → `(B, 3, H, W)` floats in [0, 1].
///
/// # Errors
/// Shapes that do not match: a batch size that differs, `N` not a square, a grid that does not
/// divide the image.
pub fn attention_overlay(images: &Tensor, weights: &Tensor) -> Result<Tensor> {
    let (size, wsize) = (images.size(), weights.size());
    let bad = |why: &str| {
        Error::Input(format!(
            "attention_overlay: {why}; got images {} and weights {}",
            crate::error::fmt_shape(&size),
            crate::error::fmt_shape(&wsize)
        ))
    };
    let [b, c, h, w] = size[..] else { return Err(bad("expected images (B, C, H, W)")) };
    let [wb, n] = wsize[..] else { return Err(bad("expected weights (B, N), one per patch")) };
    if !(c == 1 || c == 3) || wb != b {
        return Err(bad("expected 1 or 3 channels and one row of weights per image"));
    }
    let g = (n as f64).sqrt().round() as i64;
    if g == 0 || g * g != n || h % g != 0 || w % g != 0 {
        return Err(bad("expected N = g² patches with g dividing the image's height and width"));
    }
    let cpu = tch::Device::Cpu;
    let x = images.detach().to_device(cpu);
    let x = if x.kind() == Kind::Uint8 { x.to_kind(Kind::Float) / 255.0 } else { x.to_kind(Kind::Float) };
    let grey = x.mean_dim(1, true, Kind::Float).clamp(0.0, 1.0); // (B, 1, H, W)
    let wts = weights.detach().to_device(cpu).to_kind(Kind::Float).clamp_min(0.0);
    let low = wts.amin(1, true);
    let span = wts.amax(1, true) - &low;
    let map = ((wts - low) / span.clamp_min(1e-12))
        .reshape([b, 1, g, g])
        .repeat_interleave_self_int(h / g, 2, None)
        .repeat_interleave_self_int(w / g, 3, None); // (B, 1, H, W), each patch's weight over its pixels
    let alpha = map * 0.7;
    let red = Tensor::from_slice(&[1.0f32, 0.15, 0.0]).reshape([1, 3, 1, 1]);
    Ok(&grey * (alpha.ones_like() - &alpha) + alpha * red)
}
