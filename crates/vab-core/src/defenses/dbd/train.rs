//! A whole DBD run (see [`super`]) on the shared [`PhasedRun`] loop: phases `simclr`, `warmup`
//! and `semi`; the caller adds `summary.json` with the final split scored against the poison
//! flags.

use std::path::Path;

use burn::module::Module;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

use super::mixmatch::{mixmatch_step, ramped, MixMatch};
use super::simclr::{contrastive_step, ProjectionHead};
use super::split::{linear_step, losses, lowest_share, Sce};
use crate::backend::Backend;
use crate::config::{OptimizerConfig, TrainConfig};
use crate::data::{EvalSets, TrainingSet};
use crate::defenses::phased::{PhasedRun, Plan};
use crate::defenses::vab::semi_supervised::unlabelled_batch;
use crate::detection::Detection;
use crate::engine::batches::{derive, epoch_order, make_views, Augment, Views};
use crate::engine::checkpoint;
use crate::engine::eval::Metrics;
use crate::engine::optim;
use crate::engine::progress::TrainProgress;
use crate::engine::run::Summary;
use crate::engine::schedule::Schedule;
use crate::error::{CoreError, Result};

/// Seed of DBD's own streams (split augmentation, unlabelled batches, MixUp), apart from the batches'.
const STREAM: u64 = 0x6462_6400;

/// `summary.json` of a DBD run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DbdSummary {
    #[serde(flatten)]
    pub summary: Summary,
    /// SimCLR's loss in its last epoch (`None` without SimCLR epochs).
    pub simclr_loss: Option<f64>,
    /// The linear head on the self-supervised backbone, after the warm-up.
    pub after_warmup: Option<Metrics>,
    /// Size of the last fine-tuning epoch's labelled set, and per training label: a weak
    /// network fits some classes worse than the poison and leaves them mostly unlabelled.
    pub labelled: usize,
    #[serde(default)]
    pub labelled_per_class: Vec<usize>,
    /// Its unlabelled rest against the bundle's poison flags (reporting only).
    pub detection: Option<Detection>,
}

/// What a DBD run returns.
pub struct Outcome {
    pub summary: Summary,
    pub simclr_loss: Option<f64>,
    pub after_warmup: Option<Metrics>,
    /// Positions of the last fine-tuning epoch's labelled samples, and their count per label.
    pub labelled: Vec<usize>,
    pub labelled_per_class: Vec<usize>,
    /// `members[i]` is the bundle index of training sample i.
    pub members: Vec<usize>,
}

impl Outcome {
    /// Per training sample, whether the last split left it unlabelled (DBD's suspicious set).
    pub fn unlabelled_flags(&self) -> Vec<bool> {
        let mut flags = vec![true; self.members.len()];
        self.labelled.iter().for_each(|&i| flags[i] = false);
        flags
    }

    /// The summary, with the caller's detection figures.
    pub fn summary(&self, detection: Option<Detection>) -> DbdSummary {
        DbdSummary { summary: self.summary.clone(), simclr_loss: self.simclr_loss, after_warmup: self.after_warmup.clone(), labelled: self.labelled.len(), labelled_per_class: self.labelled_per_class.clone(), detection }
    }
}

/// DBD's part of the checkpoint; the projection head and its optimiser are saved beside the
/// network while SimCLR trains.
#[derive(Default, Serialize, Deserialize)]
struct DbdState {
    simclr_loss: Option<f64>,
    after_warmup: Option<Metrics>,
    labelled: Vec<usize>,
}

/// Runs DBD with `config` (its `[dbd]` section must be present) into `run`: `dbd.simclr_epochs`
/// of SimCLR, `dbd.warmup_epochs` of the linear head and `dbd.semi_epochs` of MixMatch. With
/// `resume`, continues from the checkpoint of the last finished epoch, ending exactly as an
/// uninterrupted run would.
pub fn train_dbd(config: &TrainConfig, backend: Backend, train: &TrainingSet, evals: &EvalSets, run: &Path, resume: bool, progress: &dyn TrainProgress) -> Result<Outcome> {
    let dbd = config.dbd.as_ref().ok_or_else(|| CoreError::Invalid("--defense dbd needs a [dbd] section in the configuration (see configs/cpu-cifar10.toml)".into()))?;
    let (mut phased, saved) = PhasedRun::start::<DbdState>(config, backend, train, evals, run, resume, progress)?;
    let mut state = saved.unwrap_or_default();
    let (simclr_end, warmup_end) = (dbd.simclr_epochs, dbd.simclr_epochs + dbd.warmup_epochs);
    let epochs = warmup_end + dbd.semi_epochs;
    let (classes, device, inference) = (phased.set.num_classes, phased.device.clone(), phased.inference.clone());
    let seed = config.train.seed ^ STREAM;
    let everyone: Vec<usize> = (0..phased.set.images.len()).collect();
    let width = phased.model.feature_width();
    let mut head = Some(ProjectionHead::new(width, dbd.projection_dim, &device));
    let mut head_optim = optim::build(&dbd.simclr_optimizer);
    if phased.epochs_done == 0 && simclr_end > 0 {
        phased.restart_optimiser(&dbd.simclr_optimizer);
    } else if phased.epochs_done < simclr_end {
        let reader = checkpoint::Reader::open(run).ok_or_else(|| CoreError::file(run.join("checkpoint"), "no checkpoint to resume from"))?;
        head = Some(reader.network("head", ProjectionHead::new(width, dbd.projection_dim, &device))?);
        head_optim = reader.optimizer("head", head_optim)?;
    }
    let adam = OptimizerConfig::Adam { weight_decay: 0.0 };
    let sce = Sce { alpha: dbd.sce_alpha, beta: dbd.sce_beta };
    while phased.epochs_done < epochs {
        let epoch = phased.epochs_done;
        if epoch < simclr_end {
            let augment = Augment { crop_padding: 0, flip: dbd.augment.flip, contrastive: Some(dbd.simclr_augment) };
            let lr = Schedule::Cosine { min_lr: 0.0 }.lr(dbd.simclr_lr, epoch, simclr_end);
            let plan = Plan { views: 2, phase: "simclr", phase_epoch: epoch, phase_epochs: simclr_end, samples: everyone.clone(), augment, lr, batch_size: dbd.simclr_batch_size };
            let mut losses_sum = (0.0, 0usize);
            phased.epoch(&plan, |m, optim, b| {
                let (m, h, loss) = contrastive_step(m, head.take().expect("the head is kept"), [optim, &mut head_optim], b, lr, dbd.temperature, &device);
                head = Some(h);
                losses_sum = (losses_sum.0 + loss as f64, losses_sum.1 + 1);
                (m, loss)
            })?;
            state.simclr_loss = Some(losses_sum.0 / losses_sum.1.max(1) as f64);
            if epoch + 1 == simclr_end {
                // SimCLR is over: the head goes; the warm-up and the fine-tuning share one Adam.
                phased.restart_optimiser(&adam);
                phased.save(&state)?;
            } else {
                let head = head.as_ref().expect("the head is kept");
                phased.save_with(&state, |w| w.network("head", head, Some(&head_optim)))?;
            }
            continue;
        }
        if epoch == 0 {
            // No SimCLR epochs: the warm-up starts from the untrained network.
            phased.restart_optimiser(&adam);
        }
        if epoch < warmup_end {
            let plan = Plan { views: 1, phase: "warmup", phase_epoch: epoch - simclr_end, phase_epochs: dbd.warmup_epochs, samples: everyone.clone(), augment: dbd.augment, lr: dbd.lr, batch_size: dbd.warmup_batch_size };
            let metrics = phased.epoch(&plan, |m, optim, b| linear_step(m, optim, b, classes, dbd.lr, &device, sce))?;
            if epoch + 1 == warmup_end {
                state.after_warmup = metrics;
            }
            phased.save(&state)?;
            continue;
        }
        let semi_epoch = epoch - warmup_end;
        let view = Views::one(dbd.augment, phased.norm.clone());
        let split_losses = losses(&phased.model.valid(), &phased.set, &view, sce, config.data.eval_batch_size, derive(seed, epoch, 0, 0, 1), &inference);
        state.labelled = lowest_share(&split_losses, phased.set.images.labels(), dbd.epsilon, dbd.split);
        if state.labelled.is_empty() {
            return Err(CoreError::Invalid(format!("dbd.epsilon {} of {} training samples labels none; raise it or train on more samples", dbd.epsilon, everyone.len())));
        }
        let mut is_labelled = vec![false; everyone.len()];
        state.labelled.iter().for_each(|&i| is_labelled[i] = true);
        let unlabelled: Vec<usize> = everyone.iter().copied().filter(|&i| !is_labelled[i]).collect();
        let cutoff = state.labelled.iter().map(|&i| split_losses[i]).fold(f32::MIN, f32::max);
        phased.progress.finish(&format!("split: {} labelled (SCE ≤ {cutoff:.4}), {} unlabelled", state.labelled.len(), unlabelled.len()));
        let steps = dbd.iterations.unwrap_or_else(|| (state.labelled.len() / dbd.semi_batch_size).max(1));
        let samples: Vec<usize> = (0..steps * dbd.semi_batch_size).map(|i| state.labelled[i % state.labelled.len()]).collect();
        let plan = Plan { views: 1, phase: "semi", phase_epoch: semi_epoch, phase_epochs: dbd.semi_epochs, samples, augment: dbd.augment, lr: dbd.lr, batch_size: dbd.semi_batch_size };
        let unlabelled_order = epoch_order(&unlabelled, seed ^ 2, epoch);
        let views = Views { count: 2, augment: dbd.augment, norm: phased.norm.clone() };
        let images = phased.set.images.clone();
        let mut step = 0;
        phased.epoch(&plan, |m, optim, b| {
            let indices = unlabelled_batch(&unlabelled_order, step, dbd.semi_batch_size);
            let u = make_views(&images, &indices, &views, seed ^ 3, epoch, step);
            let lambda_u = ramped(dbd.lambda_u, (dbd.warmup_epochs + semi_epoch) as f64 + step as f64 / steps as f64, dbd.rampup_epochs);
            let mixmatch = MixMatch { temperature: dbd.sharpen_temperature, alpha: dbd.mix_alpha, lambda_u };
            let mut rng = ChaCha20Rng::seed_from_u64(derive(seed, epoch, step, 0, 5));
            step += 1;
            mixmatch_step(m, optim, b, u, classes, dbd.lr, mixmatch, &mut rng, &device)
        })?;
        phased.save(&state)?;
    }
    let mut labelled_per_class = vec![0; classes];
    state.labelled.iter().for_each(|&i| labelled_per_class[phased.set.images.labels()[i] as usize] += 1);
    let members = phased.members.clone();
    let summary = phased.finish("dbd")?;
    Ok(Outcome { summary, simclr_loss: state.simclr_loss, after_warmup: state.after_warmup, labelled: state.labelled, labelled_per_class, members })
}
