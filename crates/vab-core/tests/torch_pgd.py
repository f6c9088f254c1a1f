"""Helper of torch_pgd.rs: one PGD step (x + α·sign(∇ₓ CE), clipped to the ε-ball and [0, 1],
rounded to u8) in PyTorch on a vab model loaded by python/vab_models.py, eval-mode batch norm.
Arguments: model.safetensors, inputs.safetensors (u8 `x` [N,C,H,W], int64 `y`), ε and α in
1/255 units. Prints the perturbed pixels as a JSON list."""
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "python"))
from vab_models import load, normalise  # noqa: E402

model, card = load(sys.argv[1])
data = load_file(sys.argv[2])
eps, alpha = float(sys.argv[3]) / 255, float(sys.argv[4]) / 255
x0 = data["x"].float() / 255
x = x0.clone().requires_grad_(True)
mean = torch.tensor(card["normalization"]["mean"]).view(1, -1, 1, 1)
std = torch.tensor(card["normalization"]["std"]).view(1, -1, 1, 1)
F.cross_entropy(model((x - mean) / std), data["y"]).backward()
step = torch.minimum(torch.maximum(x.detach() + alpha * x.grad.sign(), x0 - eps), x0 + eps).clamp(0, 1)
print(json.dumps((step * 255).round().to(torch.int64).flatten().tolist()))
