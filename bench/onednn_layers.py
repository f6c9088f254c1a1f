#!/usr/bin/env python3
"""PyTorch's per-layer times on this CPU, to set beside `vab bench step --profile`.

Runs bench/torch_step.py under ONEDNN_VERBOSE=1 (oneDNN prints every primitive it executes
with its time) and sums the times of the last --steps training steps per primitive and
geometry: convolution forward, backward_data (input gradient), backward_weights, and the
layout reorders around them. Batch norm, pooling and elementwise operations are ATen's own
kernels, which oneDNN does not see; the script prints how much of the step they leave.

    python3 bench/onednn_layers.py --model resnet18 --steps 3
"""
import argparse
import collections
import json
import os
import re
import subprocess
import sys
from pathlib import Path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["resnet18", "small"], default="resnet18")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    script = Path(__file__).with_name("torch_step.py")
    # Inference at batch 1, once, so that almost every primitive printed is a training one.
    command = [sys.executable, str(script), "--model", args.model, "--batch", str(args.batch),
               "--infer-batch", "1", "--warmup", "1", "--steps", str(args.steps)]
    run = subprocess.run(command, env={**os.environ, "ONEDNN_VERBOSE": "1"}, capture_output=True, text=True, check=True)
    lines = [l for l in run.stdout.splitlines() if l.startswith("onednn_verbose,") and ",exec,cpu," in l]
    result = json.loads(run.stdout.splitlines()[-1])
    times = collections.defaultdict(float)
    for line in lines:
        fields = line.split(",")
        kind, prop, problem, ms = fields[5], fields[7], fields[-2], float(fields[-1])
        if kind == "convolution":
            m = re.match(r"mb(\d+)_ic(\d+)oc(\d+)_ih(\d+)oh\d+kh(\d+)sh(\d+)", problem)
            batch, ic, oc, ih, kh, sh = m.groups()
            if batch != str(args.batch):
                continue
            times[f"conv {kh}x{kh} s{sh} {ic}→{oc} at {ih}x{ih}, {prop}"] += ms
        elif kind == "reorder" and problem.startswith(f"{args.batch}x"):
            times["reorders of activations (NCHW ↔ nChw16c)"] += ms
        elif kind == "reorder":
            times["reorders of weights"] += ms
    step_ms = 1e3 * args.batch / result["train_img_s"]
    # All the training steps' primitives (warm-up included) are summed: report per step.
    total_steps = args.steps + 1
    print(f"PyTorch {result['torch']}, {args.model}, batch {args.batch}: {result['train_img_s']:.1f} img/s, "
          f"step {step_ms:.1f} ms (median), {result['threads']} threads")
    print(f"{'ms':>9} {'%':>6}  primitive (per training step)")
    listed = 0.0
    for name, ms in sorted(times.items(), key=lambda kv: -kv[1]):
        ms /= total_steps
        listed += ms
        print(f"{ms:9.1f} {100 * ms / step_ms:6.1f}  {name}")
    print(f"{step_ms - listed:9.1f} {100 * (step_ms - listed) / step_ms:6.1f}  the rest: ATen's batch norm, pooling, "
          "elementwise operations, optimiser, autograd")


if __name__ == "__main__":
    main()
