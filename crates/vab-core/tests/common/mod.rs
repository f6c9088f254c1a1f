//! What the run tests share: a small training configuration, a toy bundle and a progress that
//! simulates a kill. Each test file is its own process: tests that seed the device's RNG
//! must not share one.

// Each test file compiles this module and uses only part of it.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};

use vab_core::engine::progress::TrainProgress;
use vab_data::{Bundle, Dataset, ImageSet, ImageShape};

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

/// Two classes of 8×8 RGB images: bright or dark, with per-image noise.
pub fn two_class_bundle() -> Bundle {
    let shape = ImageShape { channels: 3, height: 8, width: 8 };
    let set = |n: usize, salt: usize| {
        let labels: Vec<u16> = (0..n).map(|i| (i % 2) as u16).collect();
        let pixels = (0..n * shape.len())
            .map(|p| {
                let i = p / shape.len();
                let noise = (p * 7919 + salt) % 61;
                (if labels[i] == 1 { 150 + noise } else { 40 + noise }) as u8
            })
            .collect();
        ImageSet::new(shape, pixels, labels).unwrap()
    };
    Bundle::clean(Dataset::new(vec!["dark".into(), "bright".into()], set(64, 1), set(32, 2)).unwrap(), "unit")
}
