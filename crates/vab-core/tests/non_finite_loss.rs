//! A non-finite training loss stops the run where it happens (a file of its own: the run seeds
//! the device's process-wide RNG, which the resume test's comparison relies on).

use std::path::Path;

use vab_core::backend::Backend;
use vab_core::config::TrainConfig;
use vab_core::data::split;
use vab_core::engine::progress::Silent;
use vab_core::engine::run::train_baseline;

mod common;
use common::{two_class_bundle as bundle, CONFIG};

fn metric_lines(run: &Path) -> usize {
    std::fs::read_to_string(run.join("metrics.jsonl")).unwrap().lines().count()
}

/// A learning rate that explodes in epoch 2 (×10³⁰ at milestone 1) stops the run at the first
/// non-finite loss, naming where; epoch 1's checkpoint and metrics line stay, and no model is
/// exported. With `train.allow_nan` the run goes on to the end.
#[test]
fn a_non_finite_loss_stops_the_run_and_keeps_the_last_checkpoint() {
    let exploding = CONFIG.replace("kind = \"cosine\"\nmin_lr = 0.0", "kind = \"multistep\"\nmilestones = [1]\ngamma = 1e30");
    let config = TrainConfig::from_toml(&exploding).unwrap();
    let (train, evals, _) = split(bundle()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let err = train_baseline(&config, Backend::Flex, &train, &evals, &run, false, &Silent).unwrap_err().to_string();
    assert!(err.starts_with("epoch 2, step ") && err.contains("the training loss is"), "{err}");
    assert_eq!(metric_lines(&run), 1, "epoch 1's line stays");
    assert!(run.join("checkpoint/state.json").exists(), "epoch 1's checkpoint stays");
    assert!(!run.join("model.safetensors").exists() && !run.join("summary.json").exists());

    let allowed = TrainConfig::from_toml(&exploding.replace("seed = 5", "seed = 5\nallow_nan = true")).unwrap();
    train_baseline(&allowed, Backend::Flex, &train, &evals, &dir.path().join("allowed"), false, &Silent).expect("allow_nan goes on");
}
