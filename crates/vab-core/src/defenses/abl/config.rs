//! The `[abl]` section of a training configuration. Every default is the official code's
//! (github.com/bboylyg/ABL, `config.py` and `backdoor_unlearning.py`); BackdoorBench's
//! (`config/defense/abl/config.yaml`) differ where noted.

use serde::{Deserialize, Serialize};

/// ABL's parameters; `[train]` supplies the network, batch size, optimiser, learning rate,
/// schedule and augmentation of the isolation and training phases, and their total epochs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AblConfig {
    /// Epochs of isolation training with local gradient ascent, the first of `train.epochs`
    /// (official `tuning_epochs` 10; BackdoorBench 20).
    #[serde(default = "isolation_epochs")]
    pub isolation_epochs: usize,
    /// γ of the local gradient ascent (official and BackdoorBench 0.5; their default loss,
    /// "flooding" |L − γ| + γ, has the same gradient).
    #[serde(default = "gamma")]
    pub gamma: f64,
    /// Share of the training samples, lowest loss first, isolated as poisoned (0.01 in both).
    #[serde(default = "isolation_ratio")]
    pub isolation_ratio: f64,
    /// Epochs of gradient ascent on the isolated samples, after `train.epochs` (official 4: its
    /// loop of `unlearning_epochs` 5 only evaluates in its first round; BackdoorBench 20).
    #[serde(default = "unlearning_epochs")]
    pub unlearning_epochs: usize,
    /// Learning rate of the unlearning epochs (5e-4 in both); the optimiser of the training
    /// phase goes on, momentum included, as in the official code.
    #[serde(default = "unlearning_lr")]
    pub unlearning_lr: f64,
    /// Batch size of the unlearning epochs (`train.batch_size` when absent, as in the official
    /// code).
    #[serde(default)]
    pub unlearning_batch_size: Option<usize>,
}

fn isolation_epochs() -> usize {
    10
}

fn gamma() -> f64 {
    0.5
}

fn isolation_ratio() -> f64 {
    0.01
}

fn unlearning_epochs() -> usize {
    4
}

fn unlearning_lr() -> f64 {
    5e-4
}

impl Default for AblConfig {
    fn default() -> Self {
        Self {
            isolation_epochs: isolation_epochs(),
            gamma: gamma(),
            isolation_ratio: isolation_ratio(),
            unlearning_epochs: unlearning_epochs(),
            unlearning_lr: unlearning_lr(),
            unlearning_batch_size: None,
        }
    }
}

impl AblConfig {
    /// Checks the values; the error names the key. Their fit with `train.epochs` is checked
    /// only by an ABL run ([`AblConfig::fits`]), so a shortened preset still runs the others.
    pub fn validate(&self) -> Result<(), String> {
        if self.isolation_epochs == 0 {
            return Err("abl.isolation_epochs must be positive".into());
        }
        if !(self.gamma.is_finite() && self.gamma >= 0.0) {
            return Err(format!("abl.gamma must be a non-negative number, got {}", self.gamma));
        }
        if !(self.isolation_ratio > 0.0 && self.isolation_ratio < 1.0) {
            return Err(format!("abl.isolation_ratio must lie strictly between 0 and 1, got {}", self.isolation_ratio));
        }
        if !(self.unlearning_lr.is_finite() && self.unlearning_lr > 0.0) {
            return Err(format!("abl.unlearning_lr must be a positive number, got {}", self.unlearning_lr));
        }
        if self.unlearning_batch_size == Some(0) {
            return Err("abl.unlearning_batch_size must be positive (leave it out to use train.batch_size)".into());
        }
        Ok(())
    }

    /// `Err` unless the isolation epochs fit in a run of `epochs` training epochs.
    pub fn fits(&self, epochs: usize) -> Result<(), String> {
        match self.isolation_epochs <= epochs {
            true => Ok(()),
            false => Err(format!("abl.isolation_epochs ({}) must not exceed train.epochs ({epochs}): the isolation epochs are the first of the training epochs", self.isolation_epochs)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_official_codes_and_bad_values_name_their_key() {
        let c: AblConfig = toml::from_str("").unwrap();
        assert_eq!(c, AblConfig::default());
        assert_eq!((c.isolation_epochs, c.gamma, c.isolation_ratio, c.unlearning_epochs, c.unlearning_lr), (10, 0.5, 0.01, 4, 5e-4));
        assert!(c.validate().is_ok() && c.fits(10).is_ok());
        let err = c.fits(9).unwrap_err();
        assert!(err.starts_with("abl.isolation_epochs (10) must not exceed train.epochs (9)"), "{err}");
        let bad = |c: AblConfig| c.validate().unwrap_err();
        assert!(bad(AblConfig { isolation_epochs: 0, ..c.clone() }).starts_with("abl.isolation_epochs"));
        assert!(bad(AblConfig { isolation_ratio: 1.0, ..c.clone() }).starts_with("abl.isolation_ratio"));
        assert!(bad(AblConfig { gamma: f64::NAN, ..c.clone() }).starts_with("abl.gamma"));
        assert!(bad(AblConfig { unlearning_lr: 0.0, ..c.clone() }).starts_with("abl.unlearning_lr"));
        assert!(bad(AblConfig { unlearning_batch_size: Some(0), ..c.clone() }).starts_with("abl.unlearning_batch_size"));
        assert!(toml::from_str::<AblConfig>("ratio = 0.1").unwrap_err().to_string().contains("unknown field `ratio`"));
    }
}
