//! DBD's second stage and its split: a linear head trained with symmetric cross-entropy on the
//! frozen self-supervised backbone, then the ε share of samples it fits best kept as labelled.
//!
//! SCE (Wang et al., 2019): ℓ = α·CE(p, y) + β·RCE, RCE = −Σ_k p_k·log q_k with q the one-hot
//! label clamped to [1e-4, 1] and p = softmax clamped to [1e-7, 1], so RCE = −log(1e-4)·Σ_{k≠y} p_k:
//! bounded, it does not chase hard (poisoned) samples as CE does. A poisoned image's trigger
//! means nothing to the self-supervised backbone, so its target label is hard to fit linearly
//! and its loss stays high.
//!
//! As the official code: the backbone is frozen by computing its features without gradients,
//! but in train mode, so its batch-norm running statistics follow the data; the split's losses
//! come from the whole network in eval mode on images augmented as for training.

use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::{Device, Tensor, TensorData};

use super::config::SplitScope;
use crate::data::TrainingSet;
use crate::engine::batches::{make_batch, Batch, Views};
use crate::engine::loss::one_hot;
use crate::models::Network;

/// The lower clamp of the label in RCE (official `RCELoss`).
const LABEL_FLOOR: f64 = 1e-4;

/// Symmetric cross-entropy's weights.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sce {
    pub alpha: f64,
    pub beta: f64,
}

impl Sce {
    /// Per-sample α·CE + β·RCE of `logits` [n, K] against one-hot `targets` [n, K] → [n].
    pub fn per_sample(&self, logits: Tensor<2>, targets: Tensor<2>) -> Tensor<1> {
        let [n, _] = logits.dims();
        let ce = (log_softmax(logits.clone(), 1) * targets.clone()).sum_dim(1).neg();
        let p = softmax(logits, 1).clamp_min(1e-7);
        let rce = (p * targets.neg().add_scalar(1.0)).sum_dim(1).mul_scalar(-LABEL_FLOOR.ln());
        (ce.mul_scalar(self.alpha) + rce.mul_scalar(self.beta)).reshape([n])
    }
}

/// One warm-up step on `batch`: the mean SCE of the network's linear head on its backbone's
/// features computed without gradients in train mode, so only the head moves. Returns the network and the loss.
pub fn linear_step(model: Network, optim: &mut ModuleOptimizer, batch: Batch, num_classes: usize, lr: f64, device: &Device, sce: Sce) -> (Network, f32) {
    let n = batch.labels.len();
    let x: Tensor<4> = Tensor::from_data(TensorData::new(batch.images, batch.shape), device);
    let y: Tensor<2> = Tensor::from_data(TensorData::new(one_hot(&batch.labels, num_classes), [n, num_classes]), device);
    let logits = model.head(model.without_grad().features(x));
    let loss = sce.per_sample(logits, y).mean();
    let value = loss.to_data().iter::<f32>().next().unwrap_or(f32::NAN);
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    (optim.step(lr, model, grads), value)
}

/// Every training sample's SCE under `model` (eval mode, on `device`), each image seen as
/// `view` makes it (one view) with randomness from `seed`.
pub fn losses(model: &Network, set: &TrainingSet, view: &Views, sce: Sce, batch_size: usize, seed: u64, device: &Device) -> Vec<f32> {
    let k = set.num_classes;
    let indices: Vec<usize> = (0..set.images.len()).collect();
    let mut out = Vec::with_capacity(indices.len());
    for (b, chunk) in indices.chunks(batch_size.max(1)).enumerate() {
        let batch = make_batch(&set.images, chunk, view.augment, &view.norm, seed ^ (b as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let n = chunk.len();
        let x: Tensor<4> = Tensor::from_data(TensorData::new(batch.images, batch.shape), device);
        let y: Tensor<2> = Tensor::from_data(TensorData::new(one_hot(&batch.labels, k), [n, k]), device);
        out.extend(sce.per_sample(model.forward(x), y).into_data().iter::<f32>());
    }
    out
}

/// DBD's labelled set: the ⌊ε·n⌋ samples of lowest loss (ties by position), in increasing loss;
/// with [`SplitScope::PerClass`], the ⌊ε·n_c⌋ lowest of each label c in turn.
pub fn lowest_share(losses: &[f32], labels: &[u16], epsilon: f64, scope: SplitScope) -> Vec<usize> {
    let lowest = |mut members: Vec<usize>| {
        let keep = (members.len() as f64 * epsilon) as usize;
        members.sort_by(|&a, &b| losses[a].total_cmp(&losses[b]).then(a.cmp(&b)));
        members.truncate(keep);
        members
    };
    match scope {
        SplitScope::Global => lowest((0..losses.len()).collect()),
        SplitScope::PerClass => {
            let classes = labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0);
            (0..classes).flat_map(|c| lowest((0..losses.len()).filter(|&i| labels[i] as usize == c).collect())).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::OptimizerConfig;
    use crate::engine::optim;
    use crate::models::{parameters, Arch, RNG_TEST_LOCK};

    #[test]
    fn the_warm_up_moves_the_linear_layer_only() {
        let _lock = RNG_TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let device = Device::flex().autodiff();
        device.seed(3);
        let model = Network::new(Arch::Small, 3, 4, &device);
        let before = parameters(&model);
        let images: Vec<f32> = (0..6 * 3 * 8 * 8).map(|i| ((i * 31 % 17) as f32 - 8.0) / 8.0).collect();
        let batch = Batch { images, shape: [6, 3, 8, 8], indices: (0..6).collect(), labels: vec![0, 1, 2, 3, 0, 1] };
        let mut adam = optim::build(&OptimizerConfig::Adam { weight_decay: 0.0 });
        let (model, loss) = linear_step(model, &mut adam, batch, 4, 0.01, &device, Sce { alpha: 0.1, beta: 1.0 });
        let after = parameters(&model);
        // The linear layer (256 inputs × 4 outputs + 4 biases) is visited last.
        let fc = 256 * 4 + 4;
        let split = before.len() - fc;
        assert!(loss.is_finite());
        assert_eq!(before[..split], after[..split], "the backbone moved");
        assert!(before[split..].iter().zip(&after[split..]).all(|(a, b)| a != b), "Adam moves every weight of the linear layer");
    }

    #[test]
    fn sce_on_a_hand_computed_case() {
        let device = Device::flex();
        // Logits (0, ln 3): p = (1/4, 3/4). Label 1: CE = −ln(3/4), RCE = −ln(1e-4)·(1/4).
        let logits = Tensor::<2>::from_data(TensorData::new(vec![0.0f32, 3f32.ln(), 0.0, 3f32.ln()], [2, 2]), &device);
        let targets = Tensor::<2>::from_data(TensorData::new(vec![0.0f32, 1.0, 1.0, 0.0], [2, 2]), &device);
        let got: Vec<f32> = Sce { alpha: 0.1, beta: 1.0 }.per_sample(logits, targets).into_data().iter::<f32>().collect();
        let rce = |rest: f64| -(1e-4f64).ln() * rest;
        let want = [0.1 * -(0.75f64).ln() + rce(0.25), 0.1 * -(0.25f64).ln() + rce(0.75)];
        assert!(got.iter().zip(want).all(|(g, w)| (*g as f64 - w).abs() < 1e-5), "{got:?} vs {want:?}");
    }

    #[test]
    fn the_lowest_share_is_taken_in_order_of_loss() {
        let losses = [0.5, 0.1, 0.9, 0.1, 0.3, 0.7];
        let labels = [0, 0, 1, 0, 1, 1];
        assert_eq!(lowest_share(&losses, &labels, 0.5, SplitScope::Global), vec![1, 3, 4]);
        assert_eq!(lowest_share(&losses, &labels, 0.99, SplitScope::Global), vec![1, 3, 4, 0, 5]);
        // Per label: label 0 holds 0, 1, 3 (keep ⌊1.5⌋ = 1: sample 1), label 1 holds 2, 4, 5 (sample 4).
        assert_eq!(lowest_share(&losses, &labels, 0.5, SplitScope::PerClass), vec![1, 4]);
        assert_eq!(lowest_share(&losses, &labels, 0.7, SplitScope::PerClass), vec![1, 3, 4, 5]);
    }
}
