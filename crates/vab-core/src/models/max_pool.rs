//! Max pooling for vab's networks: burn's [`MaxPool2d`] module computed by our own kernel on the
//! Flex backend when it can be (f32, no padding, dilation 1, floor mode; the small network's
//! 2×2 pools), burn's `max_pool2d` otherwise. burn 0.22's Flex max pool divides to locate every
//! window element and records an index tensor for the backward; here the backward finds each
//! window's maximum again (a few comparisons per output), so nothing but the input is kept.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::ModuleOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Autodiff, Backend, Dispatch, Flex, TensorMetadata};
use burn::nn::pool::MaxPool2d;
use burn::nn::PaddingConfig2d;
use burn::tensor::{DType, IntDType, Tensor};
use rayon::prelude::*;

use super::flex_buffer::{f32s, flex};
use super::op_profile::timed;

/// `pool.forward(x)`, through this module's kernel where it applies.
pub fn max_pool2d(pool: &MaxPool2d, x: Tensor<4>) -> Tensor<4> {
    let plain = matches!(pool.padding, PaddingConfig2d::Valid) && pool.dilation == [1, 1] && !pool.ceil_mode;
    if !plain || x.dtype() != DType::F32 {
        return pool.forward(x);
    }
    Tensor::from_dispatch(<Dispatch as MaxPoolOps>::max_pool2d_valid(x.into_dispatch(), pool.kernel_size, pool.stride))
}

/// Max pooling without padding or dilation, floor mode, as one backend operation. The default
/// bodies are burn's own; Flex overrides them with the kernel below, autodiff records one node.
#[backend_extension(Flex, Autodiff, LibTorch: cfg(feature = "tch"), Cube: cfg(any(feature = "wgpu", feature = "cuda")))]
pub trait MaxPoolOps: Backend {
    /// The maximum of each `kernel` window of `x` `[batch, channels, h, w]`, windows `stride` apart.
    fn max_pool2d_valid(x: FloatTensor<Self>, kernel: [usize; 2], stride: [usize; 2]) -> FloatTensor<Self> {
        <Self as ModuleOps<Self>>::max_pool2d(x, kernel, stride, [0, 0], [1, 1], false)
    }

    /// Gradient of [`MaxPoolOps::max_pool2d_valid`] for `x`: each output's gradient goes to
    /// its window's maximum.
    fn max_pool2d_valid_backward(x: FloatTensor<Self>, output_grad: FloatTensor<Self>, kernel: [usize; 2], stride: [usize; 2]) -> FloatTensor<Self> {
        burns_backward::<Self>(x, output_grad, kernel, stride)
    }
}

/// burn's own max-pool gradient: the pool again with indices, then its backward. The indices
/// are i32: WGSL has no 64-bit integers, and i64 indices gave wrong gradients on wgpu (within a
/// plane they never need more than 32 bits).
fn burns_backward<B: Backend>(x: FloatTensor<B>, output_grad: FloatTensor<B>, kernel: [usize; 2], stride: [usize; 2]) -> FloatTensor<B> {
    let pooled = <B as ModuleOps<B>>::max_pool2d_with_indices(x.clone(), kernel, stride, [0, 0], [1, 1], false, IntDType::I32);
    <B as ModuleOps<B>>::max_pool2d_with_indices_backward(x, kernel, stride, [0, 0], [1, 1], false, output_grad, pooled.indices).x_grad
}

#[cfg(feature = "tch")]
#[allow(deprecated)] // burn-tch is deprecated upstream; it stays an opt-in here
impl MaxPoolOps for burn::backend::LibTorch {}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
impl MaxPoolOps for burn::backend::Cube {}

impl MaxPoolOps for Flex {
    fn max_pool2d_valid(x: FlexTensor, kernel: [usize; 2], stride: [usize; 2]) -> FlexTensor {
        let Some(w) = Windows::of(&x, kernel, stride) else {
            return <Flex as ModuleOps<Flex>>::max_pool2d(x, kernel, stride, [0, 0], [1, 1], false);
        };
        let x = x.to_contiguous();
        let shape = [w.batch, w.channels, w.out_size[0], w.out_size[1]];
        flex(timed(|| w.describe("forward"), || forward(f32s(&x), w)), shape)
    }

    fn max_pool2d_valid_backward(x: FlexTensor, output_grad: FlexTensor, kernel: [usize; 2], stride: [usize; 2]) -> FlexTensor {
        let Some(w) = Windows::of(&x, kernel, stride) else {
            return burns_backward::<Flex>(x, output_grad, kernel, stride);
        };
        let shape = x.shape();
        let [x, dy] = [x, output_grad].map(|t| t.to_contiguous());
        flex(timed(|| w.describe("backward"), || backward(f32s(&x), f32s(&dy), w)), shape)
    }
}

impl<B: Backend + MaxPoolOps, C: CheckpointStrategy> MaxPoolOps for Autodiff<B, C> {
    fn max_pool2d_valid(x: FloatTensor<Self>, kernel: [usize; 2], stride: [usize; 2]) -> FloatTensor<Self> {
        /// The backward node: the input, kept from the forward, and the window geometry.
        #[derive(Debug)]
        struct MaxPoolBackward;

        impl<B: Backend + MaxPoolOps> Backward<B, 1> for MaxPoolBackward {
            type State = (FloatTensor<B>, [usize; 2], [usize; 2]);

            fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
                let [x_node] = ops.parents;
                let output_grad = grads.consume::<B>(&ops.node);
                let (x, kernel, stride) = ops.state;
                if let Some(node) = x_node {
                    grads.register::<B>(node.id, <B as MaxPoolOps>::max_pool2d_valid_backward(x, output_grad, kernel, stride));
                }
            }
        }

        let nodes = [x.node()];
        let x = x.into_primitive();
        let output = <B as MaxPoolOps>::max_pool2d_valid(x.clone(), kernel, stride);
        match MaxPoolBackward.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((x, kernel, stride), output),
            OpsKind::UnTracked(prep) => prep.finish(output),
        }
    }

    fn max_pool2d_valid_backward(_x: FloatTensor<Self>, _output_grad: FloatTensor<Self>, _kernel: [usize; 2], _stride: [usize; 2]) -> FloatTensor<Self> {
        unreachable!("the max-pool backward is not differentiated twice")
    }
}

/// The pooling windows over f32 NCHW planes.
#[derive(Clone, Copy, Debug)]
struct Windows {
    batch: usize,
    channels: usize,
    in_size: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
    out_size: [usize; 2],
}

impl Windows {
    /// "max-pool 2x2 s2, 32 channels at 32x32 (batch 128), forward", for [`super::op_profile`].
    fn describe(&self, pass: &str) -> String {
        let [k_h, k_w] = self.kernel;
        let [h, w] = self.in_size;
        format!("max-pool {k_h}x{k_w} s{}, {} channels at {h}x{w} (batch {}), {pass}", self.stride[0], self.channels, self.batch)
    }

    /// The windows of `x`, or `None` where burn's pool must run (not f32, zero-sized kernel,
    /// stride or input, or an input smaller than the kernel).
    fn of(x: &FlexTensor, kernel: [usize; 2], stride: [usize; 2]) -> Option<Self> {
        let dims = x.shape();
        if x.dtype() != DType::F32 || kernel.contains(&0) || stride.contains(&0) || dims[0] * dims[1] == 0 {
            return None;
        }
        let out = |axis: usize| dims[2 + axis].checked_sub(kernel[axis]).map(|free| free / stride[axis] + 1);
        Some(Self { batch: dims[0], channels: dims[1], in_size: [dims[2], dims[3]], kernel, stride, out_size: [out(0)?, out(1)?] })
    }

    fn planes(&self) -> usize {
        self.batch * self.channels
    }

    fn in_plane(&self) -> usize {
        self.in_size[0] * self.in_size[1]
    }

    fn out_plane(&self) -> usize {
        self.out_size[0] * self.out_size[1]
    }

    /// Index in its plane of the maximum of output (oy, ox)'s window: the first in row-major
    /// order among equals, and the first NaN if there is one (NaN propagates, as in burn). The
    /// comparison selects rather than branches: on real activations it is a coin toss.
    fn argmax(&self, plane: &[f32], oy: usize, ox: usize) -> usize {
        let (top, left) = (oy * self.stride[0], ox * self.stride[1]);
        let mut best = top * self.in_size[1] + left;
        let mut best_value = plane[best];
        for y in top..top + self.kernel[0] {
            let row = y * self.in_size[1];
            for (x, &value) in plane[row + left..row + left + self.kernel[1]].iter().enumerate() {
                if value.is_nan() {
                    return row + left + x;
                }
                let better = value > best_value;
                best = if better { row + left + x } else { best };
                best_value = if better { value } else { best_value };
            }
        }
        best
    }

    /// Calls `f(output position, argmax)` for every output of one plane, row by row.
    fn for_each_window(&self, plane: &[f32], mut f: impl FnMut(usize, usize)) {
        for oy in 0..self.out_size[0] {
            for ox in 0..self.out_size[1] {
                f(oy * self.out_size[1] + ox, self.argmax(plane, oy, ox));
            }
        }
    }
}

/// The pooled output of `x`, plane by plane in parallel.
fn forward(x: &[f32], w: Windows) -> Vec<f32> {
    let mut out = vec![0f32; w.planes() * w.out_plane()];
    out.par_chunks_mut(w.out_plane()).zip(x.par_chunks(w.in_plane())).for_each(|(out, plane)| {
        w.for_each_window(plane, |position, argmax| out[position] = plane[argmax]);
    });
    out
}

/// The input gradient: each output's gradient `dy` added at its window's maximum.
fn backward(x: &[f32], dy: &[f32], w: Windows) -> Vec<f32> {
    let mut x_grad = vec![0f32; x.len()];
    x_grad.par_chunks_mut(w.in_plane()).zip(x.par_chunks(w.in_plane())).zip(dy.par_chunks(w.out_plane())).for_each(|((x_grad, plane), dy)| {
        w.for_each_window(plane, |position, argmax| x_grad[argmax] += dy[position]);
    });
    x_grad
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::flex_buffer::testing::{assert_close, values};
    use burn::nn::pool::MaxPool2dConfig;
    use burn::tensor::{Device, Distribution, TensorData};

    /// A 4×4 plane holding 0..16 row by row: the 2×2 maxima are the windows' bottom-right
    /// values 5, 7, 13, 15, and their gradients land there.
    #[test]
    fn matches_a_hand_computed_case() {
        let device = Device::flex().autodiff();
        let x = Tensor::<4>::from_data(TensorData::new((0..16).map(|v| v as f32).collect::<Vec<_>>(), [1, 1, 4, 4]), &device).require_grad();
        let pool = MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init();
        let y = max_pool2d(&pool, x.clone());
        let dy = Tensor::<4>::from_data(TensorData::new(vec![1f32, 2.0, 3.0, 4.0], [1, 1, 2, 2]), &device);
        let grads = (y.clone() * dy).sum().backward();
        assert_eq!(values(y), vec![5.0, 7.0, 13.0, 15.0]);
        let mut want = vec![0f32; 16];
        (want[5], want[7], want[13], want[15]) = (1.0, 2.0, 3.0, 4.0);
        assert_eq!(x.grad(&grads).map(values), Some(want));
    }

    /// A NaN in a window makes that window's output NaN, as burn's pool does; the others are
    /// unaffected.
    #[test]
    fn nan_propagates_like_burns() {
        let device = Device::flex();
        let mut data: Vec<f32> = (0..16).map(|v| v as f32).collect();
        data[4] = f32::NAN;
        let x = Tensor::<4>::from_data(TensorData::new(data, [1, 1, 4, 4]), &device);
        let pool = MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init();
        let (got, want) = (values(max_pool2d(&pool, x.clone())), values(pool.forward(x)));
        assert!(got[0].is_nan() && want[0].is_nan(), "window 0: ours {}, burn's {}", got[0], want[0]);
        assert_eq!(got[1..], want[1..]);
    }

    /// Output and input gradient agree with burn's max pool for the small network's 2×2 pools
    /// (even and odd sizes), overlapping windows (whose gradients add up) and a wide stride.
    #[test]
    fn matches_burns_max_pool() {
        let device = Device::flex().autodiff();
        // (kernel, stride, input size)
        let cases = [([2, 2], [2, 2], [8, 8]), ([2, 2], [2, 2], [7, 5]), ([3, 3], [1, 1], [6, 7]), ([3, 2], [2, 3], [9, 8])];
        for (kernel, stride, [h, w]) in cases {
            let pool = MaxPool2dConfig::new(kernel).with_strides(stride).init();
            let x = Tensor::<4>::random([3, 4, h, w], Distribution::Normal(0.0, 1.0), &device);
            let run = |forward: &dyn Fn(Tensor<4>) -> Tensor<4>| {
                let x = x.clone().detach().require_grad();
                let y = forward(x.clone());
                let grads = (y.clone() * y.clone().detach().sin()).sum().backward();
                (values(y), x.grad(&grads).map(values).expect("x grad"))
            };
            let want = run(&|x| pool.forward(x));
            let got = run(&|x| max_pool2d(&pool, x));
            assert_close(&format!("kernel {kernel:?} stride {stride:?}: output"), got.0, want.0, 0.0);
            assert_close(&format!("kernel {kernel:?} stride {stride:?}: x grad"), got.1, want.1, 1e-6);
        }
    }
}
