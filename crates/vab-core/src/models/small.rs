//! A small, fast network for CPU runs ("small"): four conv-BN-ReLU stages of widths
//! w, 2w, 4w, 8w (w = 32 by default) with 2×2 max-pools after stages 1-3, global average pool and
//! a linear head. For 3×32×32 inputs and w = 32: 0.39 M parameters, 15 M multiply-adds per
//! image (ResNet-18: 11.2 M and 556 M). Final features: 8w × 4 × 4, the same grid as ResNet-18's.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

use super::batch_norm::batch_norm;
use super::conv::conv2d;
use super::max_pool::max_pool2d;

/// One conv(3×3)-BN-ReLU stage.
#[derive(Module, Debug)]
pub struct Stage {
    conv: Conv2d,
    bn: BatchNorm,
}

impl Stage {
    fn new(cin: usize, cout: usize, device: &Device) -> Self {
        Self {
            conv: Conv2dConfig::new([cin, cout], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .with_bias(false)
                .init(device),
            bn: BatchNormConfig::new(cout).init(device),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        relu(batch_norm(&self.bn, conv2d(&self.conv, x)))
    }
}

/// The small CPU network.
#[derive(Module, Debug)]
pub struct SmallNet {
    stages: Vec<Stage>,
    pool: MaxPool2d,
    fc: Linear,
}

impl SmallNet {
    /// Base width `width` (stages use width × 1, 2, 4, 8).
    pub fn new(in_channels: usize, num_classes: usize, width: usize, device: &Device) -> Self {
        let widths = [width, 2 * width, 4 * width, 8 * width];
        let mut cin = in_channels;
        let stages = widths
            .iter()
            .map(|&w| {
                let stage = Stage::new(cin, w, device);
                cin = w;
                stage
            })
            .collect();
        Self {
            stages,
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            fc: LinearConfig::new(8 * width, num_classes).init(device),
        }
    }

    /// Final feature maps, [batch, 8w, H/8, W/8], with `tap` shown each stage's output (before
    /// its max-pool), first to last.
    pub fn features_tapped(&self, x: Tensor<4>, tap: &mut dyn FnMut(&Tensor<4>)) -> Tensor<4> {
        let mut x = x;
        for (i, stage) in self.stages.iter().enumerate() {
            x = stage.forward(x);
            tap(&x);
            if i + 1 < self.stages.len() {
                x = max_pool2d(&self.pool, x);
            }
        }
        x
    }

    /// The final linear layer (pooled features → logits).
    pub fn fc(&self) -> &Linear {
        &self.fc
    }

    /// The network with its final linear layer replaced by `f(fc)`.
    pub fn map_fc(mut self, f: impl FnOnce(Linear) -> Linear) -> Self {
        self.fc = f(self.fc);
        self
    }

    /// Logits from feature maps.
    pub fn head(&self, features: Tensor<4>) -> Tensor<2> {
        self.fc.forward(super::global_average_pool(features))
    }
}
