//! What the run tests share: small training configurations, toy data (a two-class bundle, and
//! a four-class set with a trigger) and a progress that simulates a kill. Each test file is its own process: tests that seed the device's RNG
//! must not share one.

// Each test file compiles this module and uses only part of it.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};

use vab_core::engine::progress::TrainProgress;
use std::sync::Arc;

use vab_attacks::poison::LabelRule;
use vab_core::data::{EvalSets, TrainingSet};
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

/// The defense runs' base configuration (4 epochs of the small network on [`data`]); each test
/// file adds its defense's section.
pub const DEFENSE_BASE: &str = r#"
[model]
arch = "small"
[train]
epochs = 4
batch_size = 32
lr = 0.05
seed = 3
[train.augment]
crop_padding = 0
flip = false
[train.optimizer]
kind = "sgd"
momentum = 0.9
weight_decay = 5e-4
[train.schedule]
kind = "cosine"
min_lr = 0.0
[data]
eval_batch_size = 200
eval_every = 2
"#;

pub const SHAPE: ImageShape = ImageShape { channels: 3, height: 16, width: 16 };
pub const CLASSES: usize = 4;

/// Class k brightens rows 4k..4k+4 by an amount that differs per image; pixels carry
/// deterministic noise. Poisoned images get a
/// black-and-white 3×3 checkerboard in the top-left corner.
pub fn image(class: usize, salt: usize, poisoned: bool) -> Vec<u8> {
    (0..SHAPE.len())
        .map(|p| {
            let (y, x) = (p / 16 % 16, p % 16);
            if poisoned && y < 3 && x < 3 {
                return if (x + y) % 2 == 0 { 255 } else { 0 };
            }
            let noise = (p * 7919 + salt * 104_729) % 61;
            // Signal strength varies per image, so confidence varies within every class.
            let signal = 10 + salt * 37 % 90;
            (if y / 4 == class { 60 + signal + noise } else { 60 + noise }) as u8
        })
        .collect()
}

pub fn set(images: Vec<Vec<u8>>, labels: Vec<u16>) -> Arc<ImageSet> {
    Arc::new(ImageSet::new(SHAPE, images.concat(), labels).unwrap())
}

/// 800 training samples of which every tenth (not of class 0) is poisoned and relabelled 0.
pub fn data(poison: bool) -> (TrainingSet, EvalSets, Vec<bool>) {
    let n = 800;
    let poisoned: Vec<bool> = (0..n).map(|i| poison && i % 10 == 3 && i % CLASSES != 0).collect();
    let labels: Vec<u16> = (0..n).map(|i| if poisoned[i] { 0 } else { (i % CLASSES) as u16 }).collect();
    let train = set((0..n).map(|i| image(i % CLASSES, i, poisoned[i])).collect(), labels);
    let test = set((0..200).map(|i| image(i % CLASSES, 10_000 + i, false)).collect(), (0..200).map(|i| (i % CLASSES) as u16).collect());
    let triggered_ids: Vec<usize> = (0..200).filter(|i| i % CLASSES != 0).collect();
    let triggered = set(triggered_ids.iter().map(|&i| image(i % CLASSES, 20_000 + i, true)).collect(), triggered_ids.iter().map(|&i| (i % CLASSES) as u16).collect());
    let attack = poison.then_some((LabelRule::AllToOne, 0));
    (TrainingSet { images: train, num_classes: CLASSES }, EvalSets { test, triggered, originals: Some(triggered_ids.into()), attack, num_classes: CLASSES }, poisoned)
}

