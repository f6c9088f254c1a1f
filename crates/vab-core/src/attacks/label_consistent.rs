//! The label-consistent attack, CL-ε (Turner et al. 2019; method.md §9): a surrogate network
//! trained on the clean training set, L∞ PGD ([`super::pgd`]) on the selected target-class
//! images so the surrogate no longer recognises them, then the BadNets trigger on top; labels
//! stay unchanged. The surrogate and the perturbed images are cached, so poisoning again with
//! the same data, surrogate configuration, PGD parameters and selection reuses them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vab_attacks::poison::{poison, AttackRecord, PoisonSpec};
use vab_attacks::select::{poison_indices, RateConvention};
use vab_attacks::{Attack, LabelMode};
use vab_data::{Bundle, Dataset};

use super::{hex, surrogate_config, training_key};
use super::pgd::{perturb, Pgd};
use crate::backend::Backend;
use crate::engine::batches::Normalization;
use crate::engine::checkpoint;
use crate::engine::optim;
use crate::engine::progress::TrainProgress;
use crate::engine::run::train_baseline;
use crate::error::{CoreError, Result};
use crate::models::Network;

/// The attack's parameters (`vab poison --attack cl --set …`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClParams {
    /// L∞ radius in 1/255 units (CL-16: 16, CL-32: 32).
    #[serde(default = "sixteen")]
    pub epsilon: f32,
    #[serde(default = "hundred")]
    pub steps: usize,
    /// PGD step in 1/255 units.
    #[serde(default = "step_size")]
    pub step_size: f32,
    /// Training configuration (TOML file) of the surrogate network, e.g.
    /// configs/cpu-cifar10.toml.
    pub surrogate: PathBuf,
    /// Parameters of the BadNets trigger stamped after the perturbation.
    #[serde(default = "vab_trigger")]
    pub trigger: serde_json::Value,
}

impl ClParams {
    /// Checked before the surrogate trains: a radius in (0, 255], a positive step, at least
    /// one step.
    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(CoreError::Invalid(format!("CL parameters: {m}")));
        if !(self.epsilon.is_finite() && self.epsilon > 0.0 && self.epsilon <= 255.0) {
            return bad(format!("epsilon must lie in (0, 255] (units of 1/255), got {}", self.epsilon));
        }
        if !(self.step_size.is_finite() && self.step_size > 0.0) {
            return bad(format!("step_size must be a positive number (units of 1/255), got {}", self.step_size));
        }
        if self.steps == 0 {
            return bad("steps must be positive".into());
        }
        Ok(())
    }
}

fn sixteen() -> f32 {
    16.0
}
fn hundred() -> usize {
    100
}
fn step_size() -> f32 {
    1.5
}
fn vab_trigger() -> serde_json::Value {
    serde_json::json!({ "preset": "vab" })
}

/// What generating the poison measured (also recorded in the bundle's attack parameters).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClReport {
    /// The surrogate's clean test accuracy, percent.
    pub surrogate_ba: f64,
    /// Share of the perturbed images the surrogate misclassifies, percent; None when no image
    /// was perturbed (rate 0).
    pub pgd_success: Option<f64>,
    pub perturbed: usize,
    pub surrogate_dir: PathBuf,
    /// Whether the perturbed images came from the cache.
    pub reused: bool,
}

/// The BadNets stamp as a clean-label attack named `cl`, carrying the CL parameters.
struct Stamp {
    trigger: Box<dyn Attack>,
    params: serde_json::Value,
}

impl Attack for Stamp {
    fn name(&self) -> &'static str {
        "cl"
    }
    fn label_mode(&self) -> LabelMode {
        LabelMode::CleanLabel
    }
    fn apply(&self, image: &mut [u8]) {
        self.trigger.apply(image)
    }
    fn params(&self) -> serde_json::Value {
        self.params.clone()
    }
}

/// Poisons `dataset` with CL-ε. `cache` holds the surrogate's run directory and the perturbed
/// images; `backend` trains and attacks with the surrogate.
pub fn label_consistent(dataset: &Dataset, source: &str, params: &ClParams, spec: &PoisonSpec, cache: &Path, backend: Backend, progress: &dyn TrainProgress) -> Result<(Bundle, AttackRecord, ClReport)> {
    params.validate()?;
    let config = surrogate_config(&params.surrogate)?;
    let shape = dataset.shape();
    let trigger = vab_attacks::build("badnets", &params.trigger, shape, spec.seed).map_err(|e| CoreError::Invalid(format!("CL trigger: {e}")))?;

    // The surrogate: trained once per (data, configuration).
    let surrogate_key = training_key(&config, &[], &dataset.train);
    let surrogate_dir = cache.join(format!("surrogate-{surrogate_key}"));
    let clean = Bundle::clean(dataset.clone(), source);
    let (train, evals, _) = crate::data::split(clean).map_err(CoreError::Invalid)?;
    let summary = train_baseline(&config, backend, &train, &evals, &surrogate_dir, surrogate_dir.join("checkpoint").exists(), progress)?;
    let device = backend.device().map_err(CoreError::Invalid)?.autodiff();
    let fresh = Network::new(config.model.arch, shape.channels, dataset.num_classes(), &device);
    let (mut parts, _): (_, serde_json::Value) = checkpoint::load(&surrogate_dir, vec![("model", fresh, optim::build(&config.train.optimizer))])?
        .ok_or_else(|| CoreError::file(&surrogate_dir, "the surrogate's checkpoint is missing"))?;
    let model = parts.remove(0).0;

    // The perturbed images: cached per surrogate, PGD parameters and selection.
    let convention = spec.convention.unwrap_or(RateConvention::OfTargetClass);
    let chosen = poison_indices(dataset.train.labels(), LabelMode::CleanLabel, spec.target, spec.rate, convention, spec.seed).map_err(|e| CoreError::Invalid(e.to_string()))?;
    let mut key = Sha256::new();
    key.update(surrogate_key.as_bytes());
    key.update(serde_json::to_vec(&(params.epsilon, params.steps, params.step_size, &chosen)).expect("serialises"));
    let images_file = cache.join(format!("cl-{}.u8", hex(&key.finalize()[..8])));
    let per_image = shape.len();
    let cached = std::fs::read(&images_file).ok().filter(|b| b.len() == chosen.len() * per_image + chosen.len());
    let reused = cached.is_some();
    let (pixels, fooled) = match cached {
        Some(bytes) => {
            let (pixels, fooled) = bytes.split_at(chosen.len() * per_image);
            (pixels.to_vec(), fooled.iter().map(|&f| f == 1).collect::<Vec<bool>>())
        }
        None => {
            let selected = dataset.train.select(&chosen);
            let norm = Normalization::of(&dataset.train);
            let pgd = Pgd { epsilon: params.epsilon, steps: params.steps, step_size: params.step_size };
            progress.start(&format!("PGD on {} target-class images", chosen.len()), 1, chosen.len());
            let (pixels, fooled) = perturb(&model, &selected, dataset.num_classes(), &norm, &pgd, config.train.batch_size, &device);
            progress.finish(&format!("PGD on {} target-class images done", chosen.len()));
            let mut bytes = pixels.clone();
            bytes.extend(fooled.iter().map(|&f| f as u8));
            std::fs::create_dir_all(cache).map_err(|e| CoreError::io(cache, e))?;
            let tmp = images_file.with_extension("tmp");
            std::fs::write(&tmp, &bytes).map_err(|e| CoreError::io(&tmp, e))?;
            std::fs::rename(&tmp, &images_file).map_err(|e| CoreError::io(&images_file, e))?;
            (pixels, fooled)
        }
    };
    let mut perturbed = dataset.clone();
    for (k, &i) in chosen.iter().enumerate() {
        perturbed.train.image_mut(i).copy_from_slice(&pixels[k * per_image..(k + 1) * per_image]);
    }
    let report = ClReport {
        surrogate_ba: summary.metrics.ba,
        pgd_success: success_rate(&fooled),
        perturbed: chosen.len(),
        surrogate_dir,
        reused,
    };
    let recorded = serde_json::json!({
        "epsilon": params.epsilon, "steps": params.steps, "step_size": params.step_size,
        "trigger": trigger.params(), "surrogate_config": config,
        "surrogate_ba": report.surrogate_ba, "pgd_success": report.pgd_success,
    });
    let stamp = Stamp { trigger, params: recorded };
    let spec = PoisonSpec { convention: Some(convention), ..spec.clone() };
    let (bundle, record) = poison(&perturbed, source, &stamp, &spec).map_err(|e| CoreError::Invalid(e.to_string()))?;
    Ok((bundle, record, report))
}

/// Percent of `fooled` that is true; None for no images (0 of 0 is no rate).
fn success_rate(fooled: &[bool]) -> Option<f64> {
    (!fooled.is_empty()).then(|| 100.0 * fooled.iter().filter(|&&f| f).count() as f64 / fooled.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Out-of-range parameters are refused before anything trains (epsilon = -5 once reached
    /// `f32::clamp` with min > max after training the surrogate, and panicked).
    #[test]
    fn parameters_out_of_range_are_refused() {
        let params = |epsilon: f32, steps: usize, step_size: f32| ClParams { epsilon, steps, step_size, surrogate: "s.toml".into(), trigger: vab_trigger() };
        assert!(params(16.0, 100, 1.5).validate().is_ok());
        for (bad, needle) in [(params(-5.0, 100, 1.5), "epsilon"), (params(f32::NAN, 100, 1.5), "epsilon"), (params(300.0, 100, 1.5), "epsilon"), (params(16.0, 0, 1.5), "steps"), (params(16.0, 100, 0.0), "step_size")] {
            let err = bad.validate().unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn success_rate_is_a_percentage_and_absent_for_no_images() {
        assert_eq!(success_rate(&[true, false, true, true]), Some(75.0));
        assert_eq!(success_rate(&[]), None);
    }
}
