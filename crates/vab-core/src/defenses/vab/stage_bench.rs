//! `vab bench step --stage`: seconds per batch of each V&B stage, on synthetic images, to set
//! beside the authors' code timed per batch on the same machine. Each timed repetition is one
//! call of the stage's own code, so it costs what a run's batch costs:
//!
//! - `victim`: one Victim epoch over one batch (`vab.victim`: the paper's Adam at batch 128,
//!   no augmentation);
//! - `refresh`: the entropy pass over the whole synthetic set, reported per `batch` images;
//! - `stage2`: one Beneficiary iteration on a batch of credible images (`vab.views` augmented
//!   views each, the configured mix; AttentionMix by default);
//! - `stage3`: the same plus `unlabelled` suspicious images (`vab.unlabelled_views` views each,
//!   pseudo-labelled and suppressed).

use std::time::Instant;

use serde::Serialize;

use super::beneficiary::{Beneficiary, Suppression};
use super::victim::{Refresh, Split, Victim};
use super::Context;
use crate::backend::Backend;
use crate::config::TrainConfig;
use crate::data::TrainingSet;
use crate::engine::batches::Normalization;
use crate::engine::progress::Silent;
use crate::error::{CoreError, Result};

/// A V&B stage to time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageKind {
    Victim,
    Refresh,
    Stage2,
    Stage3,
}

/// Result of a stage benchmark.
#[derive(Clone, Debug, Serialize)]
pub struct StageBench {
    pub stage: StageKind,
    /// Median seconds per batch (for `refresh`: per `batch` images of the pass).
    pub median_s: f64,
    /// Every timed repetition, in seconds per batch.
    pub times_s: Vec<f64>,
    /// Images of one batch through the stage per second at the median: for stage 2 and 3,
    /// views of credible (and unlabelled) images.
    pub img_s: f64,
    pub settings: StageSettings,
    pub threads: usize,
    pub backend: Backend,
    pub cpu: Option<String>,
    pub simd: &'static str,
}

/// What was timed.
#[derive(Clone, Debug, Serialize)]
pub struct StageSettings {
    pub model: crate::models::Arch,
    pub image: [usize; 3],
    /// Images per batch: the Victim's batch size for `victim`, the Beneficiary's otherwise.
    pub batch: usize,
    pub views: usize,
    pub unlabelled: usize,
    pub unlabelled_views: usize,
    pub mix: super::config::MixKind,
    /// Images of the synthetic training set (the refresh pass covers all of them).
    pub train_images: usize,
}

/// Times `steps` repetitions (after `warmup`) of `stage` under `config` (its `[vab]` section
/// is required), with `unlabelled` suspicious images per stage-3 iteration.
pub fn bench_stage(config: &TrainConfig, backend: Backend, stage: StageKind, image: [usize; 3], unlabelled: usize, warmup: usize, steps: usize) -> Result<StageBench> {
    let vab = config.vab.as_ref().ok_or_else(|| CoreError::Invalid("the configuration has no [vab] section".into()))?;
    let batch = if stage == StageKind::Victim { vab.victim.batch_size } else { config.train.batch_size };
    let classes = 10;
    // One batch of credible images, the unlabelled ones, and enough for a few refresh batches.
    let train_images = (batch + unlabelled).max(4 * batch);
    let train = synthetic_set(train_images, image, classes);
    let inference = backend.device().map_err(CoreError::Invalid)?;
    let device = inference.clone().autodiff();
    device.seed(config.train.seed);
    let metrics = scratch_path();
    let ctx = Context {
        norm: Normalization::of(&train.images),
        train,
        arch: config.model.arch,
        device,
        inference: inference.clone(),
        seed: config.train.seed,
        eval_batch_size: config.data.eval_batch_size,
        progress: &Silent,
        metrics: metrics.clone(),
        victim_eval: None,
        allow_nan: config.train.allow_nan,
    };
    let mut victim = Victim::new(&ctx, &vab.victim);
    let mut beneficiary = Beneficiary::new(&ctx, config);
    let credible: Vec<usize> = (0..batch).collect();
    let suspicious: Vec<usize> = (batch..batch + unlabelled).collect();
    let split = synthetic_split(&mut victim, &ctx, vab.entropy_momentum, &credible, &suspicious);
    let suppression = Suppression { alpha: Some(vab.alpha[0]), credible: Some(vab.temperature), credible_labels: None, suspicious: Some(vab.temperature) };
    let mut times = Vec::new();
    for i in 0..warmup + steps {
        crate::bench::sync(&inference).map_err(CoreError::Invalid)?;
        let start = Instant::now();
        match stage {
            StageKind::Victim => victim.train_epoch(&ctx, &credible)?,
            StageKind::Refresh => {
                victim.refresh(&ctx, vab.entropy_momentum);
            }
            StageKind::Stage2 => {
                beneficiary.train_epoch(&ctx, config, vab, 1, &split, None)?;
            }
            StageKind::Stage3 => {
                beneficiary.train_epoch(&ctx, config, vab, vab.stage2_epochs + 1, &split, Some(&suppression))?;
            }
        }
        crate::bench::sync(&inference).map_err(CoreError::Invalid)?;
        let mut seconds = start.elapsed().as_secs_f64();
        if stage == StageKind::Refresh {
            seconds *= batch as f64 / train_images as f64;
        }
        if i >= warmup {
            times.push(seconds);
        }
    }
    let _ = std::fs::remove_file(&metrics);
    let median_s = crate::bench::median(&times);
    let images = match stage {
        StageKind::Victim | StageKind::Refresh => batch,
        StageKind::Stage2 => batch * vab.views,
        StageKind::Stage3 => batch * vab.views + unlabelled * vab.unlabelled_views,
    };
    Ok(StageBench {
        stage,
        median_s,
        times_s: times,
        img_s: images as f64 / median_s,
        settings: StageSettings { model: config.model.arch, image, batch, views: vab.views, unlabelled, unlabelled_views: vab.unlabelled_views, mix: vab.mix, train_images },
        threads: rayon::current_num_threads(),
        backend,
        cpu: crate::cpu::model(),
        simd: crate::cpu::simd_level(),
    })
}

/// `n` images of random pixels with labels cycling through `classes`.
fn synthetic_set(n: usize, [c, h, w]: [usize; 3], classes: usize) -> TrainingSet {
    let pixels = (0..n * c * h * w).map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8).collect();
    let labels = (0..n).map(|i| (i % classes) as u16).collect();
    let shape = vab_data::ImageShape { channels: c, height: h, width: w };
    let images = vab_data::ImageSet::new(shape, pixels, labels).expect("pixels match the shape");
    TrainingSet { images: std::sync::Arc::new(images), num_classes: classes }
}

/// A split with exactly these credible and suspicious samples, with the fresh Victim's logits.
fn synthetic_split(victim: &mut Victim, ctx: &Context, momentum: f64, credible: &[usize], suspicious: &[usize]) -> Split {
    let Refresh { logits, normalised, .. } = victim.refresh(ctx, momentum);
    Split { t_f: 0.2, normalised, logits, credible_logits: None, suspicious: suspicious.to_vec(), credible: credible.to_vec() }
}

/// A fresh path for the stage code's `metrics.jsonl` lines, removed afterwards.
fn scratch_path() -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    std::env::temp_dir().join(format!("vab-stage-bench-{}-{nanos}.jsonl", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every stage runs from fresh networks (the Beneficiary's first touch is the no-grad
    /// feature pass, which once left it untracked) and reports what it timed.
    #[test]
    fn every_stage_runs_and_reports_its_settings() {
        let _rng = crate::models::RNG_TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let mut config = TrainConfig::from_toml(include_str!("../../../../../configs/paper-cifar10.toml")).expect("the paper preset");
        config.model.arch = crate::models::Arch::Small;
        config.train.batch_size = 4;
        config.data.eval_batch_size = 6;
        config.vab.as_mut().expect("[vab]").victim.batch_size = 3;
        for stage in [StageKind::Victim, StageKind::Refresh, StageKind::Stage2, StageKind::Stage3] {
            let result = bench_stage(&config, Backend::Flex, stage, [3, 8, 8], 2, 1, 2).expect("flex is built in");
            assert_eq!(result.times_s.len(), 2, "{stage:?}");
            assert!(result.median_s > 0.0 && result.times_s.contains(&result.median_s), "{stage:?}");
            let s = &result.settings;
            let batch = if stage == StageKind::Victim { 3 } else { 4 };
            assert_eq!((s.batch, s.views, s.unlabelled, s.train_images), (batch, 2, 2, 4 * batch), "{stage:?}");
            let images = match stage {
                StageKind::Victim => 3,
                StageKind::Refresh => 4,
                StageKind::Stage2 => 8,
                StageKind::Stage3 => 8 + 2 * 2,
            };
            assert!((result.img_s * result.median_s - images as f64).abs() < 1e-9, "{stage:?}");
        }
    }
}
