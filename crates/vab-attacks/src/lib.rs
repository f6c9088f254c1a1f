//! # vab-attacks
//!
//! Reproducible backdoor attacks on in-memory image sets, with no DL framework: one file per
//! trigger ([`badnets`], [`blend`], [`sig`], [`wanet`]), poison-index selection under an
//! explicit rate convention ([`select`]), and [`poison`], which writes the result as a
//! [`vab_data::Bundle`] whose metadata records every choice.
//!
//! ```
//! use vab_attacks::{build, poison::{poison, LabelRule, PoisonSpec}};
//! # let shape = vab_data::ImageShape { channels: 3, height: 32, width: 32 };
//! # let set = |n: usize| vab_data::ImageSet::new(shape, vec![0; n * shape.len()], (0..n).map(|i| (i % 10) as u16).collect()).unwrap();
//! # let dataset = vab_data::Dataset::new((0..10).map(|i| i.to_string()).collect(), set(100), set(20)).unwrap();
//! let attack = build("badnets", &serde_json::json!({"preset": "vab"}), shape, 1)?;
//! let spec = PoisonSpec { rate: 0.1, convention: None, label_rule: LabelRule::AllToOne, target: 0, seed: 1 };
//! let (bundle, record) = poison(&dataset, "example", attack.as_ref(), &spec)?;
//! assert_eq!(record.poisoned, 10);
//! # Ok::<(), vab_attacks::AttackError>(())
//! ```
//!
//! Attacks that need a trained model (label-consistent PGD, the input-aware generator) live in
//! vab-core.

pub mod badnets;
pub mod blend;
mod error;
pub mod poison;
pub mod rng;
pub mod select;
pub mod sig;
mod trigger_image;
pub mod wanet;

use std::collections::BTreeMap;

use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use vab_data::bundle::F32Tensor;
use vab_data::ImageShape;

pub use error::{AttackError, Result};

/// Whether poisoned training samples are relabelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelMode {
    /// Poisoned samples take the label rule's label (BadNets, Blend, WaNet).
    PoisonLabel,
    /// Only target-class samples are poisoned and keep their label (SIG).
    CleanLabel,
}

/// A trigger, built for one image shape.
pub trait Attack: Send + Sync {
    /// The registry name.
    fn name(&self) -> &'static str;
    /// Poison-label or clean-label.
    fn label_mode(&self) -> LabelMode;
    /// Stamps the trigger on one C×H×W image in place.
    fn apply(&self, image: &mut [u8]);
    /// Stamps the trigger on many images of `shape`, stored back to back. The default applies
    /// [`Attack::apply`] to each in parallel; a trigger computed by a network overrides it to
    /// run the network in batches.
    fn apply_all(&self, images: &mut [u8], shape: ImageShape) {
        images.par_chunks_exact_mut(shape.len()).for_each(|image| self.apply(image));
    }
    /// Every parameter with defaults filled in, as recorded in the bundle.
    fn params(&self) -> serde_json::Value;
    /// Tensors the bundle carries so the trigger can be reproduced (e.g. a warping field).
    fn artefacts(&self) -> BTreeMap<String, F32Tensor> {
        BTreeMap::new()
    }
    /// Fraction of the training set made cross (noise) samples that keep their labels.
    fn cross_ratio(&self) -> f64 {
        0.0
    }
    /// The cross transform of one image; randomness comes from `rng`.
    fn apply_cross(&self, _image: &mut [u8], _rng: &mut ChaCha20Rng) {}
}

/// Names accepted by [`build`].
pub const ATTACKS: [&str; 4] = ["badnets", "blend", "sig", "wanet"];

/// Builds the attack `name` from a JSON object of parameters (missing keys take their defaults,
/// unknown keys are errors) for images of `shape`; `seed` drives any randomness of the trigger.
pub fn build(name: &str, params: &serde_json::Value, shape: ImageShape, seed: u64) -> Result<Box<dyn Attack>> {
    Ok(match name {
        "badnets" => Box::new(badnets::BadNets::new(parse("badnets", params)?, shape)?),
        "blend" => Box::new(blend::Blend::new(parse("blend", params)?, shape)?),
        "sig" => Box::new(sig::Sig::new(parse("sig", params)?, shape)?),
        "wanet" => Box::new(wanet::WaNet::new(parse("wanet", params)?, shape, seed)?),
        _ => return Err(AttackError::Unknown(name.to_string())),
    })
}

fn parse<P: DeserializeOwned>(attack: &'static str, params: &serde_json::Value) -> Result<P> {
    serde_json::from_value(params.clone()).map_err(|e| AttackError::params(attack, format!("bad parameters: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: ImageShape = ImageShape { channels: 3, height: 32, width: 32 };

    #[test]
    fn registry_builds_every_attack_with_defaults() {
        for name in ATTACKS {
            let attack = build(name, &serde_json::json!({}), SHAPE, 0).unwrap();
            assert_eq!(attack.name(), name);
        }
    }

    #[test]
    fn unknown_attack_and_unknown_key_are_rejected() {
        let err = build("trojan", &serde_json::json!({}), SHAPE, 0).err().unwrap().to_string();
        assert_eq!(err, "unknown attack `trojan`; available: badnets, blend, sig, wanet");
        let err = build("blend", &serde_json::json!({"alfa": 0.2}), SHAPE, 0).err().unwrap().to_string();
        assert!(err.starts_with("blend: bad parameters: unknown field `alfa`"), "{err}");
    }

    #[test]
    fn recorded_params_include_defaults() {
        let attack = build("sig", &serde_json::json!({"delta": 40.0}), SHAPE, 0).unwrap();
        let params = attack.params();
        assert_eq!(params["delta"], 40.0);
        assert_eq!(params["frequency"], 6.0);
        assert_eq!(params["mode"], "additive");
    }
}
