//! L∞ projected gradient ascent (PGD) on images, the perturbation of the label-consistent
//! attack (method.md §9; Turner et al. 2019): for each image x₀ with label y,
//!
//!   x_{t+1} = Π_{‖x − x₀‖∞ ≤ ε, 0 ≤ x ≤ 1} ( x_t + α · sign(∇ₓ CE(f(x_t), y)) ),   x_0 = x₀,
//!
//! against a trained model f with its batch norm in eval mode. Pixels are in [0, 1]; ε and α
//! are given in 1/255 units and the result is rounded back to u8 inside the ε-ball.

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use vab_data::ImageSet;

use crate::engine::batches::Normalization;
use crate::engine::loss::{one_hot, soft_cross_entropy};
use crate::models::Network;

/// PGD's parameters (method.md §9's common default: ε 8, 100 steps of 1.5).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pgd {
    /// Radius of the L∞ ball, in 1/255 pixel units (CL-16: 16, CL-32: 32).
    pub epsilon: f32,
    pub steps: usize,
    /// Step size α, in 1/255 pixel units.
    pub step_size: f32,
}

/// Perturbs the images of `set` away from their labels under `model`, `batch_size` images at a
/// time on the autodiff `device`. Returns the perturbed u8 images (row-major, as `set.pixels()`)
/// and, per image, whether the model's prediction on it differs from its label.
pub fn perturb(model: &Network, set: &ImageSet, num_classes: usize, norm: &Normalization, pgd: &Pgd, batch_size: usize, device: &Device) -> (Vec<u8>, Vec<bool>) {
    // Eval-mode batch norm with gradients: `valid` turns the training flags off, `fork` puts
    // the weights back on the autodiff device without turning them on again.
    let model = model.valid().fork(device);
    let shape = set.shape();
    let mut out = Vec::with_capacity(set.pixels().len());
    let mut fooled = Vec::with_capacity(set.len());
    for (chunk, y) in set.pixels().chunks(batch_size * shape.len()).zip(set.labels().chunks(batch_size)) {
        let dims = [y.len(), shape.channels, shape.height, shape.width];
        let (adv, preds) = perturb_batch(&model, chunk, dims, y, num_classes, norm, pgd, device);
        out.extend(adv);
        fooled.extend(preds.iter().zip(y).map(|(p, l)| p != l));
    }
    (out, fooled)
}

#[allow(clippy::too_many_arguments)]
fn perturb_batch(model: &Network, images: &[u8], shape: [usize; 4], labels: &[u16], num_classes: usize, norm: &Normalization, pgd: &Pgd, device: &Device) -> (Vec<u8>, Vec<u16>) {
    let [n, c, _, _] = shape;
    let original: Vec<f32> = images.iter().map(|&p| p as f32 / 255.0).collect();
    let (eps, alpha) = (pgd.epsilon / 255.0, pgd.step_size / 255.0);
    let mean = Tensor::<4>::from_data(TensorData::new(norm.mean.clone(), [1, c, 1, 1]), device);
    let std = Tensor::<4>::from_data(TensorData::new(norm.std.clone(), [1, c, 1, 1]), device);
    let targets = Tensor::<2>::from_data(TensorData::new(one_hot(labels, num_classes), [n, num_classes]), device);
    let logits = |x: &[f32]| {
        let x = Tensor::<4>::from_data(TensorData::new(x.to_vec(), shape), device).require_grad();
        (model.forward((x.clone() - mean.clone()) / std.clone()), x)
    };
    let mut x = original.clone();
    for _ in 0..pgd.steps {
        let (z, input) = logits(&x);
        let grads = soft_cross_entropy(z, targets.clone()).backward();
        let g: Vec<f32> = input.grad(&grads).expect("the input requires a gradient").into_data().try_to_vec().expect("f32 gradient");
        for ((v, &g), &o) in x.iter_mut().zip(&g).zip(&original) {
            let step = if g > 0.0 { alpha } else if g < 0.0 { -alpha } else { 0.0 };
            *v = (*v + step).clamp(o - eps, o + eps).clamp(0.0, 1.0);
        }
    }
    // Round to u8, staying inside the ball in integer units.
    let radius = pgd.epsilon.floor() as i32;
    let adv: Vec<u8> = x.iter().zip(images).map(|(&v, &o)| ((v * 255.0).round() as i32).clamp(o as i32 - radius, o as i32 + radius).clamp(0, 255) as u8).collect();
    let check: Vec<f32> = adv.iter().map(|&p| p as f32 / 255.0).collect();
    let preds = logits(&check).0.argmax(1).into_data().iter::<i64>().map(|p| p as u16).collect();
    (adv, preds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::Arch;
    use vab_data::ImageShape;

    /// Cross-entropy of `images` under `model` (eval mode), for comparison.
    fn loss(model: &Network, images: &[u8], shape: [usize; 4], labels: &[u16], norm: &Normalization) -> f32 {
        let x = norm.images(images, ImageShape { channels: shape[1], height: shape[2], width: shape[3] });
        let z = model.valid().forward(Tensor::from_data(TensorData::new(x, shape), &Device::flex()));
        let y = Tensor::<2>::from_data(TensorData::new(one_hot(labels, 4), [shape[0], 4]), &Device::flex());
        soft_cross_entropy(z, y).into_data().iter::<f32>().next().unwrap()
    }

    #[test]
    fn pgd_raises_the_loss_and_stays_in_the_ball_and_the_pixel_range() {
        let device = Device::flex().autodiff();
        let model = Network::new(Arch::Small, 3, 4, &device);
        let shape = [6, 3, 8, 8];
        let images: Vec<u8> = (0..6 * 3 * 64).map(|i| ((i * 53) % 256) as u8).collect();
        let labels = [0, 1, 2, 3, 0, 1];
        let norm = Normalization { mean: vec![0.5; 3], std: vec![0.25; 3] };
        let pgd = Pgd { epsilon: 8.0, steps: 5, step_size: 2.0 };
        let set = ImageSet::new(ImageShape { channels: 3, height: 8, width: 8 }, images.clone(), labels.to_vec()).unwrap();
        let (adv, fooled) = perturb(&model, &set, 4, &norm, &pgd, 4, &device);
        assert_eq!((adv.len(), fooled.len()), (images.len(), 6));
        assert!(adv.iter().zip(&images).all(|(&a, &o)| (a as i32 - o as i32).abs() <= 8), "outside the ε-ball");
        assert!(adv.iter().zip(&images).any(|(a, o)| a != o), "nothing moved");
        // Pixels at 0 or 255 stay in range (the u8 type enforces it; the ball is also clipped).
        let before = loss(&model, &images, shape, &labels, &norm);
        let after = loss(&model, &adv, shape, &labels, &norm);
        assert!(after > before, "PGD must raise the loss: {before} -> {after}");
        let none = Pgd { steps: 0, ..pgd };
        assert_eq!(perturb(&model, &set, 4, &norm, &none, 4, &device).0, images, "zero steps change nothing");
    }
}
