//! A whole V&B run (method.md §4-§7) and its run directory.
//!
//! Stage 1 warms the Victim up ([`super::victim::warm_up`]). Beneficiary epochs
//! 1..=`stage2_epochs` are stage 2 (credible set, AttentionMix); after every `refresh_every`-th
//! one the Victim trains an epoch on D_s and the split is refreshed. The remaining epochs are
//! stage 3 (suppression), after each of which the Victim trains and the split refreshes.
//!
//! Run directory: `config.toml`, `metrics.jsonl` (one line per Victim epoch, refresh and
//! Beneficiary epoch, tagged by `event`), `checkpoint/` (both networks, their optimisers and
//! the run state, after warm-up and after every Beneficiary epoch), `model.safetensors` (the
//! Beneficiary) and `victim.safetensors`; the caller adds `summary.json` and its reporting files.

use std::path::Path;
use std::time::Instant;

use burn::module::Module;
use serde::{Deserialize, Serialize};

use super::beneficiary::{Beneficiary, Suppression};
use super::config::LabelCheckParams;
use super::label_check::{check_labels, LabelFilter};
use super::victim::{warm_up, Split, Victim, VictimState};
use super::{Context, Event, RefreshObserver, Stage};
use crate::backend::Backend;
use crate::config::TrainConfig;
use crate::data::{EvalSets, TrainingSet};
use crate::detection::Detection;
use crate::engine::eval::{evaluate, Metrics};
use crate::engine::progress::TrainProgress;
use crate::engine::checkpoint;
use crate::engine::export::{export_pytorch, ModelCard};
use crate::engine::run::{keep_lines, Summary};
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
    /// Signs that the final split failed ([`super::split_check`]); empty when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
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
    /// The summary, with the caller's detection figures and split warnings.
    pub fn summary(&self, detection: Option<Detection>, warnings: Vec<String>) -> VabSummary {
        VabSummary {
            summary: self.summary.clone(),
            after_stage2: self.after_stage2.clone(),
            stages: self.stages.clone(),
            t_f: self.split.t_f,
            suspicious: self.split.suspicious.len(),
            credible: self.split.credible.len(),
            detection,
            warnings,
        }
    }
}

/// Where a V&B run stands after a finished stage-1 or Beneficiary epoch (checkpointed).
#[derive(Serialize, Deserialize)]
struct RunState {
    beneficiary_epochs: usize,
    victim: VictimState,
    split: Split,
    stages: Vec<StageTime>,
    /// Seconds already spent in the current stage.
    stage_s: f64,
    after_stage2: Option<Metrics>,
    last: Option<Metrics>,
    rates: Vec<f64>,
    wall_s: f64,
    /// Lines of `metrics.jsonl` written so far.
    metrics_lines: usize,
    /// What the label check found (`[vab] label_check`); every split the Beneficiary uses
    /// keeps only the suspicious samples it suspects.
    #[serde(default)]
    label_filter: Option<LabelFilter>,
    /// The entropy's own suspicious set, which the Victim trains on, where the label check
    /// narrowed `split` (the Beneficiary's).
    #[serde(default)]
    victim_suspicious: Option<Vec<usize>>,
}

/// Runs V&B with `config` (its `[vab]` section must be present) into `run`. With `resume`,
/// continues from the run's last checkpoint (written after warm-up and after every Beneficiary
/// epoch), ending exactly as an uninterrupted run would.
#[allow(clippy::too_many_arguments)]
pub fn train_vab(config: &TrainConfig, backend: Backend, train: &TrainingSet, evals: &EvalSets, run: &Path, resume: bool, progress: &dyn TrainProgress, observer: &mut dyn RefreshObserver) -> Result<Outcome> {
    let vab = config.vab.as_ref().ok_or_else(|| CoreError::Invalid("--defense vab needs a [vab] section in the configuration (see configs/cpu-cifar10.toml)".into()))?;
    let start = Instant::now();
    std::fs::create_dir_all(run).map_err(|e| CoreError::io(run, e))?;
    let victim_eval = (vab.victim_eval_samples > 0).then(|| evals.sample(vab.victim_eval_samples, config.train.seed));
    let (ctx, members) = Context::new(config, backend, train, victim_eval, run, progress)?;
    let (metrics_path, inference) = (ctx.metrics.clone(), ctx.inference.clone());
    let mut victim = Victim::new(&ctx, &vab.victim);
    let mut beneficiary = Beneficiary::new(&ctx, config);
    let save = |victim: &Victim, beneficiary: &Beneficiary, state: &RunState| {
        checkpoint::save(run, &[("victim", &victim.model, &victim.optim), ("beneficiary", &beneficiary.model, &beneficiary.optim)], state)
    };
    let elapsed = |before: f64| before + start.elapsed().as_secs_f64();

    let mut state: RunState = if resume {
        let parts = vec![("victim", victim.model, victim.optim), ("beneficiary", beneficiary.model, beneficiary.optim)];
        let (mut loaded, state): (_, RunState) = checkpoint::load(run, parts)?.ok_or_else(|| CoreError::file(run.join("checkpoint"), "no checkpoint to resume from"))?;
        (beneficiary.model, beneficiary.optim) = loaded.pop().expect("two parts");
        (victim.model, victim.optim) = loaded.pop().expect("two parts");
        victim.state = state.victim.clone();
        keep_lines(&metrics_path, state.metrics_lines)?;
        observer.start_after(state.victim.refreshes)?;
        state
    } else {
        // Stage 1.
        let _ = std::fs::remove_file(&metrics_path);
        observer.start_after(0)?;
        let split = warm_up(&mut victim, &ctx, vab, observer)?;
        let victim_suspicious = vab.label_check.is_some().then(|| split.suspicious.clone());
        let (split, label_filter) = match &vab.label_check {
            Some(params) => check_labels_after_warm_up(&ctx, config, params, split)?,
            None => (split, None),
        };
        let wall_s = elapsed(0.0);
        let state = RunState {
            beneficiary_epochs: 0,
            victim: victim.state.clone(),
            split,
            stages: vec![StageTime { stage: Stage::WarmUp, wall_s }],
            stage_s: 0.0,
            after_stage2: None,
            last: None,
            rates: Vec::new(),
            wall_s,
            metrics_lines: line_count(&metrics_path)?,
            victim_suspicious: label_filter.as_ref().and(victim_suspicious),
            label_filter,
        };
        save(&victim, &beneficiary, &state)?;
        state
    };

    // Stages 2 and 3.
    let epochs = config.train.epochs;
    let stage3_epochs = epochs - vab.stage2_epochs;
    let (wall_before, mut stage_before) = (state.wall_s - elapsed(0.0), state.stage_s - elapsed(0.0));
    for epoch in state.beneficiary_epochs + 1..=epochs {
        let stage = if epoch <= vab.stage2_epochs { Stage::Clean } else { Stage::Suppression };
        let temperature = Some(vab.temperature);
        let suppression = (stage == Stage::Suppression).then(|| Suppression {
            alpha: vab.ablation.semi_supervised.then(|| vab.alpha_at(epoch - vab.stage2_epochs - 1, stage3_epochs)),
            credible: temperature.filter(|_| vab.ablation.suppress_credible),
            credible_labels: state.label_filter.as_ref().map(|filter| filter.labels.clone()),
            suspicious: temperature.filter(|_| vab.ablation.suppress_suspicious),
        });
        let stats = beneficiary.train_epoch(&ctx, config, vab, epoch, &state.split, suppression.as_ref())?;
        state.rates.push(stats.img_s);
        if stage == Stage::Suppression || epoch % vab.refresh_every == 0 {
            victim.train_epoch(&ctx, state.victim_suspicious.as_ref().unwrap_or(&state.split.suspicious))?;
            let split = victim.split_at(&ctx, vab, state.split.t_f);
            state.split = match &state.label_filter {
                Some(filter) => {
                    state.victim_suspicious = Some(split.suspicious.clone());
                    let labels = ctx.train.images.labels();
                    split.narrow_to(|i| filter.suspects(i, labels))
                }
                None => split,
            };
            victim.tell(&ctx, observer, &state.split, stage, epoch)?;
        }
        let stage_ends = epoch == vab.stage2_epochs || epoch == epochs;
        let due = epoch % config.data.eval_every == 0 || stage_ends;
        let metrics = due.then(|| evaluate(&beneficiary.model.valid(), evals, &ctx.norm, config.data.eval_batch_size, &inference));
        if let Some(m) = &metrics {
            progress.finish(&format!("beneficiary epoch {epoch}: {}", m.describe()));
        }
        ctx.record(&Event::Beneficiary { epoch, stage, lr: stats.lr, loss: stats.loss, img_s: stats.img_s, mix_partner_share: stats.mix_partner_share, suppression: stats.suppression.clone(), metrics: metrics.clone() })?;
        state.stage_s = elapsed(stage_before);
        if stage_ends {
            state.stages.push(StageTime { stage, wall_s: state.stage_s });
            (state.stage_s, stage_before) = (0.0, -elapsed(0.0));
            if epoch == vab.stage2_epochs {
                state.after_stage2 = metrics.clone();
            }
        }
        state.last = metrics.or(state.last.take());
        state.beneficiary_epochs = epoch;
        state.victim = victim.state.clone();
        state.wall_s = elapsed(wall_before);
        state.metrics_lines = line_count(&metrics_path)?;
        save(&victim, &beneficiary, &state)?;
    }
    let metrics = state.last.expect("train.epochs ≥ 1 and the last epoch is always evaluated");
    let shape = ctx.train.images.shape();
    let card = ModelCard { arch: ctx.arch, in_channels: shape.channels, num_classes: ctx.train.num_classes, normalization: ctx.norm.clone(), image_size: Some([shape.height, shape.width]) };
    export_pytorch(&beneficiary.model.valid(), &card, &run.join("model.safetensors"))?;
    export_pytorch(&victim.model.valid(), &card, &run.join("victim.safetensors"))?;
    let summary = Summary::new("vab", metrics, epochs, members.len(), elapsed(wall_before), state.rates);
    Ok(Outcome { summary, after_stage2: state.after_stage2, stages: state.stages, split: state.split, members })
}

/// The label check after warm-up (beyond the paper): the split narrowed to what the check
/// suspects, and the filter that narrows every later split; the split unchanged and no filter
/// when no label holds poison.
fn check_labels_after_warm_up(ctx: &Context, config: &TrainConfig, params: &LabelCheckParams, split: Split) -> Result<(Split, Option<LabelFilter>)> {
    let mut checker = config.clone();
    checker.train.epochs = params.epochs;
    let check = check_labels(ctx, &checker, &split)?;
    ctx.record(&Event::LabelCheck { labels: check.labels.clone() })?;
    let Some(filter) = check.filter() else {
        ctx.progress.finish("label check: no label holds poison; the split stays as the entropy made it");
        return Ok((split, None));
    };
    let labels = ctx.train.images.labels();
    let narrowed = split.narrow_to(|i| filter.suspects(i, labels));
    ctx.progress.finish(&format!("label check: poison in label(s) {:?}; {} suspicious / {} credible", filter.labels, narrowed.suspicious.len(), narrowed.credible.len()));
    Ok((narrowed, Some(filter)))
}

/// Lines in a text file (0 when it does not exist).
fn line_count(path: &Path) -> Result<usize> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.lines().count()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(CoreError::io(path, e)),
    }
}
