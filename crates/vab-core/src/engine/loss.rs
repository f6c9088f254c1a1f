//! Soft-label cross-entropy, the one loss every stage uses:
//! L = -(1/B) Σ_i Σ_k y_ik · log softmax(z_i)_k. Hard labels are one-hot rows of y.
//! Its gradient with respect to the logits is (softmax(z_i)·Σ_k y_ik - y_i) / B.

use burn::tensor::activation::log_softmax;
use burn::tensor::Tensor;

/// The mean soft cross-entropy of `logits` [B, K] against `targets` [B, K] (rows need not sum
/// to 1: a row scaled by w weighs that sample by w).
pub fn soft_cross_entropy(logits: Tensor<2>, targets: Tensor<2>) -> Tensor<1> {
    let [batch, _] = logits.dims();
    let per_sample = (log_softmax(logits, 1) * targets).sum_dim(1);
    per_sample.sum().div_scalar(-(batch as f64)).reshape([1])
}

/// One-hot rows for `labels` over `num_classes` classes, row-major [B, K].
pub fn one_hot(labels: &[u16], num_classes: usize) -> Vec<f32> {
    let mut rows = vec![0f32; labels.len() * num_classes];
    for (i, &l) in labels.iter().enumerate() {
        rows[i * num_classes + l as usize] = 1.0;
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    fn tensor(values: &[f32], shape: [usize; 2], device: &Device) -> Tensor<2> {
        Tensor::from_data(TensorData::new(values.to_vec(), shape), device)
    }

    fn loss_value(z: &[f32], y: &[f32]) -> f64 {
        let device = Device::flex();
        let l = soft_cross_entropy(tensor(z, [2, 3], &device), tensor(y, [2, 3], &device));
        l.into_data().iter::<f32>().next().unwrap() as f64
    }

    const Z: [f32; 6] = [0.3, -1.2, 2.0, 0.5, 0.1, -0.4];
    const Y: [f32; 6] = [0.7, 0.3, 0.0, 0.0, 0.2, 0.5];

    #[test]
    fn value_matches_a_hand_computation() {
        // Row 1: log-sum-exp(0.3, -1.2, 2.0) = 2.2104…; row 2: lse(0.5, 0.1, -0.4) = 1.1328….
        let lse = |r: &[f32]| r.iter().map(|v| (*v as f64).exp()).sum::<f64>().ln();
        let (l1, l2) = (lse(&Z[..3]), lse(&Z[3..]));
        let expected = -((0.7 * (0.3 - l1) + 0.3 * (-1.2 - l1)) + (0.2 * (0.1 - l2) + 0.5 * (-0.4 - l2))) / 2.0;
        assert!((loss_value(&Z, &Y) - expected).abs() < 1e-5, "{} vs {expected}", loss_value(&Z, &Y));
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let device = Device::flex().autodiff();
        let z = tensor(&Z, [2, 3], &device).require_grad();
        let loss = soft_cross_entropy(z.clone(), tensor(&Y, [2, 3], &device));
        let grads = loss.backward();
        let analytic = z.grad(&grads).unwrap().into_data().iter::<f32>().collect::<Vec<_>>();
        let eps = 1e-2f32;
        for i in 0..6 {
            let (mut plus, mut minus) = (Z, Z);
            plus[i] += eps;
            minus[i] -= eps;
            let numeric = (loss_value(&plus, &Y) - loss_value(&minus, &Y)) / (2.0 * eps as f64);
            assert!((analytic[i] as f64 - numeric).abs() < 2e-3, "logit {i}: {} vs {numeric}", analytic[i]);
        }
    }

    #[test]
    fn one_hot_rows() {
        assert_eq!(one_hot(&[2, 0], 3), vec![0.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
    }
}
