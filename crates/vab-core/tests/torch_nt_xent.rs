//! DBD's NT-Xent in vab equals the official formulation computed by PyTorch (anchors the first
//! views, candidates all 2n views but the anchor), value and gradient, on a 4-image batch.
//! Skips with a message when python3 cannot import torch.

use std::process::Command;

use burn::tensor::{Device, Tensor, TensorData};
use vab_core::defenses::dbd::simclr::nt_xent;

const SCRIPT: &str = r#"
import json, sys, torch
z = torch.tensor(json.loads(sys.argv[1]), dtype=torch.float64).reshape(-1, int(sys.argv[3])).requires_grad_()
n, tau = z.shape[0] // 2, float(sys.argv[2])
features = torch.stack([z[:n], z[n:]], dim=1)            # [n, 2, d] as DBD's SimCLRLoss takes it
contrast = torch.cat(torch.unbind(features, dim=1), 0)   # the 2n views
logits = features[:, 0] @ contrast.T / tau
logits = logits - logits.max(dim=1, keepdim=True).values.detach()
keep = torch.ones(n, 2 * n, dtype=torch.float64); keep[torch.arange(n), torch.arange(n)] = 0
positive = torch.zeros(n, 2 * n, dtype=torch.float64); positive[torch.arange(n), torch.arange(n) + n] = 1
log_prob = logits - torch.log((torch.exp(logits) * keep).sum(1, keepdim=True))
loss = -((positive * log_prob).sum(1) / positive.sum(1)).mean()
loss.backward()
print(json.dumps({"loss": loss.item(), "grad": z.grad.flatten().tolist()}))
"#;

#[test]
fn nt_xent_matches_pytorch_value_and_gradient() {
    let available = Command::new("python3").args(["-c", "import torch"]).output().is_ok_and(|o| o.status.success());
    if !available {
        eprintln!("skipping the PyTorch NT-Xent comparison: python3 cannot import torch");
        return;
    }
    // 4 images × 2 views of 3-D unit vectors, view after view.
    let (rows, d) = (8, 3);
    let raw: Vec<f32> = (0..rows * d).map(|i| ((i * 37 + 5) % 17) as f32 / 8.0 - 1.0).collect();
    let z: Vec<f32> = raw
        .chunks(d)
        .flat_map(|r| {
            let norm = r.iter().map(|v| v * v).sum::<f32>().sqrt();
            r.iter().map(move |v| v / norm).collect::<Vec<_>>()
        })
        .collect();
    let device = Device::flex().autodiff();
    let input = Tensor::<2>::from_data(TensorData::new(z.clone(), [rows, d]), &device).require_grad();
    let loss = nt_xent(input.clone(), 0.5);
    let ours = loss.to_data().iter::<f32>().next().unwrap() as f64;
    let grads = loss.backward();
    let ours_grad: Vec<f32> = input.grad(&grads).unwrap().into_data().iter::<f32>().collect();

    let out = Command::new("python3").args(["-c", SCRIPT, &serde_json::to_string(&z).unwrap(), "0.5", &d.to_string()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let theirs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let want = theirs["loss"].as_f64().unwrap();
    eprintln!("NT-Xent: vab {ours}, PyTorch {want}");
    assert!((ours - want).abs() < 1e-5, "{ours} vs {want}");
    let want_grad: Vec<f64> = theirs["grad"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert!(ours_grad.iter().zip(&want_grad).all(|(a, b)| (*a as f64 - b).abs() < 1e-5), "{ours_grad:?} vs {want_grad:?}");
}
