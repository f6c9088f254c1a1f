//! One optimisation step, as burn's examples write it: forward → loss → backward →
//! gradients per parameter → optimiser step.

use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor, TensorData};

use super::batches::Batch;
use super::loss::{one_hot, soft_cross_entropy};
use crate::models::Network;

/// Trains `model` on `batch` with hard labels; returns the updated model and the batch loss.
pub fn train_step(model: Network, optim: &mut ModuleOptimizer, batch: Batch, num_classes: usize, lr: f64, device: &Device) -> (Network, f32) {
    let targets = one_hot(&batch.labels, num_classes);
    let b = batch.labels.len();
    let x: Tensor<4> = Tensor::from_data(TensorData::new(batch.images, batch.shape), device);
    let y: Tensor<2> = Tensor::from_data(TensorData::new(targets, [b, num_classes]), device);
    let loss = soft_cross_entropy(model.forward(x), y);
    let value = loss.to_data().iter::<f32>().next().unwrap_or(f32::NAN);
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    (optim.step(lr, model, grads), value)
}
