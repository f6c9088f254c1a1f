//! The type boundary between what training may see and what only reporting may see.
//!
//! A bundle splits into [`TrainingSet`] (images and the labels they are trained on),
//! [`EvalSets`] (clean and triggered test sets, the attack's label rule) and [`GroundTruth`]
//! (which samples were poisoned, their true labels). Defenses receive the first two; only
//! reporting code receives the third, so no training decision can depend on the flags.

use std::sync::Arc;

use rand::SeedableRng;

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
    /// Index in `test` of each triggered image's untriggered original, so that the attack's
    /// success test can be applied to the originals too ([`crate::engine::eval::Metrics`]);
    /// `None` for a sample ([`EvalSets::sample`]), whose test set may lack the originals.
    pub originals: Option<Arc<[usize]>>,
    /// How the attack relabels: decides which prediction counts as attack success.
    pub attack: Option<(LabelRule, u16)>,
    pub num_classes: usize,
}

impl EvalSets {
    /// At most `n` clean test images, drawn uniformly with `seed` (in index order), for cheap
    /// monitoring. Where the originals are known, the triggered sample is the triggered
    /// versions of the drawn images, so the untriggered rate can be scored on it too;
    /// otherwise it is at most `n` triggered images drawn the same way.
    pub fn sample(&self, n: usize, seed: u64) -> EvalSets {
        let draw = |len: usize, stream: u64| -> Vec<usize> {
            if len <= n {
                return (0..len).collect();
            }
            let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed ^ stream);
            let mut chosen = rand::seq::index::sample(&mut rng, len, n).into_vec();
            chosen.sort_unstable();
            chosen
        };
        let clean = draw(self.test.len(), 1);
        let (triggered, originals) = match &self.originals {
            Some(originals) => {
                let mut position = vec![None; self.test.len()];
                for (p, &i) in clean.iter().enumerate() {
                    position[i] = Some(p);
                }
                let (triggered, originals): (Vec<usize>, Vec<usize>) =
                    originals.iter().enumerate().filter_map(|(t, &o)| position[o].map(|p| (t, p))).unzip();
                (triggered, Some(originals.into()))
            }
            None => (draw(self.triggered.len(), 2), None),
        };
        EvalSets {
            test: Arc::new(self.test.select(&clean)),
            triggered: Arc::new(self.triggered.select(&triggered)),
            originals,
            attack: self.attack,
            num_classes: self.num_classes,
        }
    }
}

/// The attack's ground truth, for detection metrics only.
#[derive(Clone, Debug)]
pub struct GroundTruth {
    pub poisoned: Vec<bool>,
    pub true_labels: Vec<u16>,
}

/// Splits a bundle along the boundary above. A bundle without training or test images is an
/// error: nothing could be trained, or BA would be a figure over no images.
pub fn split(bundle: Bundle) -> Result<(TrainingSet, EvalSets, GroundTruth), String> {
    if bundle.train.is_empty() {
        return Err("the bundle has no training images".into());
    }
    if bundle.test.is_empty() {
        return Err("the bundle has no test images, so BA and ASR cannot be measured; make it from data with a test split (an image folder needs `test/` beside `train/`)".into());
    }
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
        EvalSets { test: Arc::new(bundle.test), triggered: Arc::new(bundle.test_triggered), originals: Some(bundle.test_triggered_index.into()), attack, num_classes },
        GroundTruth { poisoned: bundle.train_poisoned, true_labels: bundle.train_true_labels },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vab_data::ImageShape;

    fn set(n: usize) -> Arc<ImageSet> {
        let shape = ImageShape { channels: 1, height: 1, width: 1 };
        Arc::new(ImageSet::new(shape, (0..n).map(|i| i as u8).collect(), (0..n).map(|i| (i % 10) as u16).collect()).unwrap())
    }

    /// A bundle without training or test images is refused with what is missing.
    #[test]
    fn split_needs_training_and_test_images() {
        let shape = ImageShape { channels: 1, height: 1, width: 1 };
        let names = vec!["a".to_string(), "b".to_string()];
        let bundle = |train: usize, test: usize| {
            let set = |n: usize| ImageSet::new(shape, vec![7; n], vec![1; n]).unwrap();
            Bundle::clean(vab_data::Dataset::new(names.clone(), set(train), set(test)).unwrap(), "test")
        };
        assert!(split(bundle(3, 2)).is_ok());
        assert_eq!(split(bundle(0, 2)).unwrap_err(), "the bundle has no training images");
        assert!(split(bundle(3, 0)).unwrap_err().contains("has no test images"));
    }

    #[test]
    fn eval_sample_is_a_seeded_subset_with_the_triggered_versions_of_its_images() {
        // Triggered image t is the trigger on test image 2t + 1 (pixel 100 + 2t + 1).
        let originals: Vec<usize> = (0..30).map(|t| 2 * t + 1).collect();
        let shape = ImageShape { channels: 1, height: 1, width: 1 };
        let triggered = ImageSet::new(shape, originals.iter().map(|&o| (100 + o) as u8).collect(), originals.iter().map(|&o| (o % 10) as u16).collect()).unwrap();
        let evals = EvalSets { test: set(100), triggered: Arc::new(triggered), originals: Some(originals.into()), attack: Some((LabelRule::AllToOne, 0)), num_classes: 10 };
        let a = evals.sample(40, 7);
        let pixels = |s: &ImageSet| (0..s.len()).map(|i| s.image(i)[0]).collect::<Vec<_>>();
        let picked = pixels(&a.test);
        assert_eq!(picked.len(), 40);
        assert!(picked.windows(2).all(|w| w[0] < w[1]), "distinct, in index order");
        assert!(picked.iter().enumerate().all(|(i, &p)| a.test.labels()[i] == (p % 10) as u16), "labels follow their images");
        let expected: Vec<u8> = picked.iter().filter(|&&p| p % 2 == 1 && p < 60).map(|&p| 100 + p).collect();
        assert!(!expected.is_empty());
        assert_eq!(pixels(&a.triggered), expected, "the triggered versions of the drawn images, no others");
        let originals = a.originals.as_ref().expect("originals within the sample");
        assert!((0..a.triggered.len()).all(|t| a.triggered.image(t)[0] == 100 + picked[originals[t]]), "each points at its original");
        assert_eq!(pixels(&evals.sample(40, 7).test), picked);
        assert_ne!(pixels(&evals.sample(40, 8).test), picked);
        assert_eq!(a.attack, evals.attack);

        let whole = evals.sample(100, 7);
        assert_eq!((whole.test.len(), whole.triggered.len(), whole.originals.as_deref()), (100, 30, evals.originals.as_deref()), "n ≥ the test set keeps everything");
        let unknown = EvalSets { originals: None, ..evals.clone() };
        let b = unknown.sample(20, 7);
        assert_eq!((b.triggered.len(), b.originals), (20, None), "without originals the triggered set is drawn on its own");
    }
}
