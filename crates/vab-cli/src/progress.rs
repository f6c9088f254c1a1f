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
