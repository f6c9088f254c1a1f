//! SIG (Barni et al. 2019): a horizontal sinusoid over columns j, v_j = δ·sin(2π·j·f/W);
//! clean-label (only target-class training samples are poisoned, labels unchanged).
//!
//! Modes: `additive`, x' = clip(x + v) (Barni et al.; the default), and `blended`,
//! x' = clip((1-α)·x + α·v). The authors' V&B code wrote the signed v into a uint8 array,
//! so negative values wrapped to 236-255 (method.md §8); `compat_uint8_wrap = true` reproduces
//! that (v is truncated toward zero and taken modulo 256 before it is applied). Off by default.

use serde::{Deserialize, Serialize};
use vab_data::ImageShape;

use crate::error::{AttackError, Result};
use crate::{Attack, LabelMode};

const NAME: &str = "sig";

/// How the sinusoid is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Additive,
    Blended,
}

/// SIG parameters (config keys).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    /// Amplitude δ in pixel units (0-255 scale).
    pub delta: f64,
    /// Frequency f: periods across the image width.
    pub frequency: f64,
    pub mode: Mode,
    /// Blend weight α of the `blended` mode.
    pub alpha: f64,
    /// Reproduce the authors' uint8 wrap of negative values.
    pub compat_uint8_wrap: bool,
}

impl Default for Params {
    fn default() -> Self {
        Self { delta: 20.0, frequency: 6.0, mode: Mode::Additive, alpha: 0.1, compat_uint8_wrap: false }
    }
}

/// The SIG trigger for one image shape.
pub struct Sig {
    params: Params,
    /// v_j per column, after the optional wrap.
    profile: Vec<f64>,
    shape: ImageShape,
}

impl Sig {
    pub fn new(params: Params, shape: ImageShape) -> Result<Self> {
        if !(0.0..=1.0).contains(&params.alpha) {
            return Err(AttackError::params(NAME, format!("alpha must be in [0, 1], got {}", params.alpha)));
        }
        if !params.delta.is_finite() || !params.frequency.is_finite() {
            return Err(AttackError::params(NAME, "delta and frequency must be finite numbers"));
        }
        let profile = column_profile(params.delta, params.frequency, shape.width)
            .into_iter()
            .map(|v| if params.compat_uint8_wrap { (v.trunc() as i64).rem_euclid(256) as f64 } else { v })
            .collect();
        Ok(Self { params, profile, shape })
    }
}

/// v_j = δ·sin(2π·j·f/W) for j in 0..W.
pub fn column_profile(delta: f64, frequency: f64, width: usize) -> Vec<f64> {
    (0..width).map(|j| delta * (2.0 * std::f64::consts::PI * j as f64 * frequency / width as f64).sin()).collect()
}

impl Attack for Sig {
    fn name(&self) -> &'static str {
        NAME
    }

    fn label_mode(&self) -> LabelMode {
        LabelMode::CleanLabel
    }

    fn apply(&self, image: &mut [u8]) {
        let width = self.shape.width;
        let a = self.params.alpha;
        for (i, x) in image.iter_mut().enumerate() {
            let v = self.profile[i % width];
            let y = match self.params.mode {
                Mode::Additive => *x as f64 + v,
                Mode::Blended => (1.0 - a) * *x as f64 + a * v,
            };
            *x = y.round().clamp(0.0, 255.0) as u8;
        }
    }

    fn params(&self) -> serde_json::Value {
        serde_json::to_value(&self.params).expect("params serialise")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: ImageShape = ImageShape { channels: 3, height: 4, width: 32 };

    #[test]
    fn additive_column_profile_equals_delta_sin_before_clipping() {
        let attack = Sig::new(Params::default(), SHAPE).unwrap();
        let mut image = vec![128u8; SHAPE.len()];
        attack.apply(&mut image);
        for c in 0..3 {
            for row in 0..4 {
                for j in 0..32 {
                    let expected = 20.0 * (2.0 * std::f64::consts::PI * j as f64 * 6.0 / 32.0).sin();
                    let got = image[c * 128 + row * 32 + j] as f64 - 128.0;
                    assert_eq!(got, expected.round(), "channel {c} row {row} col {j}");
                }
            }
        }
    }

    #[test]
    fn additive_clips_at_the_ends_of_the_range() {
        let attack = Sig::new(Params { delta: 40.0, ..Default::default() }, SHAPE).unwrap();
        let mut image = vec![250u8; SHAPE.len()];
        attack.apply(&mut image);
        assert_eq!(*image.iter().max().unwrap(), 255);
        let mut dark = vec![3u8; SHAPE.len()];
        attack.apply(&mut dark);
        assert_eq!(*dark.iter().min().unwrap(), 0);
    }

    #[test]
    fn blended_mode_and_compat_wrap() {
        let params = Params { mode: Mode::Blended, alpha: 0.5, ..Default::default() };
        let v = |j: f64| 20.0 * (2.0 * std::f64::consts::PI * j * 6.0 / 32.0).sin();
        // Column 1: sin(3π/8) > 0; column 3: sin(9π/8) < 0.
        assert!(v(1.0) > 0.0 && v(3.0) < 0.0);
        let mut image = vec![100u8; SHAPE.len()];
        Sig::new(params.clone(), SHAPE).unwrap().apply(&mut image);
        assert_eq!(image[1] as f64, (50.0 + 0.5 * v(1.0)).round());
        assert_eq!(image[3] as f64, (50.0 + 0.5 * v(3.0)).round());
        // With the wrap a negative v becomes 256 + trunc(v); positive columns are unchanged.
        let mut wrapped = vec![100u8; SHAPE.len()];
        Sig::new(Params { compat_uint8_wrap: true, ..params }, SHAPE).unwrap().apply(&mut wrapped);
        assert_eq!(wrapped[1] as f64, (50.0 + 0.5 * v(1.0).trunc()).round());
        assert_eq!(wrapped[3] as f64, (50.0 + 0.5 * (256.0 + v(3.0).trunc())).round());
    }
}
