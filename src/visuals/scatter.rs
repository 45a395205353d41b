//! [`Scatter`]: points in named groups (one colour each, with a legend), e.g. a 2-D projection of
//! embeddings coloured by class.

use plotters::prelude::*;

use super::figure::{display_or_report, draw_legend, plot_err, Figure, FONT_NAME, PALETTE};
use crate::error::{Error, Result};

/// A scatter plot of named groups of points.
#[derive(Debug, Clone, PartialEq)]
pub struct Scatter {
    title: String,
    x_label: String,
    y_label: String,
    groups: Vec<(String, Vec<(f64, f64)>)>,
    size: (u32, u32),
}

impl Scatter {
    /// An empty plot titled `title` (720x560 pixels).
    pub fn new(title: impl Into<String>) -> Self {
        Scatter {
            title: title.into(),
            x_label: String::new(),
            y_label: String::new(),
            groups: Vec::new(),
            size: (720, 560),
        }
    }

    /// The axes' labels.
    pub fn labels(mut self, x: impl Into<String>, y: impl Into<String>) -> Self {
        self.x_label = x.into();
        self.y_label = y.into();
        self
    }

    /// Size in pixels.
    pub fn size(mut self, width: u32, height: u32) -> Self {
        self.size = (width, height);
        self
    }

    /// Adds a group of points (pairs beyond the shorter of `xs` and `ys` are ignored).
    pub fn group(mut self, name: impl Into<String>, xs: &[f64], ys: &[f64]) -> Self {
        self.groups.push((name.into(), xs.iter().zip(ys).map(|(&x, &y)| (x, y)).collect()));
        self
    }

    /// One group per class: `points (N, 2)` coloured by `labels (N,)`, named by `classes`.
    pub fn by_class(
        title: impl Into<String>,
        points: &tch::Tensor,
        labels: &tch::Tensor,
        classes: &[String],
    ) -> Result<Self> {
        let n = labels.size().first().copied().unwrap_or(0);
        if points.size() != [n, 2] {
            return Err(Error::Shape { what: "scatter points".into(), expected: vec![n, 2], got: points.size() });
        }
        let xy = Vec::<f64>::try_from(points.to_kind(tch::Kind::Double).reshape([-1]))?;
        let labels = Vec::<i64>::try_from(labels)?;
        let mut plot = Scatter::new(title);
        for (c, name) in classes.iter().enumerate() {
            let (xs, ys): (Vec<f64>, Vec<f64>) = labels
                .iter()
                .enumerate()
                .filter(|(_, &l)| l == c as i64)
                .map(|(i, _)| (xy[2 * i], xy[2 * i + 1]))
                .unzip();
            plot = plot.group(name.clone(), &xs, &ys);
        }
        Ok(plot)
    }

    /// Draws the plot; non-finite points are left out.
    pub fn draw(&self) -> Result<Figure> {
        let pts: Vec<(f64, f64)> = self
            .groups
            .iter()
            .flat_map(|(_, p)| p.iter().copied())
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        if pts.is_empty() {
            return Err(Error::Input(format!(
                "scatter {:?}: expected at least one finite point, got none",
                self.title
            )));
        }
        let bounds = |f: fn(&(f64, f64)) -> f64| {
            let (lo, hi) = pts.iter().map(f).fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
            let pad = ((hi - lo) * 0.05).max(1e-6);
            (lo - pad)..(hi + pad)
        };
        let (xr, yr) = (bounds(|p| p.0), bounds(|p| p.1));
        let (w, h) = self.size;
        Figure::render(w, h, |root| {
            let mut chart = ChartBuilder::on(root)
                .caption(&self.title, (FONT_NAME, 22))
                .margin(12)
                .x_label_area_size(42)
                .y_label_area_size(56)
                .build_cartesian_2d(xr, yr)
                .map_err(plot_err)?;
            chart
                .configure_mesh()
                .x_desc(self.x_label.as_str())
                .y_desc(self.y_label.as_str())
                .label_style((FONT_NAME, 14))
                .axis_desc_style((FONT_NAME, 16))
                .light_line_style(RGBColor(235, 235, 235))
                .draw()
                .map_err(plot_err)?;
            for (i, (name, points)) in self.groups.iter().enumerate() {
                let color = PALETTE[i % PALETTE.len()];
                chart
                    .draw_series(
                        points
                            .iter()
                            .filter(|(x, y)| x.is_finite() && y.is_finite())
                            .map(|&p| Circle::new(p, 2, color.mix(0.6).filled())),
                    )
                    .map_err(plot_err)?
                    .label(name.as_str())
                    .legend(move |(x, y)| Circle::new((x + 8, y), 4, color.filled()));
            }
            draw_legend(&mut chart, 13)?;
            Ok(())
        })
    }

    /// Draws the plot and shows it inline now.
    pub fn show(&self) {
        display_or_report(self.draw());
    }

    /// Called by evcxr when a plot ends a cell.
    pub fn evcxr_display(&self) {
        self.show();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::visuals::test_util::*;

    #[test]
    fn each_class_gets_its_palette_colour() {
        let points = tch::Tensor::from_slice(&[0.0f32, 0.0, 1.0, 1.0, 2.0, 0.5]).reshape([3, 2]);
        let labels = tch::Tensor::from_slice(&[0i64, 1, 1]);
        let classes = vec!["a".to_string(), "b".to_string()];
        let img = decode(&Scatter::by_class("s", &points, &labels, &classes).unwrap().draw().unwrap());
        // The legend's markers are drawn opaque in the palette's first two colours.
        assert!(count(&img, PALETTE[0]) > 10 && count(&img, PALETTE[1]) > 10);
        assert_eq!(count(&img, PALETTE[2]), 0);
    }

    #[test]
    fn wrong_points_and_empty_plots_are_errors() {
        let labels = tch::Tensor::from_slice(&[0i64, 1]);
        let err = Scatter::by_class("s", &tch::Tensor::zeros([2, 3], tch::kind::FLOAT_CPU), &labels, &[]).unwrap_err();
        assert!(err.to_string().contains("expected shape (2, 2), got (2, 3)"), "{err}");
        assert!(Scatter::new("empty").draw().unwrap_err().to_string().contains("at least one finite point"));
    }
}
