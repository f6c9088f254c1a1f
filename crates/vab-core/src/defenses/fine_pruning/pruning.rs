//! Fine-Pruning's pruning: channels of the last convolutional block ranked by their mean
//! activation over the clean reserve, then cut lowest first while the reserve's accuracy holds.

use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use vab_data::ImageSet;

use crate::engine::batches::{plain_batches, Normalization};
use crate::engine::eval::predict;
use crate::models::Network;

/// The outcome of the pruning, kept in the run's checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pruning {
    /// Every channel, lowest mean activation on the reserve first.
    pub order: Vec<usize>,
    /// How many of `order` are cut.
    pub pruned: usize,
    /// The reserve's accuracy (percent) with the first k channels cut, for each k tried.
    pub sweep: Vec<(usize, f64)>,
}

impl Pruning {
    /// Prunes `model` (inference form) on the clean `reserve`: `step` of the channels at a time,
    /// while the reserve's accuracy stays within the relative `max_drop` of the unpruned one.
    pub fn of(model: &Network, reserve: &ImageSet, norm: &Normalization, batch_size: usize, step: f64, max_drop: f64, device: &Device) -> Self {
        let order = ascending(&mean_activations(model, reserve, norm, batch_size, device));
        let accuracy = |k: usize| {
            let predicted = predict(&model.clone().without_head_inputs(&order[..k]), reserve, norm, batch_size, device);
            let right = predicted.iter().zip(reserve.labels()).filter(|(p, l)| p == l).count();
            100.0 * right as f64 / reserve.len().max(1) as f64
        };
        let (pruned, sweep) = sweep(order.len(), step, max_drop, accuracy);
        Self { order, pruned, sweep }
    }

    /// The channels cut.
    pub fn channels(&self) -> &[usize] {
        &self.order[..self.pruned]
    }
}

/// Mean activation of each channel of `model`'s final feature maps over `images`.
pub fn mean_activations(model: &Network, images: &ImageSet, norm: &Normalization, batch_size: usize, device: &Device) -> Vec<f64> {
    let indices: Vec<usize> = (0..images.len()).collect();
    let mut sums: Vec<f64> = Vec::new();
    for batch in plain_batches(images, &indices, batch_size, norm) {
        let x: Tensor<4> = Tensor::from_data(TensorData::new(batch.images, batch.shape), device);
        // [batch, C, h, w] → per-image spatial means, summed over the batch: [C].
        let features = model.features(x);
        let [_, channels, _, _] = features.dims();
        let per_channel = features.mean_dim(3).mean_dim(2).sum_dim(0).reshape([channels]);
        let values: Vec<f32> = per_channel.into_data().iter::<f32>().collect();
        sums.resize(channels, 0.0);
        for (sum, v) in sums.iter_mut().zip(values) {
            *sum += v as f64;
        }
    }
    sums.iter().map(|s| s / images.len().max(1) as f64).collect()
}

/// Indices of `values`, smallest first, ties to the lower index.
pub fn ascending(values: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]).then(a.cmp(&b)));
    order
}

/// Tries cutting k = 0, s, 2s, … of `channels` channels (s = ⌈step·channels⌉), reading the
/// accuracy of each from `accuracy_with(k)`, until one falls by the relative `max_drop` or more
/// below k = 0's; returns the last k within it and every (k, accuracy) tried.
pub fn sweep(channels: usize, step: f64, max_drop: f64, mut accuracy_with: impl FnMut(usize) -> f64) -> (usize, Vec<(usize, f64)>) {
    let stride = ((step * channels as f64).ceil() as usize).max(1);
    let (mut kept, mut tried) = (0, Vec::new());
    let mut unpruned = None;
    for k in (0..channels).step_by(stride) {
        let accuracy = accuracy_with(k);
        tried.push((k, accuracy));
        let base = *unpruned.get_or_insert(accuracy);
        if base <= 0.0 || (base - accuracy) / base >= max_drop {
            break;
        }
        kept = k;
    }
    (kept, tried)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Module;

    use crate::models::{Arch, RNG_TEST_LOCK};

    #[test]
    fn channels_are_cut_lowest_activation_first_until_the_accuracy_falls() {
        assert_eq!(ascending(&[0.5, 0.1, 0.3, 0.1]), vec![1, 3, 2, 0]);
        // 10 channels, step 0.2: k = 0, 2, 4, 6, 8. Accuracy 80 → 75 (6 % drop) → 73 (8.75 %)
        // → 72 (10 %: out): 4 channels stay cut and k = 8 is never tried.
        let accuracies = [(0, 80.0), (2, 75.0), (4, 73.0), (6, 72.0), (8, 10.0)];
        let lookup = |k: usize| accuracies.iter().find(|a| a.0 == k).unwrap().1;
        let (kept, tried) = sweep(10, 0.2, 0.1, lookup);
        assert_eq!((kept, tried), (4, accuracies[..4].to_vec()));
        // A step under one channel still advances; a useless network cuts nothing.
        assert_eq!(sweep(3, 0.01, 0.1, |_| 50.0), (2, vec![(0, 50.0), (1, 50.0), (2, 50.0)]));
        assert_eq!(sweep(3, 0.5, 0.1, |_| 0.0).0, 0);
    }

    #[test]
    fn a_cut_channel_is_a_zero_feature_at_the_head() {
        let _rng = RNG_TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let device = Device::flex();
        device.seed(11);
        let model = Network::new(Arch::Small, 3, 4, &device);
        let x: Tensor<4> = Tensor::from_data(TensorData::new((0..2 * 3 * 16 * 16).map(|i| (i % 17) as f32 / 8.0 - 1.0).collect::<Vec<f32>>(), [2, 3, 16, 16]), &device);
        let features = model.features(x.clone());
        let [_, channels, _, _] = features.dims();
        let cut = [0, 5, channels - 1];
        let mask: Vec<f32> = (0..channels).map(|c| if cut.contains(&c) { 0.0 } else { 1.0 }).collect();
        let mask: Tensor<4> = Tensor::from_data(TensorData::new(mask, [1, channels, 1, 1]), &device);
        let expected: Vec<f32> = model.head(features * mask).into_data().iter::<f32>().collect();
        let pruned = model.clone().without_head_inputs(&cut);
        let got: Vec<f32> = pruned.forward(x.clone()).into_data().iter::<f32>().collect();
        assert!(expected.iter().zip(&got).all(|(e, g)| (e - g).abs() < 1e-5), "{expected:?} vs {got:?}");
        let unpruned: Vec<f32> = model.valid().forward(x).into_data().iter::<f32>().collect();
        assert!(unpruned.iter().zip(&got).any(|(u, g)| (u - g).abs() > 1e-4), "cutting three channels changed nothing");
    }
}
