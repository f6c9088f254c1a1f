//! DBD's first stage: self-supervised SimCLR training of the backbone on the training images
//! without their labels (Chen et al., 2020, as DBD's `model/model.py` and `model/loss.py` set it).
//!
//! Each image is seen in two strongly augmented views; the backbone's pooled features go through
//! a projection head g (Linear → BatchNorm → ReLU → Linear, then z = g/‖g‖₂), and the loss is
//! NT-Xent with the first views as anchors:
//!
//! ℓ = −(1/n) Σᵢ log( exp(zᵢ·z'ᵢ/τ) / Σ_{j ≠ i} exp(zᵢ·cⱼ/τ) ), c = (z₁…zₙ, z'₁…z'ₙ),
//!
//! i.e. each anchor's positive is its own second view, and its negatives are every other view in
//! the batch (2n − 2 of them). Labels never enter, so the poisoned images' labels cannot tie the
//! trigger to the target class.

use burn::module::Module;
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::activation::{log_softmax, relu};
use burn::tensor::{Device, Tensor, TensorData};

use crate::engine::batches::Batch;
use crate::models::{global_average_pool, Initialise, Network};

/// The projection head g of SimCLR (official `SelfModel`, head "mlp").
#[derive(Module, Debug)]
pub struct ProjectionHead {
    hidden: Linear,
    norm: BatchNorm,
    out: Linear,
}

impl ProjectionHead {
    /// A head from `width` pooled features to `dim`, initialised as PyTorch's layers are.
    pub fn new(width: usize, dim: usize, device: &Device) -> Self {
        let head = Self { hidden: LinearConfig::new(width, width).init(device), norm: BatchNormConfig::new(width).init(device), out: LinearConfig::new(width, dim).init(device) };
        head.visit(&mut Initialise);
        head
    }

    /// Unit-length projections z of pooled features [n, width] → [n, dim].
    pub fn forward(&self, pooled: Tensor<2>) -> Tensor<2> {
        let g = self.out.forward(relu(self.norm.forward(self.hidden.forward(pooled))));
        let norm = g.clone().square().sum_dim(1).sqrt().clamp_min(1e-12);
        g / norm
    }
}

/// The NT-Xent loss of projections `z` [2n, d] laid out view after view (rows 0..n the first
/// views, n..2n the second), at temperature `tau`.
pub fn nt_xent(z: Tensor<2>, tau: f64) -> Tensor<1> {
    let [rows, _] = z.dims();
    let n = rows / 2;
    let device = z.device();
    let anchors = z.clone().narrow(0, 0, n);
    let logits = anchors.matmul(z.transpose()).div_scalar(tau); // [n, 2n]
    // The anchor itself is no candidate: a large negative logit removes it from the softmax.
    let mut self_mask = vec![0f32; n * rows];
    let mut positive = vec![0f32; n * rows];
    for i in 0..n {
        self_mask[i * rows + i] = -1e9;
        positive[i * rows + n + i] = 1.0;
    }
    let self_mask = Tensor::<2>::from_data(TensorData::new(self_mask, [n, rows]), &device);
    let positive = Tensor::<2>::from_data(TensorData::new(positive, [n, rows]), &device);
    let log_prob = log_softmax(logits + self_mask, 1);
    (log_prob * positive).sum().div_scalar(-(n as f64)).reshape([1])
}

/// One SimCLR step on `batch` (two views per image, view after view) at temperature `tau`:
/// minimise NT-Xent over the network's backbone and the projection head together, each with its
/// optimiser (`optims`). Returns both updated and the loss.
pub fn contrastive_step(model: Network, head: ProjectionHead, optims: [&mut ModuleOptimizer; 2], batch: Batch, lr: f64, tau: f64, device: &Device) -> (Network, ProjectionHead, f32) {
    let x: Tensor<4> = Tensor::from_data(TensorData::new(batch.images, batch.shape), device);
    let loss = nt_xent(head.forward(global_average_pool(model.features(x))), tau);
    let value = loss.to_data().iter::<f32>().next().unwrap_or(f32::NAN);
    let mut grads = loss.backward();
    let (model_grads, head_grads) = (GradientsParams::from_module(&mut grads, &model), GradientsParams::from_module(&mut grads, &head));
    let [model_optim, head_optim] = optims;
    (model_optim.step(lr, model, model_grads), head_optim.step(lr, head, head_grads), value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(values: Vec<f32>, shape: [usize; 2], device: &Device) -> Tensor<2> {
        Tensor::from_data(TensorData::new(values, shape), device)
    }

    #[test]
    fn nt_xent_on_a_hand_computed_pair() {
        let device = Device::flex();
        // n = 2 unit vectors in 2-D: anchors e1, e2; second views e1, −e2; τ = 1.
        // Anchor 1: positive logit 1, candidates (j ≠ 1): e2·e1 = 0, e1·e1 = 1, e1·(−e2) = 0 →
        // −log(e/(2 + e)). Anchor 2: positive e2·(−e2) = −1; candidates 0, 0, −1 → −log(e⁻¹/(2 + e⁻¹)).
        let z = tensor(vec![1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, -1.0], [4, 2], &device);
        let got = nt_xent(z, 1.0).into_scalar::<f32>() as f64;
        let e = 1f64.exp();
        let want = (-(e / (2.0 + e)).ln() - (1.0 / e / (2.0 + 1.0 / e)).ln()) / 2.0;
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }
}
