//! Blend (Chen et al. 2017): x' = (1-α)·x + α·t over the whole image; poison-label.
//!
//! The trigger t is any image file resized to H×W, or vab's built-in trigger: uniform noise
//! from a fixed ChaCha20 seed (so every bundle shares it; vab ships no third-party images —
//! the paper's "Hello Kitty" can be passed as `trigger_file`). Results are rounded to the
//! nearest integer.

use std::path::Path;

use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use vab_data::ImageShape;

use crate::error::{AttackError, Result};
use crate::trigger_image::{read_rgba, to_chw};
use crate::{Attack, LabelMode};

const NAME: &str = "blend";
/// Seed of the built-in noise trigger (fixed, independent of `--seed`).
const BUILTIN_TRIGGER_SEED: u64 = 0x7ab_b1e4d;

/// Blend parameters (config keys).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    /// Blend weight of the trigger, in [0, 1].
    pub alpha: f64,
    /// Trigger image file; `None` uses the built-in noise trigger.
    pub trigger_file: Option<String>,
}

impl Default for Params {
    fn default() -> Self {
        Self { alpha: 0.1, trigger_file: None }
    }
}

/// The Blend trigger for one image shape.
pub struct Blend {
    params: Params,
    trigger: Vec<u8>,
}

impl Blend {
    pub fn new(params: Params, shape: ImageShape) -> Result<Self> {
        if !(0.0..=1.0).contains(&params.alpha) {
            return Err(AttackError::params(NAME, format!("alpha must be in [0, 1], got {}", params.alpha)));
        }
        let trigger = match &params.trigger_file {
            Some(file) => to_chw(&read_rgba(Path::new(file), Some((shape.width, shape.height)))?, shape),
            None => builtin_trigger(shape),
        };
        Ok(Self { params, trigger })
    }
}

/// vab's default trigger: uniform u8 noise of `shape` from a fixed seed.
pub fn builtin_trigger(shape: ImageShape) -> Vec<u8> {
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(BUILTIN_TRIGGER_SEED);
    (0..shape.len()).map(|_| rng.gen()).collect()
}

impl Attack for Blend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn label_mode(&self) -> LabelMode {
        LabelMode::PoisonLabel
    }

    fn apply(&self, image: &mut [u8]) {
        let a = self.params.alpha;
        for (x, &t) in image.iter_mut().zip(&self.trigger) {
            *x = ((1.0 - a) * *x as f64 + a * t as f64).round() as u8;
        }
    }

    fn params(&self) -> serde_json::Value {
        serde_json::to_value(&self.params).expect("params serialise")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blends_a_hand_computed_case() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.png");
        image::RgbImage::from_pixel(1, 1, image::Rgb([200, 0, 100])).save(&path).unwrap();
        let shape = ImageShape { channels: 3, height: 1, width: 1 };
        let attack = Blend::new(Params { alpha: 0.25, trigger_file: Some(path.to_string_lossy().into()) }, shape).unwrap();
        let mut image = vec![100, 40, 101];
        attack.apply(&mut image);
        // 0.75·100 + 0.25·200 = 125; 0.75·40 + 0 = 30; 0.75·101 + 25 = 100.75 → 101
        assert_eq!(image, vec![125, 30, 101]);
    }

    #[test]
    fn builtin_trigger_is_fixed_and_alpha_is_checked() {
        let shape = ImageShape { channels: 3, height: 4, width: 4 };
        assert_eq!(builtin_trigger(shape), builtin_trigger(shape));
        assert!(builtin_trigger(shape).iter().any(|&v| v > 128) && builtin_trigger(shape).iter().any(|&v| v < 128));
        let err = Blend::new(Params { alpha: 1.5, trigger_file: None }, shape).err().unwrap().to_string();
        assert_eq!(err, "blend: alpha must be in [0, 1], got 1.5");
    }

    #[test]
    fn unreadable_trigger_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.png");
        std::fs::write(&path, b"not an image").unwrap();
        let shape = ImageShape { channels: 3, height: 2, width: 2 };
        let err = Blend::new(Params { alpha: 0.1, trigger_file: Some(path.to_string_lossy().into()) }, shape).err().unwrap();
        assert!(err.to_string().contains("t.png: cannot read trigger image"), "{err}");
    }
}
