//! The type boundary between what training may see and what only reporting may see.
//!
//! A bundle splits into [`TrainingSet`] (images and the labels they are trained on),
//! [`EvalSets`] (clean and triggered test sets, the attack's label rule) and [`GroundTruth`]
//! (which samples were poisoned, their true labels). Defenses receive the first two; only
//! reporting code receives the third, so no training decision can depend on the flags.

use std::sync::Arc;

use vab_attacks::poison::{AttackRecord, LabelRule};
use vab_data::{Bundle, ImageSet};

/// What a defense may train on: images and their (possibly poisoned) labels. It has no poison
/// flags, so code holding only a `TrainingSet` cannot read them:
///
/// ```compile_fail
/// fn peek(set: &vab_core::data::TrainingSet) -> &Vec<bool> {
///     &set.poisoned
/// }
/// ```
#[derive(Clone, Debug)]
pub struct TrainingSet {
    pub images: Arc<ImageSet>,
    pub num_classes: usize,
}

/// Test sets for BA, ASR and RA.
#[derive(Clone, Debug)]
pub struct EvalSets {
    pub test: Arc<ImageSet>,
    /// Triggered non-target test images with their true labels (empty for a clean bundle).
    pub triggered: Arc<ImageSet>,
    /// How the attack relabels: decides which prediction counts as attack success.
    pub attack: Option<(LabelRule, u16)>,
    pub num_classes: usize,
}

/// The attack's ground truth, for detection metrics only.
#[derive(Clone, Debug)]
pub struct GroundTruth {
    pub poisoned: Vec<bool>,
    pub true_labels: Vec<u16>,
}

/// Splits a bundle along the boundary above.
pub fn split(bundle: Bundle) -> Result<(TrainingSet, EvalSets, GroundTruth), String> {
    let num_classes = bundle.meta.class_names.len();
    let attack = match &bundle.meta.attack {
        Some(value) => {
            let record: AttackRecord = serde_json::from_value(value.clone())
                .map_err(|e| format!("the bundle's attack record is unreadable: {e}"))?;
            Some((record.label_rule, record.target))
        }
        None => None,
    };
    Ok((
        TrainingSet { images: Arc::new(bundle.train), num_classes },
        EvalSets { test: Arc::new(bundle.test), triggered: Arc::new(bundle.test_triggered), attack, num_classes },
        GroundTruth { poisoned: bundle.train_poisoned, true_labels: bundle.train_true_labels },
    ))
}
