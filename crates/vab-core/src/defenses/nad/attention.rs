//! NAD's attention maps, their distillation loss and the distillation step.

use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor, TensorData};

use crate::engine::batches::Batch;
use crate::engine::loss::{one_hot, soft_cross_entropy};
use crate::models::Network;

/// Added to the map's norm before dividing (the official code's `eps`).
const EPS: f64 = 1e-6;

/// The attention map of feature maps F [b, c, h, w]: A = a / (‖a‖₂ + ε) with
/// a = Σ_c |F_c|^p, one row of h·w values per sample, [b, h·w].
pub fn attention_map(features: Tensor<4>, power: f64) -> Tensor<2> {
    let [b, _, h, w] = features.dims();
    let a = features.abs().powf_scalar(power).sum_dim(1).reshape([b, h * w]);
    let norm = a.clone().square().sum_dim(1).sqrt().add_scalar(EPS);
    a / norm
}

/// The attention loss between a student's feature maps and a teacher's attention map: the mean
/// squared difference of their maps over every sample and position (PyTorch's `mse_loss`).
pub fn attention_loss(student: Tensor<4>, teacher_map: Tensor<2>, power: f64) -> Tensor<1> {
    (attention_map(student, power) - teacher_map).square().mean()
}

/// NAD's weights: `betas[i]` weighs the attention loss at stage S − 3 + i of an S-stage network
/// (its last three), raised to `power`.
#[derive(Clone, Copy, Debug)]
pub struct Distillation<'a> {
    pub teacher: &'a Network,
    pub betas: [f64; 3],
    pub power: f64,
}

impl Distillation<'_> {
    /// The teacher's attention maps of `x` at the last three stages, lowest first (its running
    /// statistics, no gradients).
    pub fn teacher_maps(&self, x: Tensor<4>) -> Vec<Tensor<2>> {
        last_three_stages(self.teacher, x).0.into_iter().map(|f| attention_map(f, self.power)).collect()
    }
}

/// The outputs of the last three stages of `model` on `x`, lowest first, and its logits.
fn last_three_stages(model: &Network, x: Tensor<4>) -> (Vec<Tensor<4>>, Tensor<2>) {
    let mut stages = Vec::with_capacity(4);
    let features = model.features_tapped(x, &mut |f| stages.push(f.clone()));
    let first = stages.len().saturating_sub(3);
    let logits = model.head(features);
    (stages.split_off(first), logits)
}

/// One step of NAD on `batch`: minimise CE(student(x), y) + Σᵢ βᵢ·L_AT(student stage i, teacher
/// stage i) over the last three stages. `device` is the student's (autodiff), `inference` the
/// teacher's. Returns the updated student and the batch's total loss.
#[allow(clippy::too_many_arguments)]
pub fn distillation_step(model: Network, optim: &mut ModuleOptimizer, batch: Batch, num_classes: usize, lr: f64, device: &Device, inference: &Device, nad: Distillation) -> (Network, f32) {
    let b = batch.labels.len();
    let teacher_maps = nad.teacher_maps(Tensor::from_data(TensorData::new(batch.images.clone(), batch.shape), inference));
    let x: Tensor<4> = Tensor::from_data(TensorData::new(batch.images, batch.shape), device);
    let y: Tensor<2> = Tensor::from_data(TensorData::new(one_hot(&batch.labels, num_classes), [b, num_classes]), device);
    let (stages, logits) = last_three_stages(&model, x);
    let mut loss = soft_cross_entropy(logits, y);
    for ((student, teacher), beta) in stages.into_iter().zip(teacher_maps).zip(nad.betas) {
        let teacher = Tensor::from_data(teacher.into_data(), device);
        loss = loss + attention_loss(student, teacher, nad.power).mul_scalar(beta);
    }
    let value = loss.to_data().iter::<f32>().next().unwrap_or(f32::NAN);
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    (optim.step(lr, model, grads), value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Module;
    use crate::models::{Arch, RNG_TEST_LOCK};

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn attention_map_sums_powered_channels_and_normalises_each_sample() {
        let device = Device::flex();
        // Two samples, two channels, 1×2 positions. Sample 0: channel sums of squares at the two
        // positions: 1² + 2² = 5 and (−3)² + 0² = 9 (|F|, so the sign goes), norm √106. Sample 1
        // is all 0: the map stays 0 (ε keeps the division finite).
        let f = Tensor::<4>::from_data(TensorData::new(vec![1.0f32, -3.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0], [2, 2, 1, 2]), &device);
        let map = values(attention_map(f.clone(), 2.0));
        let n = 106f64.sqrt() + 1e-6;
        let want = [5.0 / n, 9.0 / n, 0.0, 0.0];
        assert!(map.iter().zip(want).all(|(m, w)| (*m as f64 - w).abs() < 1e-6), "{map:?}");
        // p = 1: |1| + |2| = 3 and |−3| + 0 = 3, each 1/√2 of the norm.
        let map = values(attention_map(f.clone(), 1.0));
        assert!(map[..2].iter().all(|m| (*m as f64 - 0.5f64.sqrt()).abs() < 1e-6), "{map:?}");
        // The loss against a teacher map is the mean squared difference over all 4 entries.
        let teacher = Tensor::<2>::from_data(TensorData::new(vec![0.0f32, 1.0, 0.5, 0.0], [2, 2]), &device);
        let loss = values(attention_loss(f, teacher, 2.0))[0] as f64;
        let want = ((5.0 / n).powi(2) + (9.0 / n - 1.0).powi(2) + 0.25) / 4.0;
        assert!((loss - want).abs() < 1e-6, "{loss} against {want}");
    }

    #[test]
    fn the_attention_losss_gradient_matches_finite_differences() {
        let device = Device::flex().autodiff();
        let raw: Vec<f32> = (0..2 * 3 * 2 * 2).map(|i| ((i * 37 % 11) as f32 - 5.0) / 4.0).collect();
        let teacher: Vec<f32> = (0..2 * 4).map(|i| (i % 3) as f32 / 3.0).collect();
        let loss_of = |v: &[f32], device: &Device| {
            let f = Tensor::<4>::from_data(TensorData::new(v.to_vec(), [2, 3, 2, 2]), device).require_grad();
            let t = Tensor::<2>::from_data(TensorData::new(teacher.clone(), [2, 4]), device);
            (f.clone(), attention_loss(f, t, 2.0))
        };
        let (f, loss) = loss_of(&raw, &device);
        let grads = loss.backward();
        let analytic = values(f.grad(&grads).unwrap());
        let at = |v: &[f32]| values(loss_of(v, &device).1)[0] as f64;
        let h = 1e-3f32;
        for i in 0..raw.len() {
            let (mut up, mut down) = (raw.clone(), raw.clone());
            up[i] += h;
            down[i] -= h;
            let numeric = (at(&up) - at(&down)) / (2.0 * h as f64);
            assert!((numeric - analytic[i] as f64).abs() < 2e-3 * (1.0 + numeric.abs()), "element {i}: finite difference {numeric}, autodiff {}", analytic[i]);
        }
    }

    #[test]
    fn with_zero_betas_a_distillation_step_is_a_cross_entropy_step_and_the_teacher_stays_put() {
        let _rng = RNG_TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let inference = Device::flex();
        let device = inference.clone().autodiff();
        device.seed(3);
        let student = Network::new(Arch::Small, 3, 4, &device);
        let teacher = Network::new(Arch::Small, 3, 4, &device).valid();
        let images: Vec<f32> = (0..8 * 3 * 16 * 16).map(|i| ((i * 7919) % 255) as f32 / 127.0 - 1.0).collect();
        let batch = Batch { images, shape: [8, 3, 16, 16], indices: (0..8).collect(), labels: vec![0, 1, 2, 3, 0, 1, 2, 3] };
        let probe = |device: &Device| Tensor::<4>::from_data(TensorData::new(batch.images.clone(), batch.shape), device);
        let teacher_before = values(teacher.forward(probe(&inference)));
        // Students are compared by a train-mode forward, which depends on the weights only (the
        // clones share their batch-norm running statistics, which every step moves).
        let outputs = |m: Network| values(m.forward(probe(&device)));
        let sgd = crate::config::OptimizerConfig::Sgd { momentum: 0.0, weight_decay: 0.0, nesterov: false };
        let step = |betas| {
            let nad = Distillation { teacher: &teacher, betas, power: 2.0 };
            let (m, loss) = distillation_step(student.clone(), &mut crate::engine::optim::build(&sgd), batch.clone(), 4, 0.1, &device, &inference, nad);
            (outputs(m), loss)
        };
        let (plain, plain_loss) = crate::engine::step::train_step(student.clone(), &mut crate::engine::optim::build(&sgd), batch.clone(), 4, 0.1, &device);
        let (zero, zero_loss) = step([0.0; 3]);
        assert_eq!(zero_loss, plain_loss);
        assert_eq!(zero, outputs(plain), "β = 0 should leave plain cross-entropy");
        // A teacher unlike the student adds a positive attention loss and moves the student
        // elsewhere.
        let (distilled, distilled_loss) = step([500.0, 1000.0, 1000.0]);
        assert!(distilled_loss > plain_loss, "{distilled_loss} should exceed the cross-entropy {plain_loss}");
        assert_ne!(distilled, zero);
        assert_eq!(values(teacher.forward(probe(&inference))), teacher_before, "the teacher moved");
    }
}
