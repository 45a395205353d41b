//! [`LineChart`]: named series (training loss, validation loss, …) with a legend.

use plotters::prelude::*;

use super::figure::{display_or_report, draw_legend, plot_err, Figure, FONT_NAME, PALETTE};
use crate::error::{Error, Result};

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
            return Err(Error::Input(format!("line chart {:?}: every point is NaN or infinite", self.title)));
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
            builder.caption(&self.title, (FONT_NAME, 22)).margin(12).x_label_area_size(42).y_label_area_size(64);
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
            let label =
                if dropped > 0 { format!("{} ({dropped} non-finite left out)", s.name) } else { s.name.clone() };
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
                .map_err(plot_err)?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
            if pts.len() <= 40 {
                chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(plot_err)?;
            }
        }
        draw_legend(&mut chart, 14)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::visuals::test_util::*;

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
}
