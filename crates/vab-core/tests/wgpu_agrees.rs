//! The wgpu backend computes what flex computes: on the same weights and batch, forward passes
//! of every architecture, one SGD step, the entropies the Victim splits by and the AttentionMix
//! of a batch agree within a relative error of 1e-4, and a short V&B run finishes on wgpu.
//!
//! Relative error: the largest absolute difference over the largest magnitude of the flex result.
//! 1e-4 is about a thousand times f32's rounding unit: the two backends sum in different orders
//! (flex: gemm over im2col; wgpu: its own convolution and matrix kernels), which moves a
//! ResNet-18's logits by a few 1e-6 relatively; a wrong kernel moves them by far more than 1e-4.
//!
//! CI runs these on Mesa's software Vulkan driver (lavapipe), so no GPU is needed. Without any
//! wgpu adapter the tests skip with a message, unless `VAB_REQUIRE_WGPU=1` (set by `.ci/run`).
#![cfg(feature = "wgpu")]

use std::sync::Mutex;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor, TensorData};
use vab_core::backend::Backend;
use vab_core::config::{OptimizerConfig, TrainConfig};
use vab_core::data::split;
use vab_core::defenses::vab::attention_mix::{attention_maps, mix, Upsample};
use vab_core::defenses::vab::entropy::entropies;
use vab_core::defenses::vab::train::train_vab;
use vab_core::defenses::vab::Unobserved;
use vab_core::engine::batches::Batch;
use vab_core::engine::progress::Silent;
use vab_core::engine::{optim, step::train_step};
use vab_core::models::{Arch, Network};

mod common;

/// The tests seed the process-wide device RNG; one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const TOLERANCE: f64 = 1e-4;

/// The first wgpu device, or `None` (with the reason printed) where there is none and CI
/// did not ask for one.
fn wgpu() -> Option<Device> {
    match Backend::Wgpu(0).device() {
        Ok(device) => Some(device),
        Err(e) if std::env::var("VAB_REQUIRE_WGPU").as_deref() != Ok("1") => {
            eprintln!("skipped: {e} (set VAB_REQUIRE_WGPU=1 to fail instead; `apt-get install mesa-vulkan-drivers` gives a software one)");
            None
        }
        Err(e) => panic!("VAB_REQUIRE_WGPU=1 but {e}"),
    }
}

fn relative_error<T: Copy + Into<f64>>(flex: &[T], other: &[T]) -> f64 {
    assert_eq!(flex.len(), other.len());
    let scale = flex.iter().fold(0f64, |m, &v| m.max(v.into().abs()));
    let diff = flex.iter().zip(other).fold(0f64, |m, (&a, &b)| m.max((a.into() - b.into()).abs()));
    diff / scale.max(f64::MIN_POSITIVE)
}

fn assert_close<T: Copy + Into<f64>>(what: &str, flex: &[T], other: &[T]) {
    let error = relative_error(flex, other);
    eprintln!("{what}: relative error {error:.2e}");
    assert!(error <= TOLERANCE, "{what}: wgpu differs from flex by {error:.2e} relatively (tolerance {TOLERANCE:.0e})");
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().expect("f32 tensor")
}

/// Deterministic pseudo-random images, normalised scale.
fn images(n: usize, size: usize) -> (Vec<f32>, [usize; 4]) {
    let shape = [n, 3, size, size];
    let count = shape.iter().product::<usize>();
    ((0..count).map(|i| ((i * 7919 % 1009) as f32 / 1009.0 - 0.5) * 2.0).collect(), shape)
}

fn tensor(device: &Device, (data, shape): &(Vec<f32>, [usize; 4])) -> Tensor<4> {
    Tensor::from_data(TensorData::new(data.clone(), *shape), device)
}

/// A network initialised on flex with `seed`, and the same weights on `device`, both ready
/// to train (on autodiff devices).
fn pair(arch: Arch, classes: usize, seed: u64, device: &Device) -> (Network, Network) {
    let flex = Device::flex().autodiff();
    flex.seed(seed);
    let network = Network::new(arch, 3, classes, &flex);
    let moved = network.clone().fork(&device.clone().autodiff());
    (network, moved)
}

/// Every trainable parameter, in visiting order (batch norm's running statistics, which the
/// optimiser does not touch, are left out).
struct Parameters(Vec<Vec<f32>>);

impl ModuleVisitor for Parameters {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        if value.is_require_grad() {
            self.0.push(values(value));
        }
    }
}

fn parameters(network: &Network) -> Vec<Vec<f32>> {
    let mut visitor = Parameters(Vec::new());
    network.visit(&mut visitor);
    visitor.0
}

#[test]
fn forward_of_every_architecture_agrees_in_training_and_inference_mode() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(gpu) = wgpu() else { return };
    for (arch, size) in [(Arch::Small, 32), (Arch::Resnet18, 32), (Arch::PreactResnet18, 32), (Arch::Resnet18Imagenet, 64)] {
        let batch = images(4, size);
        let (flex, other) = pair(arch, 10, 11, &gpu);
        let eval = |n: &Network, d: &Device| values(n.valid().forward(tensor(d, &batch)));
        assert_close(&format!("{arch:?} inference logits"), &eval(&flex, &Device::flex()), &eval(&other, &gpu));
        let train = |n: &Network, d: &Device| values(n.forward(tensor(&d.clone().autodiff(), &batch)));
        assert_close(&format!("{arch:?} training-mode logits"), &train(&flex, &Device::flex()), &train(&other, &gpu));
    }
}

/// One SGD step (momentum, weight decay) from the same weights on the same batch. A training
/// step of ResNet-18 at initialisation is ill-conditioned: batch norm's backward subtracts nearly
/// equal terms, layer after layer, so flex's own update moves by about 3e-3 (relatively) when
/// the input moves by 1e-7. The updates are therefore held to 1e-4 or, where flex itself is
/// less stable than that, to 4 times flex's own sensitivity, measured here on the same batch
/// (norm-wise over all trainable parameters).
#[test]
fn one_sgd_step_updates_the_parameters_alike() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(gpu) = wgpu() else { return };
    for arch in [Arch::Small, Arch::Resnet18] {
        let (data, shape) = images(8, 32);
        let batch = |images: Vec<f32>| Batch { images, shape, indices: (0..8).collect(), labels: (0..8).map(|i| i % 10).collect() };
        let sgd = OptimizerConfig::Sgd { momentum: 0.9, weight_decay: 5e-4, nesterov: false };
        let update = |device: &Device, network: Network, images: Vec<f32>| {
            let before = parameters(&network).concat();
            let (after, loss) = train_step(network, &mut optim::build(&sgd), batch(images), 10, 0.1, &device.clone().autodiff());
            (parameters(&after).concat().iter().zip(&before).map(|(a, b)| a - b).collect::<Vec<f32>>(), loss)
        };
        let (flex, other) = pair(arch, 10, 12, &gpu);
        let jittered = data.iter().enumerate().map(|(i, v)| v * (1.0 + if i % 2 == 0 { 1e-7 } else { -1e-7 })).collect();
        let (reference, flex_loss) = update(&Device::flex(), flex.clone(), data.clone());
        let (on_gpu, gpu_loss) = update(&gpu, other, data);
        let (sensitivity, _) = update(&Device::flex(), flex, jittered);
        assert_close(&format!("{arch:?} loss"), &[flex_loss], &[gpu_loss]);
        let (error, floor) = (norm_error(&reference, &on_gpu), norm_error(&reference, &sensitivity));
        let tolerance = TOLERANCE.max(4.0 * floor);
        eprintln!("{arch:?} SGD update: relative error {error:.2e}; flex's own under a 1e-7 input change {floor:.2e}; tolerance {tolerance:.2e}");
        assert!(error <= tolerance, "{arch:?}: the SGD update on wgpu differs from flex's by {error:.2e} (tolerance {tolerance:.2e})");
    }
}

/// ‖b − a‖ / ‖a‖ (Euclidean).
fn norm_error(a: &[f32], b: &[f32]) -> f64 {
    let norm = |v: &mut dyn Iterator<Item = f64>| v.map(|x| x * x).sum::<f64>().sqrt();
    norm(&mut a.iter().zip(b).map(|(x, y)| (*x - *y) as f64)) / norm(&mut a.iter().map(|&x| x as f64))
}

#[test]
fn entropies_and_attention_mix_agree() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(gpu) = wgpu() else { return };
    let batch = images(8, 32);
    let (flex, other) = pair(Arch::Resnet18, 10, 13, &gpu);
    // An untrained network's logits are nearly uniform, where entropy hardly depends on them;
    // scaled up they are as peaked as a poisoned Victim's.
    let logits = |n: &Network, d: &Device| values(n.valid().forward(tensor(d, &batch)).mul_scalar(30.0));
    let (a, b) = (entropies(&logits(&flex, &Device::flex()), 10), entropies(&logits(&other, &gpu), 10));
    eprintln!("entropies (flex): {a:.3?}");
    assert_close("entropies", &a, &b);

    let features = |n: &Network, d: &Device| n.valid().features(tensor(d, &batch));
    let (fa, fb) = (features(&flex, &Device::flex()), features(&other, &gpu));
    let dims = fa.dims();
    let maps = |f: Tensor<4>| attention_maps(&values(f), dims, [32, 32], Upsample::Bilinear);
    let (ma, mb) = (maps(fa), maps(fb));
    assert_close("attention maps", &ma.concat(), &mb.concat());
    let targets: Vec<f32> = (0..8 * 10).map(|i| if i % 10 == i / 10 { 1.0 } else { 0.0 }).collect();
    let partner = [3, 0, 5, 1, 7, 2, 4, 6];
    let (xa, xb) = (mix(&batch.0, batch.1, &targets, 10, &ma, &partner, 0.3), mix(&batch.0, batch.1, &targets, 10, &mb, &partner, 0.3));
    assert_close("mixed images", &xa.images, &xb.images);
    assert_close("mixed targets", &xa.targets, &xb.targets);
}

#[test]
fn an_absent_device_is_named() {
    let Some(_) = wgpu() else { return };
    let message = Backend::Wgpu(99).device().unwrap_err();
    assert!(message.starts_with("no wgpu device 99: found "), "{message}");
}

/// Every stage of V&B, two epochs of each, on the two-class toy bundle.
#[test]
fn a_short_vab_run_finishes_on_wgpu() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(_) = wgpu() else { return };
    let config = common::CONFIG.replace("epochs = 3", "epochs = 4")
        + "[vab]\nstage2_epochs = 2\nrefresh_every = 1\nviews = 2\nwarmup = { kind = \"steps\", step = 0.1, end = 0.1 }\n\
           [vab.victim]\nlr = 1e-3\nweight_decay = 5e-4\nbatch_size = 16\naugment = { crop_padding = 0, flip = false }\n";
    let config = TrainConfig::from_toml(&config).unwrap();
    let (train, evals, _) = split(common::two_class_bundle()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let outcome = train_vab(&config, Backend::Wgpu(0), &train, &evals, dir.path(), false, &Silent, &mut Unobserved).expect("V&B on wgpu");
    eprintln!("V&B on wgpu: {}", outcome.summary.metrics.describe());
    assert_eq!(outcome.split.suspicious.len() + outcome.split.credible.len(), 64);
    assert_eq!(outcome.stages.len(), 3);
    assert!(outcome.summary.metrics.ba > 90.0, "bright and dark images are easy: {:?}", outcome.summary.metrics);
    assert!(dir.path().join("model.safetensors").is_file() && dir.path().join("victim.safetensors").is_file());
}

