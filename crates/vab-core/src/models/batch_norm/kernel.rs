//! Train-mode batch normalisation on contiguous f32 `[batch, channels, spatial]` buffers, forward
//! and backward, each in one pass over the data after its per-channel reductions.
//!
//! burn 0.22 computes batch norm on the Flex backend out of tensor ops: a transposed copy for
//! each statistic and one pass per elementwise op, forward and backward. Here the statistics are
//! per-channel sums (f32 lanes per contiguous run, totals in f64; two passes for the variance)
//! and the output is one multiply-add per element. Channels are reduced in parallel, images are
//! written in parallel; the summation order is fixed, so results do not depend on the threads.

use rayon::prelude::*;

/// The shape of a `[batch, channels, spatial]` buffer (spatial = product of the trailing dims).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    pub batch: usize,
    pub channels: usize,
    pub spatial: usize,
}

impl Dims {
    /// "batch norm 64 channels × 1024 (batch 128), forward", for [`crate::models::op_profile`].
    pub fn describe(self, pass: &str) -> String {
        format!("batch norm {} channels × {} (batch {}), {pass}", self.channels, self.spatial, self.batch)
    }

    /// Values per channel (the statistics' sample count).
    fn per_channel(self) -> usize {
        self.batch * self.spatial
    }
}

/// What the forward pass returns: the output and the batch statistics (biased variance).
pub struct Forward {
    pub output: Vec<f32>,
    pub mean: Vec<f32>,
    pub variance: Vec<f32>,
}

/// What the backward pass returns: gradients of the input, gamma and beta.
pub struct Backward {
    pub x_grad: Vec<f32>,
    pub gamma_grad: Vec<f32>,
    pub beta_grad: Vec<f32>,
}

/// y = (x - mean) / sqrt(var + ε) · γ + β with the batch's own per-channel mean and biased variance.
pub fn forward(x: &[f32], gamma: &[f32], beta: &[f32], dims: Dims, epsilon: f64) -> Forward {
    check(x.len(), gamma.len(), dims);
    let count = dims.per_channel() as f64;
    let mean: Vec<f64> = per_channel_sum(x, x, dims, |_, v, _| v).into_iter().map(|s| s / count).collect();
    let variance: Vec<f64> = per_channel_sum(x, x, dims, |c, v, _| {
        let centred = v - mean[c] as f32;
        centred * centred
    })
    .into_iter()
    .map(|s| s / count)
    .collect();
    // y = x·scale + shift with scale = γ/σ and shift = β - mean·γ/σ.
    let affine: Vec<(f32, f32)> = (0..dims.channels)
        .map(|c| {
            let scale = gamma[c] as f64 / (variance[c] + epsilon).sqrt();
            (scale as f32, (beta[c] as f64 - mean[c] * scale) as f32)
        })
        .collect();
    Forward {
        output: map_per_channel(x, x, dims, |c, v, _| v * affine[c].0 + affine[c].1),
        mean: mean.iter().map(|&m| m as f32).collect(),
        variance: variance.iter().map(|&v| v as f32).collect(),
    }
}

/// Gradients of [`forward`] given the output gradient `dy` and the statistics it returned:
/// dβ = Σ dy, dγ = Σ dy·x̂, dx = γ/σ · (dy - mean(dy) - x̂·mean(dy·x̂)) with x̂ = (x - mean)/σ.
pub fn backward(x: &[f32], dy: &[f32], gamma: &[f32], mean: &[f32], variance: &[f32], dims: Dims, epsilon: f64) -> Backward {
    check(x.len(), gamma.len(), dims);
    assert_eq!(dy.len(), x.len(), "batch norm backward: gradient and input sizes differ");
    let count = dims.per_channel() as f64;
    let inv_std: Vec<f64> = variance.iter().map(|&v| 1.0 / (v as f64 + epsilon).sqrt()).collect();
    let beta_grad = per_channel_sum(dy, dy, dims, |_, g, _| g);
    let gamma_grad: Vec<f64> = per_channel_sum(x, dy, dims, |c, v, g| g * (v - mean[c]))
        .into_iter()
        .zip(&inv_std)
        .map(|(s, is)| s * is)
        .collect();
    // dx = a·dy + b·x + k, expanding x̂ = (x - mean)·σ⁻¹.
    let coefficients: Vec<(f32, f32, f32)> = (0..dims.channels)
        .map(|c| {
            let a = gamma[c] as f64 * inv_std[c];
            let mean_dy = beta_grad[c] / count;
            let mean_dy_xhat = gamma_grad[c] / count;
            let b = -a * inv_std[c] * mean_dy_xhat;
            let k = a * (inv_std[c] * mean_dy_xhat * mean[c] as f64 - mean_dy);
            (a as f32, b as f32, k as f32)
        })
        .collect();
    Backward {
        x_grad: map_per_channel(x, dy, dims, |c, v, g| {
            let (a, b, k) = coefficients[c];
            a * g + b * v + k
        }),
        gamma_grad: gamma_grad.iter().map(|&g| g as f32).collect(),
        beta_grad: beta_grad.iter().map(|&g| g as f32).collect(),
    }
}

fn check(len: usize, channels: usize, dims: Dims) {
    assert_eq!(len, dims.batch * dims.channels * dims.spatial, "batch norm: buffer size does not match its shape");
    assert_eq!(channels, dims.channels, "batch norm: parameter size does not match the channels");
}

/// For each channel c, Σ term(c, x, y) over the batch and spatial positions of two buffers of the
/// same shape. Each contiguous run sums in eight f32 lanes; runs add up in f64, in order.
fn per_channel_sum(x: &[f32], y: &[f32], dims: Dims, term: impl Fn(usize, f32, f32) -> f32 + Sync) -> Vec<f64> {
    (0..dims.channels)
        .into_par_iter()
        .map(|c| {
            (0..dims.batch)
                .map(|b| {
                    let start = (b * dims.channels + c) * dims.spatial;
                    let range = start..start + dims.spatial;
                    lane_sum(&x[range.clone()], &y[range], |u, v| term(c, u, v))
                })
                .sum()
        })
        .collect()
}

fn lane_sum(x: &[f32], y: &[f32], term: impl Fn(f32, f32) -> f32) -> f64 {
    const LANES: usize = 8;
    let mut lanes = [0f32; LANES];
    let (xs, ys) = (x.chunks_exact(LANES), y.chunks_exact(LANES));
    let (x_rest, y_rest) = (xs.remainder(), ys.remainder());
    for (xc, yc) in xs.zip(ys) {
        for i in 0..LANES {
            lanes[i] += term(xc[i], yc[i]);
        }
    }
    let rest: f64 = x_rest.iter().zip(y_rest).map(|(&u, &v)| term(u, v) as f64).sum();
    lanes.iter().map(|&l| l as f64).sum::<f64>() + rest
}

/// A new buffer with element (b, c, s) = f(c, x[b, c, s], y[b, c, s]), one image per task.
fn map_per_channel(x: &[f32], y: &[f32], dims: Dims, f: impl Fn(usize, f32, f32) -> f32 + Sync) -> Vec<f32> {
    let image = dims.channels * dims.spatial;
    let mut out = vec![0f32; x.len()];
    out.par_chunks_mut(image.max(1)).enumerate().for_each(|(b, out)| {
        let start = b * image;
        for (c, out) in out.chunks_mut(dims.spatial.max(1)).enumerate() {
            let offset = start + c * dims.spatial;
            let (xs, ys) = (&x[offset..offset + dims.spatial], &y[offset..offset + dims.spatial]);
            for ((o, &u), &v) in out.iter_mut().zip(xs).zip(ys) {
                *o = f(c, u, v);
            }
        }
    });
    out
}
#[cfg(test)]
mod tests {
    use super::*;

    const EPS: f64 = 1e-5;

    /// Two images, two channels, two positions: channel 0 holds 1, 2 | 3, 6 and channel 1 holds
    /// 0, 0 | 4, -4. Channel 0: mean 3, biased variance (4 + 1 + 0 + 9) / 4 = 3.5.
    /// Channel 1: mean 0, variance 8.
    fn example() -> (Vec<f32>, Dims) {
        (vec![1.0, 2.0, 0.0, 0.0, 3.0, 6.0, 4.0, -4.0], Dims { batch: 2, channels: 2, spatial: 2 })
    }

    #[test]
    fn forward_matches_a_hand_computed_case() {
        let (x, dims) = example();
        let result = forward(&x, &[2.0, 1.0], &[0.5, -1.0], dims, EPS);
        assert_eq!(result.mean, vec![3.0, 0.0]);
        assert_eq!(result.variance, vec![3.5, 8.0]);
        let (s0, s1) = ((3.5f64 + EPS).sqrt(), (8.0f64 + EPS).sqrt());
        let expected = [
            2.0 * (1.0 - 3.0) / s0 + 0.5,
            2.0 * (2.0 - 3.0) / s0 + 0.5,
            -1.0,
            -1.0,
            0.5,
            2.0 * 3.0 / s0 + 0.5,
            4.0 / s1 - 1.0,
            -4.0 / s1 - 1.0,
        ];
        for (got, want) in result.output.iter().zip(expected) {
            assert!((*got as f64 - want).abs() < 1e-6, "{got} vs {want}");
        }
    }

    /// The gradients of L = Σ w·y against central finite differences (in f64 of the f32 kernel).
    #[test]
    fn backward_matches_finite_differences() {
        let dims = Dims { batch: 3, channels: 2, spatial: 5 };
        let n = dims.batch * dims.channels * dims.spatial;
        let x: Vec<f32> = (0..n).map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.3 + (i % 3) as f32).collect();
        let w: Vec<f32> = (0..n).map(|i| ((i * 13 % 7) as f32 - 3.0) * 0.25).collect();
        let (gamma, beta) = (vec![1.5f32, -0.7], vec![0.2f32, 0.1]);
        let loss = |x: &[f32], gamma: &[f32], beta: &[f32]| -> f64 {
            let y = forward(x, gamma, beta, dims, EPS).output;
            y.iter().zip(&w).map(|(&y, &w)| y as f64 * w as f64).sum()
        };
        let f = forward(&x, &gamma, &beta, dims, EPS);
        let grads = backward(&x, &w, &gamma, &f.mean, &f.variance, dims, EPS);
        let h = 1e-2f32;
        let central = |plus: f64, minus: f64| (plus - minus) / (2.0 * h as f64);
        for i in 0..n {
            let (mut up, mut down) = (x.clone(), x.clone());
            up[i] += h;
            down[i] -= h;
            let numeric = central(loss(&up, &gamma, &beta), loss(&down, &gamma, &beta));
            assert!((grads.x_grad[i] as f64 - numeric).abs() < 2e-3, "dx[{i}]: {} vs {numeric}", grads.x_grad[i]);
        }
        for c in 0..dims.channels {
            let (mut up, mut down) = (gamma.clone(), gamma.clone());
            up[c] += h;
            down[c] -= h;
            let numeric = central(loss(&x, &up, &beta), loss(&x, &down, &beta));
            assert!((grads.gamma_grad[c] as f64 - numeric).abs() < 2e-3, "dgamma[{c}]");
            let (mut up, mut down) = (beta.clone(), beta.clone());
            up[c] += h;
            down[c] -= h;
            let numeric = central(loss(&x, &gamma, &up), loss(&x, &gamma, &down));
            assert!((grads.beta_grad[c] as f64 - numeric).abs() < 2e-3, "dbeta[{c}]");
        }
    }
}
