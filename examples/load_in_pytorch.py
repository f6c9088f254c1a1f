#!/usr/bin/env python3
"""Loads a model trained by vab into PyTorch and evaluates it on a vab bundle.

    python3 examples/load_in_pytorch.py runs/vab/model.safetensors badnets.safetensors

Prints BA (clean test accuracy), ASR (share of the triggered non-target test images sent to
the attack's target; for all-to-all attacks, to the next class) and RA (share of them still
classified correctly), in percent, as one JSON object: the same figures `vab train` writes to
`summary.json`. Needs torch, numpy and safetensors (`pip install torch numpy safetensors`).
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
from vab_models import load, normalise  # noqa: E402


def predict(model, card, images, batch_size=500):
    """Arg-max class of each uint8 image, in eval mode."""
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            out.append(model(normalise(images[start:start + batch_size], card)).argmax(1).numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def percent(hits, total):
    return 100.0 * float(hits) / total if total else 0.0


def evaluate(model_path, bundle_path):
    """BA, ASR and RA (percent; ASR and RA are None for a bundle without an attack)."""
    model, card = load(model_path)
    tensors = load_file(bundle_path)
    with safe_open(bundle_path, "np") as f:
        attack = json.loads(f.metadata()["vab"]).get("attack")
    clean = predict(model, card, tensors["test.images"])
    result = {"ba": percent((clean == tensors["test.labels"]).sum(), len(clean)), "asr": None, "ra": None}
    triggered_images = tensors.get("test_triggered.images")
    if attack and triggered_images is not None and len(triggered_images):
        truth = tensors["test_triggered.labels"]
        triggered = predict(model, card, triggered_images)
        goal = (truth + 1) % card["num_classes"] if attack["label_rule"] == "all_to_all" else attack["target"]
        result["asr"] = percent((triggered == goal).sum(), len(truth))
        result["ra"] = percent((triggered == truth).sum(), len(truth))
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="model.safetensors written by `vab train` (or the run directory)")
    parser.add_argument("bundle", help="the bundle to evaluate on (.safetensors from `vab poison`)")
    args = parser.parse_args()
    model = Path(args.model)
    if model.is_dir():
        model = model / "model.safetensors"
    print(json.dumps(evaluate(str(model), args.bundle)))


if __name__ == "__main__":
    main()
