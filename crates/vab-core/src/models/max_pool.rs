//! Max pooling for vab's networks: burn's [`MaxPool2d`] module computed by our own kernel on the
//! Flex backend when it can be (f32, no padding, dilation 1, floor mode; the small network's
//! 2×2 pools), burn's `max_pool2d` otherwise. burn 0.22's Flex max pool divides to locate every
//! window element and records an index tensor for the backward; here the backward finds each
//! window's maximum again (a few comparisons per output), so nothing but the input is kept.
//! 2×2 windows 2 apart run as vector loops over rows ([`Forward2x2`], [`Backward2x2`]).

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
use crate::cpu::{vectorized, Vectorized};

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

    /// 2×2 windows 2 apart, which [`Forward2x2`] and [`Backward2x2`] compute.
    fn is_2x2(&self) -> bool {
        self.kernel == [2, 2] && self.stride == [2, 2]
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
        if w.is_2x2() {
            vectorized(Forward2x2 { plane, w, out });
        } else {
            w.for_each_window(plane, |position, argmax| out[position] = plane[argmax]);
        }
    });
    out
}

/// The input gradient: each output's gradient `dy` added at its window's maximum.
fn backward(x: &[f32], dy: &[f32], w: Windows) -> Vec<f32> {
    let mut x_grad = vec![0f32; x.len()];
    x_grad.par_chunks_mut(w.in_plane()).zip(x.par_chunks(w.in_plane())).zip(dy.par_chunks(w.out_plane())).for_each(|((x_grad, plane), dy)| {
        if w.is_2x2() {
            vectorized(Backward2x2 { plane, w, dy, x_grad });
        } else {
            w.for_each_window(plane, |position, argmax| x_grad[argmax] += dy[position]);
        }
    });
    x_grad
}

/// Which of a 2×2 window's values `[top left, top right, bottom left, bottom right]` is its
/// maximum, by [`Windows::argmax`]'s rule (the first among equals, the first NaN if any),
/// in selects the compiler vectorises.
#[inline(always)]
fn argmax_2x2(v: [f32; 4]) -> usize {
    let (mut best, mut best_value) = (0, v[0]);
    for (k, &value) in v.iter().enumerate().skip(1) {
        let better = value > best_value;
        best = if better { k } else { best };
        best_value = if better { value } else { best_value };
    }
    for (k, value) in v.iter().enumerate().rev() {
        best = if value.is_nan() { k } else { best };
    }
    best
}

/// The windows of one output row: the top and bottom input rows' pairs `[v0, v1]`, `[v2, v3]`.
#[inline(always)]
fn rows_2x2<'a>(plane: &'a [f32], w: &Windows, oy: usize) -> impl Iterator<Item = [f32; 4]> + 'a {
    let (width, out_w) = (w.in_size[1], w.out_size[1]);
    let top = &plane[2 * oy * width..][..2 * out_w];
    let bottom = &plane[(2 * oy + 1) * width..][..2 * out_w];
    top.chunks_exact(2).zip(bottom.chunks_exact(2)).map(|(t, b)| [t[0], t[1], b[0], b[1]])
}

/// [`forward`] of one plane for 2×2 windows 2 apart (the small network's pools), row by row.
struct Forward2x2<'a> {
    plane: &'a [f32],
    w: Windows,
    out: &'a mut [f32],
}

impl Vectorized for Forward2x2<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        for (oy, out) in self.out.chunks_exact_mut(self.w.out_size[1]).enumerate() {
            for (out, v) in out.iter_mut().zip(rows_2x2(self.plane, &self.w, oy)) {
                *out = v[argmax_2x2(v)];
            }
        }
    }
}

/// [`backward`] of one plane for 2×2 windows 2 apart: the windows do not overlap, so each
/// output's gradient is written at its maximum and zeros around it.
struct Backward2x2<'a> {
    plane: &'a [f32],
    w: Windows,
    dy: &'a [f32],
    x_grad: &'a mut [f32],
}

impl Vectorized for Backward2x2<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let (width, out_w) = (self.w.in_size[1], self.w.out_size[1]);
        for (oy, dy) in self.dy.chunks_exact(out_w).enumerate() {
            let (top, bottom) = self.x_grad[2 * oy * width..][..2 * width].split_at_mut(width);
            let grads = top[..2 * out_w].chunks_exact_mut(2).zip(bottom[..2 * out_w].chunks_exact_mut(2));
            for (((top, bottom), &dy), v) in grads.zip(dy).zip(rows_2x2(self.plane, &self.w, oy)) {
                let best = argmax_2x2(v);
                let at = |k: usize| if best == k { dy } else { 0.0 };
                (top[0], top[1], bottom[0], bottom[1]) = (at(0), at(1), at(2), at(3));
            }
        }
    }
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

    /// The 2×2 path picks the same maximum as the generic windows, also among equal values
    /// (the first wins) and NaNs (the first NaN wins), on even and odd plane sizes.
    #[test]
    fn two_by_two_path_matches_the_generic_windows() {
        for [h, w] in [[6, 8], [7, 5], [2, 2], [3, 9]] {
            let windows = Windows { batch: 2, channels: 3, in_size: [h, w], kernel: [2, 2], stride: [2, 2], out_size: [h / 2, w / 2] };
            // Three distinct values in a scrambled order, so that every window holds a tie; every
            // seventh value NaN.
            let x: Vec<f32> = (0..2 * 3 * h * w).map(|i| if i % 7 == 3 { f32::NAN } else { ((i * 7919 + 13) % 3) as f32 - 1.0 }).collect();
            let dy: Vec<f32> = (0..2 * 3 * windows.out_plane()).map(|i| i as f32 + 1.0).collect();
            let (mut out, mut x_grad) = (vec![0f32; dy.len()], vec![0f32; x.len()]);
            for (plane, ((out, x_grad), dy)) in x.chunks(h * w).zip(out.chunks_mut(windows.out_plane()).zip(x_grad.chunks_mut(h * w)).zip(dy.chunks(windows.out_plane()))) {
                windows.for_each_window(plane, |position, argmax| {
                    out[position] = plane[argmax];
                    x_grad[argmax] += dy[position];
                });
            }
            let bits = |v: Vec<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(forward(&x, windows)), bits(out), "{h}x{w}: output");
            assert_eq!(backward(&x, &dy, windows), x_grad, "{h}x{w}: x grad");
        }
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
