//! DBD's third stage: semi-supervised fine-tuning of the whole network with MixMatch (Berthelot
//! et al., 2019, as DBD's `utils/trainer/semi.py` and `model/loss.py` write it), the labelled
//! set being the split's credible samples and the rest unlabelled.
//!
//! Per step, with a labelled batch (x, y) and an unlabelled batch seen in two views u, u':
//! 1. guess q = sharpen((softmax(f(u)) + softmax(f(u')))/2, T), p ↦ p^{1/T} / Σ p^{1/T}, from
//!    passes without gradients in train mode (one per view, as the code);
//! 2. MixUp of W = (x, u, u') with targets (y, q, q) against a random permutation of W:
//!    λ ~ Beta(α, α), λ ← max(λ, 1 − λ), W̃ = λ·W + (1 − λ)·W_perm, targets likewise;
//! 3. L = Lx + λ_u·Lu, Lx = soft cross-entropy of the mixed labelled rows, Lu = mean squared
//!    difference of softmax and target over the mixed unlabelled rows and classes.
//!
//! The mixed rows go through the network as one batch; the code passes them as three batches
//! interleaved so that each holds labelled and unlabelled rows alike (both give batch norm the
//! statistics of the mix).

use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor, TensorData};
use rand::Rng;
use rand_chacha::ChaCha20Rng;

use crate::defenses::vab::mixes::permutation;
use crate::engine::batches::Batch;
use crate::engine::loss::{one_hot, soft_cross_entropy};
use crate::models::Network;

/// MixMatch's parameters at one step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MixMatch {
    /// Sharpening temperature T.
    pub temperature: f64,
    /// MixUp's Beta(α, α).
    pub alpha: f64,
    /// The unlabelled loss's weight at this step (after the ramp-up).
    pub lambda_u: f64,
}

/// Rows of `probs` [n, K] raised to 1/T and renormalised.
pub fn sharpen(probs: &[f32], num_classes: usize, temperature: f64) -> Vec<f32> {
    let mut out: Vec<f32> = probs.iter().map(|&p| (p as f64).powf(1.0 / temperature) as f32).collect();
    for row in out.chunks_exact_mut(num_classes) {
        let sum: f32 = row.iter().sum();
        row.iter_mut().for_each(|v| *v /= sum);
    }
    out
}

/// A draw of Beta(a, a) (Jöhnk's method, in logarithms so that small `a` cannot underflow).
pub fn beta(a: f64, rng: &mut ChaCha20Rng) -> f64 {
    loop {
        let (u, v): (f64, f64) = (1.0 - rng.gen::<f64>(), 1.0 - rng.gen::<f64>());
        let (x, y) = (u.ln() / a, v.ln() / a);
        let m = x.max(y);
        let log_sum = m + ((x - m).exp() + (y - m).exp()).ln();
        if log_sum <= 0.0 {
            return (x - log_sum).exp();
        }
    }
}

/// Row i of `rows` (each `width` long) mixed as λ·row i + (1 − λ)·row partner[i].
fn mix_rows(rows: &[f32], width: usize, partner: &[usize], lambda: f32) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows.len());
    for (i, &j) in partner.iter().enumerate() {
        out.extend(rows[i * width..(i + 1) * width].iter().zip(&rows[j * width..(j + 1) * width]).map(|(a, b)| lambda * a + (1.0 - lambda) * b));
    }
    out
}

/// Softmax rows of the network's logits on `images` in train mode, without gradients.
fn guess_pass(model: &Network, images: Vec<f32>, shape: [usize; 4], device: &Device) -> Vec<f32> {
    let x: Tensor<4> = Tensor::from_data(TensorData::new(images, shape), device);
    softmax(model.without_grad().forward(x), 1).into_data().iter::<f32>().collect()
}

/// One MixMatch step on a `labelled` batch and an `unlabelled` one in two views (view after
/// view). Returns the network and the loss Lx + λ_u·Lu.
#[allow(clippy::too_many_arguments)]
pub fn mixmatch_step(model: Network, optim: &mut ModuleOptimizer, labelled: Batch, unlabelled: Batch, num_classes: usize, lr: f64, mixmatch: MixMatch, rng: &mut ChaCha20Rng, device: &Device) -> (Network, f32) {
    let (k, nx, nu) = (num_classes, labelled.labels.len(), unlabelled.labels.len() / 2);
    let image_len = labelled.images.len() / nx.max(1);
    let [_, c, h, w] = labelled.shape;
    let view = |v: usize| unlabelled.images[v * nu * image_len..(v + 1) * nu * image_len].to_vec();
    let (p1, p2) = (guess_pass(&model, view(0), [nu, c, h, w], device), guess_pass(&model, view(1), [nu, c, h, w], device));
    let mean: Vec<f32> = p1.iter().zip(&p2).map(|(a, b)| (a + b) / 2.0).collect();
    let guessed = sharpen(&mean, k, mixmatch.temperature);
    let rows = nx + 2 * nu;
    let images = [labelled.images, unlabelled.images].concat();
    let targets = [one_hot(&labelled.labels, k), guessed.clone(), guessed].concat();
    let lambda = beta(mixmatch.alpha, rng);
    let lambda = lambda.max(1.0 - lambda) as f32;
    let partner = permutation(rows, rng);
    let (images, targets) = (mix_rows(&images, image_len, &partner, lambda), mix_rows(&targets, k, &partner, lambda));
    let x: Tensor<4> = Tensor::from_data(TensorData::new(images, [rows, c, h, w]), device);
    let targets: Tensor<2> = Tensor::from_data(TensorData::new(targets, [rows, k]), device);
    let logits = model.forward(x);
    let lx = soft_cross_entropy(logits.clone().narrow(0, 0, nx), targets.clone().narrow(0, 0, nx));
    let lu = (softmax(logits.narrow(0, nx, 2 * nu), 1) - targets.narrow(0, nx, 2 * nu)).square().mean();
    let loss = lx + lu.mul_scalar(mixmatch.lambda_u);
    let value = loss.to_data().iter::<f32>().next().unwrap_or(f32::NAN);
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    (optim.step(lr, model, grads), value)
}

/// λ_u after the official linear ramp-up: `lambda_u`·clip(t / `rampup`, 0, 1), t in epochs
/// (fractional within an epoch); no ramp when `rampup` is 0.
pub fn ramped(lambda_u: f64, t: f64, rampup: usize) -> f64 {
    if rampup == 0 { lambda_u } else { lambda_u * (t / rampup as f64).clamp(0.0, 1.0) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn sharpening_and_ramp_on_hand_computed_cases() {
        // (0.25, 0.75) at T = 0.5: squares 1/16, 9/16 → (0.1, 0.9).
        let s = sharpen(&[0.25, 0.75], 2, 0.5);
        assert!((s[0] - 0.1).abs() < 1e-6 && (s[1] - 0.9).abs() < 1e-6, "{s:?}");
        assert_eq!((ramped(15.0, 19.0, 190), ramped(15.0, 400.0, 190), ramped(15.0, 0.0, 0)), (1.5, 15.0, 15.0));
    }

    #[test]
    fn beta_draws_have_the_distributions_moments() {
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        for a in [0.75, 2.0] {
            let draws: Vec<f64> = (0..40_000).map(|_| beta(a, &mut rng)).collect();
            let mean = draws.iter().sum::<f64>() / draws.len() as f64;
            let var = draws.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / draws.len() as f64;
            // Beta(a, a): mean 1/2, variance 1 / (4(2a + 1)).
            assert!((mean - 0.5).abs() < 0.01 && (var - 1.0 / (4.0 * (2.0 * a + 1.0))).abs() < 0.005, "a {a}: {mean} {var}");
            assert!(draws.iter().all(|d| (0.0..=1.0).contains(d)));
        }
    }

    #[test]
    fn rows_mix_with_their_partners() {
        let rows = [1.0f32, 2.0, 10.0, 20.0];
        assert_eq!(mix_rows(&rows, 2, &[1, 0], 0.75), vec![3.25, 6.5, 7.75, 15.5]);
    }
}
