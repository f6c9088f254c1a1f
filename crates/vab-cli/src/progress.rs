//! Progress display: an indicatif bar on a terminal; on other outputs (CI logs) plain lines
//! instead, so logs stay readable.

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};

/// The bar currently drawn, if any, and whether stderr is a terminal.
struct Slot {
    current: Mutex<Option<ProgressBar>>,
    terminal: bool,
}

impl Slot {
    fn new() -> Self {
        Self { current: Mutex::new(None), terminal: std::io::stderr().is_terminal() }
    }

    /// Starts a bar of `total` units labelled `message` (terminal only).
    fn begin(&self, total: u64, message: &str, template: &str) {
        if !self.terminal {
            return;
        }
        let bar = ProgressBar::new(total);
        bar.set_style(ProgressStyle::with_template(template).expect("valid template").progress_chars("=> "));
        bar.set_message(message.to_string());
        *self.current.lock().expect("progress lock") = Some(bar);
    }

    fn with(&self, f: impl FnOnce(&ProgressBar)) {
        if let Some(bar) = self.current.lock().expect("progress lock").as_ref() {
            f(bar);
        }
    }

    fn end(&self) {
        if let Some(bar) = self.current.lock().expect("progress lock").take() {
            bar.finish_and_clear();
        }
    }
}

/// A [`vab_data::Progress`] for loading and downloading: a bar per phase on a terminal, the
/// phase's name on one line otherwise.
pub struct Bar(Slot);

impl Bar {
    pub fn new() -> Self {
        Self(Slot::new())
    }
}

impl vab_data::Progress for Bar {
    fn start(&self, what: &str, total: u64) {
        if !self.0.terminal {
            eprintln!("{what}…");
        }
        self.0.begin(total, what, "{msg:>20} [{bar:30}] {human_pos}/{human_len} {per_sec} ETA {eta}");
    }

    fn advance(&self, n: u64) {
        self.0.with(|bar| bar.inc(n));
    }

    fn finish(&self) {
        self.0.end();
    }
}

/// A [`vab_core::engine::progress::TrainProgress`]: a bar per epoch with img/s, ETA and loss on
/// a terminal; one summary line per epoch everywhere.
pub struct EpochBar(Slot);

impl EpochBar {
    pub fn new() -> Self {
        Self(Slot::new())
    }
}

impl vab_core::engine::progress::TrainProgress for EpochBar {
    fn start(&self, label: &str, _batches: usize, samples: usize) {
        self.0.begin(samples as u64, label, "{msg:>14} [{bar:30}] {human_pos}/{human_len} {per_sec} ETA {eta} {prefix}");
    }

    fn batch(&self, samples: usize, loss: f32) {
        self.0.with(|bar| {
            bar.set_prefix(format!("loss {loss:.3}"));
            bar.inc(samples as u64);
        });
    }

    fn finish(&self, summary: &str) {
        self.0.end();
        eprintln!("{summary}");
    }
}
