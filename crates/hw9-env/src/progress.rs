//! A progress bar for long work, in a terminal and in a notebook: count, rate, ETA and a message.
//!
//! In a terminal it redraws one line with `\r`. In the hw9 kernel (evcxr with the patches in
//! `tools/evcxr/`, which sets `EVCXR_DISPLAY_UPDATES=1` in the environment of the process that runs
//! the cells) it is a display updated in place, as Python's `tqdm.notebook` is: the student sees it
//! move while the cell runs, and the saved notebook keeps its last state only. evcxr passes a
//! cell's output on by whole lines, so a `\r` redraw would show nothing until the cell ended.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// The environment variable the hw9 kernel sets for the code it runs: stdout lines
/// `EVCXR_DISPLAY {json}` become displays updated in place.
pub const DISPLAY_UPDATES_VAR: &str = "EVCXR_DISPLAY_UPDATES";

/// Whether this process runs under the hw9 kernel, whose displays update in place.
pub fn display_updates() -> bool {
    std::env::var(DISPLAY_UPDATES_VAR).is_ok_and(|v| v == "1")
}

/// Shows (`update: false`) or redraws in place (`update: true`) the display `display_id` with
/// `data` (MIME type → content), through the hw9 kernel's `EVCXR_DISPLAY` line. Only meaningful
/// when [`display_updates`]; elsewhere the line is printed as it is.
pub fn emit_display(display_id: &str, update: bool, data: &serde_json::Value) {
    let msg = serde_json::json!({ "display_id": display_id, "update": update, "data": data });
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "EVCXR_DISPLAY {msg}");
    let _ = out.flush();
}

/// How the bar draws itself.
enum Draw {
    /// `\r` redraws of one line (a terminal, a log).
    Line,
    /// A display updated in place; `shown` once its first `display_data` went out.
    Display { id: String, shown: bool },
}

/// A progress bar that works in a terminal (it redraws one line with `\r`) and in the hw9 kernel
/// (a display updated in place): count, rate, ETA and a message such as the running loss.
pub struct Progress {
    label: String,
    total: u64,
    done: u64,
    start: Instant,
    last_draw: Option<Instant>,
    draw: Draw,
}

impl Progress {
    /// A bar for `total` steps (0: unknown, e.g. a time budget: count and rate only).
    pub fn new(label: impl Into<String>, total: u64) -> Self {
        static BARS: AtomicU64 = AtomicU64::new(0);
        let draw = if display_updates() {
            // evcxr links each cell with its own copy of this crate, so the counter restarts in
            // every cell: the clock keeps two cells' bars apart (one id updates every display
            // that has it, an earlier cell's included).
            let n = BARS.fetch_add(1, Ordering::Relaxed);
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
            Draw::Display { id: format!("hw9-progress-{}-{nanos}-{n}", std::process::id()), shown: false }
        } else {
            Draw::Line
        };
        Progress { label: label.into(), total, done: 0, start: Instant::now(), last_draw: None, draw }
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
            let line = self.line(msg);
            self.draw_line(&line, false);
        }
    }

    /// Draws the final line and ends it.
    pub fn finish(&mut self, msg: &str) {
        let line = self.line(msg);
        self.draw_line(&line, true);
    }

    /// Redraws the bar as `line` (`last`: the final drawing, ended with a newline in a terminal).
    fn draw_line(&mut self, line: &str, last: bool) {
        let data = matches!(self.draw, Draw::Display { .. }).then(|| self.data(line));
        match (&mut self.draw, data) {
            (Draw::Display { id, shown }, Some(data)) => {
                emit_display(id, *shown, &data);
                *shown = true;
            }
            _ if last => println!("\r{line}"),
            _ => {
                print!("\r{line}");
                let _ = std::io::stdout().flush();
            }
        }
    }

    /// The display's content: the line as text, and as HTML with a bar JupyterLab draws.
    fn data(&self, line: &str) -> serde_json::Value {
        let bar = if self.total > 0 {
            format!(
                "<progress value=\"{}\" max=\"{}\" style=\"width: 16em\"></progress> ",
                self.done.min(self.total),
                self.total
            )
        } else {
            String::new()
        };
        serde_json::json!({
            "text/plain": line,
            "text/html": format!("<div style=\"font-family: monospace\">{bar}{}</div>", html_escape(line)),
        })
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn fmt_secs(s: f64) -> String {
    let s = s.round() as u64;
    format!("{}:{:02}", s / 60, s % 60)
}
