//! The run loop the comparison defenses share: one network trained epoch by epoch in named
//! phases, each epoch as the defense plans it (samples, augmentation, rate, batch size, step),
//! evaluated at the end of every phase and every `data.eval_every` epochs, checkpointed after
//! every epoch with the defense's own state (and a second, frozen network where the defense keeps
//! one), and resumable to the same end.
//!
//! Run directory: `config.toml`, `metrics.jsonl` (one line per epoch, tagged by `phase`),
//! `checkpoint/`, `model.safetensors`; the caller adds `summary.json`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::tensor::Device;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::config::{OptimizerConfig, TrainConfig};
use crate::data::{EvalSets, TrainingSet};
use crate::engine::batches::{epoch_batches, Augment, Batch, Normalization, Views};
use crate::engine::checkpoint;
use crate::engine::eval::{evaluate, Metrics};
use crate::engine::export::{export_pytorch, ModelCard};
use crate::engine::optim;
use crate::engine::progress::TrainProgress;
use crate::engine::run::{append_jsonl, epoch_line, keep_lines, training_members, EpochRecord, Summary};
use crate::engine::step::train_pass;
use crate::error::{CoreError, Result};
use crate::models::Network;

/// One epoch as a defense plans it.
pub struct Plan {
    /// Its phase, as `metrics.jsonl` and the log name it.
    pub phase: &'static str,
    /// Its place in the phase (from 0) and the phase's length.
    pub phase_epoch: usize,
    pub phase_epochs: usize,
    /// Positions of the training samples it passes over.
    pub samples: Vec<usize>,
    /// Independently augmented views of each sample per batch, view after view (see
    /// [`crate::engine::batches::make_views`]); 1 but for contrastive training.
    pub views: usize,
    pub augment: Augment,
    pub lr: f64,
    pub batch_size: usize,
}

impl Plan {
    /// Epoch `epoch` of `[train]` on every one of `samples` training samples, as no defense
    /// trains it (the first phase of the post-training defenses).
    pub fn no_defense(config: &TrainConfig, epoch: usize, samples: usize) -> Self {
        let t = &config.train;
        Plan { views: 1, phase: "training", phase_epoch: epoch, phase_epochs: t.epochs, samples: (0..samples).collect(), augment: t.augment, lr: t.schedule.lr(t.lr, epoch, t.epochs), batch_size: t.batch_size }
    }
}

/// One line of `metrics.jsonl`: the epoch (numbered over the whole run) and its phase.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PhaseRecord {
    pub phase: String,
    #[serde(flatten)]
    pub record: EpochRecord,
}

/// What the checkpoint holds beside the network and its optimiser.
#[derive(Serialize, Deserialize)]
struct Saved<S> {
    epochs_done: usize,
    defense: S,
    last: Option<Metrics>,
    rates: Vec<f64>,
    wall_s: f64,
    /// Whether the checkpoint holds [`PhasedRun::frozen`].
    #[serde(default)]
    frozen: bool,
    /// The optimiser's configuration when not `[train]`'s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    optimizer: Option<OptimizerConfig>,
}

/// A run in progress.
pub struct PhasedRun<'a> {
    pub config: &'a TrainConfig,
    /// The samples trained on (the `data.train_subset` drawn); `members[i]` is the bundle
    /// index of sample i.
    pub set: TrainingSet,
    pub members: Vec<usize>,
    /// Normalised as the no-defense run, by the whole training set's statistics.
    pub norm: Normalization,
    /// Training (autodiff) and inference devices.
    pub device: Device,
    pub inference: Device,
    pub model: Network,
    pub optim: ModuleOptimizer,
    /// The configuration `optim` was built from.
    optimizer: OptimizerConfig,
    /// A network the defense keeps beside the one it trains, on the inference device and never
    /// trained (NAD's teacher); checkpointed with the run.
    pub frozen: Option<Network>,
    /// Epochs finished, over all sessions of the run.
    pub epochs_done: usize,
    pub progress: &'a dyn TrainProgress,
    evals: &'a EvalSets,
    run: PathBuf,
    start: Instant,
    wall_before: f64,
    last: Option<Metrics>,
    rates: Vec<f64>,
}

impl<'a> PhasedRun<'a> {
    /// A new run of `config` on `train` into `run`, or with `resume` the run restored from its
    /// checkpoint; with the defense's state saved there (`None` for a new run).
    pub fn start<S: DeserializeOwned>(config: &'a TrainConfig, backend: Backend, train: &TrainingSet, evals: &'a EvalSets, run: &Path, resume: bool, progress: &'a dyn TrainProgress) -> Result<(Self, Option<S>)> {
        let start = Instant::now();
        std::fs::create_dir_all(run).map_err(|e| CoreError::io(run, e))?;
        let inference = backend.device().map_err(CoreError::Invalid)?;
        let device = inference.clone().autodiff();
        device.seed(config.train.seed);
        let members = training_members(config, train.images.len());
        let norm = Normalization::of(&train.images);
        let set = TrainingSet { images: Arc::new(train.images.select(&members)), num_classes: train.num_classes };
        let network = |device: &Device| Network::new(config.model.arch, set.images.shape().channels, set.num_classes, device);
        let mut model = network(&device);
        let mut optimizer = config.train.optimizer.clone();
        let mut optim = optim::build(&optimizer);
        let mut frozen = None;
        let metrics = run.join("metrics.jsonl");
        let saved: Option<Saved<S>> = if resume {
            let reader = checkpoint::Reader::open(run).ok_or_else(|| CoreError::file(run.join("checkpoint"), "no checkpoint to resume from"))?;
            let saved: Saved<S> = reader.state()?;
            model = reader.network("model", model)?;
            if let Some(own) = &saved.optimizer {
                optimizer = own.clone();
            }
            optim = reader.optimizer("model", optim::build(&optimizer))?;
            if saved.frozen {
                frozen = Some(reader.network("frozen", network(&inference))?);
            }
            keep_lines(&metrics, saved.epochs_done)?;
            Some(saved)
        } else {
            let _ = std::fs::remove_file(&metrics);
            None
        };
        let (epochs_done, wall_before, last, rates, defense) = match saved {
            Some(s) => (s.epochs_done, s.wall_s, s.last, s.rates, Some(s.defense)),
            None => (0, 0.0, None, Vec::new(), None),
        };
        let phased = Self { config, set, members, norm, device, inference, model, optim, optimizer, frozen, epochs_done, progress, evals, run: run.to_path_buf(), start, wall_before, last, rates };
        Ok((phased, defense))
    }

    /// A new optimiser for the network, as `optimizer` configures it (checkpointed with the run).
    pub fn restart_optimiser(&mut self, optimizer: &OptimizerConfig) {
        self.optim = optim::build(optimizer);
        self.optimizer = optimizer.clone();
    }

    /// Trains the next epoch as `plan` says, each batch through `step` (network, optimiser,
    /// batch → network, loss); evaluates it at the end of its phase or when `data.eval_every`
    /// says, and records it. Returns the metrics when evaluated.
    pub fn epoch(&mut self, plan: &Plan, mut step: impl FnMut(Network, &mut ModuleOptimizer, Batch) -> (Network, f32)) -> Result<Option<Metrics>> {
        let (config, epoch) = (self.config, self.epochs_done);
        let label = format!("{} {}/{}", plan.phase, plan.phase_epoch + 1, plan.phase_epochs);
        let images = plan.samples.len() * plan.views;
        self.progress.start(&label, plan.samples.len().div_ceil(plan.batch_size), images);
        let epoch_start = Instant::now();
        let batches = epoch_batches(self.set.images.clone(), &plan.samples, plan.batch_size, Views { count: plan.views, augment: plan.augment, norm: self.norm.clone() }, config.train.seed, epoch);
        let optim = &mut self.optim;
        let (model, loss) = train_pass(self.model.clone(), batches, config.train.allow_nan, &label, self.progress, |m, b| step(m, optim, b))?;
        self.model = model;
        let img_s = images as f64 / epoch_start.elapsed().as_secs_f64();
        self.rates.push(img_s);
        let due = (epoch + 1) % config.data.eval_every == 0 || plan.phase_epoch + 1 == plan.phase_epochs;
        let metrics = due.then(|| self.evaluate());
        let record = PhaseRecord { phase: plan.phase.into(), record: EpochRecord { epoch: epoch + 1, lr: plan.lr, loss, img_s, metrics: metrics.clone() } };
        self.progress.finish(&format!("{}: {}", plan.phase, epoch_line(&record.record)));
        append_jsonl(&self.run.join("metrics.jsonl"), &record)?;
        self.last = metrics.clone().or(self.last.take());
        self.epochs_done = epoch + 1;
        Ok(metrics)
    }

    /// The network's test metrics now.
    pub fn evaluate(&self) -> Metrics {
        evaluate(&self.model.valid(), self.evals, &self.norm, self.config.data.eval_batch_size, &self.inference)
    }

    /// Checkpoints the network, its optimiser, the frozen network if any, the run's progress and
    /// the defense's `state`.
    pub fn save<S: Serialize>(&self, state: &S) -> Result<()> {
        self.save_with(state, |_| Ok(()))
    }

    /// [`PhasedRun::save`], with the defense's own modules written by `parts` into the same
    /// checkpoint (read back with [`checkpoint::Reader::open`] on the run directory).
    pub fn save_with<S: Serialize>(&self, state: &S, parts: impl FnOnce(&checkpoint::Writer) -> Result<()>) -> Result<()> {
        let optimizer = (self.optimizer != self.config.train.optimizer).then(|| self.optimizer.clone());
        let saved = Saved { epochs_done: self.epochs_done, defense: state, last: self.last.clone(), rates: self.rates.clone(), wall_s: self.wall_s(), frozen: self.frozen.is_some(), optimizer };
        let writer = checkpoint::Writer::new(&self.run)?;
        writer.network("model", &self.model, Some(&self.optim))?;
        if let Some(frozen) = &self.frozen {
            writer.network("frozen", frozen, None)?;
        }
        parts(&writer)?;
        writer.commit(&saved)
    }

    /// Exports the network to `model.safetensors`; the summary of the run, as `defense`.
    pub fn finish(mut self, defense: &str) -> Result<Summary> {
        let metrics = match self.last.take() {
            Some(m) => m,
            None => self.evaluate(),
        };
        let shape = self.set.images.shape();
        let card = ModelCard { arch: self.config.model.arch, in_channels: shape.channels, num_classes: self.set.num_classes, normalization: self.norm.clone(), image_size: Some([shape.height, shape.width]) };
        export_pytorch(&self.model.valid(), &card, &self.run.join("model.safetensors"))?;
        Ok(Summary::new(defense, metrics, self.epochs_done, self.members.len(), self.wall_s(), std::mem::take(&mut self.rates)))
    }

    fn wall_s(&self) -> f64 {
        self.wall_before + self.start.elapsed().as_secs_f64()
    }
}
