//! One forward pass in vab equals the same pass in PyTorch on the same exported weights
//! (python/vab_models.py's modules, read back by its `load`). Skips with a message when python3 cannot import torch.

use std::path::Path;
use std::process::Command;

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use vab_core::config::OptimizerConfig;
use vab_core::engine::batches::Batch;
use vab_core::engine::batches::Normalization;
use vab_core::engine::export::{export_pytorch, ModelCard};
use vab_core::engine::{optim, step::train_step};
use vab_core::models::{Arch, Network};

fn torch_available() -> bool {
    Command::new("python3").args(["-c", "import torch, safetensors"]).output().is_ok_and(|o| o.status.success())
}

fn inputs(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 7_919) % 1_000) as f32 / 500.0 - 1.0).collect()
}

fn check(arch: Arch, name: &str) {
    if !torch_available() {
        eprintln!("skipping the PyTorch comparison of {name}: python3 cannot import torch and safetensors");
        return;
    }
    let device = Device::flex().autodiff();
    device.seed(3);
    let mut model = Network::new(arch, 3, 10, &device);
    // Two training steps move the weights and the batch-norm running statistics off their
    // initial values, so the comparison covers both.
    let mut optimizer = optim::build(&OptimizerConfig::Sgd { momentum: 0.9, weight_decay: 5e-4, nesterov: false });
    for step in 0..2 {
        let images: Vec<f32> = inputs(8 * 3 * 32 * 32).iter().map(|v| v * (1.0 + step as f32)).collect();
        let batch = Batch { images, shape: [8, 3, 32, 32], indices: (0..8).collect(), labels: (0..8).map(|i| i as u16).collect() };
        model = train_step(model, &mut optimizer, batch, 10, 0.05, &device).0;
    }
    let model = model.valid();
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("model.safetensors");
    // Identity normalisation: the inputs below are fed to both networks as they are.
    let card = ModelCard { arch, in_channels: 3, num_classes: 10, normalization: Normalization { mean: vec![0.0; 3], std: vec![1.0; 3] }, image_size: Some([32, 32]) };
    export_pytorch(&model, &card, &weights).unwrap();

    let x = inputs(4 * 3 * 32 * 32);
    let ours: Vec<f32> = model.forward(Tensor::from_data(TensorData::new(x.clone(), [4, 3, 32, 32]), &Device::flex())).into_data().iter::<f32>().collect();
    let input_file = dir.path().join("x.safetensors");
    let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![4, 3, 32, 32], &bytes).unwrap();
    std::fs::write(&input_file, safetensors::serialize([("x", view)], &None).unwrap()).unwrap();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/torch_forward.py");
    let out = Command::new("python3").args([script.to_str().unwrap(), name, weights.to_str().unwrap(), input_file.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let theirs: Vec<f32> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ours.len(), theirs.len());
    let worst = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    let scale = theirs.iter().map(|v| v.abs()).fold(0f32, f32::max);
    assert!(worst <= 1e-4 * scale.max(1.0), "{name}: max |vab - torch| = {worst} (logit scale {scale})");
}

#[test]
fn small_network_matches_pytorch() {
    check(Arch::Small, "small");
}

#[test]
fn resnet18_matches_pytorch() {
    check(Arch::Resnet18, "resnet18");
}

#[test]
fn resnet18_imagenet_variant_matches_pytorch() {
    check(Arch::Resnet18Imagenet, "resnet18-imagenet");
}

#[test]
fn preact_resnet18_matches_pytorch() {
    check(Arch::PreactResnet18, "preact-resnet18");
}
