//! A whole ABL run (see [`super`]) on the shared [`PhasedRun`] loop: phases `isolation`,
//! `training` and `unlearning`; the caller adds `summary.json` and the isolated set's report.

use std::path::Path;

use burn::module::Module;
use serde::{Deserialize, Serialize};

use super::isolation::Isolation;
use crate::backend::Backend;
use crate::config::TrainConfig;
use crate::data::{EvalSets, TrainingSet};
use crate::defenses::phased::{PhasedRun, Plan};
use crate::detection::Detection;
use crate::engine::batches::Augment;
use crate::engine::eval::Metrics;
use crate::engine::progress::TrainProgress;
use crate::engine::run::Summary;
use crate::engine::step::{objective_step, Objective};
use crate::error::{CoreError, Result};

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

/// ABL's part of the checkpoint.
#[derive(Default, Serialize, Deserialize)]
struct AblState {
    isolation: Option<Isolation>,
    before_unlearning: Option<Metrics>,
}

/// Runs ABL with `config` (its `[abl]` section must be present) into `run`: `train.epochs`
/// epochs, the first `abl.isolation_epochs` of them isolating, then `abl.unlearning_epochs`.
/// With `resume`, continues from the checkpoint of the last finished epoch, ending exactly as
/// an uninterrupted run would.
pub fn train_abl(config: &TrainConfig, backend: Backend, train: &TrainingSet, evals: &EvalSets, run: &Path, resume: bool, progress: &dyn TrainProgress) -> Result<Outcome> {
    let abl = config.abl.as_ref().ok_or_else(|| CoreError::Invalid("--defense abl needs an [abl] section in the configuration (see configs/cpu-cifar10.toml)".into()))?;
    abl.fits(config.train.epochs).map_err(CoreError::Invalid)?;
    let (mut phased, saved) = PhasedRun::start::<AblState>(config, backend, train, evals, run, resume, progress)?;
    let mut state = saved.unwrap_or_default();
    let (training_epochs, iso_epochs) = (config.train.epochs, abl.isolation_epochs);
    let epochs = training_epochs + abl.unlearning_epochs;
    let everyone: Vec<usize> = (0..phased.set.images.len()).collect();
    let (classes, device) = (phased.set.num_classes, phased.device.clone());
    while phased.epochs_done < epochs {
        let epoch = phased.epochs_done;
        if epoch >= iso_epochs && state.isolation.is_none() {
            state.isolation = Some(isolate(&phased, abl.isolation_ratio));
            // The official code's training on the rest starts a new optimiser.
            phased.restart_optimiser(&config.train.optimizer);
        }
        let schedule_lr = config.train.schedule.lr(config.train.lr, epoch.min(training_epochs - 1), training_epochs);
        let (plan, objective) = match (epoch < iso_epochs, epoch < training_epochs, &state.isolation) {
            (true, _, _) => (Plan { views: 1, phase: "isolation", phase_epoch: epoch, phase_epochs: iso_epochs, samples: everyone.clone(), augment: Augment::NONE, lr: schedule_lr, batch_size: config.train.batch_size }, Objective::LocalAscent { gamma: abl.gamma as f32 }),
            (false, true, Some(isolation)) => (Plan { views: 1, phase: "training", phase_epoch: epoch - iso_epochs, phase_epochs: training_epochs - iso_epochs, samples: isolation.rest(), augment: config.train.augment, lr: schedule_lr, batch_size: config.train.batch_size }, Objective::Descent),
            (false, false, Some(isolation)) => {
                let batch_size = abl.unlearning_batch_size.unwrap_or(config.train.batch_size);
                (Plan { views: 1, phase: "unlearning", phase_epoch: epoch - training_epochs, phase_epochs: abl.unlearning_epochs, samples: isolation.isolated.clone(), augment: Augment::NONE, lr: abl.unlearning_lr, batch_size }, Objective::Ascent)
            }
            (false, _, None) => unreachable!("the isolation is made before the first epoch after it"),
        };
        let metrics = phased.epoch(&plan, |m, optim, b| objective_step(m, optim, b, classes, plan.lr, &device, objective))?;
        if plan.phase == "training" && plan.phase_epoch + 1 == plan.phase_epochs && abl.unlearning_epochs > 0 {
            state.before_unlearning = metrics;
        }
        phased.save(&state)?;
    }
    // Every epoch isolated and nothing was unlearnt: the isolation is still reported.
    let isolation = state.isolation.take().unwrap_or_else(|| isolate(&phased, abl.isolation_ratio));
    let members = phased.members.clone();
    let summary = phased.finish("abl")?;
    Ok(Outcome { summary, before_unlearning: state.before_unlearning, isolation, members })
}

/// The isolation of `phased`'s network now, told to its progress.
fn isolate(phased: &PhasedRun, ratio: f64) -> Isolation {
    let isolation = Isolation::of(&phased.model.valid(), &phased.set, &phased.norm, phased.config.data.eval_batch_size, ratio, &phased.inference);
    let cutoff = isolation.isolated.last().map_or(f64::NAN, |&i| isolation.losses[i]);
    phased.progress.finish(&format!("isolated {} of {} samples (loss ≤ {cutoff:.3e})", isolation.isolated.len(), isolation.losses.len()));
    isolation
}
