//! V&B (method.md §3-§7), one file per step:
//!
//! - [`victim`]: the Victim, its entropy refresh and stage 1 (warm-up), with [`entropy`],
//!   [`threshold`] (warm-up schedules) and [`gmm`] (the automatic warm-up's mixture);
//! - [`beneficiary`]: the Beneficiary's epochs of stage 2 (credible set, [`attention_mix`] or
//!   another of [`mixes`]) and stage 3;
//! - [`semi_supervised`]: stage 3's targets, pseudo-labels and [`suppression`] (eq. 10-11);
//! - [`split_check`]: warnings when the final split looks like it failed;
//! - [`train`]: the whole run, its outputs and timings; [`config`]: the `[vab]` section;
//!   [`stage_bench`]: seconds per batch of each stage (`vab bench step --stage`);
//! - [`scan`]: the Victim alone, ranking a dataset's samples (`vab scan`), and
//!   [`label_check`], the scan's check of which labels hold poison (beyond the paper).
//!
//! Poison flags never reach this module: a [`RefreshObserver`] supplied by the caller sees each
//! split and may score it against the ground truth for reporting, but returns only text.

pub mod attention_mix;
pub mod beneficiary;
pub mod config;
pub mod entropy;
pub mod gmm;
pub mod label_check;
pub mod mixes;
pub mod scan;
pub mod semi_supervised;
pub mod split_check;
pub mod stage_bench;
pub mod suppression;
pub mod threshold;
pub mod train;
pub mod victim;

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::config::TrainConfig;
use crate::data::{EvalSets, TrainingSet};
use crate::engine::batches::Normalization;
use crate::engine::eval::Metrics;
use crate::engine::run::{append_jsonl, training_members};
use crate::engine::progress::TrainProgress;
use crate::error::{CoreError, Result};
use crate::models::Arch;

/// What every stage needs: the training samples, their normalisation, the devices, the seed.
pub struct Context<'a> {
    /// The samples V&B trains on (a subset already materialised when `data.train_subset` is set).
    pub train: TrainingSet,
    pub arch: Arch,
    pub norm: Normalization,
    /// Training device (autodiff).
    pub device: Device,
    /// Inference device.
    pub inference: Device,
    pub seed: u64,
    pub eval_batch_size: usize,
    pub progress: &'a dyn TrainProgress,
    /// The run's `metrics.jsonl`.
    pub metrics: PathBuf,
    /// Test sample the Victim is evaluated on after each epoch (`vab.victim_eval_samples`).
    pub victim_eval: Option<EvalSets>,
    /// Go on past a non-finite loss (`train.allow_nan`).
    pub allow_nan: bool,
}

impl<'a> Context<'a> {
    /// The context of a run of `config` on `train` (its `data.train_subset` drawn) on
    /// `backend`, with the device RNG seeded and `metrics.jsonl` in `dir`; with the bundle
    /// index of each training sample.
    pub fn new(config: &TrainConfig, backend: Backend, train: &TrainingSet, victim_eval: Option<EvalSets>, dir: &Path, progress: &'a dyn TrainProgress) -> Result<(Self, Vec<usize>)> {
        let inference = backend.device().map_err(CoreError::Invalid)?;
        let device = inference.clone().autodiff();
        device.seed(config.train.seed);
        let members = training_members(config, train.images.len());
        let context = Self {
            norm: Normalization::of(&train.images),
            train: TrainingSet { images: std::sync::Arc::new(train.images.select(&members)), num_classes: train.num_classes },
            arch: config.model.arch,
            device,
            inference,
            seed: config.train.seed,
            eval_batch_size: config.data.eval_batch_size,
            progress,
            metrics: dir.join("metrics.jsonl"),
            victim_eval,
            allow_nan: config.train.allow_nan,
        };
        Ok((context, members))
    }

    /// Appends `event` to `metrics.jsonl`.
    pub fn record(&self, event: &Event) -> Result<()> {
        append_jsonl(&self.metrics, event)
    }
}

/// One line of a V&B run's `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Victim {
        epoch: usize,
        samples: usize,
        loss: f64,
        /// On the `victim_eval` sample, when configured.
        #[serde(flatten)]
        metrics: Option<Metrics>,
    },
    Refresh { refresh: usize, stage: Stage, beneficiary_epoch: usize, t_f: f64, suspicious: usize, credible: usize },
    /// `[vab] label_check` after warm-up: every label as the checker judged it.
    LabelCheck { labels: Vec<label_check::LabelFinding> },
    Beneficiary {
        epoch: usize,
        stage: Stage,
        lr: f64,
        loss: f64,
        img_s: f64,
        mix_partner_share: f64,
        /// Stage 3 only.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        suppression: Option<beneficiary::SuppressionStats>,
        #[serde(flatten)]
        metrics: Option<Metrics>,
    },
}


/// Which stage a refresh belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    WarmUp,
    Clean,
    Suppression,
    /// `vab scan`'s Victim epochs after warm-up.
    Scan,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::WarmUp => "stage 1, warm-up",
            Stage::Clean => "stage 2, clean training",
            Stage::Suppression => "stage 3, suppression",
            Stage::Scan => "scan",
        })
    }
}

/// One entropy refresh and the split it produced.
pub struct RefreshEvent<'a> {
    /// 1-based count of refreshes.
    pub refresh: usize,
    pub stage: Stage,
    /// Victim epochs trained before this refresh.
    pub victim_epochs: usize,
    /// Beneficiary epochs trained before this refresh.
    pub beneficiary_epoch: usize,
    pub split: &'a victim::Split,
}

/// Watches the splits (reporting only). Returns a short text for the log, e.g. detection
/// figures; V&B never reads anything else from it.
pub trait RefreshObserver {
    /// The run starts (0) or resumes after `refreshes` refreshes: forget any later ones.
    fn start_after(&mut self, _refreshes: usize) -> Result<()> {
        Ok(())
    }

    fn refresh(&mut self, event: &RefreshEvent) -> Result<String>;
}

/// An observer that records nothing.
pub struct Unobserved;

impl RefreshObserver for Unobserved {
    fn refresh(&mut self, _: &RefreshEvent) -> Result<String> {
        Ok(String::new())
    }
}
