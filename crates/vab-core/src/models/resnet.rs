//! ResNet-18 in three variants (method.md §2): the CIFAR variant (3×3 stride-1 stem, no
//! max-pool), the ImageNet variant (7×7 stride-2 stem + 3×3 max-pool, for 224 px inputs) and
//! PreAct-ResNet-18 (He et al. 2016, as in BackdoorBench). BasicBlocks [2, 2, 2, 2] at widths
//! 64/128/256/512 with strides 1/2/2/2, global average pool, linear head.
//!
//! Field names follow PyTorch's (torchvision and the kuangliu CIFAR code), so the exported
//! parameters read `layer1.0.conv1.weight`, `layer2.0.shortcut.conv.weight`, `fc.weight`, ….

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

use super::batch_norm::batch_norm;
use super::conv::conv2d;

/// Which ResNet-18.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// 3×3 stride-1 stem, no max-pool (32 px inputs).
    Cifar,
    /// 7×7 stride-2 stem and 3×3 stride-2 max-pool (224 px inputs).
    ImageNet,
    /// Pre-activation blocks with the CIFAR stem.
    PreAct,
}

const WIDTHS: [usize; 4] = [64, 128, 256, 512];
const STRIDES: [usize; 4] = [1, 2, 2, 2];

fn conv(cin: usize, cout: usize, kernel: usize, stride: usize, device: &Device) -> Conv2d {
    let pad = kernel / 2;
    Conv2dConfig::new([cin, cout], [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_bias(false)
        .init(device)
}

fn bn(channels: usize, device: &Device) -> BatchNorm {
    BatchNormConfig::new(channels).init(device)
}

/// The 1×1 projection on the skip path when shape changes.
#[derive(Module, Debug)]
pub struct Shortcut {
    conv: Conv2d,
    bn: Option<BatchNorm>,
}

impl Shortcut {
    fn new(cin: usize, cout: usize, stride: usize, with_bn: bool, device: &Device) -> Self {
        Self { conv: conv(cin, cout, 1, stride, device), bn: with_bn.then(|| bn(cout, device)) }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = conv2d(&self.conv, x);
        match &self.bn {
            Some(bn) => batch_norm(bn, x),
            None => x,
        }
    }
}

/// A basic residual block: post-activation (conv-bn-relu-conv-bn + skip, relu) or
/// pre-activation (bn-relu-conv-bn-relu-conv + skip).
#[derive(Module, Debug)]
pub struct Block {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    shortcut: Option<Shortcut>,
    preact: bool,
}

impl Block {
    fn new(cin: usize, cout: usize, stride: usize, preact: bool, device: &Device) -> Self {
        let needs_projection = stride != 1 || cin != cout;
        Self {
            conv1: conv(cin, cout, 3, stride, device),
            bn1: bn(if preact { cin } else { cout }, device),
            conv2: conv(cout, cout, 3, 1, device),
            bn2: bn(cout, device),
            // PreAct (kuangliu) projects with a bare convolution; the post-activation block adds BN.
            shortcut: needs_projection.then(|| Shortcut::new(cin, cout, stride, !preact, device)),
            preact,
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        if self.preact {
            let out = relu(batch_norm(&self.bn1, x.clone()));
            let skip = match &self.shortcut {
                Some(s) => s.forward(out.clone()),
                None => x,
            };
            let out = conv2d(&self.conv1, out);
            conv2d(&self.conv2, relu(batch_norm(&self.bn2, out))) + skip
        } else {
            let skip = match &self.shortcut {
                Some(s) => s.forward(x.clone()),
                None => x.clone(),
            };
            let out = relu(batch_norm(&self.bn1, conv2d(&self.conv1, x)));
            relu(batch_norm(&self.bn2, conv2d(&self.conv2, out)) + skip)
        }
    }
}

/// ResNet-18 (any [`Variant`]).
#[derive(Module, Debug)]
pub struct ResNet18 {
    conv1: Conv2d,
    /// Absent in PreAct (its blocks normalise their own input).
    bn1: Option<BatchNorm>,
    maxpool: Option<MaxPool2d>,
    layer1: Vec<Block>,
    layer2: Vec<Block>,
    layer3: Vec<Block>,
    layer4: Vec<Block>,
    fc: Linear,
}

impl ResNet18 {
    /// A freshly initialised network for `in_channels`-channel inputs and `num_classes` classes.
    pub fn new(variant: Variant, in_channels: usize, num_classes: usize, device: &Device) -> Self {
        let preact = variant == Variant::PreAct;
        let (conv1, maxpool) = match variant {
            Variant::ImageNet => (
                conv(in_channels, 64, 7, 2, device),
                Some(MaxPool2dConfig::new([3, 3]).with_strides([2, 2]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).init()),
            ),
            Variant::Cifar | Variant::PreAct => (conv(in_channels, 64, 3, 1, device), None),
        };
        let mut cin = 64;
        let mut layers = WIDTHS.iter().zip(STRIDES).map(|(&width, stride)| {
            let blocks = vec![Block::new(cin, width, stride, preact, device), Block::new(width, width, 1, preact, device)];
            cin = width;
            blocks
        });
        let mut next = || layers.next().expect("four layers");
        Self {
            conv1,
            bn1: (!preact).then(|| bn(64, device)),
            maxpool,
            layer1: next(),
            layer2: next(),
            layer3: next(),
            layer4: next(),
            fc: LinearConfig::new(512, num_classes).init(device),
        }
    }

    /// Final feature maps, [batch, 512, h, w] (4×4 for 32 px inputs): the output of the last
    /// residual stage (after its ReLU in the post-activation variants), with `tap` shown the
    /// output of each of the four stages, first to last.
    pub fn features_tapped(&self, x: Tensor<4>, tap: &mut dyn FnMut(&Tensor<4>)) -> Tensor<4> {
        let mut x = conv2d(&self.conv1, x);
        if let Some(bn) = &self.bn1 {
            x = relu(batch_norm(bn, x));
        }
        if let Some(pool) = &self.maxpool {
            x = pool.forward(x);
        }
        for layer in [&self.layer1, &self.layer2, &self.layer3, &self.layer4] {
            for block in layer {
                x = block.forward(x);
            }
            tap(&x);
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

    /// Logits from feature maps: global average pool, then the linear head.
    pub fn head(&self, features: Tensor<4>) -> Tensor<2> {
        self.fc.forward(super::global_average_pool(features))
    }
}
