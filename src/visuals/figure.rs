//! A drawn picture ([`Figure`]): PNG bytes that show inline in a notebook (evcxr's display
//! protocol) and save to a file; the embedded font and the palette every figure uses.

use std::path::Path;

use base64::Engine as _;
use image::ImageEncoder as _;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{Error, Result};
use crate::io::write_atomic;

/// DejaVu Sans (see assets/fonts/LICENSE-DejaVu.txt).
static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
pub(crate) const FONT_NAME: &str = "sans-serif";

/// Matplotlib's tab10 colours, the ones students know from PyTorch tutorials.
pub const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

pub(crate) fn register_font() -> Result<()> {
    plotters::style::register_font(FONT_NAME, FontStyle::Normal, FONT)
        .map_err(|_| Error::Plot("the embedded font could not be parsed".into()))
}

pub(crate) fn plot_err<E: std::fmt::Display>(e: E) -> Error {
    Error::Plot(e.to_string())
}

/// Draws a chart's legend the way every figure of the crate does: upper right, on a light box.
pub(crate) fn draw_legend<'a, DB, CT>(chart: &mut ChartContext<'a, DB, CT>, font_size: u32) -> Result<()>
where
    DB: DrawingBackend + 'a,
    CT: plotters::coord::CoordTranslate,
{
    chart
        .configure_series_labels()
        .label_font((FONT_NAME, font_size))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(plot_err)
}

/// A drawn picture: PNG bytes that show inline in a notebook and save to a file.
#[derive(Clone, PartialEq, Eq)]
pub struct Figure {
    png: Vec<u8>,
    width: u32,
    height: u32,
}

impl std::fmt::Debug for Figure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Figure({}x{} PNG, {} bytes)", self.width, self.height, self.png.len())
    }
}

impl Figure {
    /// Encodes an RGB8 buffer (`width * height * 3` bytes, row-major) as a PNG figure.
    pub fn from_rgb(width: u32, height: u32, rgb: &[u8]) -> Result<Self> {
        let expected = width as usize * height as usize * 3;
        if rgb.len() != expected {
            return Err(Error::Input(format!(
                "an RGB buffer of {width}x{height} needs {expected} bytes, got {}",
                rgb.len()
            )));
        }
        let mut png = Vec::new();
        image::codecs::png::PngEncoder::new(&mut png)
            .write_image(rgb, width, height, image::ExtendedColorType::Rgb8)
            .map_err(plot_err)?;
        Ok(Figure { png, width, height })
    }

    /// Renders with `draw` onto a white `width x height` canvas.
    pub fn render(
        width: u32,
        height: u32,
        draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<()>,
    ) -> Result<Self> {
        register_font()?;
        let mut buf = vec![255u8; width as usize * height as usize * 3];
        {
            let root = BitMapBackend::with_buffer(&mut buf, (width, height)).into_drawing_area();
            root.fill(&WHITE).map_err(plot_err)?;
            draw(&root)?;
            root.present().map_err(plot_err)?;
        }
        Figure::from_rgb(width, height, &buf)
    }

    /// Like [`Figure::render`], on a canvas whose pixels `rgb` already holds
    /// (`width * height * 3` bytes): for figures that blit images, then draw text on top.
    pub fn render_over(
        width: u32,
        height: u32,
        mut rgb: Vec<u8>,
        draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<()>,
    ) -> Result<Self> {
        register_font()?;
        if rgb.len() != width as usize * height as usize * 3 {
            return Err(Error::Input(format!(
                "a {width}x{height} canvas needs {} bytes, got {}",
                width * height * 3,
                rgb.len()
            )));
        }
        {
            let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
            draw(&root)?;
            root.present().map_err(plot_err)?;
        }
        Figure::from_rgb(width, height, &rgb)
    }

    /// Stacks figures top to bottom on white, left-aligned.
    pub fn vstack(figures: &[Figure]) -> Result<Self> {
        Figure::stack(figures, true)
    }

    /// Puts figures side by side on white, top-aligned (e.g. a trained and a random model).
    pub fn hstack(figures: &[Figure]) -> Result<Self> {
        Figure::stack(figures, false)
    }

    fn stack(figures: &[Figure], vertical: bool) -> Result<Self> {
        if figures.is_empty() {
            return Err(Error::Input("stacking figures: expected at least one figure, got none".into()));
        }
        // (size along the stacking direction, size across it)
        let dims = |f: &Figure| if vertical { (f.height, f.width) } else { (f.width, f.height) };
        let length: u32 = figures.iter().map(|f| dims(f).0).sum();
        let breadth = figures.iter().map(|f| dims(f).1).max().unwrap_or(1);
        let (width, height) = if vertical { (breadth, length) } else { (length, breadth) };
        let mut canvas = image::RgbImage::from_pixel(width, height, image::Rgb([255, 255, 255]));
        let mut at = 0i64;
        for f in figures {
            let img = image::load_from_memory(&f.png).map_err(plot_err)?.to_rgb8();
            let (x, y) = if vertical { (0, at) } else { (at, 0) };
            image::imageops::replace(&mut canvas, &img, x, y);
            at += dims(f).0 as i64;
        }
        Figure::from_rgb(width, height, canvas.as_raw())
    }

    /// The PNG file's bytes.
    pub fn png(&self) -> &[u8] {
        &self.png
    }

    /// `(width, height)` in pixels.
    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// Writes the PNG to `path` (parent folders are created; written atomically).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("png") => {}
            other => {
                return Err(Error::Input(format!(
                    "figures save as PNG: expected a path ending in .png, got {:?} (extension {:?})",
                    path.display().to_string(),
                    other.unwrap_or("none")
                )))
            }
        }
        write_atomic(path, &self.png)
    }

    /// Shows the figure inline now (evcxr's display protocol: a no-op outside a notebook
    /// except for the printed marker lines).
    pub fn show(&self) {
        println!(
            "EVCXR_BEGIN_CONTENT image/png\n{}\nEVCXR_END_CONTENT",
            base64::engine::general_purpose::STANDARD.encode(&self.png)
        );
    }

    /// Called by evcxr when a figure ends a cell.
    pub fn evcxr_display(&self) {
        self.show();
    }
}

/// Shows a builder's figure inline, or says why it could not be drawn.
pub(crate) fn display_or_report(fig: Result<Figure>) {
    match fig {
        Ok(fig) => fig.show(),
        Err(e) => eprintln!("could not draw the figure: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use crate::visuals::LineChart;

    #[test]
    fn figure_saves_png_atomically_and_rejects_other_extensions() {
        let dir_tmp = tempfile::tempdir().unwrap();
        let dir = dir_tmp.path().to_path_buf();
        let fig = LineChart::new("x").series("a", &[1.0, 2.0]).draw().unwrap();
        let path = dir.join("sub/loss.png");
        fig.save(&path).unwrap();
        let back = std::fs::read(&path).unwrap();
        assert_eq!(back, fig.png());
        assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1, "temporary file left behind");
        let err = fig.save(dir.join("loss.jpg")).unwrap_err();
        assert!(err.to_string().contains("expected a path ending in .png"), "{err}");
    }
}
