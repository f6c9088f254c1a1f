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

/// What a step does with its batch's mean cross-entropy L.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Objective {
    /// Minimise L: ordinary training.
    Descent,
    /// Minimise sign(L − γ)·L: descend while L > γ, ascend below it (ABL's local gradient
    /// ascent; its flooding loss |L − γ| + γ has the same gradient).
    LocalAscent { gamma: f32 },
    /// Maximise L (ABL's unlearning).
    Ascent,
}

impl Objective {
    /// The factor the loss's gradient is multiplied by when the batch's loss is `loss` (0 at
    /// L = γ, as PyTorch's `sign`).
    pub fn factor(self, loss: f32) -> f32 {
        match self {
            Objective::Descent => 1.0,
            Objective::Ascent => -1.0,
            Objective::LocalAscent { gamma } if loss > gamma => 1.0,
            Objective::LocalAscent { gamma } if loss < gamma => -1.0,
            Objective::LocalAscent { .. } => 0.0,
        }
    }
}

/// Trains `model` on `batch` with hard labels; returns the updated model and the batch loss.
pub fn train_step(model: Network, optim: &mut ModuleOptimizer, batch: Batch, num_classes: usize, lr: f64, device: &Device) -> (Network, f32) {
    objective_step(model, optim, batch, num_classes, lr, device, Objective::Descent)
}

/// [`train_step`] towards `objective`; the returned loss is the batch's cross-entropy L.
pub fn objective_step(model: Network, optim: &mut ModuleOptimizer, batch: Batch, num_classes: usize, lr: f64, device: &Device, objective: Objective) -> (Network, f32) {
    let targets = one_hot(&batch.labels, num_classes);
    let b = batch.labels.len();
    let x: Tensor<4> = Tensor::from_data(TensorData::new(batch.images, batch.shape), device);
    let y: Tensor<2> = Tensor::from_data(TensorData::new(targets, [b, num_classes]), device);
    let loss = soft_cross_entropy(model.forward(x), y);
    let value = loss.to_data().iter::<f32>().next().unwrap_or(f32::NAN);
    let factor = objective.factor(value);
    let loss = if factor == 1.0 { loss } else { loss.mul_scalar(factor) };
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    (optim.step(lr, model, grads), value)
}

/// Runs `step` (e.g. [`objective_step`] with its optimiser and rate) on every batch of
/// `batches`, telling `progress` of each; returns the model and the mean loss per sample. A
/// non-finite loss stops it ([`check_loss`], unless `allow_nan`) with an error naming `pass`
/// (e.g. "epoch 3") and the step.
pub fn train_pass(mut model: Network, batches: Receiver<Batch>, allow_nan: bool, pass: &str, progress: &dyn TrainProgress, mut step: impl FnMut(Network, Batch) -> (Network, f32)) -> Result<(Network, f64)> {
    let (mut loss_sum, mut samples) = (0.0, 0usize);
    for (index, batch) in batches.iter().enumerate() {
        let b = batch.labels.len();
        let (next, loss) = step(model, batch);
        check_loss(loss, allow_nan, || format!("{pass}, step {}", index + 1))?;
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

    use crate::config::OptimizerConfig;
    use crate::engine::optim;
    use crate::models::{parameters, Arch, RNG_TEST_LOCK};

    #[test]
    fn local_ascent_flips_the_sign_below_gamma() {
        let lga = Objective::LocalAscent { gamma: 0.5 };
        assert_eq!([lga.factor(0.7), lga.factor(0.3), lga.factor(0.5)], [1.0, -1.0, 0.0]);
        assert_eq!([Objective::Descent.factor(0.3), Objective::Ascent.factor(0.7)], [1.0, -1.0]);
    }

    #[test]
    fn ascent_moves_every_parameter_opposite_to_descent_and_lga_follows_gamma() {
        let _rng = RNG_TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let device = Device::flex().autodiff();
        device.seed(5);
        let model = Network::new(Arch::Small, 3, 4, &device);
        let images: Vec<f32> = (0..8 * 3 * 16 * 16).map(|i| ((i * 7919) % 255) as f32 / 127.0 - 1.0).collect();
        let batch = Batch { images, shape: [8, 3, 16, 16], indices: (0..8).collect(), labels: vec![0, 1, 2, 3, 0, 1, 2, 3] };
        // Plain SGD: the update is −lr·factor·∇L, so ascent's is descent's negated. The clones
        // share their batch-norm running statistics (burn's `RunningState`), which the visitor
        // sees too and every step updates alike: parameters are read after all steps, and a step
        // at rate 0 (which moves nothing else) is the reference both are measured from.
        let sgd = OptimizerConfig::Sgd { momentum: 0.0, weight_decay: 0.0, nesterov: false };
        let step = |objective, lr| objective_step(model.clone(), &mut optim::build(&sgd), batch.clone(), 4, lr, &device, objective);
        let ((descended, loss), (ascended, ascent_loss)) = (step(Objective::Descent, 0.1), step(Objective::Ascent, 0.1));
        assert_eq!(loss, ascent_loss, "both steps report the same cross-entropy");
        // LGA descends while the loss is above γ and ascends below it.
        let (above, _) = step(Objective::LocalAscent { gamma: loss - 0.1 }, 0.1);
        let (below, _) = step(Objective::LocalAscent { gamma: loss + 0.1 }, 0.1);
        let (unmoved, _) = step(Objective::Descent, 0.0);
        let [reference, down, up, above, below] = [&unmoved, &descended, &ascended, &above, &below].map(parameters);
        let moved = reference.iter().zip(&down).filter(|(r, d)| r != d).count();
        assert!(moved > reference.len() / 2, "descent moved only {moved} of {} parameters", reference.len());
        for ((r, d), u) in reference.iter().zip(&down).zip(&up) {
            assert!(((u - r) + (d - r)).abs() <= 1e-6 + 1e-4 * (d - r).abs(), "reference {r}, descent {d}, ascent {u}");
        }
        assert!(above == down && below == up, "LGA should step as descent above γ and as ascent below it");
    }

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
