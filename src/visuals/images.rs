//! [`image_grid`]: images in a grid, each under its label.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::figure::{plot_err, Figure, FONT_NAME};
use crate::error::{Error, Result};

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
