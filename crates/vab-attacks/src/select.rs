//! Which training samples an attack poisons, under an explicit rate convention (method.md §1).
//!
//! - `of_dataset`: count = ⌊rate·N⌋ (poison-label default; drawn from all classes, so about
//!   1/K of the picks already carry the target label and keep it).
//! - `of_target_class`: count = ⌊rate·|target class|⌋ (clean-label default: the V&B code's
//!   500 images on CIFAR-10 at rate 0.1; BackdoorBench uses `of_dataset` instead).
//!
//! Poison-label attacks draw from every sample, clean-label attacks from the target class only.
//! Indices are a seeded uniform sample without replacement, returned in ascending order.

use rand::seq::index;
use serde::{Deserialize, Serialize};

use crate::error::{AttackError, Result};
use crate::rng::{stream, Purpose};
use crate::LabelMode;

/// What the poisoning rate is a fraction of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateConvention {
    OfDataset,
    OfTargetClass,
}

impl RateConvention {
    /// The V&B default for an attack of `mode`.
    pub fn default_for(mode: LabelMode) -> Self {
        match mode {
            LabelMode::PoisonLabel => RateConvention::OfDataset,
            LabelMode::CleanLabel => RateConvention::OfTargetClass,
        }
    }
}

impl std::str::FromStr for RateConvention {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "of_dataset" => Ok(RateConvention::OfDataset),
            "of_target_class" => Ok(RateConvention::OfTargetClass),
            _ => Err(format!("unknown rate convention `{s}`; use of_dataset or of_target_class")),
        }
    }
}

impl std::fmt::Display for RateConvention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RateConvention::OfDataset => "of_dataset",
            RateConvention::OfTargetClass => "of_target_class",
        })
    }
}

/// ⌊rate·base⌋, robust to the rounding of products like 0.1·50000.
pub fn floor_count(rate: f64, base: usize) -> usize {
    (rate * base as f64 + 1e-9).floor() as usize
}

/// Seeded choice of the samples to poison. `labels` are the clean training labels.
pub fn poison_indices(
    labels: &[u16],
    mode: LabelMode,
    target: u16,
    rate: f64,
    convention: RateConvention,
    seed: u64,
) -> Result<Vec<usize>> {
    if !(0.0..=1.0).contains(&rate) {
        return Err(AttackError::Poisoning(format!("rate must be in [0, 1], got {rate}")));
    }
    let in_target: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == target).collect();
    let pool: Vec<usize> = match mode {
        LabelMode::PoisonLabel => (0..labels.len()).collect(),
        LabelMode::CleanLabel => in_target.clone(),
    };
    if pool.is_empty() && rate > 0.0 {
        return Err(AttackError::Poisoning(format!(
            "target class {target} has no training samples; a clean-label attack poisons only target-class samples"
        )));
    }
    let base = match convention {
        RateConvention::OfDataset => labels.len(),
        RateConvention::OfTargetClass => in_target.len(),
    };
    let count = floor_count(rate, base);
    if count > pool.len() {
        return Err(AttackError::Poisoning(format!(
            "rate {rate} of {base} samples asks for {count} poisoned samples but only {} are eligible \
             (clean-label attacks poison target-class samples only); lower the rate or use of_target_class",
            pool.len()
        )));
    }
    let mut rng = stream(seed, Purpose::PoisonIndices);
    let mut picked: Vec<usize> = index::sample(&mut rng, pool.len(), count).into_iter().map(|i| pool[i]).collect();
    picked.sort_unstable();
    Ok(picked)
}

/// Seeded choice of `⌊ratio·N⌋` cross (noise) samples among the samples not in `poisoned`
/// (sorted), in ascending order.
pub fn cross_indices(n: usize, poisoned: &[usize], ratio: f64, seed: u64) -> Result<Vec<usize>> {
    let free: Vec<usize> = (0..n).filter(|i| poisoned.binary_search(i).is_err()).collect();
    let count = floor_count(ratio, n);
    if count > free.len() {
        return Err(AttackError::Poisoning(format!(
            "{count} cross samples requested but only {} samples are not poisoned; lower cross_ratio or the rate",
            free.len()
        )));
    }
    let mut rng = stream(seed, Purpose::CrossIndices);
    let mut picked: Vec<usize> = index::sample(&mut rng, free.len(), count).into_iter().map(|i| free[i]).collect();
    picked.sort_unstable();
    Ok(picked)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 10 classes × 100 samples, class-major.
    fn labels() -> Vec<u16> {
        (0..1000).map(|i| (i / 100) as u16).collect()
    }

    #[test]
    fn of_dataset_counts_exactly_and_draws_from_every_class() {
        let picked = poison_indices(&labels(), LabelMode::PoisonLabel, 0, 0.1, RateConvention::OfDataset, 1).unwrap();
        assert_eq!(picked.len(), 100);
        assert!(picked.windows(2).all(|w| w[0] < w[1]));
        assert!(picked.iter().any(|&i| i >= 900) && picked.iter().any(|&i| i < 100));
    }

    #[test]
    fn of_target_class_counts_within_the_target_class() {
        let picked = poison_indices(&labels(), LabelMode::CleanLabel, 3, 0.1, RateConvention::OfTargetClass, 1).unwrap();
        assert_eq!(picked.len(), 10);
        assert!(picked.iter().all(|&i| (300..400).contains(&i)));
        // BackdoorBench's convention: 10% of the whole set = the whole target class.
        let all = poison_indices(&labels(), LabelMode::CleanLabel, 3, 0.1, RateConvention::OfDataset, 1).unwrap();
        assert_eq!(all, (300..400).collect::<Vec<_>>());
        let err = poison_indices(&labels(), LabelMode::CleanLabel, 3, 0.2, RateConvention::OfDataset, 1).unwrap_err();
        assert!(err.to_string().contains("asks for 200 poisoned samples but only 100 are eligible"), "{err}");
    }

    #[test]
    fn floor_is_exact_for_typical_rates() {
        assert_eq!(floor_count(0.1, 50000), 5000);
        assert_eq!(floor_count(0.1, 5000), 500);
        assert_eq!(floor_count(0.07, 999), 69);
        assert_eq!(floor_count(0.3, 10), 3);
    }

    #[test]
    fn seed_decides_the_indices() {
        let a = poison_indices(&labels(), LabelMode::PoisonLabel, 0, 0.1, RateConvention::OfDataset, 1).unwrap();
        let b = poison_indices(&labels(), LabelMode::PoisonLabel, 0, 0.1, RateConvention::OfDataset, 1).unwrap();
        let c = poison_indices(&labels(), LabelMode::PoisonLabel, 0, 0.1, RateConvention::OfDataset, 2).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn bad_rate_and_empty_target_class_are_rejected() {
        let err = poison_indices(&labels(), LabelMode::PoisonLabel, 0, 1.5, RateConvention::OfDataset, 1).unwrap_err();
        assert_eq!(err.to_string(), "rate must be in [0, 1], got 1.5");
        let no_nines: Vec<u16> = labels().into_iter().map(|l| l % 9).collect();
        let err = poison_indices(&no_nines, LabelMode::CleanLabel, 9, 0.1, RateConvention::OfTargetClass, 1).unwrap_err();
        assert!(err.to_string().contains("target class 9 has no training samples"), "{err}");
    }

    #[test]
    fn cross_samples_avoid_poisoned_ones() {
        let poisoned: Vec<usize> = (0..1000).step_by(3).collect();
        let cross = cross_indices(1000, &poisoned, 0.2, 7).unwrap();
        assert_eq!(cross.len(), 200);
        assert!(cross.iter().all(|i| poisoned.binary_search(i).is_err()));
    }
}
