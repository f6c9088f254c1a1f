"""Helper of torch_forward.rs: loads a vab `model.safetensors` with python/vab_models.py,
checks its card names the expected architecture, and prints the eval-mode logits on the given
(already normalised) input as JSON."""
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "python"))
from vab_models import load  # noqa: E402

arch, weights, inputs = sys.argv[1], sys.argv[2], sys.argv[3]
model, card = load(weights)
assert card["arch"] == arch, f"card says {card['arch']}, expected {arch}"
x = load_file(inputs)["x"]
with torch.no_grad():
    print(json.dumps(model(x).flatten().tolist()))
