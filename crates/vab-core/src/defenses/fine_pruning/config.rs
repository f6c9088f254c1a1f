//! The `[fp]` section of a training configuration. The official code (kangliucn/
//! Fine-pruning-defense, Caffe, face recognition) prunes a fixed 48 of 60 channels and
//! fine-tunes with a separate solver, so the defaults follow BackdoorBench
//! (`config/defense/fp/cifar10.yaml`), which runs FP on CIFAR-10.

use serde::{Deserialize, Serialize};

/// Fine-Pruning's parameters; `[train]` supplies the network and its training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FpConfig {
    /// Share of the training samples drawn as the clean reserve (BackdoorBench `ratio` 0.05;
    /// the V&B paper gives FP and NAD 5 % of the training data).
    #[serde(default = "clean_reserve")]
    pub clean_reserve: f64,
    /// Share of the channels cut per pruning step (BackdoorBench `once_prune_ratio` 0.01).
    #[serde(default = "prune_step")]
    pub prune_step: f64,
    /// Relative drop of the reserve's accuracy that pruning may cause (BackdoorBench
    /// `acc_ratio` 0.1, measured there on the test set).
    #[serde(default = "max_accuracy_drop")]
    pub max_accuracy_drop: f64,
    /// Epochs of fine-tuning on the reserve (BackdoorBench `epochs` 100).
    #[serde(default = "finetune_epochs")]
    pub finetune_epochs: usize,
    /// Initial rate of the fine-tuning's cosine schedule (BackdoorBench `lr` 0.01).
    #[serde(default = "finetune_lr")]
    pub finetune_lr: f64,
    /// Batch size of the fine-tuning (`train.batch_size` when absent; BackdoorBench 256, its
    /// batch size).
    #[serde(default)]
    pub finetune_batch_size: Option<usize>,
}

fn clean_reserve() -> f64 {
    0.05
}

fn prune_step() -> f64 {
    0.01
}

fn max_accuracy_drop() -> f64 {
    0.1
}

fn finetune_epochs() -> usize {
    100
}

fn finetune_lr() -> f64 {
    0.01
}

impl Default for FpConfig {
    fn default() -> Self {
        Self { clean_reserve: clean_reserve(), prune_step: prune_step(), max_accuracy_drop: max_accuracy_drop(), finetune_epochs: finetune_epochs(), finetune_lr: finetune_lr(), finetune_batch_size: None }
    }
}

impl FpConfig {
    /// Checks the values; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        let share = |key: &str, v: f64| match v > 0.0 && v < 1.0 {
            true => Ok(()),
            false => Err(format!("fp.{key} must lie strictly between 0 and 1, got {v}")),
        };
        share("clean_reserve", self.clean_reserve)?;
        share("prune_step", self.prune_step)?;
        share("max_accuracy_drop", self.max_accuracy_drop)?;
        if !(self.finetune_lr.is_finite() && self.finetune_lr > 0.0) {
            return Err(format!("fp.finetune_lr must be a positive number, got {}", self.finetune_lr));
        }
        if self.finetune_batch_size == Some(0) {
            return Err("fp.finetune_batch_size must be positive (leave it out to use train.batch_size)".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_backdoorbenchs_and_bad_values_name_their_key() {
        let c: FpConfig = toml::from_str("").unwrap();
        assert_eq!(c, FpConfig::default());
        assert_eq!((c.clean_reserve, c.prune_step, c.max_accuracy_drop, c.finetune_epochs, c.finetune_lr), (0.05, 0.01, 0.1, 100, 0.01));
        assert!(c.validate().is_ok());
        let bad = |c: FpConfig| c.validate().unwrap_err();
        assert!(bad(FpConfig { clean_reserve: 0.0, ..c.clone() }).starts_with("fp.clean_reserve"));
        assert!(bad(FpConfig { max_accuracy_drop: 1.0, ..c.clone() }).starts_with("fp.max_accuracy_drop"));
        assert!(bad(FpConfig { finetune_lr: f64::INFINITY, ..c.clone() }).starts_with("fp.finetune_lr"));
        assert!(bad(FpConfig { finetune_batch_size: Some(0), ..c.clone() }).starts_with("fp.finetune_batch_size"));
    }
}
