//! The `[dbd]` section of a training configuration. Defaults follow the official code
//! (SCLBD/DBD, `config/defense/simclr/*/cifar10_resnet18/example.yaml` and
//! `config/defense/mixmatch_finetune/*/example.yaml`); BackdoorBench's and the paper's values
//! are recorded in docs/baselines.md.

use serde::{Deserialize, Serialize};

use crate::config::OptimizerConfig;
use crate::engine::batches::Augment;
use crate::engine::contrastive_augment::ContrastiveAugment;

/// DBD's parameters; `[train]` supplies the network and the seed only (DBD has its own three
/// stages and optimisers).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbdConfig {
    /// Epochs of self-supervised SimCLR training (official 1,000, cosine to 0; its fine-tuning
    /// example loads the checkpoint of epoch 100).
    #[serde(default = "simclr_epochs")]
    pub simclr_epochs: usize,
    /// Images per SimCLR batch, each seen in two views (official 512).
    #[serde(default = "simclr_batch_size")]
    pub simclr_batch_size: usize,
    /// SimCLR's rate, cosine-annealed to 0 over `simclr_epochs` (official 0.4).
    #[serde(default = "simclr_lr")]
    pub simclr_lr: f64,
    /// SimCLR's optimiser (official SGD, momentum 0.9, weight decay 1e-4).
    #[serde(default = "simclr_optimizer")]
    pub simclr_optimizer: OptimizerConfig,
    /// NT-Xent temperature τ (official 0.5).
    #[serde(default = "temperature")]
    pub temperature: f64,
    /// Output width of the projection head, a two-layer MLP with batch norm (official 128).
    #[serde(default = "projection_dim")]
    pub projection_dim: usize,
    /// SimCLR's strong augmentation (official: resized crop 0.2-1 bicubic, flip, colour jitter
    /// 0.4/0.4/0.4/0.1 at p 0.8, grayscale p 0.2, blur σ 0.1-2 at p 0.5).
    #[serde(default)]
    pub simclr_augment: ContrastiveAugment,
    /// Epochs of the linear head's warm-up on the frozen backbone (official 10).
    #[serde(default = "warmup_epochs")]
    pub warmup_epochs: usize,
    /// Its batch size (official 128).
    #[serde(default = "warmup_batch_size")]
    pub warmup_batch_size: usize,
    /// Symmetric cross-entropy α·CE + β·RCE of the warm-up and the split (official 0.1 and 1).
    #[serde(default = "sce_alpha")]
    pub sce_alpha: f64,
    #[serde(default = "sce_beta")]
    pub sce_beta: f64,
    /// Adam's rate for the warm-up and the semi-supervised fine-tuning, one optimiser for both
    /// (official 0.002, no weight decay, no schedule).
    #[serde(default = "lr")]
    pub lr: f64,
    /// Epochs of semi-supervised fine-tuning (official 190).
    #[serde(default = "semi_epochs")]
    pub semi_epochs: usize,
    /// Share of the samples with the lowest loss kept labelled at each fine-tuning epoch
    /// (official ε 0.5).
    #[serde(default = "epsilon")]
    pub epsilon: f64,
    /// Over which samples that share is taken: all of them (official) or each training label's
    /// own (beyond the paper: keeps every class labelled when the network fits some classes
    /// worse than the poison).
    #[serde(default)]
    pub split: SplitScope,
    /// Labelled and unlabelled images per MixMatch step (official 64 each).
    #[serde(default = "semi_batch_size")]
    pub semi_batch_size: usize,
    /// MixMatch steps per fine-tuning epoch (official 1,024); left out, one pass over the
    /// labelled set.
    #[serde(default)]
    pub iterations: Option<usize>,
    /// Weight of the unlabelled loss λ_u (official 15), ramped up linearly over
    /// `rampup_epochs` counted from the warm-up's first epoch as the code counts them
    /// (official 190, "same as num_epochs").
    #[serde(default = "lambda_u")]
    pub lambda_u: f64,
    #[serde(default = "rampup_epochs")]
    pub rampup_epochs: usize,
    /// Sharpening temperature T of the guessed labels (official 0.5).
    #[serde(default = "sharpen_temperature")]
    pub sharpen_temperature: f64,
    /// MixUp's Beta(α, α) (official 0.75).
    #[serde(default = "mix_alpha")]
    pub mix_alpha: f64,
    /// Augmentation of the warm-up, the split and the fine-tuning (official: random crop with
    /// padding 4, reflected, and flip).
    #[serde(default = "augment")]
    pub augment: Augment,
}

/// The scope of DBD's lowest-loss split (config `dbd.split`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitScope {
    /// The ⌊ε·n⌋ lowest losses of all samples (the official code).
    #[default]
    Global,
    /// The ⌊ε·n_c⌋ lowest of each label c (beyond the paper).
    PerClass,
}

fn simclr_epochs() -> usize {
    1000
}

fn simclr_batch_size() -> usize {
    512
}

fn simclr_lr() -> f64 {
    0.4
}

fn simclr_optimizer() -> OptimizerConfig {
    OptimizerConfig::Sgd { momentum: 0.9, weight_decay: 1e-4, nesterov: false }
}

fn temperature() -> f64 {
    0.5
}

fn projection_dim() -> usize {
    128
}

fn warmup_epochs() -> usize {
    10
}

fn warmup_batch_size() -> usize {
    128
}

fn sce_alpha() -> f64 {
    0.1
}

fn sce_beta() -> f64 {
    1.0
}

fn lr() -> f64 {
    0.002
}

fn semi_epochs() -> usize {
    190
}

fn epsilon() -> f64 {
    0.5
}

fn semi_batch_size() -> usize {
    64
}

fn lambda_u() -> f64 {
    15.0
}

fn rampup_epochs() -> usize {
    190
}

fn sharpen_temperature() -> f64 {
    0.5
}

fn mix_alpha() -> f64 {
    0.75
}

fn augment() -> Augment {
    Augment::CROP_FLIP
}

impl Default for DbdConfig {
    fn default() -> Self {
        toml::from_str("").expect("every key has a default")
    }
}

impl DbdConfig {
    /// Checks the values; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        let positive = |key: &str, x: f64| if x.is_finite() && x > 0.0 { Ok(()) } else { Err(format!("dbd.{key} must be a positive number, got {x}")) };
        positive("simclr_lr", self.simclr_lr)?;
        positive("temperature", self.temperature)?;
        positive("lr", self.lr)?;
        positive("sharpen_temperature", self.sharpen_temperature)?;
        positive("mix_alpha", self.mix_alpha)?;
        for (key, x) in [("sce_alpha", self.sce_alpha), ("sce_beta", self.sce_beta), ("lambda_u", self.lambda_u)] {
            if !(x.is_finite() && x >= 0.0) {
                return Err(format!("dbd.{key} must be a non-negative number, got {x}"));
            }
        }
        if self.sce_alpha + self.sce_beta == 0.0 {
            return Err("dbd.sce_alpha and dbd.sce_beta cannot both be 0: the split ranks samples by that loss".into());
        }
        if !(self.epsilon > 0.0 && self.epsilon < 1.0) {
            return Err(format!("dbd.epsilon must lie strictly between 0 and 1, got {}", self.epsilon));
        }
        for (key, n) in [("simclr_batch_size", self.simclr_batch_size), ("projection_dim", self.projection_dim), ("warmup_batch_size", self.warmup_batch_size), ("semi_batch_size", self.semi_batch_size), ("semi_epochs", self.semi_epochs)] {
            if n == 0 {
                return Err(format!("dbd.{key} must be positive"));
            }
        }
        if self.simclr_batch_size < 2 {
            return Err("dbd.simclr_batch_size must be at least 2: each image's negatives are the batch's other images".into());
        }
        if self.iterations == Some(0) {
            return Err("dbd.iterations must be positive (leave it out for one pass over the labelled set)".into());
        }
        self.simclr_optimizer.validate("dbd.simclr_optimizer")?;
        self.simclr_augment.validate("dbd.simclr_augment")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_official_codes_and_bad_values_name_their_key() {
        let c = DbdConfig::default();
        assert_eq!((c.simclr_epochs, c.simclr_batch_size, c.simclr_lr, c.temperature, c.projection_dim), (1000, 512, 0.4, 0.5, 128));
        assert_eq!((c.warmup_epochs, c.warmup_batch_size, c.sce_alpha, c.sce_beta, c.lr), (10, 128, 0.1, 1.0, 0.002));
        assert_eq!((c.semi_epochs, c.epsilon, c.semi_batch_size, c.iterations, c.lambda_u, c.rampup_epochs, c.sharpen_temperature, c.mix_alpha), (190, 0.5, 64, None, 15.0, 190, 0.5, 0.75));
        assert_eq!((c.simclr_augment, c.augment, c.split), (ContrastiveAugment::default(), Augment::CROP_FLIP, SplitScope::Global));
        assert_eq!(toml::from_str::<DbdConfig>("split = \"per_class\"").unwrap().split, SplitScope::PerClass);
        assert!(c.validate().is_ok());
        let bad = |c: DbdConfig| c.validate().unwrap_err();
        assert!(bad(DbdConfig { simclr_lr: 0.0, ..c.clone() }).starts_with("dbd.simclr_lr"));
        assert!(bad(DbdConfig { epsilon: 1.0, ..c.clone() }).starts_with("dbd.epsilon"));
        assert!(bad(DbdConfig { simclr_batch_size: 1, ..c.clone() }).starts_with("dbd.simclr_batch_size"));
        assert!(bad(DbdConfig { sce_alpha: 0.0, sce_beta: 0.0, ..c.clone() }).starts_with("dbd.sce_alpha"));
        assert!(bad(DbdConfig { lambda_u: -1.0, ..c.clone() }).starts_with("dbd.lambda_u"));
        assert!(bad(DbdConfig { iterations: Some(0), ..c.clone() }).starts_with("dbd.iterations"));
        assert!(bad(DbdConfig { simclr_augment: ContrastiveAugment { grayscale_p: 2.0, ..c.simclr_augment }, ..c.clone() }).starts_with("dbd.simclr_augment.grayscale_p"));
        assert!(toml::from_str::<DbdConfig>("simclr_epoch = 3").unwrap_err().to_string().contains("simclr_epoch"));
    }
}
