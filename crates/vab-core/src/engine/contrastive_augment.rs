//! The strong augmentation of contrastive (SimCLR) training, as DBD's official configuration
//! composes torchvision's transforms: random resized crop (bicubic) → horizontal flip (the
//! [`Augment::flip`](super::batches::Augment) flag) → colour jitter with probability p →
//! random grayscale → Gaussian blur with probability p. Values are f32 in [0, 1] between steps.
//!
//! Deliberate differences from torchvision on PIL images: no rounding to u8 between steps; the
//! blur is an exact Gaussian of standard deviation σ (radius ⌈3σ⌉, edges clamped) where PIL
//! approximates it with box blurs; the contrast mean is not rounded to an integer grey level.
//! Colour steps other than brightness and contrast need three channels and are skipped on
//! grayscale images.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use vab_data::ImageShape;

use super::batches::Normalization;

/// Parameters of the contrastive augmentation; the defaults are DBD's (SimCLR's for CIFAR-10).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContrastiveAugment {
    /// Random resized crop: share of the image's area and aspect-ratio range (torchvision's
    /// 3/4-4/3), resized back to H×W with PIL's bicubic filter.
    pub crop_scale: [f64; 2],
    pub crop_ratio: [f64; 2],
    /// Colour jitter, applied with probability `jitter_p`: brightness, contrast and saturation
    /// factors uniform in [1 - x, 1 + x], a hue shift uniform in [-hue, hue], in a random order.
    pub jitter_p: f64,
    pub brightness: f64,
    pub contrast: f64,
    pub saturation: f64,
    pub hue: f64,
    /// Probability of turning the image grey (ITU-R 601 luma in every channel).
    pub grayscale_p: f64,
    /// Gaussian blur with probability `blur_p`, σ uniform in `blur_sigma` pixels.
    pub blur_p: f64,
    pub blur_sigma: [f64; 2],
}

impl Default for ContrastiveAugment {
    fn default() -> Self {
        Self { crop_scale: [0.2, 1.0], crop_ratio: [0.75, 4.0 / 3.0], jitter_p: 0.8, brightness: 0.4, contrast: 0.4, saturation: 0.4, hue: 0.1, grayscale_p: 0.2, blur_p: 0.5, blur_sigma: [0.1, 2.0] }
    }
}

impl ContrastiveAugment {
    /// Ranges ordered and within bounds; `key` names the section.
    pub fn validate(&self, key: &str) -> Result<(), String> {
        let range = |name: &str, [lo, hi]: [f64; 2], max: f64| {
            if lo > 0.0 && lo <= hi && hi <= max { Ok(()) } else { Err(format!("{key}.{name} must be [low, high] with 0 < low ≤ high ≤ {max}, got [{lo}, {hi}]")) }
        };
        range("crop_scale", self.crop_scale, 1.0)?;
        range("crop_ratio", self.crop_ratio, f64::INFINITY)?;
        range("blur_sigma", self.blur_sigma, f64::INFINITY)?;
        let within = |name: &str, x: f64, max: f64| if (0.0..=max).contains(&x) { Ok(()) } else { Err(format!("{key}.{name} must lie in [0, {max}], got {x}")) };
        for (name, x) in [("jitter_p", self.jitter_p), ("brightness", self.brightness), ("contrast", self.contrast), ("saturation", self.saturation), ("grayscale_p", self.grayscale_p), ("blur_p", self.blur_p)] {
            within(name, x, 1.0)?;
        }
        within("hue", self.hue, 0.5)
    }

    /// Augments one C×H×W u8 `image` with randomness from `seed`, flipping with probability
    /// 1/2 when `flip`, and writes it normalised into `out`.
    pub fn apply(&self, image: &[u8], shape: ImageShape, flip: bool, seed: u64, norm: &Normalization, out: &mut [f32]) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let (c, h, w) = (shape.channels, shape.height, shape.width);
        let planes: Vec<f32> = image.iter().map(|&p| p as f32 / 255.0).collect();
        let (top, left, ch, cw) = self.crop_box(h, w, &mut rng);
        let mut x = resize_bicubic(&planes, c, h, w, (top, left, ch, cw));
        if flip && rng.gen_bool(0.5) {
            for row in x.chunks_exact_mut(w) {
                row.reverse();
            }
        }
        if rng.gen_bool(self.jitter_p) {
            self.jitter(&mut x, c, &mut rng);
        }
        if c == 3 && rng.gen_bool(self.grayscale_p) {
            let grey = luma(&x, h * w);
            for plane in x.chunks_exact_mut(h * w) {
                plane.copy_from_slice(&grey);
            }
        }
        if rng.gen_bool(self.blur_p) {
            let sigma = rng.gen_range(self.blur_sigma[0]..=self.blur_sigma[1]);
            gaussian_blur(&mut x, h, w, sigma);
        }
        for (i, (o, v)) in out.iter_mut().zip(x).enumerate() {
            *o = (v - norm.mean[i / (h * w)]) / norm.std[i / (h * w)];
        }
    }

    /// torchvision's `RandomResizedCrop.get_params`: (top, left, height, width).
    fn crop_box(&self, h: usize, w: usize, rng: &mut ChaCha20Rng) -> (usize, usize, usize, usize) {
        let area = (h * w) as f64;
        let (lo, hi) = (self.crop_ratio[0].ln(), self.crop_ratio[1].ln());
        for _ in 0..10 {
            let target = area * rng.gen_range(self.crop_scale[0]..=self.crop_scale[1]);
            let ratio = rng.gen_range(lo..=hi).exp();
            let (cw, ch) = ((target * ratio).sqrt().round() as usize, (target / ratio).sqrt().round() as usize);
            if (1..=w).contains(&cw) && (1..=h).contains(&ch) {
                return (rng.gen_range(0..=h - ch), rng.gen_range(0..=w - cw), ch, cw);
            }
        }
        // Fallback: the whole image, cut to the nearest allowed aspect ratio, centred.
        let own = w as f64 / h as f64;
        let (ch, cw) = if own < self.crop_ratio[0] {
            (((w as f64 / self.crop_ratio[0]).round() as usize).clamp(1, h), w)
        } else if own > self.crop_ratio[1] {
            (h, ((h as f64 * self.crop_ratio[1]).round() as usize).clamp(1, w))
        } else {
            (h, w)
        };
        ((h - ch) / 2, (w - cw) / 2, ch, cw)
    }

    /// torchvision's `ColorJitter`: every factor drawn, then the four steps in a random order.
    fn jitter(&self, x: &mut [f32], c: usize, rng: &mut ChaCha20Rng) {
        let factor = |rng: &mut ChaCha20Rng, x: f64| if x > 0.0 { Some(rng.gen_range((1.0 - x).max(0.0)..=1.0 + x) as f32) } else { None };
        let mut order = [0, 1, 2, 3];
        order.shuffle(rng);
        let brightness = factor(rng, self.brightness);
        let contrast = factor(rng, self.contrast);
        let saturation = factor(rng, self.saturation);
        let hue = (self.hue > 0.0).then(|| rng.gen_range(-self.hue..=self.hue) as f32);
        let plane = x.len() / c;
        for step in order {
            match step {
                0 => brightness.into_iter().for_each(|b| blend(x, b, |_| 0.0)),
                1 => contrast.into_iter().for_each(|f| {
                    let grey = if c == 3 { luma(x, plane) } else { x.to_vec() };
                    let mean = grey.iter().sum::<f32>() / grey.len() as f32;
                    blend(x, f, |_| mean);
                }),
                2 if c == 3 => saturation.into_iter().for_each(|s| {
                    let grey = luma(x, plane);
                    blend(x, s, |i| grey[i % plane]);
                }),
                3 if c == 3 => hue.into_iter().for_each(|shift| shift_hue(x, plane, shift)),
                _ => {}
            }
        }
    }
}

/// x ↦ clamp(f·x + (1 - f)·other(i), 0, 1), PIL's `ImageEnhance` blend.
fn blend(x: &mut [f32], f: f32, other: impl Fn(usize) -> f32) {
    for (i, v) in x.iter_mut().enumerate() {
        *v = (f * *v + (1.0 - f) * other(i)).clamp(0.0, 1.0);
    }
}

/// ITU-R 601 luma of an RGB image in planes: 0.299 R + 0.587 G + 0.114 B.
fn luma(x: &[f32], plane: usize) -> Vec<f32> {
    (0..plane).map(|p| 0.299 * x[p] + 0.587 * x[plane + p] + 0.114 * x[2 * plane + p]).collect()
}

/// Rotates every pixel's hue by `shift` turns (HSV round trip).
fn shift_hue(x: &mut [f32], plane: usize, shift: f32) {
    for p in 0..plane {
        let (r, g, b) = (x[p], x[plane + p], x[2 * plane + p]);
        let (max, min) = (r.max(g).max(b), r.min(g).min(b));
        let delta = max - min;
        if delta <= 0.0 {
            continue; // grey: no hue
        }
        let hue = if max == r { ((g - b) / delta).rem_euclid(6.0) } else if max == g { (b - r) / delta + 2.0 } else { (r - g) / delta + 4.0 } / 6.0;
        let hue = (hue + shift).rem_euclid(1.0) * 6.0;
        let (s, v) = (delta / max, max);
        let sector = (hue.floor() as usize).min(5);
        let f = hue - sector as f32;
        let (pp, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
        let (r, g, b) = match sector {
            0 => (v, t, pp),
            1 => (q, v, pp),
            2 => (pp, v, t),
            3 => (pp, q, v),
            4 => (t, pp, v),
            _ => (v, pp, q),
        };
        (x[p], x[plane + p], x[2 * plane + p]) = (r, g, b);
    }
}

/// PIL's bicubic kernel (a = -0.5).
fn bicubic(x: f64) -> f64 {
    let (a, x) = (-0.5, x.abs());
    if x < 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * a
    } else {
        0.0
    }
}

/// PIL's resampling weights from `size` source pixels starting at `start` (of `total`) to `out`
/// pixels: per output pixel, its first source pixel and normalised weights.
fn weights(start: usize, size: usize, total: usize, out: usize) -> Vec<(usize, Vec<f64>)> {
    let scale = size as f64 / out as f64;
    let (support, ss) = (2.0 * scale.max(1.0), 1.0 / scale.max(1.0));
    (0..out)
        .map(|o| {
            let centre = start as f64 + (o as f64 + 0.5) * scale;
            let lo = ((centre - support + 0.5).floor().max(0.0)) as usize;
            let hi = ((centre + support + 0.5).floor() as usize).min(total);
            let mut k: Vec<f64> = (lo..hi).map(|s| bicubic((s as f64 - centre + 0.5) * ss)).collect();
            let sum: f64 = k.iter().sum();
            k.iter_mut().for_each(|v| *v /= sum);
            (lo, k)
        })
        .collect()
}

/// The box (top, left, height, width) of each plane resized to the planes' own H×W, bicubic,
/// separably (rows, then columns), clamped to [0, 1].
fn resize_bicubic(planes: &[f32], c: usize, h: usize, w: usize, (top, left, bh, bw): (usize, usize, usize, usize)) -> Vec<f32> {
    let (wx, wy) = (weights(left, bw, w, w), weights(top, bh, h, h));
    let mut out = vec![0f32; c * h * w];
    let mut rows = vec![0f64; h * w];
    for ch in 0..c {
        let src = &planes[ch * h * w..(ch + 1) * h * w];
        for y in 0..h {
            for (x, (lo, k)) in wx.iter().enumerate() {
                rows[y * w + x] = k.iter().enumerate().map(|(i, kv)| kv * src[y * w + lo + i] as f64).sum();
            }
        }
        for (y, (lo, k)) in wy.iter().enumerate() {
            for x in 0..w {
                let v: f64 = k.iter().enumerate().map(|(i, kv)| kv * rows[(lo + i) * w + x]).sum();
                out[ch * h * w + y * w + x] = v.clamp(0.0, 1.0) as f32;
            }
        }
    }
    out
}

/// Separable Gaussian blur of standard deviation `sigma`, radius ⌈3σ⌉, edges clamped.
fn gaussian_blur(x: &mut [f32], h: usize, w: usize, sigma: f64) {
    let radius = (3.0 * sigma).ceil() as isize;
    let kernel: Vec<f64> = (-radius..=radius).map(|d| (-(d * d) as f64 / (2.0 * sigma * sigma)).exp()).collect();
    let sum: f64 = kernel.iter().sum();
    let kernel: Vec<f32> = kernel.iter().map(|k| (k / sum) as f32).collect();
    let pass = |plane: &mut [f32], at: &dyn Fn(usize, isize) -> usize, lines: usize, len: usize| {
        let mut line = vec![0f32; len];
        for l in 0..lines {
            for (i, slot) in line.iter_mut().enumerate() {
                *slot = kernel.iter().enumerate().map(|(k, kv)| kv * plane[at(l, (i as isize + k as isize - radius).clamp(0, len as isize - 1))]).sum();
            }
            for (i, v) in line.iter().enumerate() {
                plane[at(l, i as isize)] = *v;
            }
        }
    };
    for plane in x.chunks_exact_mut(h * w) {
        pass(plane, &|row, i| row * w + i as usize, h, w);
        pass(plane, &|col, i| i as usize * w + col, w, h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit() -> Normalization {
        Normalization { mean: vec![0.0; 3], std: vec![1.0; 3] }
    }

    fn image() -> (Vec<u8>, ImageShape) {
        let shape = ImageShape { channels: 3, height: 8, width: 8 };
        ((0..192).map(|i| ((i * 37 + 11) % 256) as u8).collect(), shape)
    }

    #[test]
    fn bicubic_weights_are_pils() {
        // Identity size: each output pixel is its source pixel (weights 0 at ±1, ±2).
        for (lo, k) in weights(0, 4, 4, 4) {
            let peak = k.iter().cloned().fold(0.0, f64::max);
            assert!((peak - 1.0).abs() < 1e-12 && k.iter().filter(|&&v| v.abs() > 1e-12).count() == 1, "{lo}: {k:?}");
        }
        // Doubling 2 → 4 pixels: output 0 is centred at source 0.25 → kernel at 0.25, 1.25 (and
        // -0.75 cut off at the edge), normalised. Hand-computed: bicubic(0.25) = 0.8671875,
        // bicubic(0.75) = 0.3671875 (cut), bicubic(1.25) = -0.0703125.
        let (lo, k) = &weights(0, 2, 2, 4)[0];
        let (a, b) = (0.8671875, -0.0703125);
        assert_eq!(*lo, 0);
        assert!((k[0] - a / (a + b)).abs() < 1e-12 && (k[1] - b / (a + b)).abs() < 1e-12, "{k:?}");
    }

    #[test]
    fn whole_image_crop_without_colour_steps_is_the_image() {
        let (img, shape) = image();
        let plain = ContrastiveAugment { crop_scale: [1.0, 1.0], crop_ratio: [1.0, 1.0], jitter_p: 0.0, grayscale_p: 0.0, blur_p: 0.0, ..Default::default() };
        let mut out = vec![0f32; 192];
        plain.apply(&img, shape, false, 3, &unit(), &mut out);
        assert!(out.iter().zip(&img).all(|(o, &p)| (o - p as f32 / 255.0).abs() < 1e-6));
    }

    #[test]
    fn hue_turns_and_grey_and_blur_keep_their_invariants() {
        // A pure red pixel turned by 1/3 turn is pure green; a full turn changes nothing.
        let mut x = vec![1.0, 0.0, 0.0];
        shift_hue(&mut x, 1, 1.0 / 3.0);
        assert!((x[0]).abs() < 1e-5 && (x[1] - 1.0).abs() < 1e-5 && x[2].abs() < 1e-5, "{x:?}");
        let mut y = vec![0.2, 0.5, 0.9];
        shift_hue(&mut y, 1, 1.0);
        assert!((y[0] - 0.2).abs() < 1e-5 && (y[1] - 0.5).abs() < 1e-5 && (y[2] - 0.9).abs() < 1e-5, "{y:?}");
        // A blur keeps a constant image and the mean of an impulse away from the edges.
        let mut flat = vec![0.3f32; 49];
        gaussian_blur(&mut flat, 7, 7, 1.0);
        assert!(flat.iter().all(|v| (v - 0.3).abs() < 1e-6));
        let mut impulse = vec![0f32; 81];
        impulse[40] = 1.0;
        gaussian_blur(&mut impulse, 9, 9, 0.8);
        assert!((impulse.iter().sum::<f32>() - 1.0).abs() < 1e-5 && impulse[40] < 0.5 && impulse[41] > 0.0);
    }

    #[test]
    fn the_full_augmentation_is_seeded_in_range_and_greys_all_channels_alike() {
        let (img, shape) = image();
        let full = ContrastiveAugment::default();
        let run = |seed| {
            let mut out = vec![0f32; 192];
            full.apply(&img, shape, true, seed, &unit(), &mut out);
            out
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5), run(6));
        assert!((0..40).flat_map(run).all(|v| (0.0..=1.0).contains(&v)));
        let grey = ContrastiveAugment { grayscale_p: 1.0, ..full };
        let mut out = vec![0f32; 192];
        grey.apply(&img, shape, true, 9, &unit(), &mut out);
        assert_eq!(out[..64], out[64..128]);
        assert_eq!(out[..64], out[128..]);
    }

    #[test]
    fn crop_boxes_fit_and_respect_the_scale() {
        let aug = ContrastiveAugment::default();
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        for _ in 0..500 {
            let (top, left, h, w) = aug.crop_box(32, 32, &mut rng);
            assert!(top + h <= 32 && left + w <= 32 && h * w >= 150 && h * w <= 1024, "{top} {left} {h} {w}");
        }
        assert!(ContrastiveAugment { crop_scale: [0.0, 1.0], ..aug }.validate("dbd.simclr_augment").unwrap_err().contains("crop_scale"));
        assert!(ContrastiveAugment { hue: 0.7, ..aug }.validate("dbd.simclr_augment").unwrap_err().contains("hue"));
        assert!(aug.validate("x").is_ok());
    }
}
