//! Method.md §6, AttentionMix (paper eqs. 3-8, with the authors' code's reading):
//!
//! 1. A' = Σ_c F_c² from the Beneficiary's final feature maps F (c×h×w);
//! 2. upsample A' to H×W (`nearest`, the code's `F.interpolate` default, or `bilinear`, the
//!    paper's), then min-max normalise per sample: A = (A' - min) / (max - min + 1e-12);
//! 3. partner: a permutation of the batch (the caller's; the code permutes all 2N views);
//! 4. mask M = [A¹ ≥ t_m];
//! 5. w1 = Σ(M⊙A¹)/ΣA¹, w2 = Σ(M⊙A²)/ΣA²; λ1 = 1 - w1, λ2 = w1/(w1+w2), λ3 = w2/(w1+w2);
//! 6. image x̃ = (1-M)⊙x1 + M⊙(λ2·x1 + λ3·x2)  (eq. 5 as the code reads it);
//! 7. label ỹ = λ1·y1 + w1·(λ2·y1 + λ3·y2), which sums to 1.
//!
//! Everything runs on host buffers: the maps are tiny and the mix is a few multiply-adds per
//! pixel, far below a forward pass. Denominators carry 1e-12 so an all-zero map cannot divide
//! by zero (its mask is empty and it keeps its own image and label).

use serde::{Deserialize, Serialize};

/// How the attention map is brought to image size (config `attention_upsample`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Upsample {
    /// PyTorch `mode="nearest"`: source index ⌊dst · in / out⌋.
    Nearest,
    /// PyTorch `mode="bilinear", align_corners=False`.
    Bilinear,
}

const EPS: f64 = 1e-12;

/// Source taps (i0, i1, weight of i1) of output index `dst` when resizing `input` → `output`.
fn taps(dst: usize, input: usize, output: usize, mode: Upsample) -> (usize, usize, f64) {
    let scale = input as f64 / output as f64;
    match mode {
        Upsample::Nearest => {
            let i = ((dst as f64 * scale).floor() as usize).min(input - 1);
            (i, i, 0.0)
        }
        Upsample::Bilinear => {
            let src = ((dst as f64 + 0.5) * scale - 0.5).max(0.0);
            let i0 = (src.floor() as usize).min(input - 1);
            (i0, (i0 + 1).min(input - 1), src - i0 as f64)
        }
    }
}

/// Resizes one h×w map to `height`×`width`.
pub fn upsample(map: &[f64], h: usize, w: usize, height: usize, width: usize, mode: Upsample) -> Vec<f64> {
    let mut out = vec![0.0; height * width];
    for y in 0..height {
        let (y0, y1, ty) = taps(y, h, height, mode);
        for x in 0..width {
            let (x0, x1, tx) = taps(x, w, width, mode);
            let top = map[y0 * w + x0] * (1.0 - tx) + map[y0 * w + x1] * tx;
            let bottom = map[y1 * w + x0] * (1.0 - tx) + map[y1 * w + x1] * tx;
            out[y * width + x] = top * (1.0 - ty) + bottom * ty;
        }
    }
    out
}

/// Normalised attention maps A (steps 1-2), one H×W map per sample, from features [N, c, h, w].
pub fn attention_maps(features: &[f32], [n, c, h, w]: [usize; 4], [height, width]: [usize; 2], mode: Upsample) -> Vec<Vec<f64>> {
    (0..n)
        .map(|i| {
            let f = &features[i * c * h * w..(i + 1) * c * h * w];
            let energy: Vec<f64> = (0..h * w).map(|p| (0..c).map(|k| (f[k * h * w + p] as f64).powi(2)).sum()).collect();
            let up = upsample(&energy, h, w, height, width, mode);
            let min = up.iter().copied().fold(f64::INFINITY, f64::min);
            let max = up.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            up.iter().map(|v| (v - min) / (max - min + EPS)).collect()
        })
        .collect()
}

/// A mixed batch.
#[derive(Clone, Debug, PartialEq)]
pub struct Mixed {
    /// [N, C, H, W].
    pub images: Vec<f32>,
    /// [N, K], rows summing to 1.
    pub targets: Vec<f32>,
    /// Mean over the batch of the weight the partner's label gets in the target (0 where the
    /// partner is the sample itself): 0 without mixing, 0.5 for an even mix. A diagnostic of
    /// how hard the mix is.
    pub partner_share: f64,
}

/// Steps 3-7: mixes each sample i with `partner[i]` given the maps of [`attention_maps`].
/// `images` are [N, C, H, W] (any scaling), `targets` [N, K].
pub fn mix(images: &[f32], [n, c, h, w]: [usize; 4], targets: &[f32], num_classes: usize, maps: &[Vec<f64>], partner: &[usize], t_m: f64) -> Mixed {
    let plane = h * w;
    let mut out = Mixed { images: images.to_vec(), targets: vec![0.0; targets.len()], partner_share: 0.0 };
    for i in 0..n {
        let j = partner[i];
        let (a1, a2) = (&maps[i], &maps[j]);
        let mask: Vec<bool> = a1.iter().map(|&v| v >= t_m).collect();
        let masked_sum = |a: &[f64]| a.iter().zip(&mask).filter(|(_, &m)| m).map(|(v, _)| v).sum::<f64>();
        let w1 = masked_sum(a1) / (a1.iter().sum::<f64>() + EPS);
        let w2 = masked_sum(a2) / (a2.iter().sum::<f64>() + EPS);
        let (lambda1, lambda2, lambda3) = (1.0 - w1, w1 / (w1 + w2 + EPS), w2 / (w1 + w2 + EPS));
        if j != i {
            out.partner_share += w1 * lambda3 / n as f64;
        }
        for ch in 0..c {
            for p in (0..plane).filter(|&p| mask[p]) {
                let at = |s: usize| images[s * c * plane + ch * plane + p] as f64;
                out.images[i * c * plane + ch * plane + p] = (lambda2 * at(i) + lambda3 * at(j)) as f32;
            }
        }
        for k in 0..num_classes {
            let (y1, y2) = (targets[i * num_classes + k] as f64, targets[j * num_classes + k] as f64);
            out.targets[i * num_classes + k] = (lambda1 * y1 + w1 * (lambda2 * y1 + lambda3 * y2)) as f32;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two samples with 1×2×2 features, 1×4×4 images; sample 1 is sample 0's partner and vice
    /// versa. Energies: sample 0 [[1, 0.25], [0.04, 0]], sample 1 [[0, 1], [0, 1]].
    fn case() -> (Vec<Vec<f64>>, Mixed) {
        let features = [1.0, 0.5, 0.2, 0.0, 0.0, 1.0, 0.0, 1.0];
        let maps = attention_maps(&features, [2, 1, 2, 2], [4, 4], Upsample::Nearest);
        let images: Vec<f32> = [vec![1.0; 16], vec![3.0; 16]].concat();
        let targets = [1.0, 0.0, 0.0, 1.0];
        let mixed = mix(&images, [2, 1, 4, 4], &targets, 2, &maps, &[1, 0], 0.1);
        (maps, mixed)
    }

    #[test]
    fn maps_are_nearest_upsampled_and_min_max_normalised() {
        let (maps, _) = case();
        // Each 2×2 cell becomes a 2×2 block; already spans [0, 1].
        let expected0 = [1.0, 1.0, 0.25, 0.25, 1.0, 1.0, 0.25, 0.25, 0.04, 0.04, 0.0, 0.0, 0.04, 0.04, 0.0, 0.0];
        assert!(maps[0].iter().zip(expected0).all(|(a, b)| (a - b).abs() < 1e-7), "{:?}", maps[0]);
    }

    #[test]
    fn hand_computed_mix_of_a_4x4_case() {
        let (_, mixed) = case();
        // Sample 0: M = top half (values 1 and 0.25 ≥ 0.1; 0.04 and 0 below).
        // ΣA¹ = 4·(1 + 0.25 + 0.04) = 5.16, Σ(M⊙A¹) = 5 → w1 = 5/5.16.
        // ΣA² = 8, Σ(M⊙A²) = 4 (its top-right block) → w2 = 0.5.
        let (w1, w2) = (5.0 / 5.16, 0.5);
        let (l1, l2, l3) = (1.0 - w1, w1 / (w1 + w2), w2 / (w1 + w2));
        let inside = l2 * 1.0 + l3 * 3.0;
        let expected_image0: Vec<f64> = (0..16).map(|p| if p < 8 { inside } else { 1.0 }).collect();
        for (got, want) in mixed.images[..16].iter().zip(&expected_image0) {
            assert!((*got as f64 - want).abs() < 1e-6, "{:?}", &mixed.images[..16]);
        }
        let y0 = [l1 + w1 * l2, w1 * l3];
        assert!((mixed.targets[0] as f64 - y0[0]).abs() < 1e-6 && (mixed.targets[1] as f64 - y0[1]).abs() < 1e-6, "{:?}", mixed.targets);
        // Sample 1: M = right half; w1 = 1, w2 = Σ over sample 0's right half / 5.16 = 1/5.16.
        let (w1, w2) = (1.0, 1.0 / 5.16);
        let (l2, l3) = (w1 / (w1 + w2), w2 / (w1 + w2));
        let right = l2 * 3.0 + l3 * 1.0;
        for p in 0..16 {
            let want = if p % 4 >= 2 { right } else { 3.0 };
            assert!((mixed.images[16 + p] as f64 - want).abs() < 1e-6, "pixel {p}: {:?}", &mixed.images[16..]);
        }
        assert!((mixed.targets[2] as f64 - w1 * l3).abs() < 1e-6 && (mixed.targets[3] as f64 - w1 * l2).abs() < 1e-6);
        // The partner shares are the class-1 weight of sample 0 and the class-0 weight of sample 1.
        let share = (mixed.targets[1] + mixed.targets[2]) as f64 / 2.0;
        assert!((mixed.partner_share - share).abs() < 1e-6, "{} vs {share}", mixed.partner_share);
    }

    #[test]
    fn mixed_labels_sum_to_one() {
        let (_, mixed) = case();
        for row in mixed.targets.chunks(2) {
            assert!((row[0] + row[1] - 1.0).abs() < 1e-6, "{row:?}");
        }
    }

    #[test]
    fn bilinear_upsampling_follows_pytorch_half_pixel_centres() {
        let up = upsample(&[0.0, 1.0], 1, 2, 1, 4, Upsample::Bilinear);
        assert_eq!(up, vec![0.0, 0.25, 0.75, 1.0]);
        let flat = upsample(&[0.3; 4], 2, 2, 8, 8, Upsample::Bilinear);
        assert!(flat.iter().all(|v| (v - 0.3).abs() < 1e-12));
    }

    #[test]
    fn an_all_zero_map_keeps_its_own_image_and_label() {
        let maps = attention_maps(&[0.0; 8], [2, 1, 2, 2], [2, 2], Upsample::Nearest);
        let images = [1.0, 1.0, 1.0, 1.0, 5.0, 5.0, 5.0, 5.0];
        let mixed = mix(&images, [2, 1, 2, 2], &[1.0, 0.0, 0.0, 1.0], 2, &maps, &[1, 0], 0.1);
        assert_eq!(mixed.images, images.to_vec());
        assert_eq!(mixed.targets, vec![1.0, 0.0, 0.0, 1.0]);
        assert_eq!(mixed.partner_share, 0.0);
    }
}
