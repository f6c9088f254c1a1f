//! The no-defense baseline run: train one network on the bundle's training set as labelled,
//! evaluate after every epoch, checkpoint atomically, resume, export.
//!
//! Run directory: `config.toml` (resolved), `metrics.jsonl` (one line per epoch),
//! `summary.json` (final BA/ASR/RA in percent, wall time, throughput), `checkpoint/`,
//! `model.safetensors` (PyTorch-style parameter names).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use rand::seq::index;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::batches::{epoch_batches, Normalization, Views};
use super::checkpoint::{self, CheckpointState};
use super::eval::{evaluate, Metrics};
use super::export::{export_pytorch, ModelCard};
use super::optim;
use super::progress::TrainProgress;
use super::step::{train_pass, train_step};
use crate::backend::Backend;
use crate::config::TrainConfig;
use crate::data::{EvalSets, TrainingSet};
use crate::error::{CoreError, Result};
use crate::models::Network;

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub lr: f64,
    pub loss: f64,
    pub img_s: f64,
    /// Test metrics, on evaluated epochs only (`data.eval_every`).
    #[serde(flatten)]
    pub metrics: Option<Metrics>,
}

/// `summary.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub defense: String,
    /// The final evaluation (its fields sit at the top level of the JSON).
    #[serde(flatten)]
    pub metrics: Metrics,
    pub epochs: usize,
    pub train_samples: usize,
    pub wall_s: f64,
    /// Median training throughput over the epochs of this session, images per second.
    pub train_img_s: f64,
}

impl Summary {
    /// The summary of a run that ended with `metrics`; `rates` are its epochs' img/s.
    pub fn new(defense: &str, metrics: Metrics, epochs: usize, train_samples: usize, wall_s: f64, mut rates: Vec<f64>) -> Self {
        rates.sort_by(f64::total_cmp);
        Summary {
            defense: defense.into(),
            metrics,
            epochs,
            train_samples,
            wall_s,
            train_img_s: rates.get(rates.len() / 2).copied().unwrap_or(0.0),
        }
    }
}

/// The samples trained on: all, or a seeded uniform subset (`data.train_subset`).
pub fn training_members(config: &TrainConfig, n: usize) -> Vec<usize> {
    match config.data.train_subset {
        Some(k) if k < n => {
            let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(config.train.seed ^ 0x5eed_5ab5e7);
            let mut picked = index::sample(&mut rng, n, k).into_vec();
            picked.sort_unstable();
            picked
        }
        _ => (0..n).collect(),
    }
}

/// Appends one JSON line to `path`.
pub fn append_jsonl<T: Serialize>(path: &Path, record: &T) -> Result<()> {
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| CoreError::io(path, e))?;
    let line = serde_json::to_string(record).expect("record serialises");
    writeln!(file, "{line}").map_err(|e| CoreError::io(path, e))
}

/// Keeps only the first `lines` lines of a JSON-lines file (those a resumed checkpoint covers);
/// a missing file stays missing.
pub fn keep_lines(path: &Path, lines: usize) -> Result<()> {
    if !path.is_file() {
        return Ok(());
    }
    let text = std::fs::read_to_string(path).map_err(|e| CoreError::io(path, e))?;
    let kept: String = text.lines().take(lines).map(|l| format!("{l}\n")).collect();
    std::fs::write(path, kept).map_err(|e| CoreError::io(path, e))
}

/// Writes `value` as pretty JSON to `path` atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(value).expect("serialises")).map_err(|e| CoreError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| CoreError::io(path, e))
}

/// Trains with no defense. With `resume`, continues from the run directory's checkpoint so the
/// final metrics equal those of an uninterrupted run.
pub fn train_baseline(config: &TrainConfig, backend: Backend, train: &TrainingSet, evals: &EvalSets, run: &Path, resume: bool, progress: &dyn TrainProgress) -> Result<Summary> {
    let start = Instant::now();
    std::fs::create_dir_all(run).map_err(|e| CoreError::io(run, e))?;
    let inference = backend.device().map_err(CoreError::Invalid)?;
    let device = inference.clone().autodiff();
    device.seed(config.train.seed);
    let shape = train.images.shape();
    let mut model = Network::new(config.model.arch, shape.channels, train.num_classes, &device);
    let mut optim = optim::build(&config.train.optimizer);
    let mut state = CheckpointState { epochs_done: 0, wall_s: 0.0 };
    let metrics_path = run.join("metrics.jsonl");
    if resume {
        let (mut parts, s) = checkpoint::load(run, vec![("model", model, optim)])?
            .ok_or_else(|| CoreError::file(run.join("checkpoint"), "no checkpoint to resume from"))?;
        ((model, optim), state) = (parts.remove(0), s);
        keep_lines(&metrics_path, state.epochs_done)?;
    } else {
        let _ = std::fs::remove_file(&metrics_path);
    }

    // Wall time of earlier sessions of this run; this session's time is added per epoch.
    let wall_before = state.wall_s;
    let members = training_members(config, train.images.len());
    let norm = Normalization::of(&train.images);
    let augment = config.train.augment;
    let epochs = config.train.epochs;
    let mut rates = Vec::new();
    let mut last = None;
    for epoch in state.epochs_done..epochs {
        let lr = config.train.schedule.lr(config.train.lr, epoch, epochs);
        let batches = members.len().div_ceil(config.train.batch_size);
        progress.start(&format!("epoch {}/{epochs}", epoch + 1), batches, members.len());
        let epoch_start = Instant::now();
        let batches = epoch_batches(train.images.clone(), &members, config.train.batch_size, Views::one(augment, norm.clone()), config.train.seed, epoch);
        let loss;
        (model, loss) = train_pass(model, batches, config.train.allow_nan, &format!("epoch {}", epoch + 1), progress, |m, b| train_step(m, &mut optim, b, train.num_classes, lr, &device))?;
        let img_s = members.len() as f64 / epoch_start.elapsed().as_secs_f64();
        rates.push(img_s);
        let due = (epoch + 1) % config.data.eval_every == 0 || epoch + 1 == epochs;
        let metrics = due.then(|| evaluate(&model.valid(), evals, &norm, config.data.eval_batch_size, &inference));
        let record = EpochRecord { epoch: epoch + 1, lr, loss, img_s, metrics };
        progress.finish(&epoch_line(&record));
        append_jsonl(&metrics_path, &record)?;
        state = CheckpointState { epochs_done: epoch + 1, wall_s: wall_before + start.elapsed().as_secs_f64() };
        checkpoint::save(run, &[("model", &model, &optim)], &state)?;
        last = record.metrics;
    }
    // Resuming a finished run evaluates its final model again.
    let metrics = match last {
        Some(m) => m,
        None => evaluate(&model.valid(), evals, &norm, config.data.eval_batch_size, &inference),
    };
    let card = ModelCard { arch: config.model.arch, in_channels: shape.channels, num_classes: train.num_classes, normalization: norm, image_size: Some([shape.height, shape.width]) };
    export_pytorch(&model.valid(), &card, &run.join("model.safetensors"))?;
    let summary = Summary::new("none", metrics, epochs, members.len(), wall_before + start.elapsed().as_secs_f64(), rates);
    write_json(&run.join("summary.json"), &summary)?;
    Ok(summary)
}

/// One human-readable line per epoch.
pub fn epoch_line(r: &EpochRecord) -> String {
    let scores = r.metrics.as_ref().map_or(String::new(), |m| format!(" {}", m.describe()));
    format!("epoch {} lr {:.4} loss {:.4}{scores} ({:.0} img/s)", r.epoch, r.lr, r.loss, r.img_s)
}

/// The run directory's resolved configuration file.
pub fn config_path(run: &Path) -> PathBuf {
    run.join("config.toml")
}
