//! How the engine reports progress; the CLI draws bars on a terminal and plain lines otherwise.

/// Receives training progress.
pub trait TrainProgress: Sync {
    /// A pass over `samples` samples in `batches` batches begins; `label` says which
    /// (e.g. "epoch 3/200").
    fn start(&self, label: &str, batches: usize, samples: usize);
    /// One batch of `samples` samples finished with loss `loss`.
    fn batch(&self, samples: usize, loss: f32);
    /// The pass is over; `summary` is one line for the log.
    fn finish(&self, summary: &str);
}

/// Progress that goes nowhere (tests, library use).
pub struct Silent;

impl TrainProgress for Silent {
    fn start(&self, _: &str, _: usize, _: usize) {}
    fn batch(&self, _: usize, _: f32) {}
    fn finish(&self, _: &str) {}
}
