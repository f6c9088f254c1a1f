//! Training configuration, read from TOML presets (`configs/*.toml`). Unknown keys are errors,
//! so a typo never silently falls back to a default.

use serde::{Deserialize, Serialize};

use crate::defenses::abl::config::AblConfig;
use crate::defenses::fine_pruning::config::FpConfig;
use crate::defenses::dbd::config::DbdConfig;
use crate::defenses::nad::config::NadConfig;
use crate::defenses::vab::config::VabConfig;
use crate::engine::batches::Augment;
use crate::engine::schedule::Schedule;
use crate::models::Arch;

/// A whole training configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub model: ModelConfig,
    pub train: TrainParams,
    #[serde(default)]
    pub data: DataParams,
    /// V&B's parameters; needed by `--defense vab`, ignored by `--defense none`.
    #[serde(default)]
    pub vab: Option<VabConfig>,
    /// ABL's parameters; needed by `--defense abl` only.
    #[serde(default)]
    pub abl: Option<AblConfig>,
    /// Fine-Pruning's parameters; needed by `--defense fp` only.
    #[serde(default)]
    pub fp: Option<FpConfig>,
    /// NAD's parameters; needed by `--defense nad` only.
    #[serde(default)]
    pub nad: Option<NadConfig>,
    /// DBD's parameters; needed by `--defense dbd` only.
    #[serde(default)]
    pub dbd: Option<DbdConfig>,
}

/// Which network.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub arch: Arch,
}

/// Optimisation of the trained network.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainParams {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub optimizer: OptimizerConfig,
    pub schedule: Schedule,
    /// Training augmentation; default random crop with padding 4 + horizontal flip.
    #[serde(default = "crop_flip")]
    pub augment: Augment,
    /// Seed of initialisation, batch order and augmentation.
    #[serde(default)]
    pub seed: u64,
    /// Go on when a batch's loss is not finite (NaN or ±∞). By default training stops there
    /// with an error naming the epoch and step, keeping the last checkpoint.
    #[serde(default)]
    pub allow_nan: bool,
}

fn crop_flip() -> Augment {
    Augment::CROP_FLIP
}

/// Optimiser and its hyper-parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum OptimizerConfig {
    /// SGD with momentum (PyTorch semantics: no dampening, L2 weight decay on every parameter).
    Sgd { momentum: f64, weight_decay: f64, #[serde(default)] nesterov: bool },
    /// Adam (PyTorch defaults: betas 0.9/0.999, eps 1e-8; L2 weight decay).
    Adam { weight_decay: f64 },
}

impl OptimizerConfig {
    /// Momentum in [0, 1) and a finite, non-negative weight decay; `key` names the section.
    pub fn validate(&self, key: &str) -> Result<(), String> {
        let weight_decay = match *self {
            OptimizerConfig::Sgd { momentum, weight_decay, .. } => {
                if !(0.0..1.0).contains(&momentum) {
                    return Err(format!("{key}.momentum must lie in [0, 1), got {momentum}"));
                }
                weight_decay
            }
            OptimizerConfig::Adam { weight_decay } => weight_decay,
        };
        if !(weight_decay.is_finite() && weight_decay >= 0.0) {
            return Err(format!("{key}.weight_decay must be a non-negative number, got {weight_decay}"));
        }
        Ok(())
    }
}

/// What part of the data to use, and evaluation batching.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataParams {
    /// Train on a seeded uniform random subset of this many training samples (all when absent).
    /// Uniform, not class-balanced: balancing by the (poisoned) labels would change the
    /// poisoning rate, and balancing by true labels would use ground truth.
    #[serde(default)]
    pub train_subset: Option<usize>,
    #[serde(default = "eval_batch")]
    pub eval_batch_size: usize,
    /// Evaluate every this many epochs (and always after the last one).
    #[serde(default = "one")]
    pub eval_every: usize,
}

fn one() -> usize {
    1
}

fn eval_batch() -> usize {
    500
}

impl Default for DataParams {
    fn default() -> Self {
        Self { train_subset: None, eval_batch_size: eval_batch(), eval_every: one() }
    }
}

impl TrainConfig {
    /// Parses a TOML configuration; the error names the offending key.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let config: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        let t = &self.train;
        if t.epochs == 0 || t.batch_size == 0 || self.data.eval_batch_size == 0 || self.data.eval_every == 0 {
            return Err("train.epochs, train.batch_size, data.eval_batch_size and data.eval_every must be positive".into());
        }
        if !(t.lr.is_finite() && t.lr > 0.0) {
            return Err(format!("train.lr must be a positive number, got {}", t.lr));
        }
        self.train.optimizer.validate("train.optimizer")?;
        self.train.schedule.validate("train.schedule")?;
        if self.data.train_subset == Some(0) {
            return Err("data.train_subset must be positive (leave it out to train on every sample)".into());
        }
        if let Some(vab) = &self.vab {
            vab.validate(t.epochs)?;
        }
        if let Some(abl) = &self.abl {
            abl.validate()?;
        }
        if let Some(fp) = &self.fp {
            fp.validate()?;
        }
        if let Some(nad) = &self.nad {
            nad.validate()?;
        }
        match &self.dbd {
            Some(dbd) => dbd.validate(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRESET: &str = r#"
[model]
arch = "resnet18"
[train]
epochs = 200
batch_size = 128
lr = 0.1
[train.optimizer]
kind = "sgd"
momentum = 0.9
weight_decay = 5e-4
[train.schedule]
kind = "multistep"
milestones = [100, 150]
gamma = 0.1
"#;

    #[test]
    fn parses_a_preset_with_defaults() {
        let c = TrainConfig::from_toml(PRESET).unwrap();
        assert_eq!(c.model.arch, Arch::Resnet18);
        assert_eq!(c.train.augment, Augment::CROP_FLIP);
        assert_eq!(c.data.eval_batch_size, 500);
        assert_eq!(c.train.optimizer, OptimizerConfig::Sgd { momentum: 0.9, weight_decay: 5e-4, nesterov: false });
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let err = TrainConfig::from_toml(&PRESET.replace("epochs = 200", "epoch = 200")).unwrap_err();
        assert!(err.contains("unknown field `epoch`"), "{err}");
        let err = TrainConfig::from_toml(&PRESET.replace("lr = 0.1", "lr = -1.0")).unwrap_err();
        assert!(err.contains("train.lr must be a positive number"), "{err}");
        let err = TrainConfig::from_toml(&PRESET.replace("momentum = 0.9", "momentum = nan")).unwrap_err();
        assert_eq!(err, "train.optimizer.momentum must lie in [0, 1), got NaN");
        let err = TrainConfig::from_toml(&PRESET.replace("weight_decay = 5e-4", "weight_decay = inf")).unwrap_err();
        assert_eq!(err, "train.optimizer.weight_decay must be a non-negative number, got inf");
        let err = TrainConfig::from_toml(&PRESET.replace("gamma = 0.1", "gamma = -0.1")).unwrap_err();
        assert!(err.contains("train.schedule.gamma"), "{err}");
        let err = TrainConfig::from_toml(&format!("{PRESET}[data]\ntrain_subset = 0\n")).unwrap_err();
        assert!(err.contains("data.train_subset must be positive"), "{err}");
    }
}
