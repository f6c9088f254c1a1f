//! What the resume tests share: a small training configuration and a progress that simulates
//! a kill.

use std::sync::atomic::{AtomicUsize, Ordering};

use vab_core::engine::progress::TrainProgress;

/// A small no-defense training configuration (3 epochs of the small network).
pub const CONFIG: &str = r#"
[model]
arch = "small"
[train]
epochs = 3
batch_size = 16
lr = 0.05
seed = 5
[train.optimizer]
kind = "sgd"
momentum = 0.9
weight_decay = 5e-4
[train.schedule]
kind = "cosine"
min_lr = 0.0
[data]
eval_every = 3
"#;

/// Panics when epoch `.0` (0-based, counted over every stage) starts, i.e. after the checkpoint
/// of the epoch before it is on disk; `.1` counts the epochs started.
pub struct KillAt(pub usize, pub AtomicUsize);

impl KillAt {
    pub fn new(at: usize) -> Self {
        Self(at, AtomicUsize::new(0))
    }
}

impl TrainProgress for KillAt {
    fn start(&self, _: &str, _: usize, _: usize) {
        if self.1.fetch_add(1, Ordering::SeqCst) == self.0 {
            panic!("simulated kill");
        }
    }
    fn batch(&self, _: usize, _: f32) {}
    fn finish(&self, _: &str) {}
}
