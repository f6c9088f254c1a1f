//! The mixes a credible batch can go through (config `vab.mix`): AttentionMix (V&B, see
//! [`super::attention_mix`]) and, for paper Table 3's ablation, Mixup, CutMix, Attentive CutMix
//! and none. Each pairs sample i with partner perm[i] of a random permutation of the batch, as
//! the authors' code does, and returns soft targets.
//!
//! - Mixup: l ~ Beta(1, 1) = U(0, 1), l = max(l, 1 - l); x̃ = l·x1 + (1-l)·x2, ỹ likewise.
//! - CutMix: lam ~ U(0, 1); a box of side ⌊H·√(1-lam)⌋ × ⌊W·√(1-lam)⌋ centred at a uniform
//!   pixel, clipped to the image, is pasted from x2; ỹ = a·y1 + (1-a)·y2 with a = 1 - box/area.
//! - Attentive CutMix (code): per sample, M = [A¹ ≥ the 43/49 percentile of A¹] (numpy's linear
//!   percentile); x̃ = M⊙x1 + (1-M)⊙x2; ỹ = w·y1 + (1-w)·y2 with w the fraction of M.

use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha20Rng;

use super::attention_mix::{self, Mixed};
use super::config::MixKind;

/// A random permutation of 0..n.
pub fn permutation(n: usize, rng: &mut ChaCha20Rng) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    p.shuffle(rng);
    p
}

/// Mixes `images` [n, c, h, w] (n ≥ 1) with soft `targets` [n, K] by `kind`. `maps` are the
/// normalised attention maps (needed by the attention mixes only).
pub fn apply(kind: MixKind, images: &[f32], shape: [usize; 4], targets: &[f32], maps: Option<&[Vec<f64>]>, t_m: f64, rng: &mut ChaCha20Rng) -> Mixed {
    let num_classes = targets.len() / shape[0];
    let partner = permutation(shape[0], rng);
    match kind {
        MixKind::None => Mixed { images: images.to_vec(), targets: targets.to_vec(), partner_share: 0.0 },
        MixKind::AttentionMix => attention_mix::mix(images, shape, targets, num_classes, maps.expect("attention maps"), &partner, t_m),
        MixKind::Mixup => {
            let l: f64 = rng.gen();
            let l = l.max(1.0 - l);
            let weight = vec![l; shape[2] * shape[3]];
            blend(images, shape, targets, num_classes, &partner, |_| (&weight, l))
        }
        MixKind::Cutmix => {
            let (h, w) = (shape[2], shape[3]);
            let lam: f64 = rng.gen();
            let cut = (1.0 - lam).sqrt();
            let (cut_h, cut_w) = ((h as f64 * cut) as usize, (w as f64 * cut) as usize);
            let (cy, cx) = (rng.gen_range(0..h), rng.gen_range(0..w));
            let (y1, y2) = (cy.saturating_sub(cut_h / 2), (cy + cut_h / 2).min(h));
            let (x1, x2) = (cx.saturating_sub(cut_w / 2), (cx + cut_w / 2).min(w));
            // Keep-mask of x1: 1 outside the box.
            let keep: Vec<f64> = (0..h * w).map(|p| if (y1..y2).contains(&(p / w)) && (x1..x2).contains(&(p % w)) { 0.0 } else { 1.0 }).collect();
            let kept = keep.iter().sum::<f64>() / (h * w) as f64;
            blend(images, shape, targets, num_classes, &partner, |_| (&keep, kept))
        }
        MixKind::AttentiveCutmix => {
            let masks: Vec<(Vec<f64>, f64)> = maps
                .expect("attention maps")
                .iter()
                .map(|a| {
                    let threshold = percentile(a, 43.0 / 49.0 * 100.0);
                    let m: Vec<f64> = a.iter().map(|&v| if v >= threshold { 1.0 } else { 0.0 }).collect();
                    let fraction = m.iter().sum::<f64>() / m.len() as f64;
                    (m, fraction)
                })
                .collect();
            blend(images, shape, targets, num_classes, &partner, |i| (&masks[i].0, masks[i].1))
        }
    }
}

/// x̃_i = m⊙x_i + (1-m)⊙x_partner(i) with per-pixel weights m, ỹ_i = a·y_i + (1-a)·y_partner(i),
/// where (m, a) = `weights(i)`. Every mix but AttentionMix is an instance of this.
fn blend<'a>(images: &[f32], [n, c, h, w]: [usize; 4], targets: &[f32], num_classes: usize, partner: &[usize], weights: impl Fn(usize) -> (&'a Vec<f64>, f64)) -> Mixed {
    let plane = h * w;
    let mut out = Mixed { images: vec![0.0; images.len()], targets: vec![0.0; targets.len()], partner_share: 0.0 };
    for i in 0..n {
        let (j, (mask, a)) = (partner[i], weights(i));
        if j != i {
            out.partner_share += (1.0 - a) / n as f64;
        }
        for ch in 0..c {
            for p in 0..plane {
                let (x1, x2) = (images[(i * c + ch) * plane + p] as f64, images[(j * c + ch) * plane + p] as f64);
                out.images[(i * c + ch) * plane + p] = (mask[p] * x1 + (1.0 - mask[p]) * x2) as f32;
            }
        }
        for k in 0..num_classes {
            out.targets[i * num_classes + k] = (a * targets[i * num_classes + k] as f64 + (1.0 - a) * targets[j * num_classes + k] as f64) as f32;
        }
    }
    out
}

/// numpy's default (linear) percentile `q` (0-100) of `values`.
pub fn percentile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let pos = q / 100.0 * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn batch() -> (Vec<f32>, Vec<f32>) {
        // Two 1×4×4 images (all 1, all 3), one-hot labels 0 and 1.
        ([vec![1.0; 16], vec![3.0; 16]].concat(), vec![1.0, 0.0, 0.0, 1.0])
    }

    #[test]
    fn numpy_percentile() {
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 50.0), 2.5);
        assert_eq!(percentile(&[5.0, 1.0, 3.0], 100.0), 5.0);
        assert!((percentile(&[0.0, 10.0], 43.0 / 49.0 * 100.0) - 430.0 / 49.0).abs() < 1e-12);
    }

    #[test]
    fn every_mix_keeps_label_mass_and_pixel_range() {
        let (images, targets) = batch();
        let maps: Vec<Vec<f64>> = (0..2).map(|s| (0..16).map(|p| ((p + s) % 5) as f64 / 4.0).collect()).collect();
        for kind in [MixKind::None, MixKind::AttentionMix, MixKind::Mixup, MixKind::Cutmix, MixKind::AttentiveCutmix] {
            for seed in 0..20 {
                let mut rng = ChaCha20Rng::seed_from_u64(seed);
                let m = apply(kind, &images, [2, 1, 4, 4], &targets, Some(&maps), 0.1, &mut rng);
                for row in m.targets.chunks(2) {
                    assert!((row[0] + row[1] - 1.0).abs() < 1e-6 && row.iter().all(|&v| v >= 0.0), "{kind:?}: {row:?}");
                }
                assert!(m.images.iter().all(|&v| (1.0..=3.0).contains(&v)), "{kind:?}");
                // Sample 0's label weight on class 1 equals the share of its pixels from image 2
                // for the mixes whose images and labels mix by area or by one factor.
                if matches!(kind, MixKind::Mixup | MixKind::Cutmix | MixKind::AttentiveCutmix) {
                    let share = m.images[..16].iter().map(|&v| (v as f64 - 1.0) / 2.0).sum::<f64>() / 16.0;
                    assert!((m.targets[1] as f64 - share).abs() < 1e-6, "{kind:?} seed {seed}: {} vs {share}", m.targets[1]);
                }
                // Two samples with labels 0 and 1: the partner share is the mean off-diagonal weight.
                let share = (m.targets[1] + m.targets[2]) as f64 / 2.0;
                assert!((m.partner_share - share).abs() < 1e-6, "{kind:?} seed {seed}: {} vs {share}", m.partner_share);
            }
        }
    }

    #[test]
    fn attentive_cutmix_keeps_the_top_attention_cells_of_the_sample() {
        let (images, targets) = batch();
        // Sample 0's map ranks pixel p as p/15: the top 2 of 16 pixels (≥ the 87.8th percentile) stay.
        let maps: Vec<Vec<f64>> = vec![(0..16).map(|p| p as f64 / 15.0).collect(), vec![0.5; 16]];
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let m = apply(MixKind::AttentiveCutmix, &images, [2, 1, 4, 4], &targets, Some(&maps), 0.1, &mut rng);
        let kept: Vec<usize> = (0..16).filter(|&p| m.images[p] == 1.0).collect();
        let partner = permutation(2, &mut ChaCha20Rng::seed_from_u64(3));
        if partner[0] == 1 {
            assert_eq!(kept, vec![14, 15]);
            assert!((m.targets[0] - 2.0 / 16.0).abs() < 1e-6);
        } else {
            assert_eq!(kept.len(), 16, "a sample mixed with itself is unchanged");
        }
    }
}
