//! `vab bench step`: throughput of one training step and of inference on synthetic data, the
//! figures to hold beside `bench/torch_step.py` on the same machine.

use std::time::Instant;

use burn::module::Module;
use burn::tensor::{Device, Distribution, Tensor};
use serde::Serialize;

use crate::backend::Backend;
use crate::config::OptimizerConfig;
use crate::engine::batches::Batch;
use crate::engine::optim;
use crate::engine::step::train_step;
use crate::models::op_profile::{self, OpTime};
use crate::models::{Arch, Network};

/// Result of a step benchmark (medians over the timed repetitions).
#[derive(Clone, Debug, Serialize)]
pub struct StepBench {
    pub model: Arch,
    pub batch: usize,
    pub infer_batch: usize,
    pub image: [usize; 3],
    pub train_img_s: f64,
    pub infer_img_s: f64,
    pub train_step_s: Vec<f64>,
    pub infer_step_s: Vec<f64>,
    pub threads: usize,
    pub backend: Backend,
    /// CPU model name (`None` where the OS does not say).
    pub cpu: Option<String>,
    /// Instruction set of the matrix-product micro-kernels ([`crate::cpu::simd_level`]).
    pub simd: &'static str,
    /// With `profile`: vab's kernels' time per timed training step, by operation and
    /// geometry (what is left of the step is burn's elementwise operations, the optimiser and
    /// the autodiff graph).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<Vec<OpTime>>,
}

/// The middle value (the upper one of an even count).
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Waits until `device` has finished the work queued on it: GPU backends run asynchronously,
/// so a timer must not stop before the device does.
pub(crate) fn sync(device: &Device) -> Result<(), String> {
    device.sync().map_err(|e| format!("the device failed: {e:?}"))
}

/// Times `steps` SGD steps (after `warmup`) at `batch` and as many inference passes at
/// `infer_batch`, on random inputs of `image` = [C, H, W] with 10 classes; with `profile`, also
/// where the training steps' time goes.
#[allow(clippy::too_many_arguments)]
pub fn bench_step(backend: Backend, arch: Arch, batch: usize, infer_batch: usize, image: [usize; 3], warmup: usize, steps: usize, profile: bool) -> Result<StepBench, String> {
    let inference = backend.device()?;
    let device = inference.clone().autodiff();
    device.seed(0);
    let [c, h, w] = image;
    let mut model = Network::new(arch, c, 10, &device);
    let mut optimizer = optim::build(&OptimizerConfig::Sgd { momentum: 0.9, weight_decay: 5e-4, nesterov: false });
    let images: Vec<f32> = (0..batch * c * h * w).map(|i| ((i * 2_654_435_761usize) % 1000) as f32 / 500.0 - 1.0).collect();
    let labels: Vec<u16> = (0..batch).map(|i| (i % 10) as u16).collect();
    let mut train_times = Vec::new();
    for i in 0..warmup + steps {
        let batch = Batch { images: images.clone(), shape: [batch, c, h, w], indices: (0..batch).collect(), labels: labels.clone() };
        if profile && i == warmup {
            op_profile::enable();
        }
        sync(&inference)?;
        let t = Instant::now();
        let (next, _) = train_step(model, &mut optimizer, batch, 10, 0.01, &device);
        model = next;
        sync(&inference)?;
        if i >= warmup {
            train_times.push(t.elapsed().as_secs_f64());
        }
    }
    let profile = profile.then(|| {
        let mut ops = op_profile::take();
        for op in &mut ops {
            op.seconds /= steps as f64;
            op.calls /= steps;
        }
        ops
    });
    let eval_model = model.valid();
    let mut infer_times = Vec::new();
    for i in 0..warmup + steps {
        let x: Tensor<4> = Tensor::random([infer_batch, c, h, w], Distribution::Normal(0.0, 1.0), &inference);
        sync(&inference)?;
        let t = Instant::now();
        let _ = eval_model.forward(x).argmax(1).into_data();
        sync(&inference)?;
        if i >= warmup {
            infer_times.push(t.elapsed().as_secs_f64());
        }
    }
    Ok(StepBench {
        model: arch,
        batch,
        infer_batch,
        image,
        train_img_s: batch as f64 / median(&train_times),
        infer_img_s: infer_batch as f64 / median(&infer_times),
        train_step_s: train_times,
        infer_step_s: infer_times,
        threads: rayon::current_num_threads(),
        backend,
        cpu: crate::cpu::model(),
        simd: crate::cpu::simd_level(),
        profile,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With `profile`, every convolution, batch norm and max-pool of the small network shows
    /// up once per training step, named by its geometry, forward and backward.
    #[test]
    fn profile_names_each_layer_of_a_step() {
        // Batch 5 at 12×12: a geometry no other test uses, since the profile is process-wide.
        let _rng = crate::models::RNG_TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let _serial = op_profile::TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let result = bench_step(Backend::Flex, Arch::Small, 5, 2, [3, 12, 12], 1, 2, true).expect("flex is built in");
        let ops = result.profile.expect("profiled");
        let calls = |op: &str| ops.iter().find(|o| o.op == op).map(|o| o.calls);
        for (c_in, c_out, size) in [(3, 32, 12), (32, 64, 6), (64, 128, 3), (128, 256, 1)] {
            for pass in ["forward", "backward"] {
                assert_eq!(calls(&format!("conv 3x3 s1 {c_in}→{c_out} at {size}x{size} (batch 5), {pass}")), Some(1), "{ops:?}");
                assert_eq!(calls(&format!("batch norm {c_out} channels × {} (batch 5), {pass}", size * size)), Some(1), "{ops:?}");
            }
        }
        assert_eq!(calls("max-pool 2x2 s2, 32 channels at 12x12 (batch 5), backward"), Some(1), "{ops:?}");
        assert!(ops.windows(2).all(|w| w[0].seconds >= w[1].seconds), "largest first");
        assert!(bench_step(Backend::Flex, Arch::Small, 5, 2, [3, 12, 12], 0, 1, false).unwrap().profile.is_none());
    }
}
