//! A whole ABL run (see [`super`]) and its run directory: `config.toml`, `metrics.jsonl` (one
//! line per epoch, tagged by `phase`), `checkpoint/` (the network, its optimiser and the run
//! state after every epoch), `model.safetensors`; the caller adds `summary.json` and the
//! isolated set's report.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use burn::module::Module;
use serde::{Deserialize, Serialize};

use super::isolation::Isolation;
use crate::backend::Backend;
use crate::config::TrainConfig;
use crate::data::{EvalSets, TrainingSet};
use crate::detection::Detection;
use crate::engine::batches::{epoch_batches, Augment, Normalization, Views};
use crate::engine::checkpoint;
use crate::engine::eval::{evaluate, Metrics};
use crate::engine::export::{export_pytorch, ModelCard};
use crate::engine::optim;
use crate::engine::progress::TrainProgress;
use crate::engine::run::{append_jsonl, epoch_line, keep_lines, training_members, EpochRecord, Summary};
use crate::engine::step::{train_pass, Objective};
use crate::error::{CoreError, Result};
use crate::models::Network;

/// ABL's three phases.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Local gradient ascent on every sample.
    Isolation,
    /// Cross-entropy on the samples not isolated.
    Training,
    /// Gradient ascent on the isolated samples.
    Unlearning,
}

/// One line of an ABL run's `metrics.jsonl`: the epoch (numbered over the whole run) and its
/// phase. The loss is the cross-entropy, whatever the phase optimised.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AblRecord {
    pub phase: Phase,
    #[serde(flatten)]
    pub record: EpochRecord,
}

/// `summary.json` of an ABL run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AblSummary {
    #[serde(flatten)]
    pub summary: Summary,
    /// The network after training on the rest, before unlearning (`None` without unlearning).
    pub before_unlearning: Option<Metrics>,
    pub isolated: usize,
    /// The highest loss among the isolated samples.
    pub loss_cutoff: f64,
    /// The isolated set against the bundle's poison flags (reporting only).
    pub detection: Option<Detection>,
}

/// What an ABL run returns.
pub struct Outcome {
    pub summary: Summary,
    pub before_unlearning: Option<Metrics>,
    pub isolation: Isolation,
    /// `members[i]` is the bundle index of training sample i.
    pub members: Vec<usize>,
}

impl Outcome {
    /// The summary, with the caller's detection figures.
    pub fn summary(&self, detection: Option<Detection>) -> AblSummary {
        let loss_cutoff = self.isolation.isolated.last().map_or(f64::NAN, |&i| self.isolation.losses[i]);
        AblSummary { summary: self.summary.clone(), before_unlearning: self.before_unlearning.clone(), isolated: self.isolation.isolated.len(), loss_cutoff, detection }
    }
}

/// Where an ABL run stands after a finished epoch (checkpointed).
#[derive(Serialize, Deserialize)]
struct RunState {
    epochs_done: usize,
    isolation: Option<Isolation>,
    before_unlearning: Option<Metrics>,
    last: Option<Metrics>,
    rates: Vec<f64>,
    wall_s: f64,
}

/// Runs ABL with `config` (its `[abl]` section must be present) into `run`: `train.epochs`
/// epochs, the first `abl.isolation_epochs` of them isolating, then `abl.unlearning_epochs`.
/// With `resume`, continues from the checkpoint of the last finished epoch, ending exactly as
/// an uninterrupted run would.
pub fn train_abl(config: &TrainConfig, backend: Backend, train: &TrainingSet, evals: &EvalSets, run: &Path, resume: bool, progress: &dyn TrainProgress) -> Result<Outcome> {
    let abl = config.abl.as_ref().ok_or_else(|| CoreError::Invalid("--defense abl needs an [abl] section in the configuration (see configs/cpu-cifar10.toml)".into()))?;
    abl.fits(config.train.epochs).map_err(CoreError::Invalid)?;
    let start = Instant::now();
    std::fs::create_dir_all(run).map_err(|e| CoreError::io(run, e))?;
    let inference = backend.device().map_err(CoreError::Invalid)?;
    let device = inference.clone().autodiff();
    device.seed(config.train.seed);
    let members = training_members(config, train.images.len());
    // Normalised as the no-defense run, by the whole training set's statistics.
    let norm = Normalization::of(&train.images);
    let set = TrainingSet { images: Arc::new(train.images.select(&members)), num_classes: train.num_classes };
    let shape = set.images.shape();
    let mut model = Network::new(config.model.arch, shape.channels, set.num_classes, &device);
    let mut optim = optim::build(&config.train.optimizer);
    let metrics_path = run.join("metrics.jsonl");
    let mut state = RunState { epochs_done: 0, isolation: None, before_unlearning: None, last: None, rates: Vec::new(), wall_s: 0.0 };
    if resume {
        let (mut parts, s) = checkpoint::load(run, vec![("model", model, optim)])?.ok_or_else(|| CoreError::file(run.join("checkpoint"), "no checkpoint to resume from"))?;
        ((model, optim), state) = (parts.remove(0), s);
        keep_lines(&metrics_path, state.epochs_done)?;
    } else {
        let _ = std::fs::remove_file(&metrics_path);
    }

    let wall_before = state.wall_s;
    let (training_epochs, iso_epochs) = (config.train.epochs, abl.isolation_epochs);
    let epochs = training_epochs + abl.unlearning_epochs;
    let everyone: Vec<usize> = (0..set.images.len()).collect();
    for epoch in state.epochs_done..epochs {
        if epoch >= iso_epochs && state.isolation.is_none() {
            let isolation = Isolation::of(&model.valid(), &set, &norm, config.data.eval_batch_size, abl.isolation_ratio, &inference);
            progress.finish(&format!("isolated {} of {} samples (loss ≤ {:.4})", isolation.isolated.len(), everyone.len(), isolation.isolated.last().map_or(f64::NAN, |&i| isolation.losses[i])));
            state.isolation = Some(isolation);
            // The official code's training on the rest starts a new optimiser.
            optim = optim::build(&config.train.optimizer);
        }
        let schedule_lr = config.train.schedule.lr(config.train.lr, epoch.min(training_epochs - 1), training_epochs);
        let (phase, samples, augment, lr, objective, batch_size, phase_epoch, phase_epochs) = match (epoch < iso_epochs, epoch < training_epochs, &state.isolation) {
            (true, _, _) => (Phase::Isolation, everyone.clone(), Augment::NONE, schedule_lr, Objective::LocalAscent { gamma: abl.gamma as f32 }, config.train.batch_size, epoch, iso_epochs),
            (false, true, Some(isolation)) => (Phase::Training, isolation.rest(), config.train.augment, schedule_lr, Objective::Descent, config.train.batch_size, epoch - iso_epochs, training_epochs - iso_epochs),
            (false, false, Some(isolation)) => (Phase::Unlearning, isolation.isolated.clone(), Augment::NONE, abl.unlearning_lr, Objective::Ascent, abl.unlearning_batch_size.unwrap_or(config.train.batch_size), epoch - training_epochs, abl.unlearning_epochs),
            (false, _, None) => unreachable!("the isolation is made before the first epoch after it"),
        };
        let label = format!("{} {}/{phase_epochs}", phase_name(phase), phase_epoch + 1);
        progress.start(&label, samples.len().div_ceil(batch_size), samples.len());
        let epoch_start = Instant::now();
        let batches = epoch_batches(set.images.clone(), &samples, batch_size, Views::one(augment, norm.clone()), config.train.seed, epoch);
        let loss;
        (model, loss) = train_pass(model, &mut optim, batches, set.num_classes, lr, objective, &device, config.train.allow_nan, &label, progress)?;
        let img_s = samples.len() as f64 / epoch_start.elapsed().as_secs_f64();
        state.rates.push(img_s);
        let phase_ends = phase_epoch + 1 == phase_epochs;
        let due = (epoch + 1) % config.data.eval_every == 0 || phase_ends;
        let metrics = due.then(|| evaluate(&model.valid(), evals, &norm, config.data.eval_batch_size, &inference));
        let record = AblRecord { phase, record: EpochRecord { epoch: epoch + 1, lr, loss, img_s, metrics: metrics.clone() } };
        progress.finish(&format!("{}: {}", phase_name(phase), epoch_line(&record.record)));
        append_jsonl(&metrics_path, &record)?;
        if phase == Phase::Training && phase_ends && abl.unlearning_epochs > 0 {
            state.before_unlearning = metrics.clone();
        }
        state.last = metrics.or(state.last.take());
        state.epochs_done = epoch + 1;
        state.wall_s = wall_before + start.elapsed().as_secs_f64();
        checkpoint::save(run, &[("model", &model, &optim)], &state)?;
    }
    let isolation = match state.isolation {
        Some(isolation) => isolation,
        // Every epoch isolated and nothing was unlearnt: the isolation is still reported.
        None => Isolation::of(&model.valid(), &set, &norm, config.data.eval_batch_size, abl.isolation_ratio, &inference),
    };
    let metrics = state.last.expect("every phase's last epoch is evaluated");
    let card = ModelCard { arch: config.model.arch, in_channels: shape.channels, num_classes: set.num_classes, normalization: norm, image_size: Some([shape.height, shape.width]) };
    export_pytorch(&model.valid(), &card, &run.join("model.safetensors"))?;
    let summary = Summary::new("abl", metrics, epochs, members.len(), wall_before + start.elapsed().as_secs_f64(), state.rates);
    Ok(Outcome { summary, before_unlearning: state.before_unlearning, isolation, members })
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Isolation => "isolation",
        Phase::Training => "training",
        Phase::Unlearning => "unlearning",
    }
}
