//! `vab bench step`: throughput of one training step and of inference on synthetic data, the
//! figures to hold beside `bench/torch_step.py` on the same machine.

use std::time::Instant;

use burn::module::Module;
use burn::tensor::{Distribution, Tensor};
use serde::Serialize;

use crate::backend::Backend;
use crate::config::OptimizerConfig;
use crate::engine::batches::Batch;
use crate::engine::optim;
use crate::engine::step::train_step;
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
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Times `steps` SGD steps (after `warmup`) at `batch` and as many inference passes at
/// `infer_batch`, on random inputs of `image` = [C, H, W] with 10 classes.
pub fn bench_step(backend: Backend, arch: Arch, batch: usize, infer_batch: usize, image: [usize; 3], warmup: usize, steps: usize) -> Result<StepBench, String> {
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
        let t = Instant::now();
        let (next, _) = train_step(model, &mut optimizer, batch, 10, 0.01, &device);
        model = next;
        if i >= warmup {
            train_times.push(t.elapsed().as_secs_f64());
        }
    }
    let eval_model = model.valid();
    let mut infer_times = Vec::new();
    for i in 0..warmup + steps {
        let x: Tensor<4> = Tensor::random([infer_batch, c, h, w], Distribution::Normal(0.0, 1.0), &inference);
        let t = Instant::now();
        let _ = eval_model.forward(x).argmax(1).into_data();
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
    })
}
