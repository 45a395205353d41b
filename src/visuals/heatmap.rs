//! [`Heatmap`]: a labelled matrix (attention weights, a confusion matrix, …) with a colour bar.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::figure::{display_or_report, plot_err, Figure, FONT_NAME};
use crate::error::{Error, Result};

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
            Some((lo, hi)) => return Err(Error::Input(format!("heatmap range: expected min < max, got [{lo}, {hi}]"))),
            None => finite.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v))),
        };
        let (lo, hi) = if lo > hi {
            (0.0, 1.0)
        } else if hi - lo < 1e-12 {
            (lo - 0.5, hi + 0.5)
        } else {
            (lo, hi)
        };
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
            let x_fmt = |v: &SegmentValue<usize>| index(v).and_then(|i| col_labels.get(i).cloned()).unwrap_or_default();
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
    use crate::visuals::test_util::*;

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
}
