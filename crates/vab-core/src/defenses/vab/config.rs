//! The `[vab]` section of a training configuration. Defaults are the authors' code's values
//! (method.md); the Beneficiary's own optimisation is the configuration's `[train]` section,
//! whose `epochs` are the Beneficiary's epochs of stages 2 and 3 together.

use serde::{Deserialize, Serialize};

use super::attention_mix::Upsample;
use super::threshold::Warmup;
use crate::engine::batches::Augment;

/// V&B's parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VabConfig {
    /// Beneficiary epochs of stage 2 (the rest of `train.epochs` is stage 3; paper: 100 of 200).
    pub stage2_epochs: usize,
    #[serde(default)]
    pub victim: VictimParams,
    /// Warm-up threshold schedule (`steps`, `linear_after_epoch0`) or `auto` (method.md §4).
    #[serde(default)]
    pub warmup: Warmup,
    /// Weight of the fresh entropy in the moving average over refreshes (method.md §3).
    #[serde(default = "entropy_momentum")]
    pub entropy_momentum: f64,
    /// In stage 2, the Victim trains and the split refreshes every this many Beneficiary epochs.
    #[serde(default = "refresh_every")]
    pub refresh_every: usize,
    /// Independently augmented views per credible image in a Beneficiary batch (code: 2).
    #[serde(default = "two")]
    pub views: usize,
    /// How credible batches are mixed (method.md §6; the others are paper Table 3's ablation).
    #[serde(default)]
    pub mix: MixKind,
    /// AttentionMix mask threshold t_m.
    #[serde(default = "t_m")]
    pub t_m: f64,
    /// How attention maps are brought to image size (paper: bilinear; code: nearest).
    #[serde(default = "nearest")]
    pub attention_upsample: Upsample,
    /// Batch-norm mode of the Beneficiary's no-grad feature pass (code: train).
    #[serde(default)]
    pub attention_features: FeatureMode,
    /// Batch-norm statistics of the Beneficiary's no-grad pseudo-label pass (code: batch
    /// statistics, with the running statistics moved, a fault method.md §8 says not to copy).
    #[serde(default)]
    pub pseudo_label_norm: PseudoLabelNorm,
    /// Whether stage 3's mixed credible views and unlabelled views go through the Beneficiary
    /// as one batch or as two (batch-norm statistics; see [`Stage3Batch`]).
    #[serde(default)]
    pub stage3_batch: Stage3Batch,
    /// Temperature T of the Victim's softmax in the suppression (eq. 10; code: 3).
    #[serde(default = "temperature")]
    pub temperature: f64,
    /// Augmented views K per suspicious image whose Beneficiary softmax is averaged into the
    /// pseudo-label; each view is also trained on.
    #[serde(default = "two")]
    pub unlabelled_views: usize,
    /// α of eq. 11 over equal parts of stage 3 (paper: 0.1 for epochs 101-150, 0.5 for 151-200).
    #[serde(default = "alpha")]
    pub alpha: Vec<f64>,
    /// After each Victim epoch, evaluate the Victim on a seeded sample of this many clean test
    /// images and their triggered versions (reporting only: BA/ASR curves; 0 turns it off). Small,
    /// because a full evaluation costs as much as a Victim epoch on CPU.
    #[serde(default = "victim_eval_samples")]
    pub victim_eval_samples: usize,
    /// Switches for paper Table 4.
    #[serde(default)]
    pub ablation: Ablation,
    /// Beyond the paper, off unless given: after warm-up a checker network finds the labels
    /// the poison sits in ([`super::label_check`]). From then on the Beneficiary's split keeps
    /// suspicious only samples of those labels whose label the checker did not confirm, and
    /// stage 3 suppresses the credible labels of those labels only; the Victim goes on
    /// training on the entropy's own suspicious set. For data on which the Victim is sure of
    /// whole clean classes (issue #35: Fashion-MNIST).
    #[serde(default)]
    pub label_check: Option<LabelCheckParams>,
}

/// The label check's checker: trained on the credible set with `[train]`'s optimiser, batch
/// size, augmentation and rate schedule, for `epochs` epochs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelCheckParams {
    pub epochs: usize,
}

/// The Victim's optimisation: Adam at a constant rate, hard labels, no augmentation (code).
/// Keys left out keep these values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VictimParams {
    pub lr: f64,
    pub weight_decay: f64,
    pub batch_size: usize,
    pub augment: Augment,
    /// Batch-norm statistics of the Victim's pass over the training set (entropies, suppression;
    /// method.md §3 and §7 and the code: running).
    pub entropy_norm: EntropyNorm,
}

impl Default for VictimParams {
    fn default() -> Self {
        Self { lr: 1e-3, weight_decay: 5e-4, batch_size: 128, augment: Augment::NONE, entropy_norm: EntropyNorm::Running }
    }
}

/// Which batch-norm statistics the Victim's pass over the training set normalises with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntropyNorm {
    /// The running statistics (eval mode; method.md §3, the authors' code).
    #[default]
    Running,
    /// The statistics of seeded random batches of the whole training set (`eval_batch_size`
    /// each), for the split and for stage 3's suppression, so neither depends on what the last
    /// Victim epoch trained on (training on a trigger-dominated D_s drags the running
    /// statistics along).
    Batch,
    /// Batch statistics for the split and the suppression of suspicious samples, the running
    /// statistics (eval mode) for the suppression of credible labels. It tests whether the
    /// train-mode Victim's suppression of clean credible labels costs BA; bench/results/dynamic-cpu.md has the result.
    BatchSplit,
}

/// The mix applied to credible batches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MixKind {
    #[default]
    AttentionMix,
    Mixup,
    Cutmix,
    AttentiveCutmix,
    None,
}

/// Batch-norm mode of the feature pass that produces attention maps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureMode {
    /// Batch statistics, and the running statistics move (the authors' code).
    #[default]
    Train,
    /// Running statistics, nothing moves.
    Eval,
}

/// Paper Table 4's components. All on is V&B; "F" alone is `mix = "none"` with every switch off.
/// Switches left out stay on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Ablation {
    /// SST: stage 3 trains on the suspicious set with pseudo-labels (off: stage 3 continues
    /// stage 2 on the credible set alone).
    pub semi_supervised: bool,
    /// S on suspicious pseudo-labels (eq. 10).
    pub suppress_suspicious: bool,
    /// S on credible labels in stage 3.
    pub suppress_credible: bool,
}

impl Default for Ablation {
    fn default() -> Self {
        Self { semi_supervised: true, suppress_suspicious: true, suppress_credible: true }
    }
}
/// Batch-norm statistics of the pseudo-label pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PseudoLabelNorm {
    /// The unlabelled batch's own statistics, as the authors' code computes its pseudo-labels,
    /// on a throw-away copy so the running statistics stay where training left them.
    #[default]
    Batch,
    /// The running statistics (eval mode).
    Running,
}

/// How a stage-3 step feeds its two groups of images (mixed credible views, unlabelled views)
/// to the Beneficiary. The loss is the same (eq. 11); batch norm differs: each forward pass
/// normalises with its own batch's statistics and moves the running statistics towards them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage3Batch {
    /// One forward pass over both groups.
    Joint,
    /// A pass per group, as the authors' code (which even passes each view on its own). The
    /// unlabelled group holds only |D_s| / (labelled batches) images per view, so every step
    /// also moves the running statistics towards a batch of a few suspicious images.
    #[default]
    Separate,
}

/// True for a positive number; false for zero, negatives and NaN.
fn is_positive(x: f64) -> bool {
    x > 0.0
}

fn victim_eval_samples() -> usize {
    500
}
fn entropy_momentum() -> f64 {
    0.75
}
fn refresh_every() -> usize {
    5
}
fn two() -> usize {
    2
}
fn t_m() -> f64 {
    0.1
}
fn nearest() -> Upsample {
    Upsample::Nearest
}
fn temperature() -> f64 {
    3.0
}
fn alpha() -> Vec<f64> {
    vec![0.1, 0.5]
}

impl VabConfig {
    /// Checks the values against `epochs` Beneficiary epochs.
    pub fn validate(&self, epochs: usize) -> Result<(), String> {
        if self.stage2_epochs > epochs {
            return Err(format!("vab.stage2_epochs ({}) exceeds train.epochs ({epochs})", self.stage2_epochs));
        }
        if self.refresh_every == 0 || self.views == 0 || self.unlabelled_views == 0 || self.victim.batch_size == 0 {
            return Err("vab.refresh_every, vab.views, vab.unlabelled_views and vab.victim.batch_size must be positive".into());
        }
        if !(0.0..=1.0).contains(&self.entropy_momentum) || !(0.0..=1.0).contains(&self.t_m) {
            return Err("vab.entropy_momentum and vab.t_m must lie in [0, 1]".into());
        }
        if !is_positive(self.temperature) || !is_positive(self.victim.lr) {
            return Err("vab.temperature and vab.victim.lr must be positive".into());
        }
        crate::config::OptimizerConfig::Adam { weight_decay: self.victim.weight_decay }.validate("vab.victim")?;
        if self.alpha.is_empty() || self.alpha.iter().any(|a| a.is_nan() || *a < 0.0) {
            return Err("vab.alpha must list at least one non-negative weight".into());
        }
        if let Warmup::Auto { max_epochs: 0 } = self.warmup {
            return Err("vab.warmup.max_epochs must be positive".into());
        }
        Ok(())
    }

    /// α for stage-3 epoch `k` (0-based) of `stage3_epochs`: the list splits stage 3 into equal
    /// parts.
    pub fn alpha_at(&self, k: usize, stage3_epochs: usize) -> f64 {
        let part = k * self.alpha.len() / stage3_epochs.max(1);
        self.alpha[part.min(self.alpha.len() - 1)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_authors_values_and_alpha_follows_the_paper() {
        let c: VabConfig = toml::from_str("stage2_epochs = 100").unwrap();
        assert_eq!((c.entropy_momentum, c.refresh_every, c.views, c.t_m, c.temperature), (0.75, 5, 2, 0.1, 3.0));
        assert_eq!(c.warmup, Warmup::Steps { step: 0.4, end: 0.2 });
        assert_eq!((c.mix, c.attention_upsample, c.attention_features), (MixKind::AttentionMix, Upsample::Nearest, FeatureMode::Train));
        assert_eq!((c.pseudo_label_norm, c.stage3_batch), (PseudoLabelNorm::Batch, Stage3Batch::Separate));
        // Stage 3 = epochs 101..200: α 0.1 for 101-150, 0.5 for 151-200.
        assert_eq!((c.alpha_at(0, 100), c.alpha_at(49, 100), c.alpha_at(50, 100), c.alpha_at(99, 100)), (0.1, 0.1, 0.5, 0.5));
        assert!(c.validate(200).is_ok());
        assert!(c.validate(50).unwrap_err().contains("stage2_epochs"));
    }

    #[test]
    fn the_label_check_is_off_unless_given_and_takes_only_epochs() {
        let off: VabConfig = toml::from_str("stage2_epochs = 2").unwrap();
        assert_eq!(off.label_check, None);
        let on: VabConfig = toml::from_str("stage2_epochs = 2\nlabel_check = { epochs = 3 }").unwrap();
        assert_eq!(on.label_check, Some(LabelCheckParams { epochs: 3 }));
        assert!(toml::from_str::<VabConfig>("stage2_epochs = 2\nlabel_check = { epochs = 3, share = 0.5 }").is_err());
    }

    #[test]
    fn ablation_and_mix_parse() {
        let c: VabConfig = toml::from_str("stage2_epochs = 2\nmix = \"cutmix\"\n[ablation]\nsemi_supervised = false\nsuppress_suspicious = false\nsuppress_credible = true\n").unwrap();
        assert_eq!(c.mix, MixKind::Cutmix);
        assert!(!c.ablation.semi_supervised && c.ablation.suppress_credible);
        assert!(toml::from_str::<VabConfig>("stage2_epochs = 2\nviews2 = 1").is_err());
        let partial: VabConfig = toml::from_str("stage2_epochs = 2\n[ablation]\nsuppress_credible = false\n[victim]\nbatch_size = 32\n").unwrap();
        assert!(partial.ablation.semi_supervised && partial.ablation.suppress_suspicious && !partial.ablation.suppress_credible);
        assert_eq!(partial.victim, VictimParams { batch_size: 32, ..VictimParams::default() });
    }
}
