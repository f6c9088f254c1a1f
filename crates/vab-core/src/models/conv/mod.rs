//! 2-D convolution for vab's networks: burn's [`Conv2d`] module (parameters and record names
//! unchanged) computed by vab's own kernels on the Flex backend when it can be: f32, one group,
//! no bias, explicit or no padding, on an autodiff device (training) or not (inference).
//! Anything else takes burn's `conv2d`. burn 0.22's Flex convolution converts to channels-last
//! for its im2col, scatters the product back, and differentiates the weight through a second
//! convolution; [`kernel`] (im2col) lays the matrices out so that none of that copying is
//! needed, and [`winograd`] computes the stride-1 3×3 layers where it is faster.

mod kernel;
mod matmul;
mod winograd;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::{ConvOptions, ModuleOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Autodiff, Backend, Dispatch, Flex, TensorMetadata};
use burn::nn::conv::Conv2d;
use burn::nn::PaddingConfig2d;
use burn::tensor::{DType, Tensor};

use super::flex_buffer::{f32s, flex};
use super::op_profile::timed;

use kernel::Geometry;

/// `conv.forward(x)`, through [`kernel`] where it applies.
pub fn conv2d(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let padding = match conv.padding {
        PaddingConfig2d::Explicit(top, left, bottom, right) => [(top, bottom), (left, right)],
        PaddingConfig2d::Valid => [(0, 0), (0, 0)],
        PaddingConfig2d::Same => return conv.forward(x),
    };
    if conv.bias.is_some() || conv.groups != 1 || x.dtype() != DType::F32 {
        return conv.forward(x);
    }
    let options = ConvOptions::new_with_padding(conv.stride, padding, conv.dilation, 1);
    Tensor::from_dispatch(<Dispatch as ConvOps>::conv2d_no_bias(x.into_dispatch(), conv.weight.val().into_dispatch(), options))
}

/// A convolution without bias as one backend operation. The default bodies are burn's own;
/// Flex overrides them with [`kernel`], autodiff records one node.
#[backend_extension(Flex, Autodiff, LibTorch: cfg(feature = "tch"), Cube: cfg(any(feature = "wgpu", feature = "cuda")))]
pub trait ConvOps: Backend {
    /// The convolution of `x` `[batch, c_in, h, w]` with `weight` `[c_out, c_in, k_h, k_w]`.
    fn conv2d_no_bias(x: FloatTensor<Self>, weight: FloatTensor<Self>, options: ConvOptions<2>) -> FloatTensor<Self> {
        <Self as ModuleOps<Self>>::conv2d(x, weight, None, options)
    }

    /// Gradients of [`ConvOps::conv2d_no_bias`] for `x` (only when `x_grad` is asked for: the
    /// images entering a network's first layer need none) and `weight`.
    fn conv2d_no_bias_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
        x_grad: bool,
    ) -> (Option<FloatTensor<Self>>, FloatTensor<Self>) {
        let x_grad = x_grad.then(|| <Self as ModuleOps<Self>>::conv2d_x_backward(x.clone(), weight.clone(), output_grad.clone(), options.clone()));
        let weight_grad = <Self as ModuleOps<Self>>::conv2d_weight_backward(x, weight, output_grad, options);
        (x_grad, weight_grad)
    }
}

#[cfg(feature = "tch")]
#[allow(deprecated)] // burn-tch is deprecated upstream; it stays an opt-in here
impl ConvOps for burn::backend::LibTorch {}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
impl ConvOps for burn::backend::Cube {}

impl ConvOps for Flex {
    fn conv2d_no_bias(x: FlexTensor, weight: FlexTensor, options: ConvOptions<2>) -> FlexTensor {
        let Some(g) = geometry(&x, &weight, &options) else {
            return <Flex as ModuleOps<Flex>>::conv2d(x, weight, None, options);
        };
        let (x, weight) = (x.to_contiguous(), weight.to_contiguous());
        let forward = if winograd::pays_forward(&g) { winograd::forward } else { kernel::forward };
        let out = timed(|| g.describe("forward"), || forward(f32s(&x), f32s(&weight), g));
        flex(out, [g.batch, g.out_channels, g.out_size[0], g.out_size[1]])
    }

    fn conv2d_no_bias_backward(
        x: FlexTensor,
        weight: FlexTensor,
        output_grad: FlexTensor,
        options: ConvOptions<2>,
        x_grad: bool,
    ) -> (Option<FlexTensor>, FlexTensor) {
        let Some(g) = geometry(&x, &weight, &options) else {
            let x_grad = x_grad.then(|| <Flex as ModuleOps<Flex>>::conv2d_x_backward(x.clone(), weight.clone(), output_grad.clone(), options.clone()));
            return (x_grad, <Flex as ModuleOps<Flex>>::conv2d_weight_backward(x, weight, output_grad, options));
        };
        let (x_shape, weight_shape) = (x.shape(), weight.shape());
        let [x, weight, dy] = [x, weight, output_grad].map(|t| t.to_contiguous());
        let backward = if winograd::pays_backward(&g) { winograd::backward } else { kernel::backward };
        let (x_grad, weight_grad) = timed(|| g.describe("backward"), || backward(f32s(&x), f32s(&weight), f32s(&dy), g, x_grad));
        (x_grad.map(|x_grad| flex(x_grad, x_shape)), flex(weight_grad, weight_shape))
    }
}

/// The kernel's geometry, or `None` where burn's own convolution must run (not f32, groups,
/// or padding larger on the far side than the output size implies).
fn geometry(x: &FlexTensor, weight: &FlexTensor, options: &ConvOptions<2>) -> Option<Geometry> {
    if x.dtype() != DType::F32 || weight.dtype() != DType::F32 || options.groups != 1 {
        return None;
    }
    let (xs, ws) = (x.shape(), weight.shape());
    let [(top, bottom), (left, right)] = options.padding;
    let out = |size: usize, before: usize, after: usize, kernel: usize, i: usize| {
        let span = options.dilation[i] * (kernel - 1) + 1;
        (size + before + after).checked_sub(span).map(|free| free / options.stride[i] + 1)
    };
    Some(Geometry {
        batch: xs[0],
        in_channels: xs[1],
        in_size: [xs[2], xs[3]],
        out_channels: ws[0],
        kernel: [ws[2], ws[3]],
        stride: options.stride,
        padding: [top, left],
        dilation: options.dilation,
        out_size: [out(xs[2], top, bottom, ws[2], 0)?, out(xs[3], left, right, ws[3], 1)?],
    })
}

impl<B: Backend + ConvOps, C: CheckpointStrategy> ConvOps for Autodiff<B, C> {
    fn conv2d_no_bias(x: FloatTensor<Self>, weight: FloatTensor<Self>, options: ConvOptions<2>) -> FloatTensor<Self> {
        /// The backward node: the input and the weight, kept from the forward.
        #[derive(Debug)]
        struct ConvBackward;

        impl<B: Backend + ConvOps> Backward<B, 2> for ConvBackward {
            type State = (FloatTensor<B>, FloatTensor<B>, ConvOptions<2>);

            fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
                let [x_node, weight_node] = ops.parents;
                let output_grad = grads.consume::<B>(&ops.node);
                let (x, weight, options) = ops.state;
                let (x_grad, weight_grad) = <B as ConvOps>::conv2d_no_bias_backward(x, weight, output_grad, options, x_node.is_some());
                if let (Some(node), Some(grad)) = (x_node, x_grad) {
                    grads.register::<B>(node.id, grad);
                }
                if let Some(node) = weight_node {
                    grads.register::<B>(node.id, weight_grad);
                }
            }
        }

        let nodes = [x.node(), weight.node()];
        let (x, weight) = (x.into_primitive(), weight.into_primitive());
        let output = <B as ConvOps>::conv2d_no_bias(x.clone(), weight.clone(), options.clone());
        match ConvBackward.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((x, weight, options), output),
            OpsKind::UnTracked(prep) => prep.finish(output),
        }
    }

    fn conv2d_no_bias_backward(
        _x: FloatTensor<Self>,
        _weight: FloatTensor<Self>,
        _output_grad: FloatTensor<Self>,
        _options: ConvOptions<2>,
        _x_grad: bool,
    ) -> (Option<FloatTensor<Self>>, FloatTensor<Self>) {
        unreachable!("the convolution backward is not differentiated twice")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::flex_buffer::testing::{assert_close, values};
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::{Device, Distribution};

    /// Output and gradients (input, weight) agree with burn's convolution, for the geometries
    /// vab's networks use and a few they do not (dilation, asymmetric padding, odd sizes).
    #[test]
    fn matches_burns_convolution() {
        let device = Device::flex().autodiff();
        // (c_in, c_out, kernel, stride, dilation, padding (top, left, bottom, right), input size)
        let cases = [
            (3, 8, [3, 3], [1, 1], [1, 1], (1, 1, 1, 1), [9, 7]),
            (4, 6, [3, 3], [2, 2], [1, 1], (1, 1, 1, 1), [8, 8]),
            (5, 4, [1, 1], [2, 2], [1, 1], (0, 0, 0, 0), [7, 6]),
            (3, 4, [7, 7], [2, 2], [1, 1], (3, 3, 3, 3), [11, 12]),
            (2, 3, [3, 2], [1, 2], [2, 1], (2, 0, 1, 1), [6, 9]),
            // Winograd's forward and backward (at least 64 input channels, 16×16 outputs)
            (64, 5, [3, 3], [1, 1], [1, 1], (1, 1, 1, 1), [16, 17]),
            // Winograd's backward, im2col's forward
            (16, 4, [3, 3], [1, 1], [1, 1], (1, 1, 1, 1), [5, 6]),
        ];
        for (c_in, c_out, kernel, stride, dilation, (top, left, bottom, right), [h, w]) in cases {
            let conv = Conv2dConfig::new([c_in, c_out], kernel)
                .with_stride(stride)
                .with_dilation(dilation)
                .with_padding(PaddingConfig2d::Explicit(top, left, bottom, right))
                .with_bias(false)
                .init(&device);
            let x = Tensor::<4>::random([3, c_in, h, w], Distribution::Normal(0.0, 1.0), &device);
            // `tracked`: whether x asks for its gradient (not so for a network's input images).
            let run = |forward: &dyn Fn(Tensor<4>) -> Tensor<4>, tracked: bool| {
                let x = if tracked { x.clone().detach().require_grad() } else { x.clone().detach() };
                let y = forward(x.clone());
                let grads = (y.clone() * y.clone().detach().sin()).sum().backward();
                (values(y), x.grad(&grads).map(values), conv.weight.grad(&grads).map(values))
            };
            let case = format!("c_in {c_in} c_out {c_out} kernel {kernel:?} stride {stride:?} dilation {dilation:?}");
            let want = run(&|x| conv.forward(x), true);
            let got = run(&|x| conv2d(&conv, x), true);
            assert_close(&format!("{case}: output"), got.0, want.0, 1e-5);
            assert_close(&format!("{case}: x grad"), got.1.expect("x grad"), want.1.expect("x grad"), 1e-5);
            let want_weight_grad = want.2.expect("weight grad");
            assert_close(&format!("{case}: weight grad"), got.2.expect("weight grad"), want_weight_grad.clone(), 1e-5);
            let untracked = run(&|x| conv2d(&conv, x), false);
            assert!(untracked.1.is_none(), "{case}: an input gradient for an untracked input");
            assert_close(&format!("{case}: weight grad, untracked input"), untracked.2.expect("weight grad"), want_weight_grad, 1e-5);
        }
    }
}
