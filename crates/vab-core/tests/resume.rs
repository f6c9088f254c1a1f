//! A run interrupted after its first epoch and resumed ends with exactly the metrics of an
//! uninterrupted run with the same seed (CPU, flex backend). The checkpoint it resumes from is
//! written after an epoch without evaluation, so nothing but the checkpoint syncs the
//! batch-norm running statistics.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use vab_core::backend::Backend;
use vab_core::config::TrainConfig;
use vab_core::data::split;
use vab_core::engine::progress::Silent;
use vab_core::engine::run::{train_baseline, EpochRecord};
use vab_data::{Bundle, Dataset, ImageSet, ImageShape};

mod common;
use common::{KillAt, CONFIG};

/// Two classes of 8×8 RGB images: bright or dark, with per-image noise.
fn bundle() -> Bundle {
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

fn records(run: &Path) -> Vec<EpochRecord> {
    std::fs::read_to_string(run.join("metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn resumed_run_ends_with_the_uninterrupted_metrics() {
    let config = TrainConfig::from_toml(CONFIG).unwrap();
    let (train, evals, _) = split(bundle()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (straight, interrupted) = (dir.path().join("straight"), dir.path().join("interrupted"));

    let expected = train_baseline(&config, Backend::Flex, &train, &evals, &straight, false, &Silent).unwrap();
    let killed = catch_unwind(AssertUnwindSafe(|| {
        train_baseline(&config, Backend::Flex, &train, &evals, &interrupted, false, &KillAt::new(1))
    }));
    assert!(killed.is_err(), "the simulated kill should stop the run");
    assert_eq!(records(&interrupted).len(), 1, "one epoch finished before the kill");
    let resumed = train_baseline(&config, Backend::Flex, &train, &evals, &interrupted, true, &Silent).unwrap();

    assert_eq!(resumed.metrics, expected.metrics);
    let (a, b) = (records(&straight), records(&interrupted));
    assert_eq!(a.len(), 3);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((x.epoch, x.lr, x.loss, &x.metrics), (y.epoch, y.lr, y.loss, &y.metrics));
    }
    let same_weights = std::fs::read(straight.join("model.safetensors")).unwrap() == std::fs::read(interrupted.join("model.safetensors")).unwrap();
    assert!(same_weights, "the exported weights differ");
    assert!(expected.metrics.ba > 50.0, "the toy problem should be learnt: BA {}", expected.metrics.ba);
}
