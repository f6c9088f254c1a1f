//! A whole V&B run (method.md §4-§7) and its run directory.
//!
//! Stage 1 warms the Victim up ([`super::victim::warm_up`]). Beneficiary epochs
//! 1..=`stage2_epochs` are stage 2 (credible set, AttentionMix); after every `refresh_every`-th
//! one the Victim trains an epoch on D_s and the split is refreshed. The remaining epochs are
//! stage 3 (suppression), after each of which the Victim trains and the split refreshes.
//!
//! Run directory: `config.toml`, `metrics.jsonl` (one line per Victim epoch, refresh and
//! Beneficiary epoch, tagged by `event`), `model.safetensors` (the Beneficiary) and
//! `victim.safetensors`; the caller adds `summary.json` and its reporting files.

use std::path::Path;
use std::time::Instant;

use burn::module::Module;
use serde::{Deserialize, Serialize};

use super::beneficiary::{Beneficiary, Suppression};
use super::victim::{warm_up, Split, Victim};
use super::{Context, Event, RefreshObserver, Stage};
use crate::backend::Backend;
use crate::config::TrainConfig;
use crate::data::{EvalSets, TrainingSet};
use crate::detection::Detection;
use crate::engine::batches::Normalization;
use crate::engine::eval::{evaluate, Metrics};
use crate::engine::progress::TrainProgress;
use crate::engine::run::{export_pytorch, training_members, Summary};
use crate::error::{CoreError, Result};

/// Wall time of one stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageTime {
    pub stage: Stage,
    pub wall_s: f64,
}

/// `summary.json` of a V&B run: the common summary plus the stage-2 scores, per-stage wall
/// times and the final split's detection figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VabSummary {
    #[serde(flatten)]
    pub summary: Summary,
    pub after_stage2: Option<Metrics>,
    pub stages: Vec<StageTime>,
    pub t_f: f64,
    pub suspicious: usize,
    pub credible: usize,
    /// Against the bundle's poison flags (reporting only).
    pub detection: Option<Detection>,
}

/// What a V&B run returns.
pub struct Outcome {
    /// `summary.json` without detection figures (the caller adds them).
    pub summary: Summary,
    pub after_stage2: Option<Metrics>,
    pub stages: Vec<StageTime>,
    /// The final split; `members[i]` is the bundle index of training sample i.
    pub split: Split,
    pub members: Vec<usize>,
}

impl Outcome {
    /// The summary, with the caller's detection figures.
    pub fn summary(&self, detection: Option<Detection>) -> VabSummary {
        VabSummary {
            summary: self.summary.clone(),
            after_stage2: self.after_stage2.clone(),
            stages: self.stages.clone(),
            t_f: self.split.t_f,
            suspicious: self.split.suspicious.len(),
            credible: self.split.credible.len(),
            detection,
        }
    }
}

/// Runs V&B with `config` (its `[vab]` section must be present) into `run`.
pub fn train_vab(config: &TrainConfig, backend: Backend, train: &TrainingSet, evals: &EvalSets, run: &Path, progress: &dyn TrainProgress, observer: &mut dyn RefreshObserver) -> Result<Outcome> {
    let vab = config.vab.as_ref().ok_or_else(|| CoreError::Invalid("--defense vab needs a [vab] section in the configuration (see configs/cpu-cifar10.toml)".into()))?;
    let start = Instant::now();
    std::fs::create_dir_all(run).map_err(|e| CoreError::io(run, e))?;
    let metrics_path = run.join("metrics.jsonl");
    let _ = std::fs::remove_file(&metrics_path);
    let inference = backend.device().map_err(CoreError::Invalid)?;
    let device = inference.clone().autodiff();
    device.seed(config.train.seed);
    let members = training_members(config, train.images.len());
    let subset = TrainingSet { images: std::sync::Arc::new(train.images.select(&members)), num_classes: train.num_classes };
    let ctx = Context {
        norm: Normalization::of(&train.images),
        train: subset,
        arch: config.model.arch,
        device,
        inference: inference.clone(),
        seed: config.train.seed,
        eval_batch_size: config.data.eval_batch_size,
        progress,
        metrics: metrics_path,
    };

    // Stage 1.
    let mut victim = Victim::new(&ctx, &vab.victim);
    let mut split = warm_up(&mut victim, &ctx, vab, observer)?;
    let mut stages = vec![StageTime { stage: Stage::WarmUp, wall_s: start.elapsed().as_secs_f64() }];

    // Stages 2 and 3.
    let mut beneficiary = Beneficiary::new(&ctx, config);
    let epochs = config.train.epochs;
    let stage3_epochs = epochs - vab.stage2_epochs;
    let mut stage_start = Instant::now();
    let (mut after_stage2, mut last, mut rates) = (None, None, Vec::new());
    for epoch in 1..=epochs {
        let stage = if epoch <= vab.stage2_epochs { Stage::Clean } else { Stage::Suppression };
        let lr = config.train.schedule.lr(config.train.lr, epoch - 1, epochs);
        let temperature = Some(vab.temperature);
        let suppression = (stage == Stage::Suppression).then(|| Suppression {
            alpha: vab.ablation.semi_supervised.then(|| vab.alpha_at(epoch - vab.stage2_epochs - 1, stage3_epochs)),
            credible: temperature.filter(|_| vab.ablation.suppress_credible),
            suspicious: temperature.filter(|_| vab.ablation.suppress_suspicious),
        });
        let stats = beneficiary.train_epoch(&ctx, config, vab, epoch, lr, &split, suppression.as_ref());
        rates.push(stats.img_s);
        if stage == Stage::Suppression || epoch % vab.refresh_every == 0 {
            victim.train_epoch(&ctx, &split.suspicious)?;
            split = victim.resplit(&ctx, vab, split.t_f, stage, epoch, observer)?;
        }
        let stage_ends = epoch == vab.stage2_epochs || epoch == epochs;
        let due = epoch % config.data.eval_every == 0 || stage_ends;
        let metrics = due.then(|| evaluate(&beneficiary.model.valid(), evals, &ctx.norm, config.data.eval_batch_size, &inference));
        if let Some(m) = &metrics {
            progress.finish(&format!("beneficiary epoch {epoch}: {}", m.describe()));
        }
        ctx.record(&Event::Beneficiary { epoch, stage, lr, loss: stats.loss, img_s: stats.img_s, metrics: metrics.clone() })?;
        if stage_ends {
            stages.push(StageTime { stage, wall_s: stage_start.elapsed().as_secs_f64() });
            stage_start = Instant::now();
            if epoch == vab.stage2_epochs {
                after_stage2 = metrics.clone();
            }
        }
        last = metrics.or(last);
    }
    let metrics = match last {
        Some(m) => m,
        // No Beneficiary epochs at all: score the untrained network rather than fail.
        None => evaluate(&beneficiary.model.valid(), evals, &ctx.norm, config.data.eval_batch_size, &inference),
    };
    export_pytorch(&beneficiary.model.valid(), &run.join("model.safetensors"))?;
    export_pytorch(&victim.model.valid(), &run.join("victim.safetensors"))?;
    rates.sort_by(f64::total_cmp);
    let summary = Summary {
        defense: "vab".into(),
        ba: metrics.ba,
        asr: metrics.asr,
        ra: metrics.ra,
        per_class: metrics.per_class,
        epochs,
        train_samples: members.len(),
        wall_s: start.elapsed().as_secs_f64(),
        train_img_s: rates.get(rates.len() / 2).copied().unwrap_or(0.0),
    };
    Ok(Outcome { summary, after_stage2, stages, split, members })
}
