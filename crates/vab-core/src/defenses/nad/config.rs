//! The `[nad]` section of a training configuration. Defaults follow the official code
//! (bboylyg/NAD, `config.py` and `main.py`); BackdoorBench's (`config/defense/nad/cifar10.yaml`)
//! are recorded in docs/baselines.md.

use serde::{Deserialize, Serialize};

use crate::engine::batches::Augment;
use crate::engine::schedule::Schedule;

/// NAD's parameters; `[train]` supplies the network, its first training and the optimiser.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NadConfig {
    /// Share of the training samples drawn as the clean reserve (official `ratio` 0.05).
    #[serde(default = "clean_reserve")]
    pub clean_reserve: f64,
    /// Epochs of fine-tuning that make the teacher (BackdoorBench `te_epochs` 10; the official
    /// README: "5~10 epochs").
    #[serde(default = "teacher_epochs")]
    pub teacher_epochs: usize,
    /// Epochs of distillation (official `epochs` 20).
    #[serde(default = "epochs")]
    pub epochs: usize,
    /// Initial rate of the teacher's fine-tuning and of the distillation (official `lr` 0.1).
    #[serde(default = "lr")]
    pub lr: f64,
    /// Their schedule (official `adjust_learning_rate`: the initial rate for 2 epochs, then 0.01).
    #[serde(default = "schedule")]
    pub schedule: Schedule,
    /// Batch size of both (official `batch_size` 64).
    #[serde(default = "batch_size")]
    pub batch_size: usize,
    /// Augmentation of both (official: random crop with padding 4 and flip, whatever the
    /// network was trained with).
    #[serde(default = "augment")]
    pub augment: Augment,
    /// Weights of the attention loss at the network's last three stages, lowest first (official
    /// `beta1`-`beta3`: 500, 1000, 1000).
    #[serde(default = "betas")]
    pub betas: [f64; 3],
    /// Power of the attention map (official `p` 2).
    #[serde(default = "power")]
    pub power: f64,
}

fn clean_reserve() -> f64 {
    0.05
}

fn teacher_epochs() -> usize {
    10
}

fn epochs() -> usize {
    20
}

fn lr() -> f64 {
    0.1
}

fn schedule() -> Schedule {
    Schedule::Multistep { milestones: vec![2], gamma: 0.1 }
}

fn batch_size() -> usize {
    64
}

fn augment() -> Augment {
    Augment::CROP_FLIP
}

fn betas() -> [f64; 3] {
    [500.0, 1000.0, 1000.0]
}

fn power() -> f64 {
    2.0
}

impl Default for NadConfig {
    fn default() -> Self {
        Self { clean_reserve: clean_reserve(), teacher_epochs: teacher_epochs(), epochs: epochs(), lr: lr(), schedule: schedule(), batch_size: batch_size(), augment: augment(), betas: betas(), power: power() }
    }
}

impl NadConfig {
    /// Checks the values; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.clean_reserve > 0.0 && self.clean_reserve < 1.0) {
            return Err(format!("nad.clean_reserve must lie strictly between 0 and 1, got {}", self.clean_reserve));
        }
        if self.epochs == 0 {
            return Err("nad.epochs must be positive: the distillation is the defense".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(format!("nad.lr must be a positive number, got {}", self.lr));
        }
        self.schedule.validate("nad.schedule")?;
        if self.batch_size == 0 {
            return Err("nad.batch_size must be positive".into());
        }
        if let Some(b) = self.betas.iter().find(|b| !(b.is_finite() && **b >= 0.0)) {
            return Err(format!("nad.betas must be non-negative numbers, got {b}"));
        }
        if !(self.power.is_finite() && self.power > 0.0) {
            return Err(format!("nad.power must be a positive number, got {}", self.power));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_official_codes_and_bad_values_name_their_key() {
        let c: NadConfig = toml::from_str("").unwrap();
        assert_eq!(c, NadConfig::default());
        assert_eq!((c.clean_reserve, c.teacher_epochs, c.epochs, c.lr, c.batch_size, c.augment, c.betas, c.power), (0.05, 10, 20, 0.1, 64, Augment::CROP_FLIP, [500.0, 1000.0, 1000.0], 2.0));
        // The official schedule: 0.1 for epochs 0-1, 0.01 from epoch 2.
        let rates: Vec<f64> = (0..4).map(|e| c.schedule.lr(c.lr, e, c.epochs)).collect();
        assert!(rates.iter().zip([0.1, 0.1, 0.01, 0.01]).all(|(r, w)| (r - w).abs() < 1e-12), "{rates:?}");
        assert!(c.validate().is_ok());
        let bad = |c: NadConfig| c.validate().unwrap_err();
        assert!(bad(NadConfig { clean_reserve: 1.0, ..c.clone() }).starts_with("nad.clean_reserve"));
        assert!(bad(NadConfig { epochs: 0, ..c.clone() }).starts_with("nad.epochs"));
        assert!(bad(NadConfig { lr: 0.0, ..c.clone() }).starts_with("nad.lr"));
        assert!(bad(NadConfig { schedule: Schedule::Multistep { milestones: vec![2], gamma: -1.0 }, ..c.clone() }).starts_with("nad.schedule.gamma"));
        assert!(bad(NadConfig { batch_size: 0, ..c.clone() }).starts_with("nad.batch_size"));
        assert!(bad(NadConfig { betas: [1.0, f64::NAN, 1.0], ..c.clone() }).starts_with("nad.betas"));
        assert!(bad(NadConfig { power: 0.0, ..c.clone() }).starts_with("nad.power"));
    }
}
