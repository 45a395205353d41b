//! A progress bar for long work, in a terminal and in a notebook: count, rate, ETA and a message.

use std::io::Write;
use std::time::Instant;

/// A progress bar that works in a terminal and in a notebook (it redraws one line with `\r`):
/// count, rate, ETA and a message such as the running loss.
pub struct Progress {
    label: String,
    total: u64,
    done: u64,
    start: Instant,
    last_draw: Option<Instant>,
}

impl Progress {
    /// A bar for `total` steps (0: unknown, e.g. a time budget: count and rate only).
    pub fn new(label: impl Into<String>, total: u64) -> Self {
        Progress { label: label.into(), total, done: 0, start: Instant::now(), last_draw: None }
    }

    fn line(&self, msg: &str) -> String {
        let secs = self.start.elapsed().as_secs_f64();
        let rate = self.done as f64 / secs.max(1e-9);
        let eta = if rate > 0.0 { (self.total.saturating_sub(self.done)) as f64 / rate } else { 0.0 };
        if self.total == 0 {
            // Unknown length (a time budget): count and rate only.
            return format!("{} {} steps, {:.1} it/s, {} elapsed {}", self.label, self.done, rate, fmt_secs(secs), msg);
        }
        let width = 24;
        let filled = ((width as u64 * self.done / self.total) as usize).min(width);
        format!(
            "{} [{}{}] {}/{} {:.1} it/s, {} elapsed, ETA {} {}",
            self.label,
            "#".repeat(filled),
            ".".repeat(width - filled),
            self.done,
            self.total,
            rate,
            fmt_secs(secs),
            fmt_secs(eta),
            msg
        )
    }

    /// Counts one step; redraws at most twice a second.
    pub fn tick(&mut self, msg: &str) {
        self.done += 1;
        if self.last_draw.is_none_or(|t| t.elapsed().as_secs_f64() >= 0.5) || self.done == self.total {
            self.last_draw = Some(Instant::now());
            print!("\r{}", self.line(msg));
            let _ = std::io::stdout().flush();
        }
    }

    /// Draws the final line and ends it.
    pub fn finish(&mut self, msg: &str) {
        println!("\r{}", self.line(msg));
    }
}

fn fmt_secs(s: f64) -> String {
    let s = s.round() as u64;
    format!("{}:{:02}", s / 60, s % 60)
}
