//! Turns a clean dataset into a poisoned [`Bundle`]: select, trigger, relabel, add cross
//! samples, build the triggered test set, record everything in the metadata.

use serde::{Deserialize, Serialize};
use vab_data::{Bundle, Dataset, ImageSet};

use crate::error::{AttackError, Result};
use crate::rng::{stream, Purpose};
use crate::select::{cross_indices, poison_indices, RateConvention};
use crate::{Attack, LabelMode};

/// How poisoned samples are relabelled, and which test images measure the attack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelRule {
    /// Every poisoned sample gets the target label; the triggered test set is every test image
    /// whose true label is not the target.
    AllToOne,
    /// y → (y + 1) mod K; the triggered test set is every test image.
    AllToAll,
}

impl std::str::FromStr for LabelRule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "all_to_one" => Ok(LabelRule::AllToOne),
            "all_to_all" => Ok(LabelRule::AllToAll),
            _ => Err(format!("unknown label rule `{s}`; use all_to_one or all_to_all")),
        }
    }
}

/// The poisoning request.
#[derive(Clone, Debug, PartialEq)]
pub struct PoisonSpec {
    pub rate: f64,
    /// `None`: the default of the attack's label mode.
    pub convention: Option<RateConvention>,
    pub label_rule: LabelRule,
    pub target: u16,
    pub seed: u64,
}

/// What was done, as recorded in the bundle metadata (`attack`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttackRecord {
    pub name: String,
    pub label_mode: LabelMode,
    pub params: serde_json::Value,
    pub label_rule: LabelRule,
    pub target: u16,
    pub rate: f64,
    pub rate_convention: RateConvention,
    pub seed: u64,
    /// Training samples carrying the trigger.
    pub poisoned: usize,
    /// Of those, how many changed label.
    pub relabelled: usize,
    /// Cross (noise) samples: modified, labels kept, not flagged as poisoned.
    pub cross: usize,
    pub triggered_test: usize,
}

/// Poisons `dataset` with `attack` as `spec` asks; `source` names the clean data.
pub fn poison(dataset: &Dataset, source: &str, attack: &dyn Attack, spec: &PoisonSpec) -> Result<(Bundle, AttackRecord)> {
    let k = dataset.num_classes();
    if spec.target as usize >= k {
        return Err(AttackError::Poisoning(format!("target {} is out of range: the dataset has {k} classes (0-{})", spec.target, k - 1)));
    }
    let mode = attack.label_mode();
    if mode == LabelMode::CleanLabel && spec.label_rule == LabelRule::AllToAll {
        return Err(AttackError::Poisoning(format!("{} is a clean-label attack; it needs all_to_one", attack.name())));
    }
    let convention = spec.convention.unwrap_or(RateConvention::default_for(mode));
    let true_labels = dataset.train.labels().to_vec();
    let poisoned = poison_indices(&true_labels, mode, spec.target, spec.rate, convention, spec.seed)?;
    let cross = cross_indices(true_labels.len(), &poisoned, attack.cross_ratio(), spec.seed)?;

    let mut bundle = Bundle::clean(dataset.clone(), source);
    let mut is_poisoned = vec![false; true_labels.len()];
    poisoned.iter().for_each(|&i| is_poisoned[i] = true);
    apply_where(&mut bundle.train, &is_poisoned, attack);
    let mut noise = stream(spec.seed, Purpose::CrossNoise);
    for &i in &cross {
        attack.apply_cross(bundle.train.image_mut(i), &mut noise);
    }
    if mode == LabelMode::PoisonLabel {
        let labels = bundle.train.labels_mut();
        for &i in &poisoned {
            labels[i] = match spec.label_rule {
                LabelRule::AllToOne => spec.target,
                LabelRule::AllToAll => ((labels[i] as usize + 1) % k) as u16,
            };
        }
    }
    let relabelled = poisoned.iter().filter(|&&i| bundle.train.labels()[i] != true_labels[i]).count();
    bundle.train_poisoned = is_poisoned;

    let triggered: Vec<usize> = (0..dataset.test.len())
        .filter(|&i| spec.label_rule == LabelRule::AllToAll || dataset.test.labels()[i] != spec.target)
        .collect();
    bundle.test_triggered = dataset.test.select(&triggered);
    apply_where(&mut bundle.test_triggered, &vec![true; triggered.len()], attack);
    bundle.test_triggered_index = triggered;
    bundle.extra = attack.artefacts();

    let record = AttackRecord {
        name: attack.name().to_string(),
        label_mode: mode,
        params: attack.params(),
        label_rule: spec.label_rule,
        target: spec.target,
        rate: spec.rate,
        rate_convention: convention,
        seed: spec.seed,
        poisoned: poisoned.len(),
        relabelled,
        cross: cross.len(),
        triggered_test: bundle.test_triggered.len(),
    };
    bundle.meta.attack = Some(serde_json::to_value(&record).expect("record serialises"));
    Ok((bundle, record))
}

/// Applies the trigger to every image whose flag is set: gathered, stamped together (see
/// [`Attack::apply_all`]), written back.
fn apply_where(set: &mut ImageSet, flags: &[bool], attack: &dyn Attack) {
    let shape = set.shape();
    let chosen: Vec<usize> = (0..set.len()).filter(|&i| flags[i]).collect();
    let mut images: Vec<u8> = chosen.iter().flat_map(|&i| set.image(i).iter().copied()).collect();
    attack.apply_all(&mut images, shape);
    for (&i, image) in chosen.iter().zip(images.chunks_exact(shape.len())) {
        set.image_mut(i).copy_from_slice(image);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{badnets, build, sig};
    use vab_data::ImageShape;

    const SHAPE: ImageShape = ImageShape { channels: 3, height: 8, width: 8 };

    /// 10 classes × 20 training and × 3 test images, pixels from the index.
    fn dataset() -> Dataset {
        let set = |n: usize, per: usize| {
            let pixels = (0..n * SHAPE.len()).map(|i| (i * 7 % 200) as u8).collect();
            ImageSet::new(SHAPE, pixels, (0..n).map(|i| (i / per) as u16).collect()).unwrap()
        };
        Dataset::new((0..10).map(|i| format!("c{i}")).collect(), set(200, 20), set(30, 3)).unwrap()
    }

    fn spec(rate: f64) -> PoisonSpec {
        PoisonSpec { rate, convention: None, label_rule: LabelRule::AllToOne, target: 0, seed: 1 }
    }

    #[test]
    fn badnets_poisons_flags_relabels_and_triggers_the_non_target_test_set() {
        let ds = dataset();
        let attack = badnets::BadNets::new(badnets::Params { row: Some(0), col: Some(0), ..Default::default() }, SHAPE).unwrap();
        let (bundle, record) = poison(&ds, "unit", &attack, &spec(0.1)).unwrap();
        assert_eq!((record.poisoned, record.triggered_test), (20, 27));
        let flagged: Vec<usize> = (0..200).filter(|&i| bundle.train_poisoned[i]).collect();
        assert_eq!(flagged.len(), 20);
        assert!(flagged.iter().all(|&i| bundle.train.labels()[i] == 0));
        assert_eq!(record.relabelled, flagged.iter().filter(|&&i| ds.train.labels()[i] != 0).count());
        for i in 0..200 {
            assert_eq!(bundle.train.image(i) != ds.train.image(i), bundle.train_poisoned[i], "image {i}");
        }
        assert_eq!(bundle.train_true_labels, ds.train.labels());
        assert!(bundle.test_triggered.labels().iter().all(|&l| l != 0));
        assert_eq!(bundle.test_triggered.image(0)[0], 180, "the trigger is on the test images");
        assert_eq!(bundle.test, ds.test, "the clean test set is untouched");
        let meta: AttackRecord = serde_json::from_value(bundle.meta.attack.clone().unwrap()).unwrap();
        assert_eq!(meta, record);
    }

    #[test]
    fn sig_poisons_only_the_target_class_and_keeps_labels() {
        let ds = dataset();
        let attack = sig::Sig::new(sig::Params::default(), SHAPE).unwrap();
        let (bundle, record) = poison(&ds, "unit", &attack, &spec(0.5)).unwrap();
        assert_eq!((record.poisoned, record.relabelled), (10, 0));
        assert_eq!(record.rate_convention, RateConvention::OfTargetClass);
        assert!((0..200).filter(|&i| bundle.train_poisoned[i]).all(|i| ds.train.labels()[i] == 0));
        assert_eq!(bundle.train.labels(), ds.train.labels());
    }

    #[test]
    fn wanet_adds_unflagged_cross_samples_and_stores_its_field() {
        let ds = dataset();
        let attack = build("wanet", &serde_json::json!({}), SHAPE, 1).unwrap();
        let (bundle, record) = poison(&ds, "unit", attack.as_ref(), &spec(0.1)).unwrap();
        assert_eq!((record.poisoned, record.cross), (20, 40));
        let changed_unflagged = (0..200).filter(|&i| !bundle.train_poisoned[i] && bundle.train.image(i) != ds.train.image(i)).count();
        assert!(changed_unflagged > 30, "cross samples should be warped: {changed_unflagged}");
        assert_eq!(bundle.extra["attack.wanet_grid"].shape, vec![8, 8, 2]);
    }

    #[test]
    fn all_to_all_relabels_to_the_next_class_and_triggers_every_test_image() {
        let ds = dataset();
        let attack = build("blend", &serde_json::json!({"alpha": 0.2}), SHAPE, 1).unwrap();
        let spec = PoisonSpec { label_rule: LabelRule::AllToAll, ..spec(0.2) };
        let (bundle, record) = poison(&ds, "unit", attack.as_ref(), &spec).unwrap();
        assert_eq!((record.poisoned, record.triggered_test, record.relabelled), (40, 30, 40));
        for i in (0..200).filter(|&i| bundle.train_poisoned[i]) {
            assert_eq!(bundle.train.labels()[i], (ds.train.labels()[i] + 1) % 10);
        }
    }

    #[test]
    fn same_seed_gives_identical_bundle_bytes_and_another_seed_other_indices() {
        let ds = dataset();
        let attack = build("wanet", &serde_json::json!({}), SHAPE, 1).unwrap();
        let bytes = |seed| poison(&ds, "unit", attack.as_ref(), &PoisonSpec { seed, ..spec(0.1) }).unwrap().0;
        assert_eq!(bytes(1).to_bytes().unwrap(), bytes(1).to_bytes().unwrap());
        assert_ne!(bytes(1).train_poisoned, bytes(2).train_poisoned);
    }

    #[test]
    fn target_out_of_range_and_clean_label_all_to_all_are_rejected() {
        let ds = dataset();
        let attack = build("sig", &serde_json::json!({}), SHAPE, 1).unwrap();
        let err = poison(&ds, "u", attack.as_ref(), &PoisonSpec { target: 10, ..spec(0.1) }).unwrap_err();
        assert_eq!(err.to_string(), "target 10 is out of range: the dataset has 10 classes (0-9)");
        let err = poison(&ds, "u", attack.as_ref(), &PoisonSpec { label_rule: LabelRule::AllToAll, ..spec(0.1) }).unwrap_err();
        assert!(err.to_string().contains("clean-label"), "{err}");
    }
}
