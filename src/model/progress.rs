//! The Keras progress line:
//! `422/422 ━━━━━━━━━━━━━━━━━━━━ 6s 11ms/step - accuracy: 0.8971 - loss: 0.3806`
//! redrawn in place on a terminal, printed once per epoch otherwise.

use super::history::Logs;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How much `fit` prints, as Keras' `verbose` (0, 1, 2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Verbosity {
    /// Nothing.
    Silent,
    /// A live progress bar on a terminal; one line per epoch when output is redirected.
    #[default]
    ProgressBar,
    /// One line per epoch.
    OneLinePerEpoch,
}

const BAR_WIDTH: usize = 20;
const REDRAW_EVERY: Duration = Duration::from_millis(100);

/// The progress line for `step` of `total` steps after `elapsed`. While running
/// it shows the remaining time, when `finished` the total; with `color`, ANSI
/// colors as Keras uses on a terminal.
pub fn format_progress_line(
    step: usize,
    total: usize,
    elapsed: Duration,
    logs: &Logs,
    finished: bool,
    color: bool,
) -> String {
    let width = total.to_string().len();
    let done = (BAR_WIDTH * step).checked_div(total).unwrap_or(BAR_WIDTH).min(BAR_WIDTH);
    let (bold, green, grey, reset) =
        if color { ("\x1b[1m", "\x1b[32m", "\x1b[37m", "\x1b[0m") } else { ("", "", "", "") };
    let mut line = format!("{bold}{step:>width$}/{total}{reset} ");
    if done > 0 {
        line += &format!("{green}{}{reset}", "━".repeat(done));
    }
    line += &format!("{grey}{}{reset}", "━".repeat(BAR_WIDTH - done));
    let secs = elapsed.as_secs_f64();
    let per_step = if step > 0 { secs / step as f64 } else { 0.0 };
    if finished {
        line += &format!(" {}s", secs as u64);
    } else {
        line += &format!(" {bold}{}{reset}", format_eta(per_step * (total - step.min(total)) as f64));
    }
    line += &format!(" {}", format_per_step(per_step));
    for (name, value) in logs {
        line += &format!(" - {name}: {}", format_value(*value));
    }
    line
}

fn format_eta(secs: f64) -> String {
    let s = secs as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, (s % 3600) / 60, s % 60)
    } else if s >= 60 {
        format!("{}:{:02}", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

fn format_per_step(secs: f64) -> String {
    if secs >= 1.0 || secs == 0.0 {
        format!("{secs:.0}s/step")
    } else if secs >= 1e-3 {
        format!("{:.0}ms/step", secs * 1e3)
    } else {
        format!("{:.0}us/step", secs * 1e6)
    }
}

fn format_value(v: f64) -> String {
    if v.abs() > 1e-3 || v == 0.0 { format!("{v:.4}") } else { format!("{v:.4e}") }
}

/// Prints one epoch's progress.
pub(super) struct Progress {
    verbosity: Verbosity,
    live: bool,
    total: usize,
    start: Instant,
    last_draw: Option<Instant>,
}

impl Progress {
    /// Starts an epoch of `total` steps, printing the "Epoch e/E" header.
    pub fn start(verbosity: Verbosity, epoch: usize, epochs: usize, total: usize) -> Self {
        let live = verbosity == Verbosity::ProgressBar && std::io::stdout().is_terminal();
        if verbosity != Verbosity::Silent {
            println!("Epoch {epoch}/{epochs}");
        }
        Progress { verbosity, live, total, start: Instant::now(), last_draw: None }
    }

    /// After a step: redraws the line on a terminal, at most every 100 ms.
    /// `logs` is only called when the line is drawn.
    pub fn step(&mut self, step: usize, logs: impl FnOnce() -> Logs) {
        if !self.live || self.last_draw.is_some_and(|t| t.elapsed() < REDRAW_EVERY) {
            return;
        }
        self.last_draw = Some(Instant::now());
        let line = format_progress_line(step, self.total, self.start.elapsed(), &logs(), false, true);
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "\r{line}\x1b[K");
        let _ = out.flush();
    }

    /// The epoch's final line, validation values included.
    pub fn finish(&self, logs: &Logs) {
        if self.verbosity == Verbosity::Silent {
            return;
        }
        let line = format_progress_line(self.total, self.total, self.start.elapsed(), logs, true, self.live);
        if self.live {
            println!("\r{line}\x1b[K");
        } else {
            println!("{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_line_matches_keras_form() {
        let mut logs = Logs::new();
        logs.insert("accuracy".into(), 0.8971);
        logs.insert("loss".into(), 0.3806);
        logs.insert("val_accuracy".into(), 0.9622);
        logs.insert("val_loss".into(), 0.1473);
        let line = format_progress_line(422, 422, Duration::from_millis(4642), &logs, true, false);
        assert_eq!(
            line,
            "422/422 ━━━━━━━━━━━━━━━━━━━━ 4s 11ms/step - accuracy: 0.8971 - loss: 0.3806 - val_accuracy: 0.9622 - val_loss: 0.1473"
        );
        let running = format_progress_line(100, 422, Duration::from_secs(1), &Logs::new(), false, false);
        assert!(running.starts_with("100/422 ━━━━"), "{running}");
        assert!(running.contains(" 3s 10ms/step"), "{running}");
    }
}
