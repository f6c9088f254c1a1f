//! Batch normalisation for vab's networks: burn's [`BatchNorm`] module (its parameters, running
//! statistics and record names are unchanged) with a faster train-mode path.
//!
//! In train mode on an autodiff device, [`batch_norm`] computes the batch statistics, the output
//! and, in the backward pass, the gradients with the fused kernels of [`kernel`] on the Flex
//! backend (a backend extension with a hand-written backward node), instead of burn 0.22's
//! composite of tensor ops. Other dtypes and the `tch` backend take burn's own path. The running statistics update exactly as burn's module updates them.
//! Eval mode folds the statistics into one scale and shift per channel.

mod kernel;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::ModuleOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Autodiff, Backend, Dispatch, Flex, TensorMetadata};
use burn::nn::BatchNorm;
use burn::tensor::{DType, Tensor};

use super::flex_buffer::{f32s, flex};
use super::op_profile::timed;

use kernel::Dims;

/// `bn.forward(x)`, with the fused kernels where burn would train through its composite path.
pub fn batch_norm<const D: usize>(bn: &BatchNorm, x: Tensor<D>) -> Tensor<D> {
    // The same condition as burn's module: train mode needs an autodiff device and training on.
    if !(x.device().is_autodiff() && bn.training.is_enabled()) {
        return inference(bn, x);
    }
    let device = x.device();
    let (output, mean, variance) = <Dispatch as BatchNormOps>::batch_norm_train(
        x.into_dispatch(),
        bn.gamma.val().into_dispatch(),
        bn.beta.val().into_dispatch(),
        bn.epsilon,
    );
    let (mean, variance) = (Tensor::<1>::from_dispatch(mean), Tensor::<1>::from_dispatch(variance));
    let momentum = bn.momentum;
    let running_mean = bn.running_mean.value_sync().to_device(&device);
    let running_var = bn.running_var.value_sync().to_device(&device);
    bn.running_mean
        .update(running_mean.mul_scalar(1.0 - momentum).add(mean.detach().mul_scalar(momentum)).detach());
    bn.running_var
        .update(running_var.mul_scalar(1.0 - momentum).add(variance.detach().mul_scalar(momentum)).detach());
    Tensor::from_dispatch(output)
}

/// Eval mode as x·scale + shift with per-channel scale = γ/√(var + ε) and shift = β − mean·scale:
/// two passes over `x` where burn's composite makes four (subtract, divide, multiply, add).
fn inference<const D: usize>(bn: &BatchNorm, x: Tensor<D>) -> Tensor<D> {
    let device = x.device();
    let mean = bn.running_mean.value().to_device(&device);
    let variance = bn.running_var.value().to_device(&device);
    let scale = bn.gamma.val() / variance.add_scalar(bn.epsilon).sqrt();
    let shift = bn.beta.val() - mean * scale.clone();
    let mut per_channel = [1; D];
    per_channel[1] = scale.dims()[0];
    x * scale.reshape(per_channel) + shift.reshape(per_channel)
}

/// Train-mode batch norm as one backend operation. The default bodies are burn's own
/// (composite) implementation; Flex overrides them with [`kernel`], autodiff records one node.
#[backend_extension(Flex, Autodiff, LibTorch: cfg(feature = "tch"), Cube: cfg(any(feature = "wgpu", feature = "cuda")))]
pub trait BatchNormOps: Backend {
    /// Output, batch mean and biased batch variance of `x` (`[batch, channels, ...]`).
    fn batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let result = <Self as ModuleOps<Self>>::batch_norm_train(x, gamma, beta, epsilon);
        (result.output, result.mean, result.variance)
    }

    /// Gradients of [`BatchNormOps::batch_norm_train`] for `x`, `gamma` and `beta`.
    fn batch_norm_train_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        variance: FloatTensor<Self>,
        epsilon: f64,
        output_grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let grads = <Self as ModuleOps<Self>>::batch_norm_train_backward(x, gamma, mean, variance, epsilon, output_grad);
        (grads.x_grad, grads.gamma_grad, grads.beta_grad)
    }
}

#[cfg(feature = "tch")]
#[allow(deprecated)] // burn-tch is deprecated upstream; it stays an opt-in here
impl BatchNormOps for burn::backend::LibTorch {}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
impl BatchNormOps for burn::backend::Cube {}

impl BatchNormOps for Flex {
    fn batch_norm_train(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        epsilon: f64,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        if x.dtype() != DType::F32 {
            let result = <Flex as ModuleOps<Flex>>::batch_norm_train(x, gamma, beta, epsilon);
            return (result.output, result.mean, result.variance);
        }
        let shape = x.shape();
        let (x, gamma, beta) = (x.to_contiguous(), gamma.to_contiguous(), beta.to_contiguous());
        let d = dims(&shape);
        let result = timed(|| d.describe("forward"), || kernel::forward(f32s(&x), f32s(&gamma), f32s(&beta), d, epsilon));
        let channels = [shape[1]];
        (flex(result.output, shape), flex(result.mean, channels), flex(result.variance, channels))
    }

    fn batch_norm_train_backward(
        x: FlexTensor,
        gamma: FlexTensor,
        mean: FlexTensor,
        variance: FlexTensor,
        epsilon: f64,
        output_grad: FlexTensor,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        if x.dtype() != DType::F32 {
            let grads =
                <Flex as ModuleOps<Flex>>::batch_norm_train_backward(x, gamma, mean, variance, epsilon, output_grad);
            return (grads.x_grad, grads.gamma_grad, grads.beta_grad);
        }
        let shape = x.shape();
        let contiguous = [x, output_grad, gamma, mean, variance].map(|t| t.to_contiguous());
        let [x, dy, gamma, mean, variance] = contiguous.each_ref().map(f32s);
        let d = dims(&shape);
        let grads = timed(|| d.describe("backward"), || kernel::backward(x, dy, gamma, mean, variance, d, epsilon));
        let channels = [shape[1]];
        (flex(grads.x_grad, shape), flex(grads.gamma_grad, channels), flex(grads.beta_grad, channels))
    }
}

fn dims(shape: &burn::tensor::Shape) -> Dims {
    let (batch, channels) = (shape[0], shape[1]);
    Dims { batch, channels, spatial: shape.num_elements() / (batch * channels).max(1) }
}

impl<B: Backend + BatchNormOps, C: CheckpointStrategy> BatchNormOps for Autodiff<B, C> {
    fn batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        /// The backward node: the input, gamma and the batch statistics, kept from the forward.
        #[derive(Debug)]
        struct BatchNormBackward;

        impl<B: Backend + BatchNormOps> Backward<B, 3> for BatchNormBackward {
            type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, f64);

            fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
                let [x_node, gamma_node, beta_node] = ops.parents;
                let output_grad = grads.consume::<B>(&ops.node);
                let (x, gamma, mean, variance, epsilon) = ops.state;
                let (x_grad, gamma_grad, beta_grad) =
                    <B as BatchNormOps>::batch_norm_train_backward(x, gamma, mean, variance, epsilon, output_grad);
                for (node, grad) in [(x_node, x_grad), (gamma_node, gamma_grad), (beta_node, beta_grad)] {
                    if let Some(node) = node {
                        grads.register::<B>(node.id, grad);
                    }
                }
            }
        }

        let nodes = [x.node(), gamma.node(), beta.node()];
        let (x, gamma, beta) = (x.into_primitive(), gamma.into_primitive(), beta.into_primitive());
        let (output, mean, variance) = <B as BatchNormOps>::batch_norm_train(x.clone(), gamma.clone(), beta, epsilon);
        let output = match BatchNormBackward.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((x, gamma, mean.clone(), variance.clone(), epsilon), output),
            OpsKind::UnTracked(prep) => prep.finish(output),
        };
        (output, FloatTensor::<Self>::new(mean), FloatTensor::<Self>::new(variance))
    }

    fn batch_norm_train_backward(
        _x: FloatTensor<Self>,
        _gamma: FloatTensor<Self>,
        _mean: FloatTensor<Self>,
        _variance: FloatTensor<Self>,
        _epsilon: f64,
        _output_grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        unreachable!("the batch norm backward is not differentiated twice")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::flex_buffer::testing::{assert_close, values};
    use burn::module::{Module, Param};
    use burn::nn::BatchNormConfig;
    use burn::tensor::{Device, Distribution};

    /// Eval mode agrees with burn's module, after its running statistics have moved.
    #[test]
    fn eval_mode_matches_burns_batch_norm() {
        let device = Device::flex().autodiff();
        let mut bn = BatchNormConfig::new(3).init(&device);
        bn.gamma = Param::from_tensor(Tensor::from_floats([1.5, -0.25, 0.75], &device));
        bn.beta = Param::from_tensor(Tensor::from_floats([0.5, 0.0, -1.0], &device));
        let _ = bn.forward(Tensor::<4>::random([4, 3, 5, 6], Distribution::Normal(0.7, 2.0), &device));
        let bn = bn.valid();
        let x = Tensor::<4>::random([2, 3, 4, 5], Distribution::Normal(-0.3, 1.5), &Device::flex());
        assert_close("eval output", values(batch_norm(&bn, x.clone())), values(bn.forward(x)), 1e-5);
    }

    /// Output, gradients (input, gamma, beta) and running statistics agree with burn's module.
    #[test]
    fn train_mode_matches_burns_batch_norm() {
        let device = Device::flex().autodiff();
        let module = || {
            let mut bn = BatchNormConfig::new(3).init(&device);
            bn.gamma = Param::from_tensor(Tensor::from_floats([1.5, -0.25, 0.75], &device));
            bn.beta = Param::from_tensor(Tensor::from_floats([0.5, 0.0, -1.0], &device));
            bn
        };
        let (reference, fused) = (module(), module());
        let x = Tensor::<4>::random([4, 3, 5, 6], Distribution::Normal(0.7, 2.0), &device);
        let weights = Tensor::<4>::random([4, 3, 5, 6], Distribution::Normal(0.0, 1.0), &device);

        let run = |bn: &BatchNorm, forward: &dyn Fn(&BatchNorm, Tensor<4>) -> Tensor<4>| {
            let x = x.clone().detach().require_grad();
            let y = forward(bn, x.clone());
            let grads = (y.clone() * weights.clone()).sum().backward();
            let (dgamma, dbeta) = (bn.gamma.grad(&grads).map(values), bn.beta.grad(&grads).map(values));
            (values(y), x.grad(&grads).map(values), dgamma, dbeta)
        };
        let want = run(&reference, &|bn, x| bn.forward(x));
        let got = run(&fused, &|bn, x| batch_norm(bn, x));
        assert_close("output", got.0, want.0, 1e-4);
        assert_close("x grad", got.1.expect("x grad"), want.1.expect("x grad"), 1e-4);
        assert_close("gamma grad", got.2.expect("gamma grad"), want.2.expect("gamma grad"), 1e-4);
        assert_close("beta grad", got.3.expect("beta grad"), want.3.expect("beta grad"), 1e-4);
        assert_close("running mean", values(fused.running_mean.value_sync()), values(reference.running_mean.value_sync()), 1e-4);
        assert_close("running var", values(fused.running_var.value_sync()), values(reference.running_var.value_sync()), 1e-4);
    }
}
