//! A whole NAD run (see [`super`]) on the shared [`PhasedRun`] loop: phases `training` (as with
//! no defense), `teacher` and `distillation`; the caller draws the clean reserve and adds
//! `summary.json`.

use std::path::Path;

use burn::module::Module;
use serde::{Deserialize, Serialize};

use super::attention::{distillation_step, Distillation};
use crate::backend::Backend;
use crate::config::TrainConfig;
use crate::data::{EvalSets, TrainingSet};
use crate::defenses::phased::{PhasedRun, Plan};
use crate::engine::eval::Metrics;
use crate::engine::progress::TrainProgress;
use crate::engine::run::Summary;
use crate::engine::step::train_step;
use crate::error::{CoreError, Result};

/// `summary.json` of a NAD run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NadSummary {
    #[serde(flatten)]
    pub summary: Summary,
    /// The clean reserve's size (an assumption train-time defenses do not make).
    pub clean_reserve: usize,
    /// The network as no defense leaves it, and the teacher fine-tuned from it.
    pub before_distillation: Option<Metrics>,
    pub teacher: Option<Metrics>,
}

/// What a NAD run returns.
pub struct Outcome {
    pub summary: Summary,
    pub before_distillation: Option<Metrics>,
    pub teacher: Option<Metrics>,
    /// `members[i]` is the bundle index of training sample i.
    pub members: Vec<usize>,
}

impl Outcome {
    /// The summary of a run whose reserve held `clean_reserve` samples.
    pub fn summary(&self, clean_reserve: usize) -> NadSummary {
        NadSummary { summary: self.summary.clone(), clean_reserve, before_distillation: self.before_distillation.clone(), teacher: self.teacher.clone() }
    }
}

/// NAD's part of the checkpoint. The run's frozen network is the backdoored one while the
/// teacher fine-tunes, and the teacher once `distilling`.
#[derive(Default, Serialize, Deserialize)]
struct NadState {
    distilling: bool,
    before_distillation: Option<Metrics>,
    teacher: Option<Metrics>,
}

/// Runs NAD with `config` (its `[nad]` section must be present) into `run`: `train.epochs`
/// epochs on every sample, then on the clean `reserve` (positions among the training samples,
/// see [`crate::engine::run::training_members`]) `nad.teacher_epochs` of fine-tuning a copy
/// into the teacher and `nad.epochs` of distilling it into the trained network. With `resume`,
/// continues from the checkpoint of the last finished epoch.
#[allow(clippy::too_many_arguments)]
pub fn train_nad(config: &TrainConfig, backend: Backend, train: &TrainingSet, evals: &EvalSets, reserve: &[usize], run: &Path, resume: bool, progress: &dyn TrainProgress) -> Result<Outcome> {
    let nad = config.nad.as_ref().ok_or_else(|| CoreError::Invalid("--defense nad needs a [nad] section in the configuration (see configs/cpu-cifar10.toml)".into()))?;
    let (mut phased, saved) = PhasedRun::start::<NadState>(config, backend, train, evals, run, resume, progress)?;
    let mut state = saved.unwrap_or_default();
    let training = config.train.epochs;
    let teacher_end = training + nad.teacher_epochs;
    let epochs = teacher_end + nad.epochs;
    let samples = phased.set.images.len();
    let (classes, device, inference) = (phased.set.num_classes, phased.device.clone(), phased.inference.clone());
    loop {
        let epoch = phased.epochs_done;
        if !state.distilling && epoch == training && phased.frozen.is_none() {
            // Keep the backdoored network; its copy trains on into the teacher.
            phased.frozen = Some(phased.model.valid());
            phased.restart_optimiser(&config.train.optimizer);
            phased.save(&state)?;
            continue;
        }
        if !state.distilling && epoch == teacher_end {
            let backdoored = phased.frozen.replace(phased.model.valid()).expect("the backdoored network was kept");
            phased.model = backdoored.fork(&device).train();
            phased.restart_optimiser(&config.train.optimizer);
            state.distilling = true;
            phased.save(&state)?;
            continue;
        }
        if epoch == epochs {
            break;
        }
        let on_reserve = |phase, phase_epoch, phase_epochs| Plan { views: 1, phase, phase_epoch, phase_epochs, samples: reserve.to_vec(), augment: nad.augment, lr: nad.schedule.lr(nad.lr, phase_epoch, phase_epochs), batch_size: nad.batch_size };
        if state.distilling {
            let plan = on_reserve("distillation", epoch - teacher_end, nad.epochs);
            let teacher = phased.frozen.clone().expect("the teacher is kept");
            let distillation = Distillation { teacher: &teacher, betas: nad.betas, power: nad.power };
            phased.epoch(&plan, |m, optim, b| distillation_step(m, optim, b, classes, plan.lr, &device, &inference, distillation))?;
        } else if epoch < training {
            let plan = Plan::no_defense(config, epoch, samples);
            let metrics = phased.epoch(&plan, |m, optim, b| train_step(m, optim, b, classes, plan.lr, &device))?;
            if epoch + 1 == training {
                state.before_distillation = metrics;
            }
        } else {
            let plan = on_reserve("teacher", epoch - training, nad.teacher_epochs);
            let metrics = phased.epoch(&plan, |m, optim, b| train_step(m, optim, b, classes, plan.lr, &device))?;
            if epoch + 1 == teacher_end {
                state.teacher = metrics;
            }
        }
        phased.save(&state)?;
    }
    let members = phased.members.clone();
    let summary = phased.finish("nad")?;
    Ok(Outcome { summary, before_distillation: state.before_distillation, teacher: state.teacher, members })
}
