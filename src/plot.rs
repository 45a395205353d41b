//! Figures that display inline in Jupyter (through evcxr's display protocol) and save as PNG.
//!
//! Drawn with plotters into an RGB buffer and encoded with `image`; text uses a font embedded in
//! the crate (DejaVu Sans, `assets/fonts`), so no system fonts are needed. The font is registered
//! inside every draw call: plotters' registry does not carry across evcxr cells.
//!
//! ```no_run
//! use hw9::plot::{Heatmap, LineChart};
//! let fig = LineChart::new("loss").x_label("step").series("train", &[2.3, 1.1, 0.7]).draw()?;
//! fig.save("loss.png")?;
//! let map = Heatmap::from_rows("attention", &[vec![0.9, 0.1], vec![0.2, 0.8]])?
//!     .row_labels(["the", "dog"]).col_labels(["the", "dog"]).draw()?;
//! # Ok::<(), hw9::Error>(())
//! ```
//! In a notebook, a `Figure`, `LineChart` or `Heatmap` that ends a cell is shown inline; call
//! `.show()` to show one from the middle of a cell.

use std::path::Path;

use base64::Engine as _;
use image::ImageEncoder as _;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::error::{Error, Result};

/// DejaVu Sans (see assets/fonts/LICENSE-DejaVu.txt).
static FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");
const FONT_NAME: &str = "sans-serif";

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

fn register_font() -> Result<()> {
    plotters::style::register_font(FONT_NAME, FontStyle::Normal, FONT)
        .map_err(|_| Error::Plot("the embedded font could not be parsed".into()))
}

pub(crate) fn plot_err<E: std::fmt::Display>(e: E) -> Error {
    Error::Plot(e.to_string())
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
            return Err(Error::Input(format!("a {width}x{height} canvas needs {} bytes, got {}", width * height * 3, rgb.len())));
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

/// Writes `bytes` to `path` through a temporary file and a rename, so a reader never sees half
/// a file and a crash never leaves one.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Shows a builder's figure inline, or says why it could not be drawn.
fn display_or_report(fig: Result<Figure>) {
    match fig {
        Ok(fig) => fig.show(),
        Err(e) => eprintln!("could not draw the figure: {e}"),
    }
}

/// One named series of a [`LineChart`].
#[derive(Debug, Clone, PartialEq)]
struct Series {
    name: String,
    points: Vec<(f64, f64)>,
}

/// A chart of one or more named series (train loss, validation loss, ...), with a legend.
#[derive(Debug, Clone, PartialEq)]
pub struct LineChart {
    title: String,
    x_label: String,
    y_label: String,
    series: Vec<Series>,
    size: (u32, u32),
    log_y: bool,
}

impl LineChart {
    /// An empty chart titled `title` (800x480 pixels).
    pub fn new(title: impl Into<String>) -> Self {
        LineChart {
            title: title.into(),
            x_label: String::new(),
            y_label: String::new(),
            series: Vec::new(),
            size: (800, 480),
            log_y: false,
        }
    }

    /// The x axis' label.
    pub fn x_label(mut self, label: impl Into<String>) -> Self {
        self.x_label = label.into();
        self
    }

    /// The y axis' label.
    pub fn y_label(mut self, label: impl Into<String>) -> Self {
        self.y_label = label.into();
        self
    }

    /// Size in pixels.
    pub fn size(mut self, width: u32, height: u32) -> Self {
        self.size = (width, height);
        self
    }

    /// A logarithmic y axis (all values must then be positive).
    pub fn log_y(mut self, on: bool) -> Self {
        self.log_y = on;
        self
    }

    /// Adds a series drawn at x = 0, 1, 2, ...
    pub fn series<T: Copy + Into<f64>>(self, name: impl Into<String>, ys: &[T]) -> Self {
        let xs: Vec<f64> = (0..ys.len()).map(|i| i as f64).collect();
        self.series_xy(name, &xs, ys)
    }

    /// Adds a series at the given x values (for example validation loss at epoch ends).
    /// Pairs beyond the shorter of `xs` and `ys` are ignored.
    pub fn series_xy<X: Copy + Into<f64>, Y: Copy + Into<f64>>(
        mut self,
        name: impl Into<String>,
        xs: &[X],
        ys: &[Y],
    ) -> Self {
        let points = xs.iter().zip(ys).map(|(&x, &y)| (x.into(), y.into())).collect();
        self.series.push(Series { name: name.into(), points });
        self
    }

    /// Draws the chart. Non-finite points (a NaN loss) are left out and counted in the legend.
    pub fn draw(&self) -> Result<Figure> {
        if self.series.iter().all(|s| s.points.is_empty()) {
            return Err(Error::Input(format!(
                "line chart {:?}: expected at least one series with points, got none",
                self.title
            )));
        }
        let finite: Vec<Vec<(f64, f64)>> = self
            .series
            .iter()
            .map(|s| s.points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect())
            .collect();
        if self.log_y {
            for (s, pts) in self.series.iter().zip(&finite) {
                if let Some(&(x, y)) = pts.iter().find(|p| p.1 <= 0.0) {
                    return Err(Error::Input(format!(
                        "a log y axis needs positive values; series {:?} has {y} at x = {x}",
                        s.name
                    )));
                }
            }
        }
        let all = finite.iter().flatten();
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for &(x, y) in all {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
        if x0 > x1 {
            return Err(Error::Input(format!(
                "line chart {:?}: every point is NaN or infinite",
                self.title
            )));
        }
        if x1 - x0 < 1e-12 {
            x0 -= 0.5;
            x1 += 0.5;
        }
        let (y0, y1) = if self.log_y {
            (y0 / 1.2, y1 * 1.2)
        } else {
            let pad = if y1 - y0 < 1e-12 { y0.abs().max(1.0) * 0.05 } else { (y1 - y0) * 0.05 };
            (y0 - pad, y1 + pad)
        };
        let (w, h) = self.size;
        Figure::render(w, h, |root| {
            let mut builder = ChartBuilder::on(root);
            builder
                .caption(&self.title, (FONT_NAME, 22))
                .margin(12)
                .x_label_area_size(42)
                .y_label_area_size(64);
            // The two axis kinds are different types; draw through one generic helper.
            if self.log_y {
                let chart = builder.build_cartesian_2d(x0..x1, (y0..y1).log_scale()).map_err(plot_err)?;
                self.draw_into(chart, &finite)
            } else {
                let chart = builder.build_cartesian_2d(x0..x1, y0..y1).map_err(plot_err)?;
                self.draw_into(chart, &finite)
            }
        })
    }

    fn draw_into<'a, Y>(
        &self,
        mut chart: ChartContext<'a, BitMapBackend<'a>, Cartesian2d<plotters::coord::types::RangedCoordf64, Y>>,
        finite: &[Vec<(f64, f64)>],
    ) -> Result<()>
    where
        Y: Ranged<ValueType = f64> + plotters::coord::ranged1d::ValueFormatter<f64>,
    {
        chart
            .configure_mesh()
            .x_label_formatter(&|x| if (x - x.round()).abs() < 1e-9 { format!("{x:.0}") } else { format!("{x:.2}") })
            .x_desc(self.x_label.as_str())
            .y_desc(self.y_label.as_str())
            .label_style((FONT_NAME, 14))
            .axis_desc_style((FONT_NAME, 16))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(plot_err)?;
        for (i, (s, pts)) in self.series.iter().zip(finite).enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let dropped = s.points.len() - pts.len();
            let label = if dropped > 0 {
                format!("{} ({dropped} non-finite left out)", s.name)
            } else {
                s.name.clone()
            };
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
                .map_err(plot_err)?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
            if pts.len() <= 40 {
                chart
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(plot_err)?;
            }
        }
        chart
            .configure_series_labels()
            .label_font((FONT_NAME, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(plot_err)?;
        Ok(())
    }

    /// Draws the chart and shows it inline now.
    pub fn show(&self) {
        display_or_report(self.draw());
    }

    /// Called by evcxr when a chart ends a cell.
    pub fn evcxr_display(&self) {
        self.show();
    }
}

/// A labelled heatmap of a matrix (attention weights, a confusion matrix, ...), row 0 at the top,
/// with a colour bar. Cells are annotated with their values when the matrix is small.
#[derive(Debug, Clone, PartialEq)]
pub struct Heatmap {
    title: String,
    values: Vec<f64>,
    rows: usize,
    cols: usize,
    row_labels: Option<Vec<String>>,
    col_labels: Option<Vec<String>>,
    x_label: String,
    y_label: String,
    annotate: Option<bool>,
    range: Option<(f64, f64)>,
    size: Option<(u32, u32)>,
}

impl Heatmap {
    /// A heatmap of `rows` (each inner vector is one row; all must have the same length).
    pub fn from_rows<T: Copy + Into<f64>>(title: impl Into<String>, rows: &[Vec<T>]) -> Result<Self> {
        let n_cols = rows.first().map_or(0, Vec::len);
        if rows.is_empty() || n_cols == 0 {
            return Err(Error::Input("a heatmap needs at least one row and one column, got none".into()));
        }
        if let Some((i, r)) = rows.iter().enumerate().find(|(_, r)| r.len() != n_cols) {
            return Err(Error::Input(format!(
                "heatmap rows must have equal lengths: row 0 has {n_cols} values, row {i} has {}",
                r.len()
            )));
        }
        let values = rows.iter().flatten().map(|&v| v.into()).collect();
        Ok(Self::new(title.into(), values, rows.len(), n_cols))
    }

    /// A heatmap of a 2-D tensor (any float or integer dtype, any device).
    pub fn from_tensor(title: impl Into<String>, t: &tch::Tensor) -> Result<Self> {
        let size = t.size();
        if size.len() != 2 || size.contains(&0) {
            return Err(Error::Input(format!(
                "a heatmap needs a non-empty 2-D tensor (rows, cols), got shape {}",
                crate::error::fmt_shape(&size)
            )));
        }
        let flat = t.detach().to_device(tch::Device::Cpu).to_kind(tch::Kind::Double).reshape([-1]);
        let values = Vec::<f64>::try_from(&flat)?;
        Ok(Self::new(title.into(), values, size[0] as usize, size[1] as usize))
    }

    fn new(title: String, values: Vec<f64>, rows: usize, cols: usize) -> Self {
        Heatmap {
            title,
            values,
            rows,
            cols,
            row_labels: None,
            col_labels: None,
            x_label: String::new(),
            y_label: String::new(),
            annotate: None,
            range: None,
            size: None,
        }
    }

    /// One label per row (for attention: the query tokens).
    pub fn row_labels<S: ToString>(mut self, labels: impl IntoIterator<Item = S>) -> Self {
        self.row_labels = Some(labels.into_iter().map(|s| s.to_string()).collect());
        self
    }

    /// One label per column (for attention: the key tokens).
    pub fn col_labels<S: ToString>(mut self, labels: impl IntoIterator<Item = S>) -> Self {
        self.col_labels = Some(labels.into_iter().map(|s| s.to_string()).collect());
        self
    }

    /// The x axis' description.
    pub fn x_label(mut self, label: impl Into<String>) -> Self {
        self.x_label = label.into();
        self
    }

    /// The y axis' description.
    pub fn y_label(mut self, label: impl Into<String>) -> Self {
        self.y_label = label.into();
        self
    }

    /// Writes each cell's value in it (default: on when the matrix has at most 16x16 cells).
    pub fn annotate(mut self, on: bool) -> Self {
        self.annotate = Some(on);
        self
    }

    /// Fixes the colour scale to `[min, max]` (default: the data's range).
    pub fn range(mut self, min: f64, max: f64) -> Self {
        self.range = Some((min, max));
        self
    }

    /// Size in pixels (default: grows with the matrix).
    pub fn size(mut self, width: u32, height: u32) -> Self {
        self.size = Some((width, height));
        self
    }

    fn labels(&self, given: &Option<Vec<String>>, n: usize, what: &str) -> Result<Vec<String>> {
        match given {
            Some(l) if l.len() != n => Err(Error::Input(format!(
                "heatmap {:?}: expected {n} {what} labels (one per {what}), got {}",
                self.title,
                l.len()
            ))),
            Some(l) => Ok(l.clone()),
            None => Ok((0..n).map(|i| i.to_string()).collect()),
        }
    }

    /// Draws the heatmap.
    pub fn draw(&self) -> Result<Figure> {
        let row_labels = self.labels(&self.row_labels, self.rows, "row")?;
        let col_labels = self.labels(&self.col_labels, self.cols, "column")?;
        let finite = self.values.iter().copied().filter(|v| v.is_finite());
        let (lo, hi) = match self.range {
            Some((lo, hi)) if lo < hi => (lo, hi),
            Some((lo, hi)) => {
                return Err(Error::Input(format!("heatmap range: expected min < max, got [{lo}, {hi}]")))
            }
            None => finite.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v))),
        };
        let (lo, hi) = if lo > hi { (0.0, 1.0) } else if hi - lo < 1e-12 { (lo - 0.5, hi + 0.5) } else { (lo, hi) };
        let annotate = self.annotate.unwrap_or(self.rows <= 16 && self.cols <= 16);
        let longest = |l: &[String]| l.iter().map(|s| s.chars().count()).max().unwrap_or(1) as u32;
        let (y_area, x_area) = (longest(&row_labels) * 9 + 24, 50);
        // Cells wide enough for their column labels (about 9 px a character).
        let cell_w = (if annotate { 48 } else { 24 }).max(longest(&col_labels) * 9 + 6);
        let cell_h = if annotate { 48 } else { 24 };
        let (w, h) = self.size.unwrap_or((
            (y_area + cell_w * self.cols as u32 + COLORBAR_WIDTH + 30).clamp(360, 1800),
            (x_area + cell_h * self.rows as u32 + 70).clamp(240, 1600),
        ));
        let (rows, cols) = (self.rows, self.cols);
        Figure::render(w, h, |root| {
            let (main, bar) = root.split_horizontally(w.saturating_sub(COLORBAR_WIDTH));
            let mut chart = ChartBuilder::on(&main)
                .caption(&self.title, (FONT_NAME, 20))
                .margin(10)
                .x_label_area_size(x_area)
                .y_label_area_size(y_area)
                .build_cartesian_2d(CellAxis(cols).into_segmented(), CellAxis(rows).into_segmented())
                .map_err(plot_err)?;
            let index = |v: &SegmentValue<usize>| match v {
                SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => Some(*i),
                SegmentValue::Last => None,
            };
            let x_fmt = |v: &SegmentValue<usize>| {
                index(v).and_then(|i| col_labels.get(i).cloned()).unwrap_or_default()
            };
            // Row 0 is drawn at the top: plotters' y grows upwards, so row r sits at y = rows-1-r.
            let y_fmt = |v: &SegmentValue<usize>| {
                index(v).and_then(|i| row_labels.get(rows - 1 - i).cloned()).unwrap_or_default()
            };
            chart
                .configure_mesh()
                .disable_mesh()
                .x_labels(cols)
                .y_labels(rows)
                .x_label_formatter(&x_fmt)
                .y_label_formatter(&y_fmt)
                .label_style((FONT_NAME, 14))
                .x_desc(self.x_label.as_str())
                .y_desc(self.y_label.as_str())
                .axis_desc_style((FONT_NAME, 15))
                .draw()
                .map_err(plot_err)?;
            let color_of = |v: f64| -> RGBColor {
                if v.is_finite() {
                    ViridisRGB::get_color_normalized(v.clamp(lo, hi), lo, hi)
                } else {
                    RGBColor(255, 0, 255)
                }
            };
            // The cell's far edge: the next index's start, or the axis' end for the last one.
            let edge = |n: usize, i: usize| if i + 1 < n { SegmentValue::Exact(i + 1) } else { SegmentValue::Last };
            let cells = (0..rows).flat_map(|r| (0..cols).map(move |c| (r, c)));
            chart
                .draw_series(cells.clone().map(|(r, c)| {
                    let y = rows - 1 - r;
                    Rectangle::new(
                        [(SegmentValue::Exact(c), SegmentValue::Exact(y)), (edge(cols, c), edge(rows, y))],
                        color_of(self.values[r * cols + c]).filled(),
                    )
                }))
                .map_err(plot_err)?;
            if annotate {
                chart
                    .draw_series(cells.map(|(r, c)| {
                        let v = self.values[r * cols + c];
                        let color: &'static RGBColor = if (v - lo) / (hi - lo) > 0.6 { &BLACK } else { &WHITE };
                        let style = TextStyle::from((FONT_NAME, 12).into_font())
                            .color(color)
                            .pos(Pos::new(HPos::Center, VPos::Center));
                        let at = (SegmentValue::CenterOf(c), SegmentValue::CenterOf(rows - 1 - r));
                        Text::new(fmt_value(v), at, style)
                    }))
                    .map_err(plot_err)?;
            }
            draw_colorbar(&bar, lo, hi, x_area)
        })
    }

    /// Draws the heatmap and shows it inline now.
    pub fn show(&self) {
        display_or_report(self.draw());
    }

    /// Called by evcxr when a heatmap ends a cell.
    pub fn evcxr_display(&self) {
        self.show();
    }
}

/// A heatmap axis of `n` cells, indices `0..n`: with `into_segmented()` each index gets one
/// segment of equal width, with its label at the centre.
#[derive(Clone)]
struct CellAxis(usize);

impl Ranged for CellAxis {
    type FormatOption = plotters::coord::ranged1d::DefaultFormatting;
    type ValueType = usize;

    fn range(&self) -> std::ops::Range<usize> {
        0..self.0
    }

    fn map(&self, value: &usize, limit: (i32, i32)) -> i32 {
        if self.0 <= 1 {
            return limit.0;
        }
        limit.0 + ((limit.1 - limit.0) as f64 * *value as f64 / (self.0 - 1) as f64).round() as i32
    }

    fn key_points<Hint: plotters::coord::ranged1d::KeyPointHint>(&self, hint: Hint) -> Vec<usize> {
        let max = hint.max_num_points().max(1);
        (0..self.0).step_by(self.0.div_ceil(max).max(1)).collect()
    }
}

impl plotters::coord::ranged1d::DiscreteRanged for CellAxis {
    fn size(&self) -> usize {
        self.0
    }

    fn index_of(&self, value: &usize) -> Option<usize> {
        (*value < self.0).then_some(*value)
    }

    fn from_index(&self, index: usize) -> Option<usize> {
        (index < self.0).then_some(index)
    }
}

/// A grid of images, `cols` per row, each scaled up `scale` times (nearest neighbour) under its
/// label.
///
/// # Shapes
/// `images: (N, C, H, W)` with `C` = 1 (grey) or 3 (RGB), values in [0, 1] (clamped);
/// `labels`: none, or one per image.
pub fn image_grid(images: &tch::Tensor, cols: usize, labels: &[String], scale: u32) -> Result<Figure> {
    let size = images.size();
    let [n, c, h, w] = size[..] else {
        return Err(Error::Input(format!("image_grid: expected images (N, C, H, W), got shape {}", crate::error::fmt_shape(&size))));
    };
    if !(c == 1 || c == 3) || n == 0 {
        return Err(Error::Input(format!("image_grid: expected 1 or 3 channels and at least one image, got shape {}", crate::error::fmt_shape(&size))));
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
        let (x0, y0) = (pad + (i % cols) as u32 * (cell_w + pad), pad + (i / cols) as u32 * (cell_h + label_h + pad) + label_h);
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
            let (x0, y0) = (pad + (i % cols) as u32 * (cell_w + pad), pad + (i / cols) as u32 * (cell_h + label_h + pad));
            let style = TextStyle::from((FONT_NAME, 13).into_font()).color(&BLACK).pos(Pos::new(HPos::Center, VPos::Top));
            root.draw(&Text::new(label.clone(), ((x0 + cell_w / 2) as i32, y0 as i32 + 1), style)).map_err(plot_err)?;
        }
        Ok(())
    })
}

/// A short, fixed-width rendering of a cell value.
fn fmt_value(v: f64) -> String {
    if !v.is_finite() {
        format!("{v}")
    } else if v == 0.0 || (v.abs() >= 0.01 && v.abs() < 1000.0) {
        format!("{v:.2}")
    } else {
        format!("{v:.1e}")
    }
}

/// Width of the colour bar's strip at a heatmap's right: gap, bar, labels.
const COLORBAR_WIDTH: u32 = 100;

fn draw_colorbar(area: &DrawingArea<BitMapBackend<'_>, Shift>, lo: f64, hi: f64, bottom: u32) -> Result<()> {
    let mut bar = ChartBuilder::on(area)
        .margin_top(40)
        .margin_bottom(bottom + 10)
        .margin_right(12)
        .margin_left(16)
        .y_label_area_size(0)
        .right_y_label_area_size(48)
        .build_cartesian_2d(0..1, lo..hi)
        .map_err(plot_err)?;
    bar.configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_labels(5)
        .y_label_style((FONT_NAME, 12))
        .y_label_formatter(&|v| fmt_value(*v))
        .draw()
        .map_err(plot_err)?;
    let steps = 64;
    let step = (hi - lo) / steps as f64;
    bar.draw_series((0..steps).map(|i| {
        let v0 = lo + step * i as f64;
        Rectangle::new([(0, v0), (1, v0 + step)], ViridisRGB::get_color_normalized(v0 + step / 2.0, lo, hi).filled())
    }))
    .map_err(plot_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(fig: &Figure) -> image::RgbImage {
        image::load_from_memory(fig.png()).expect("a valid PNG").to_rgb8()
    }

    fn count(img: &image::RgbImage, c: RGBColor) -> usize {
        img.pixels().filter(|p| p.0 == [c.0, c.1, c.2]).count()
    }

    fn dark_pixels(img: &image::RgbImage) -> usize {
        img.pixels().filter(|p| p.0.iter().all(|&v| v < 80)).count()
    }

    #[test]
    fn line_chart_draws_every_series_in_its_colour() {
        let fig = LineChart::new("loss")
            .x_label("step")
            .y_label("loss")
            .series("train", &[2.3f32, 1.5, 1.0, 0.8, 0.7])
            .series_xy("validation", &[1.0, 4.0], &[1.9, 0.9])
            .draw()
            .unwrap();
        assert_eq!(fig.size(), (800, 480));
        let img = decode(&fig);
        assert_eq!(img.dimensions(), (800, 480));
        assert!(count(&img, PALETTE[0]) > 200, "train series not drawn");
        assert!(count(&img, PALETTE[1]) > 50, "validation series not drawn");
        assert!(dark_pixels(&img) > 500, "no text or axes drawn");
    }

    #[test]
    fn line_chart_leaves_out_nan_and_rejects_bad_log_axis() {
        let fig = LineChart::new("nan").series("loss", &[1.0, f64::NAN, 0.5]).draw().unwrap();
        assert!(count(&decode(&fig), PALETTE[0]) > 50);
        let err = LineChart::new("log").log_y(true).series("loss", &[1.0, -2.0]).draw().unwrap_err();
        assert!(err.to_string().contains("has -2 at x = 1"), "{err}");
        let err = LineChart::new("empty").draw().unwrap_err();
        assert!(err.to_string().contains("expected at least one series"), "{err}");
        assert!(LineChart::new("log").log_y(true).series("loss", &[1.0, 0.1, 0.01]).draw().is_ok());
    }

    #[test]
    fn heatmap_maps_min_and_max_to_the_colormap_ends() {
        let fig = Heatmap::from_rows("attention", &[vec![0.0, 1.0, 0.5], vec![0.25, 0.75, 1.0]])
            .unwrap()
            .row_labels(["the", "dog"])
            .col_labels(["the", "dog", "ran"])
            .draw()
            .unwrap();
        let img = decode(&fig);
        let (min, max) = (ViridisRGB::get_color(0.0), ViridisRGB::get_color(1.0));
        // Two cells hold the max, one the min; each cell is 48x48 with annotation text inside.
        assert!(count(&img, max) > 2 * 1500, "max cells: {}", count(&img, max));
        assert!(count(&img, min) > 1500, "min cell: {}", count(&img, min));
    }

    #[test]
    fn heatmap_of_one_row_fills_its_cells_without_an_empty_segment() {
        let fig = Heatmap::from_rows("query", &[vec![0.0, 1.0, 0.0, 1.0]]).unwrap().size(500, 200).draw().unwrap();
        let img = decode(&fig);
        let (min, max) = (ViridisRGB::get_color(0.0), ViridisRGB::get_color(1.0));
        let (n_min, n_max) = (count(&img, min), count(&img, max));
        // Two cells of each colour of equal size (text aside): the areas match within 10%.
        assert!(n_min > 1000 && (n_min as f64 / n_max as f64 - 1.0).abs() < 0.1, "{n_min} vs {n_max}");
    }

    #[test]
    fn heatmap_from_tensor_and_label_errors() {
        let t = tch::Tensor::arange(12, (tch::Kind::Float, tch::Device::Cpu)).reshape([3, 4]);
        let h = Heatmap::from_tensor("t", &t).unwrap();
        assert!(h.draw().is_ok());
        let err = h.clone().row_labels(["a", "b"]).draw().unwrap_err();
        assert_eq!(err.to_string(), "invalid input: heatmap \"t\": expected 3 row labels (one per row), got 2");
        let t3 = tch::Tensor::zeros([2, 3, 4], (tch::Kind::Float, tch::Device::Cpu));
        let err = Heatmap::from_tensor("t", &t3).unwrap_err();
        assert!(err.to_string().contains("got shape (2, 3, 4)"), "{err}");
        let err = Heatmap::from_rows("r", &[vec![1.0], vec![1.0, 2.0]]).unwrap_err();
        assert!(err.to_string().contains("row 1 has 2"), "{err}");
    }

    #[test]
    fn figure_saves_png_atomically_and_rejects_other_extensions() {
        let dir = std::env::temp_dir().join(format!("hw9-plot-{}", std::process::id()));
        let fig = LineChart::new("x").series("a", &[1.0, 2.0]).draw().unwrap();
        let path = dir.join("sub/loss.png");
        fig.save(&path).unwrap();
        let back = std::fs::read(&path).unwrap();
        assert_eq!(back, fig.png());
        assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1, "temporary file left behind");
        let err = fig.save(dir.join("loss.jpg")).unwrap_err();
        assert!(err.to_string().contains("expected a path ending in .png"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
