//! The input-aware attack's two networks (Nguyen & Tran 2020), both one encoder-decoder shape:
//! a normalised image in, a same-size map out, 3 channels for the trigger pattern G(x) and 1 for
//! the mask M(x).
//!
//! Encoder: three stages of two conv(3×3)-BN-ReLU blocks, widths w, 2w, 4w, each followed by a
//! 2×2 max-pool; a middle block at 4w. Decoder: three stages of a ×2 bilinear upsample and two
//! blocks, widths 4w → 2w → w → output channels; the last block has no ReLU. Then
//!
//!   pattern = tanh(G(x)) / (2 + ε) + 0.5          (pixel units, in [0, 1])
//!   mask    = tanh(20·M(x) − 10) / (2 + ε) + 0.5   (a soft 0/1 mask)
//!
//! and the triggered image is x + (pattern − x) ⊙ mask.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::tensor::activation::{relu, tanh};
use burn::tensor::{Device, Tensor};

const EPSILON: f64 = 1e-7;
const STAGES: usize = 3;

/// conv(3×3, padding 1)-BN, then ReLU unless it is the network's last block.
#[derive(Module, Debug)]
pub struct ConvBlock {
    conv: Conv2d,
    bn: BatchNorm,
    relu: bool,
}

impl ConvBlock {
    fn new(cin: usize, cout: usize, relu: bool, device: &Device) -> Self {
        Self {
            conv: Conv2dConfig::new([cin, cout], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).init(device),
            bn: BatchNormConfig::new(cout).init(device),
            relu,
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = self.bn.forward(self.conv.forward(x));
        if self.relu {
            relu(y)
        } else {
            y
        }
    }
}

/// The encoder-decoder, base width `w`.
#[derive(Module, Debug)]
pub struct Generator {
    down: Vec<ConvBlock>,
    middle: ConvBlock,
    up: Vec<ConvBlock>,
    pool: MaxPool2d,
}

impl Generator {
    /// `in_channels` → `out_channels` (3 for the pattern, 1 for the mask), base width `width`.
    pub fn new(in_channels: usize, out_channels: usize, width: usize, device: &Device) -> Self {
        let widths: Vec<usize> = (0..STAGES).map(|s| width << s).collect();
        let mut down = Vec::new();
        let mut cin = in_channels;
        for &w in &widths {
            down.push(ConvBlock::new(cin, w, true, device));
            down.push(ConvBlock::new(w, w, true, device));
            cin = w;
        }
        let middle = ConvBlock::new(cin, cin, true, device);
        let mut up = Vec::new();
        for stage in 0..STAGES {
            let last = stage + 1 == STAGES;
            let cout = if last { out_channels } else { cin / 2 };
            up.push(ConvBlock::new(cin, cin, true, device));
            up.push(ConvBlock::new(cin, cout, !last, device));
            cin = cout;
        }
        Self { down, middle, up, pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init() }
    }

    /// The raw output map, [batch, out_channels, H, W] (H and W divisible by 8).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut x = x;
        for pair in self.down.chunks(2) {
            x = self.pool.forward(pair[1].forward(pair[0].forward(x)));
        }
        x = self.middle.forward(x);
        for pair in self.up.chunks(2) {
            x = pair[1].forward(pair[0].forward(upsample2x_bilinear(x)));
        }
        x
    }

    /// The trigger pattern in pixel units [0, 1].
    pub fn pattern(&self, x: Tensor<4>) -> Tensor<4> {
        tanh(self.forward(x)).div_scalar(2.0 + EPSILON).add_scalar(0.5)
    }

    /// The soft mask in [0, 1], [batch, 1, H, W].
    pub fn mask(&self, x: Tensor<4>) -> Tensor<4> {
        tanh(self.forward(x).mul_scalar(20.0).sub_scalar(10.0)).div_scalar(2.0 + EPSILON).add_scalar(0.5)
    }
}

/// ×2 bilinear upsampling with PyTorch's `align_corners = False`, from differentiable slices:
/// along each axis, output 2i is ¾·x[i] + ¼·x[i−1] and 2i+1 is ¾·x[i] + ¼·x[i+1], the
/// neighbours clamped at the border.
pub fn upsample2x_bilinear(x: Tensor<4>) -> Tensor<4> {
    upsample_axis(upsample_axis(x, 2), 3)
}

fn upsample_axis(x: Tensor<4>, axis: usize) -> Tensor<4> {
    let n = x.dims()[axis];
    let mut dims = x.dims();
    let shifted = |from: usize, to: usize| x.clone().narrow(axis, from, to - from);
    // x[i−1] and x[i+1], repeating the edge (a single row is its own neighbour).
    let (prev, next) = if n == 1 {
        (x.clone(), x.clone())
    } else {
        (Tensor::cat(vec![shifted(0, 1), shifted(0, n - 1)], axis), Tensor::cat(vec![shifted(1, n), shifted(n - 1, n)], axis))
    };
    let even = x.clone().mul_scalar(0.75) + prev.mul_scalar(0.25);
    let odd = x.mul_scalar(0.75) + next.mul_scalar(0.25);
    // Interleave: stack on a new axis after `axis`, then merge the two.
    let stacked: Tensor<5> = Tensor::stack(vec![even, odd], axis + 1);
    dims[axis] = 2 * n;
    stacked.reshape(dims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    fn values(t: Tensor<4>) -> Vec<f32> {
        t.into_data().try_to_vec().unwrap()
    }

    #[test]
    fn bilinear_upsampling_matches_hand_computed_values() {
        // PyTorch: F.interpolate(torch.tensor([[[[0., 1.], [2., 3.]]]]), scale_factor=2,
        // mode="bilinear", align_corners=False), row by row.
        let device = Device::flex();
        let x = Tensor::<4>::from_data(TensorData::new(vec![0.0f32, 1.0, 2.0, 3.0], [1, 1, 2, 2]), &device);
        let up = upsample2x_bilinear(x);
        assert_eq!(up.dims(), [1, 1, 4, 4]);
        let expected = [
            0.0, 0.25, 0.75, 1.0, //
            0.5, 0.75, 1.25, 1.5, //
            1.5, 1.75, 2.25, 2.5, //
            2.0, 2.25, 2.75, 3.0,
        ];
        for (a, b) in values(up).iter().zip(expected) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn networks_keep_the_image_size_and_bound_their_outputs() {
        let device = Device::flex();
        let x = Tensor::<4>::random([2, 3, 16, 16], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
        let g = Generator::new(3, 3, 4, &device);
        let m = Generator::new(3, 1, 4, &device);
        let pattern = g.pattern(x.clone());
        let mask = m.mask(x);
        assert_eq!(pattern.dims(), [2, 3, 16, 16]);
        assert_eq!(mask.dims(), [2, 1, 16, 16]);
        for v in values(pattern).into_iter().chain(values(mask)) {
            assert!((0.0..=1.0).contains(&v), "{v}");
        }
    }
}
