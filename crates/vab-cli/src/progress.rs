//! Progress display: an indicatif bar on a terminal, one plain line per phase otherwise (CI
//! logs stay readable).

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};

/// A [`vab_data::Progress`] drawn on stderr.
pub struct Bar {
    current: Mutex<Option<ProgressBar>>,
    terminal: bool,
}

impl Bar {
    pub fn new() -> Self {
        Self { current: Mutex::new(None), terminal: std::io::stderr().is_terminal() }
    }
}

impl vab_data::Progress for Bar {
    fn start(&self, what: &str, total: u64) {
        if !self.terminal {
            eprintln!("{what}…");
            return;
        }
        let bar = ProgressBar::new(total);
        let template = "{msg:>20} [{bar:30}] {human_pos}/{human_len} {per_sec} ETA {eta}";
        bar.set_style(ProgressStyle::with_template(template).expect("valid template").progress_chars("=> "));
        bar.set_message(what.to_string());
        *self.current.lock().expect("progress lock") = Some(bar);
    }

    fn advance(&self, n: u64) {
        if let Some(bar) = self.current.lock().expect("progress lock").as_ref() {
            bar.inc(n);
        }
    }

    fn finish(&self) {
        if let Some(bar) = self.current.lock().expect("progress lock").take() {
            bar.finish_and_clear();
        }
    }
}

/// A [`vab_core::engine::progress::TrainProgress`]: a bar per epoch with img/s and ETA on a
/// terminal, one line per epoch otherwise.
pub struct EpochBar {
    current: Mutex<Option<ProgressBar>>,
    terminal: bool,
}

impl EpochBar {
    pub fn new() -> Self {
        Self { current: Mutex::new(None), terminal: std::io::stderr().is_terminal() }
    }
}

impl vab_core::engine::progress::TrainProgress for EpochBar {
    fn start(&self, label: &str, _batches: usize, samples: usize) {
        if !self.terminal {
            return;
        }
        let bar = ProgressBar::new(samples as u64);
        let template = "{msg:>14} [{bar:30}] {human_pos}/{human_len} {per_sec} ETA {eta} {prefix}";
        bar.set_style(ProgressStyle::with_template(template).expect("valid template").progress_chars("=> "));
        bar.set_message(label.to_string());
        *self.current.lock().expect("progress lock") = Some(bar);
    }

    fn batch(&self, samples: usize, loss: f32) {
        if let Some(bar) = self.current.lock().expect("progress lock").as_ref() {
            bar.set_prefix(format!("loss {loss:.3}"));
            bar.inc(samples as u64);
        }
    }

    fn finish(&self, summary: &str) {
        if let Some(bar) = self.current.lock().expect("progress lock").take() {
            bar.finish_and_clear();
        }
        eprintln!("{summary}");
    }
}
