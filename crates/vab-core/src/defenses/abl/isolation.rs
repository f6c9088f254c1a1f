//! ABL's isolation, at the end of its isolation epochs: the cross-entropy of every training
//! sample under the isolation network (inference mode, un-augmented images, as the official
//! code's batch-of-one pass), and the `isolation_ratio` share with the lowest loss, D̂_b.

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::data::TrainingSet;
use crate::engine::batches::Normalization;
use crate::engine::eval::logits;
use crate::models::Network;

/// The isolation's outcome, kept in the run's checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Isolation {
    /// Cross-entropy of every training sample (position i = the run's i-th training sample).
    pub losses: Vec<f64>,
    /// Positions of the isolated samples, lowest loss first.
    pub isolated: Vec<usize>,
}

impl Isolation {
    /// The losses of `model` (inference form) on `train`, and the `ratio` share isolated.
    pub fn of(model: &Network, train: &TrainingSet, norm: &Normalization, batch_size: usize, ratio: f64, device: &Device) -> Self {
        let logits = logits(model, &train.images, norm, batch_size, device);
        let losses = per_sample_cross_entropy(&logits, train.images.labels(), train.num_classes);
        let isolated = lowest(&losses, ratio);
        Self { losses, isolated }
    }

    /// Whether each training sample is isolated.
    pub fn flags(&self) -> Vec<bool> {
        let mut flags = vec![false; self.losses.len()];
        for &i in &self.isolated {
            flags[i] = true;
        }
        flags
    }

    /// The training samples not isolated, in order.
    pub fn rest(&self) -> Vec<usize> {
        self.flags().iter().enumerate().filter(|&(_, &isolated)| !isolated).map(|(i, _)| i).collect()
    }
}

/// Cross-entropy −log softmax(z)_y of each row z of the row-major [N, K] `logits` against its
/// label y, computed in f64 as log Σ_k exp(z_k − m) + m − z_y with m = max_k z_k.
pub fn per_sample_cross_entropy(logits: &[f32], labels: &[u16], num_classes: usize) -> Vec<f64> {
    logits
        .chunks_exact(num_classes)
        .zip(labels)
        .map(|(row, &y)| {
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let sum: f64 = row.iter().map(|&z| (z as f64 - m).exp()).sum();
            sum.ln() + m - row[y as usize] as f64
        })
        .collect()
}

/// Positions of the ⌊ratio·N⌋ lowest of `losses` (the official code's count; at least one),
/// lowest first, ties to the lower position.
pub fn lowest(losses: &[f64], ratio: f64) -> Vec<usize> {
    let count = ((losses.len() as f64 * ratio) as usize).max(1).min(losses.len());
    let mut order: Vec<usize> = (0..losses.len()).collect();
    order.sort_by(|&a, &b| losses[a].total_cmp(&losses[b]).then(a.cmp(&b)));
    order.truncate(count);
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_entropy_matches_hand_computation() {
        // Row 1: z = (0, ln 3), y = 0: softmax = (1/4, 3/4), CE = ln 4.
        // Row 2: z = (1000, 1000), y = 1: CE = ln 2 (no overflow).
        let losses = per_sample_cross_entropy(&[0.0, 3f32.ln(), 1000.0, 1000.0], &[0, 1], 2);
        assert!((losses[0] - 4f64.ln()).abs() < 1e-6, "{losses:?}");
        assert!((losses[1] - 2f64.ln()).abs() < 1e-12, "{losses:?}");
    }

    #[test]
    fn the_lowest_share_is_isolated_lowest_first_ties_by_position() {
        let losses = [0.9, 0.1, 0.5, 0.1, 2.0, 0.3, 0.7, 0.8, 1.0, 1.1];
        assert_eq!(lowest(&losses, 0.3), vec![1, 3, 5]);
        // ⌊0.25·10⌋ = 2; a share under one sample still isolates one.
        assert_eq!(lowest(&losses, 0.25), vec![1, 3]);
        assert_eq!(lowest(&losses, 0.01), vec![1]);
        let isolation = Isolation { losses: losses.to_vec(), isolated: vec![1, 3] };
        assert_eq!(isolation.rest(), vec![0, 2, 4, 5, 6, 7, 8, 9]);
    }
}
