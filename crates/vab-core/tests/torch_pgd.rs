//! One PGD step in vab equals the same step in PyTorch on the same exported weights. Skips with
//! a message when python3 cannot import torch.

use std::path::Path;
use std::process::Command;

use vab_core::attacks::pgd::{perturb, Pgd};
use vab_core::engine::batches::Normalization;
use vab_core::engine::export::{export_pytorch, ModelCard};
use vab_core::models::{Arch, Network};

#[test]
fn one_pgd_step_matches_pytorch() {
    let available = Command::new("python3").args(["-c", "import torch, safetensors"]).output().is_ok_and(|o| o.status.success());
    if !available {
        eprintln!("skipping the PyTorch PGD comparison: python3 cannot import torch and safetensors");
        return;
    }
    let device = burn::tensor::Device::flex().autodiff();
    device.seed(5);
    let model = Network::new(Arch::Small, 3, 10, &device);
    let shape = [4, 3, 16, 16];
    let images: Vec<u8> = (0..4 * 3 * 256).map(|i| ((i * 97 + 13) % 256) as u8).collect();
    let labels = [1u16, 3, 5, 7];
    let norm = Normalization { mean: vec![0.49, 0.48, 0.45], std: vec![0.25, 0.24, 0.26] };
    let set = vab_data::ImageSet::new(vab_data::ImageShape { channels: 3, height: 16, width: 16 }, images.clone(), labels.to_vec()).unwrap();
    let (ours, _) = perturb(&model, &set, 10, &norm, &Pgd { epsilon: 8.0, steps: 1, step_size: 3.0 }, 4, &device);

    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("model.safetensors");
    export_pytorch(&burn::module::Module::valid(&model), &ModelCard { arch: Arch::Small, in_channels: 3, num_classes: 10, normalization: norm, image_size: Some([32, 32]) }, &weights).unwrap();
    let y: Vec<u8> = labels.iter().flat_map(|&l| (l as i64).to_le_bytes()).collect();
    let views = [
        ("x", safetensors::tensor::TensorView::new(safetensors::Dtype::U8, shape.to_vec(), &images).unwrap()),
        ("y", safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![4], &y).unwrap()),
    ];
    let inputs = dir.path().join("inputs.safetensors");
    std::fs::write(&inputs, safetensors::serialize(views, &None).unwrap()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/torch_pgd.py");
    let out = Command::new("python3").arg(script).arg(&weights).arg(&inputs).args(["8", "3"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let theirs: Vec<i64> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(theirs.len(), ours.len());
    // A gradient component within float noise of zero may take either sign; allow a few.
    let differ = ours.iter().zip(&theirs).filter(|(a, b)| **a as i64 != **b).count();
    let moved = ours.iter().zip(&images).filter(|(a, b)| a != b).count();
    eprintln!("{differ} of {} pixels differ from PyTorch; {moved} moved", ours.len());
    assert!(moved > ours.len() / 2, "the step should move most pixels");
    assert!(differ * 200 <= ours.len(), "{differ} of {} pixels differ from PyTorch's step", ours.len());
}
