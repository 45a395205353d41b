//! Figures that display inline in Jupyter (through evcxr's display protocol) and save as PNG, and
//! the attention views built on them; a training history's charts (`History::loss_chart`,
//! `History::show`) and an MAE's reconstructions ([`reconstruction_grid`]) are drawn here too.
//!
//! Drawn with plotters into an RGB buffer and encoded with `image`; text uses a font embedded in
//! the crate (DejaVu Sans, `assets/fonts`), so no system fonts are needed. The font is registered
//! inside every draw call: plotters' registry does not carry across evcxr cells.
//!
//! ```no_run
//! use hw9::visuals::{Heatmap, LineChart};
//! let fig = LineChart::new("loss").x_label("step").series("train", &[2.3, 1.1, 0.7]).draw()?;
//! fig.save("loss.png")?;
//! let map = Heatmap::from_rows("attention", &[vec![0.9, 0.1], vec![0.2, 0.8]])?
//!     .row_labels(["the", "dog"]).col_labels(["the", "dog"]).draw()?;
//! # Ok::<(), hw9::Error>(())
//! ```
//! In a notebook, a `Figure`, `LineChart` or `Heatmap` that ends a cell is shown inline; call
//! `.show()` to show one from the middle of a cell.

pub mod attention_html;
pub mod attention_views;
pub mod figure;
pub mod heatmap;
pub mod images;
pub mod line_chart;
pub mod scatter;
mod training;

pub use figure::{Figure, PALETTE};
pub use heatmap::Heatmap;
pub use images::{image_grid, reconstruction_grid};
pub use line_chart::LineChart;
pub use scatter::Scatter;

#[cfg(test)]
pub(crate) mod test_util {
    use plotters::style::RGBColor;

    use super::Figure;

    pub fn decode(fig: &Figure) -> image::RgbImage {
        image::load_from_memory(fig.png()).expect("a valid PNG").to_rgb8()
    }

    pub fn count(img: &image::RgbImage, c: RGBColor) -> usize {
        img.pixels().filter(|p| p.0 == [c.0, c.1, c.2]).count()
    }

    pub fn dark_pixels(img: &image::RgbImage) -> usize {
        img.pixels().filter(|p| p.0.iter().all(|&v| v < 80)).count()
    }
}
