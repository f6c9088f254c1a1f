//! A whole Fine-Pruning run (see [`super`]) on the shared [`PhasedRun`] loop: phases
//! `training` (as with no defense) and `fine_tuning`, the pruning between them; the caller
//! draws the clean reserve and adds `summary.json`.

use std::path::Path;

use burn::module::Module;
use serde::{Deserialize, Serialize};

use super::pruning::Pruning;
use crate::backend::Backend;
use crate::config::TrainConfig;
use crate::data::{EvalSets, TrainingSet};
use crate::defenses::phased::{PhasedRun, Plan};
use crate::engine::eval::Metrics;
use crate::engine::progress::TrainProgress;
use crate::engine::run::Summary;
use crate::engine::schedule::Schedule;
use crate::engine::step::{objective_step, Objective};
use crate::error::{CoreError, Result};

/// `summary.json` of a Fine-Pruning run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FpSummary {
    #[serde(flatten)]
    pub summary: Summary,
    /// The clean reserve's size (an assumption train-time defenses do not make).
    pub clean_reserve: usize,
    /// The network as no defense leaves it, and right after the pruning.
    pub before_pruning: Option<Metrics>,
    pub after_pruning: Option<Metrics>,
    /// Channels cut, of how many.
    pub pruned_channels: usize,
    pub channels: usize,
    /// The reserve's accuracy, percent, with the channels cut and unpruned.
    pub reserve_accuracy: f64,
    pub reserve_accuracy_unpruned: f64,
}

/// What a Fine-Pruning run returns.
pub struct Outcome {
    pub summary: Summary,
    pub before_pruning: Option<Metrics>,
    pub after_pruning: Option<Metrics>,
    pub pruning: Pruning,
    /// `members[i]` is the bundle index of training sample i.
    pub members: Vec<usize>,
}

impl Outcome {
    /// The summary of a run whose reserve held `clean_reserve` samples.
    pub fn summary(&self, clean_reserve: usize) -> FpSummary {
        let p = &self.pruning;
        let accuracy_at = |k: usize| p.sweep.iter().find(|s| s.0 == k).map_or(f64::NAN, |s| s.1);
        FpSummary {
            summary: self.summary.clone(),
            clean_reserve,
            before_pruning: self.before_pruning.clone(),
            after_pruning: self.after_pruning.clone(),
            pruned_channels: p.pruned,
            channels: p.order.len(),
            reserve_accuracy: accuracy_at(p.pruned),
            reserve_accuracy_unpruned: accuracy_at(0),
        }
    }
}

/// Fine-Pruning's part of the checkpoint.
#[derive(Default, Serialize, Deserialize)]
struct FpState {
    pruning: Option<Pruning>,
    before_pruning: Option<Metrics>,
    after_pruning: Option<Metrics>,
}

/// Runs Fine-Pruning with `config` (its `[fp]` section must be present) into `run`:
/// `train.epochs` epochs on every sample, the pruning, then `fp.finetune_epochs` on the clean
/// `reserve` (positions among the training samples, see [`crate::engine::run::training_members`]).
/// With `resume`, continues from the checkpoint of the last finished epoch.
#[allow(clippy::too_many_arguments)]
pub fn train_fp(config: &TrainConfig, backend: Backend, train: &TrainingSet, evals: &EvalSets, reserve: &[usize], run: &Path, resume: bool, progress: &dyn TrainProgress) -> Result<Outcome> {
    let fp = config.fp.as_ref().ok_or_else(|| CoreError::Invalid("--defense fp needs an [fp] section in the configuration (see configs/cpu-cifar10.toml)".into()))?;
    let (mut phased, saved) = PhasedRun::start::<FpState>(config, backend, train, evals, run, resume, progress)?;
    let mut state = saved.unwrap_or_default();
    let reserve_set = phased.set.images.select(reserve);
    let training_epochs = config.train.epochs;
    let epochs = training_epochs + fp.finetune_epochs;
    let samples = phased.set.images.len();
    let (classes, device) = (phased.set.num_classes, phased.device.clone());
    let cosine = Schedule::Cosine { min_lr: 0.0 };
    while phased.epochs_done < epochs || (state.pruning.is_none() && phased.epochs_done == training_epochs) {
        let epoch = phased.epochs_done;
        if epoch >= training_epochs && state.pruning.is_none() {
            let pruning = Pruning::of(&phased.model.valid(), &reserve_set, &phased.norm, config.data.eval_batch_size, fp.prune_step, fp.max_accuracy_drop, &phased.inference);
            phased.model = phased.model.clone().without_head_inputs(pruning.channels());
            state.after_pruning = Some(phased.evaluate());
            let told = state.after_pruning.as_ref().map_or(String::new(), |m| m.describe());
            progress.finish(&format!("pruned {} of {} channels (reserve accuracy {:.2}% → {:.2}%): {told}", pruning.pruned, pruning.order.len(), pruning.sweep[0].1, pruning.sweep.iter().find(|s| s.0 == pruning.pruned).map_or(f64::NAN, |s| s.1)));
            state.pruning = Some(pruning);
            phased.restart_optimiser(&config.train.optimizer);
            phased.save(&state)?;
            continue;
        }
        let (plan, cut) = match &state.pruning {
            None => (Plan::no_defense(config, epoch, samples), Vec::new()),
            Some(pruning) => {
                let e = epoch - training_epochs;
                let batch_size = fp.finetune_batch_size.unwrap_or(config.train.batch_size);
                (Plan { views: 1, phase: "fine_tuning", phase_epoch: e, phase_epochs: fp.finetune_epochs, samples: reserve.to_vec(), augment: config.train.augment, lr: cosine.lr(fp.finetune_lr, e, fp.finetune_epochs), batch_size }, pruning.channels().to_vec())
            }
        };
        let metrics = phased.epoch(&plan, |m, optim, b| {
            let (m, loss) = objective_step(m, optim, b, classes, plan.lr, &device, Objective::Descent);
            (if cut.is_empty() { m } else { m.without_head_inputs(&cut) }, loss)
        })?;
        if plan.phase == "training" && plan.phase_epoch + 1 == training_epochs {
            state.before_pruning = metrics;
        }
        phased.save(&state)?;
    }
    let pruning = state.pruning.take().expect("the pruning follows the training epochs");
    let members = phased.members.clone();
    let summary = phased.finish("fp")?;
    Ok(Outcome { summary, before_pruning: state.before_pruning, after_pruning: state.after_pruning, pruning, members })
}
