#!/usr/bin/env python3
"""The step `vab bench step` times, in PyTorch, for a side-by-side comparison on one machine.

ResNet-18 (CIFAR variant: 3x3 stride-1 stem, no max-pool) or vab's small network, one SGD step
(momentum 0.9, weight decay 5e-4, cross-entropy) at --batch on random 3x32x32 inputs, and
inference at --infer-batch in eval mode. Prints one JSON object with train_img_s and
infer_img_s (medians over --steps after --warmup), like `vab bench step --json`.

    python3 bench/torch_step.py --model resnet18 --batch 128
"""
import argparse
import json
import statistics
import time

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
from vab_models import build  # noqa: E402 (vab's modules, same names and layers)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["resnet18", "small"], default="resnet18")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--infer-batch", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = build(args.model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(args.batch, 3, 32, 32)
    y = torch.arange(args.batch) % 10
    model.train()
    train_times = []
    for i in range(args.warmup + args.steps):
        start = time.perf_counter()
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        if i >= args.warmup:
            train_times.append(time.perf_counter() - start)
    model.eval()
    infer_times = []
    xi = torch.randn(args.infer_batch, 3, 32, 32)
    with torch.no_grad():
        for i in range(args.warmup + args.steps):
            start = time.perf_counter()
            model(xi).argmax(1)
            if i >= args.warmup:
                infer_times.append(time.perf_counter() - start)
    print(json.dumps({
        "model": args.model, "batch": args.batch, "infer_batch": args.infer_batch,
        "train_img_s": args.batch / statistics.median(train_times),
        "infer_img_s": args.infer_batch / statistics.median(infer_times),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
