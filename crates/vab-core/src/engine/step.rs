//! One optimisation step, as burn's examples write it: forward → loss → backward →
//! gradients per parameter → optimiser step.

use std::sync::mpsc::Receiver;

use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor, TensorData};

use super::batches::Batch;
use super::progress::TrainProgress;
use crate::error::{CoreError, Result};
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

/// Trains `model` with hard labels on every batch of `batches` at rate `lr`, telling
/// `progress` of each; returns the model and the mean loss per sample. A non-finite loss stops
/// it ([`check_loss`], unless `allow_nan`) with an error naming `pass` (e.g. "epoch 3") and the step.
#[allow(clippy::too_many_arguments)]
pub fn train_pass(mut model: Network, optim: &mut ModuleOptimizer, batches: Receiver<Batch>, num_classes: usize, lr: f64, device: &Device, allow_nan: bool, pass: &str, progress: &dyn TrainProgress) -> Result<(Network, f64)> {
    let (mut loss_sum, mut samples) = (0.0, 0usize);
    for (step, batch) in batches.iter().enumerate() {
        let b = batch.labels.len();
        let (next, loss) = train_step(model, optim, batch, num_classes, lr, device);
        check_loss(loss, allow_nan, || format!("{pass}, step {}", step + 1))?;
        model = next;
        loss_sum += loss as f64 * b as f64;
        samples += b;
        progress.batch(b, loss);
    }
    Ok((model, loss_sum / samples.max(1) as f64))
}

/// `Err` when a training loss is not finite, unless `allow_nan`: the weights are ruined from
/// that step on, so the run stops before its next checkpoint. `at` says where, e.g.
/// "epoch 3, step 17".
pub fn check_loss(loss: f32, allow_nan: bool, at: impl FnOnce() -> String) -> Result<()> {
    if loss.is_finite() || allow_nan {
        return Ok(());
    }
    Err(CoreError::Invalid(format!(
        "{}: the training loss is {loss}; training stopped, keeping the run's checkpoint of its last finished epoch, if any. \
         Lower the learning rate, check the data, or set train.allow_nan = true to go on",
        at()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_non_finite_loss_stops_and_the_error_says_where() {
        assert!(check_loss(2.5, false, || unreachable!("finite losses build no message")).is_ok());
        for loss in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let err = check_loss(loss, false, || "epoch 3, step 17".into()).unwrap_err().to_string();
            assert!(err.starts_with(&format!("epoch 3, step 17: the training loss is {loss};")), "{err}");
            assert!(check_loss(loss, true, || unreachable!()).is_ok());
        }
    }
}
