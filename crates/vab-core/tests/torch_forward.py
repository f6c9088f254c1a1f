"""Helper of torch_forward.rs: loads a vab `model.safetensors` into the PyTorch module of
bench/torch_step.py (same parameter names) and prints its eval-mode logits on the given input
as JSON."""
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))
import torch_step  # noqa: E402

arch, weights, inputs = sys.argv[1], sys.argv[2], sys.argv[3]
model = torch_step.ResNet18() if arch == "resnet18" else torch_step.Small()
missing, unexpected = model.load_state_dict(load_file(weights), strict=False)
missing = [k for k in missing if not k.endswith("num_batches_tracked")]
assert not missing and not unexpected, f"missing {missing}, unexpected {unexpected}"
model.eval()
x = load_file(inputs)["x"]
with torch.no_grad():
    print(json.dumps(model(x).flatten().tolist()))
