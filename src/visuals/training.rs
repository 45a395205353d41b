//! A training run's charts: its [`History`]'s losses and accuracies as [`LineChart`]s, shown
//! inline. (Methods of `History`, written here so that the training core knows nothing of plots.)

use super::LineChart;
use crate::train::History;

impl History {
    /// Training loss per step, its per-epoch means at epoch ends, and the validation loss per
    /// epoch when there is one.
    pub fn loss_chart(&self, title: &str) -> LineChart {
        let ends: Vec<f64> = self.epochs.iter().map(|e| e.step as f64).collect();
        let means: Vec<f64> = self.epochs.iter().map(|e| e.train_loss).collect();
        let chart = LineChart::new(format!("{title}: loss"))
            .x_label("step")
            .y_label("loss")
            .series("train (step)", &self.step_losses)
            .series_xy("train (epoch mean)", &ends, &means);
        if self.epochs.iter().any(|e| e.val_loss.is_some()) {
            let val: Vec<f64> = self.epochs.iter().map(|e| e.val_loss.unwrap_or(f64::NAN)).collect();
            return chart.series_xy("validation (epoch)", &ends, &val);
        }
        chart
    }

    /// Training and validation accuracy per epoch.
    pub fn accuracy_chart(&self, title: &str) -> LineChart {
        let x: Vec<f64> = self.epochs.iter().map(|e| e.epoch as f64).collect();
        let train: Vec<f64> = self.epochs.iter().map(|e| e.train_acc.unwrap_or(f64::NAN)).collect();
        let val: Vec<f64> = self.epochs.iter().map(|e| e.val_acc.unwrap_or(f64::NAN)).collect();
        LineChart::new(format!("{title}: accuracy"))
            .x_label("epoch")
            .y_label("accuracy")
            .series_xy("train", &x, &train)
            .series_xy("validation", &x, &val)
    }

    /// Shows the loss chart and, when there are accuracies, the accuracy chart, inline.
    pub fn show(&self, title: &str) {
        self.loss_chart(title).show();
        if self.epochs.iter().any(|e| e.val_acc.is_some()) {
            self.accuracy_chart(title).show();
        }
    }
}
