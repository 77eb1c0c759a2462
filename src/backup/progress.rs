//! Progress of a backup: a bar with bytes, rate and ETA when stderr is a
//! terminal; otherwise a structured log line every few seconds.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Interval between log lines when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// Reports bytes received.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    done: u64,
    total: Option<u64>,
    started: Instant,
    last_log: Instant,
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

impl Progress {
    /// A bar on a terminal, log lines elsewhere.
    pub fn new() -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{spinner} {bytes}/{total_bytes} {wide_bar} {binary_bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar
        });
        let now = Instant::now();
        Progress {
            bar,
            done: 0,
            total: None,
            started: now,
            last_log: now,
        }
    }

    /// The expected total, when the server estimated it.
    pub fn set_total(&mut self, total: Option<u64>) {
        self.total = total;
        if let (Some(bar), Some(t)) = (&self.bar, total) {
            bar.set_length(t.max(self.done));
        }
    }

    /// `n` more bytes received.
    pub fn add(&mut self, n: u64) {
        self.done += n;
        if let Some(bar) = &self.bar {
            if let Some(len) = bar.length() {
                if self.done > len {
                    bar.set_length(self.done);
                }
            }
            bar.inc(n);
            return;
        }
        if self.last_log.elapsed() >= LOG_EVERY {
            self.last_log = Instant::now();
            let secs = self.started.elapsed().as_secs_f64().max(0.001);
            let rate = self.done as f64 / secs;
            let eta = self
                .total
                .filter(|t| *t > self.done && rate > 0.0)
                .map(|t| ((t - self.done) as f64 / rate) as u64);
            tracing::info!(
                bytes = self.done,
                total = self.total,
                bytes_per_sec = rate as u64,
                eta_secs = eta,
                "backup progress"
            );
        }
    }

    /// The stream ended.
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
