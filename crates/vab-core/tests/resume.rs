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

mod common;
use common::{two_class_bundle as bundle, KillAt, CONFIG};

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
