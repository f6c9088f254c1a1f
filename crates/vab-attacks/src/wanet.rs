//! WaNet (Nguyen & Tran 2021): a fixed, smooth warping field; poison-label, plus "noise"
//! (cross) samples that keep their labels.
//!
//! The field follows the authors' construction: a 2×k×k grid of uniform [-1, 1] control
//! points, divided by its mean absolute value, upsampled bicubically (A = -0.75, corners
//! aligned) to H×W; grid = clamp((identity + s·noise/H)·grid_rescale, -1, 1), in PyTorch's
//! `grid_sample` convention (channel 0 = x/column, 1 = y/row, -1 and 1 are the centres of the
//! edge pixels). Images are sampled bilinearly and rounded. Cross samples use the same grid plus
//! fresh U(-1, 1)/H noise per pixel and coordinate, clamped again. The field comes from the seed
//! and is stored in the bundle (`attack.wanet_grid`, H×W×2; `attack.wanet_control`, 2×k×k).

use std::collections::BTreeMap;

use rand::Rng;
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use vab_data::bundle::F32Tensor;
use vab_data::ImageShape;

use crate::error::{AttackError, Result};
use crate::rng::{stream, Purpose};
use crate::{Attack, LabelMode};

const NAME: &str = "wanet";

/// WaNet parameters (config keys).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    /// Control grid size k.
    pub k: usize,
    /// Warping strength s.
    pub s: f64,
    pub grid_rescale: f64,
    /// Fraction of the whole training set made cross (noise) samples, drawn from the
    /// non-poisoned ones.
    pub cross_ratio: f64,
}

impl Default for Params {
    fn default() -> Self {
        Self { k: 4, s: 0.5, grid_rescale: 1.0, cross_ratio: 0.2 }
    }
}

/// The WaNet warp for one image shape.
pub struct WaNet {
    params: Params,
    shape: ImageShape,
    control: Vec<f32>,
    /// H×W×2 sampling grid.
    grid: Vec<f32>,
}

impl WaNet {
    pub fn new(params: Params, shape: ImageShape, seed: u64) -> Result<Self> {
        if params.k < 2 {
            return Err(AttackError::params(NAME, format!("k must be at least 2, got {}", params.k)));
        }
        if !(0.0..=1.0).contains(&params.cross_ratio) {
            return Err(AttackError::params(NAME, format!("cross_ratio must be in [0, 1], got {}", params.cross_ratio)));
        }
        if !params.s.is_finite() || !params.grid_rescale.is_finite() {
            return Err(AttackError::params(NAME, "s and grid_rescale must be finite numbers"));
        }
        let k = params.k;
        let mut rng = stream(seed, Purpose::WarpField);
        let mut control: Vec<f32> = (0..2 * k * k).map(|_| rng.gen::<f32>() * 2.0 - 1.0).collect();
        let mean_abs = control.iter().map(|v| v.abs()).sum::<f32>() / control.len() as f32;
        control.iter_mut().for_each(|v| *v /= mean_abs);
        let (h, w) = (shape.height, shape.width);
        let mut grid = vec![0f32; h * w * 2];
        for axis in 0..2 {
            let noise = upsample_bicubic(&control[axis * k * k..(axis + 1) * k * k], k, k, h, w);
            for y in 0..h {
                for x in 0..w {
                    let identity = if axis == 0 { linspace(x, w) } else { linspace(y, h) };
                    let g = (identity + params.s as f32 * noise[y * w + x] / h as f32) * params.grid_rescale as f32;
                    grid[(y * w + x) * 2 + axis] = g.clamp(-1.0, 1.0);
                }
            }
        }
        Ok(Self { params, shape, control, grid })
    }

    /// The H×W×2 sampling grid.
    pub fn grid(&self) -> &[f32] {
        &self.grid
    }

    fn warp(&self, image: &mut [u8], grid: &[f32]) {
        let source = image.to_vec();
        let (h, w) = (self.shape.height, self.shape.width);
        for c in 0..self.shape.channels {
            let plane = &source[c * h * w..(c + 1) * h * w];
            for p in 0..h * w {
                image[c * h * w + p] = sample_bilinear(plane, h, w, grid[p * 2], grid[p * 2 + 1]);
            }
        }
    }
}

/// Position `i` of `linspace(-1, 1, n)`.
fn linspace(i: usize, n: usize) -> f32 {
    if n == 1 { 0.0 } else { -1.0 + 2.0 * i as f32 / (n - 1) as f32 }
}

/// Cubic-convolution weights of PyTorch's bicubic upsampling (A = -0.75) at fraction `t`.
fn cubic_weights(t: f32) -> [f32; 4] {
    const A: f32 = -0.75;
    let near = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

/// Bicubic upsampling of an `ih`×`iw` map to `oh`×`ow` with aligned corners and clamped borders,
/// as `F.interpolate(mode="bicubic", align_corners=True)`.
pub fn upsample_bicubic(input: &[f32], ih: usize, iw: usize, oh: usize, ow: usize) -> Vec<f32> {
    let taps = |o: usize, out: usize, inp: usize| -> ([usize; 4], [f32; 4]) {
        let src = if out > 1 { o as f32 * (inp - 1) as f32 / (out - 1) as f32 } else { 0.0 };
        let i0 = src.floor();
        let weights = cubic_weights(src - i0);
        let idx = [-1i64, 0, 1, 2].map(|d| (i0 as i64 + d).clamp(0, inp as i64 - 1) as usize);
        (idx, weights)
    };
    let mut out = vec![0f32; oh * ow];
    for y in 0..oh {
        let (ys, wy) = taps(y, oh, ih);
        for x in 0..ow {
            let (xs, wx) = taps(x, ow, iw);
            let mut v = 0.0;
            for a in 0..4 {
                for b in 0..4 {
                    v += wy[a] * wx[b] * input[ys[a] * iw + xs[b]];
                }
            }
            out[y * ow + x] = v;
        }
    }
    out
}

/// Bilinear sample of one channel at grid coordinates (gx, gy) in [-1, 1], corners aligned.
fn sample_bilinear(plane: &[u8], h: usize, w: usize, gx: f32, gy: f32) -> u8 {
    let ix = (gx + 1.0) / 2.0 * (w - 1) as f32;
    let iy = (gy + 1.0) / 2.0 * (h - 1) as f32;
    let (x0, y0) = (ix.floor().max(0.0) as usize, iy.floor().max(0.0) as usize);
    let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
    let (tx, ty) = (ix - x0 as f32, iy - y0 as f32);
    let at = |y: usize, x: usize| plane[y * w + x] as f32;
    let top = at(y0, x0) * (1.0 - tx) + at(y0, x1) * tx;
    let bottom = at(y1, x0) * (1.0 - tx) + at(y1, x1) * tx;
    (top * (1.0 - ty) + bottom * ty).round().clamp(0.0, 255.0) as u8
}

impl Attack for WaNet {
    fn name(&self) -> &'static str {
        NAME
    }

    fn label_mode(&self) -> LabelMode {
        LabelMode::PoisonLabel
    }

    fn apply(&self, image: &mut [u8]) {
        self.warp(image, &self.grid);
    }

    fn params(&self) -> serde_json::Value {
        serde_json::to_value(&self.params).expect("params serialise")
    }

    fn artefacts(&self) -> BTreeMap<String, F32Tensor> {
        let (h, w, k) = (self.shape.height, self.shape.width, self.params.k);
        BTreeMap::from([
            ("attack.wanet_grid".to_string(), F32Tensor { shape: vec![h, w, 2], data: self.grid.clone() }),
            ("attack.wanet_control".to_string(), F32Tensor { shape: vec![2, k, k], data: self.control.clone() }),
        ])
    }

    fn cross_ratio(&self) -> f64 {
        self.params.cross_ratio
    }

    fn apply_cross(&self, image: &mut [u8], rng: &mut ChaCha20Rng) {
        let h = self.shape.height as f32;
        let noisy: Vec<f32> = self.grid.iter().map(|g| (g + (rng.gen::<f32>() * 2.0 - 1.0) / h).clamp(-1.0, 1.0)).collect();
        self.warp(image, &noisy);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    const SHAPE: ImageShape = ImageShape { channels: 3, height: 32, width: 32 };

    fn random_image(seed: u64) -> Vec<u8> {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        (0..SHAPE.len()).map(|_| rng.gen()).collect()
    }

    #[test]
    fn zero_strength_is_the_identity() {
        let attack = WaNet::new(Params { s: 0.0, ..Default::default() }, SHAPE, 3).unwrap();
        let clean = random_image(1);
        let mut image = clean.clone();
        attack.apply(&mut image);
        assert_eq!(image, clean);
    }

    #[test]
    fn field_stays_in_bounds_and_depends_on_the_seed() {
        let strong = WaNet::new(Params { s: 50.0, ..Default::default() }, SHAPE, 3).unwrap();
        assert!(strong.grid().iter().all(|g| (-1.0..=1.0).contains(g)));
        assert!(strong.grid().iter().any(|&g| g == 1.0 || g == -1.0), "s = 50 should hit the clamp");
        let a = WaNet::new(Params::default(), SHAPE, 3).unwrap();
        let b = WaNet::new(Params::default(), SHAPE, 4).unwrap();
        assert_eq!(a.grid(), WaNet::new(Params::default(), SHAPE, 3).unwrap().grid());
        assert_ne!(a.grid(), b.grid());
        let mut image = random_image(2);
        a.apply(&mut image);
        assert_ne!(image, random_image(2), "the default warp should move pixels");
    }

    #[test]
    fn control_points_have_unit_mean_absolute_value() {
        let attack = WaNet::new(Params::default(), SHAPE, 9).unwrap();
        let mean = attack.control.iter().map(|v| v.abs()).sum::<f32>() / attack.control.len() as f32;
        assert!((mean - 1.0).abs() < 1e-5, "{mean}");
    }

    #[test]
    fn bicubic_upsampling_keeps_corners_constants_and_a_hand_computed_midpoint() {
        let input = [1.0, 2.0, 3.0, 4.0];
        let out = upsample_bicubic(&input, 2, 2, 5, 5);
        assert_eq!((out[0], out[4], out[20], out[24]), (1.0, 2.0, 3.0, 4.0));
        let flat = upsample_bicubic(&[0.7; 9], 3, 3, 8, 8);
        assert!(flat.iter().all(|v| (v - 0.7).abs() < 1e-6));
        // 1-D [0, 1] → 3 points; the middle is at t = 0.5 with clamped taps [0, 0, 1, 1]:
        // w = [-0.09375, 0.59375, 0.59375, -0.09375] → 0.59375 - 0.09375 = 0.5.
        let mid = upsample_bicubic(&[0.0, 1.0], 1, 2, 1, 3);
        assert!((mid[1] - 0.5).abs() < 1e-6, "{mid:?}");
        // A non-symmetric case: [0, 0, 1] → 5 points, output 1 sits at src 0.5 between 0 and 0
        // with taps [0, 0, 0, 1]: value = far(1.5) = -0.09375.
        let asym = upsample_bicubic(&[0.0, 0.0, 1.0], 1, 3, 1, 5);
        assert!((asym[1] + 0.09375).abs() < 1e-6, "{asym:?}");
    }

    #[test]
    fn cross_noise_differs_from_the_plain_warp_and_is_seeded() {
        let attack = WaNet::new(Params::default(), SHAPE, 3).unwrap();
        let (mut a, mut b, mut plain) = (random_image(5), random_image(5), random_image(5));
        attack.apply_cross(&mut a, &mut ChaCha20Rng::seed_from_u64(1));
        attack.apply_cross(&mut b, &mut ChaCha20Rng::seed_from_u64(1));
        attack.apply(&mut plain);
        assert_eq!(a, b);
        assert_ne!(a, plain);
    }

    #[test]
    fn bad_parameters_are_rejected() {
        assert!(WaNet::new(Params { k: 1, ..Default::default() }, SHAPE, 0).is_err());
        let err = WaNet::new(Params { cross_ratio: 2.0, ..Default::default() }, SHAPE, 0).err().unwrap();
        assert_eq!(err.to_string(), "wanet: cross_ratio must be in [0, 1], got 2");
    }
}
