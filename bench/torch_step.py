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

import torch
import torch.nn as nn
import torch.nn.functional as F


# Module and parameter names match vab's (`vab-core/src/models`), so a `model.safetensors`
# written by `vab train` loads here with `load_state_dict`.


class Shortcut(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, stride, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return self.bn(self.conv(x))


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = Shortcut(cin, cout, stride) if stride != 1 or cin != cout else None

    def forward(self, x):
        skip = x if self.shortcut is None else self.shortcut(x)
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + skip)


class ResNet18(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        layers, cin = [], 64
        for width, stride in zip([64, 128, 256, 512], [1, 2, 2, 2]):
            layers.append(nn.ModuleList([Block(cin, width, stride), Block(width, width, 1)]))
            cin = width
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in layer:
                x = block(x)
        return self.fc(x.mean(dim=(2, 3)))


class Stage(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class Small(nn.Module):
    def __init__(self, num_classes=10, width=32):
        super().__init__()
        widths, cin, stages = [width, 2 * width, 4 * width, 8 * width], 3, []
        for w in widths:
            stages.append(Stage(cin, w))
            cin = w
        self.stages = nn.ModuleList(stages)
        self.fc = nn.Linear(8 * width, num_classes)

    def forward(self, x):
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i + 1 < len(self.stages):
                x = F.max_pool2d(x, 2)
        return self.fc(x.mean(dim=(2, 3)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["resnet18", "small"], default="resnet18")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--infer-batch", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = ResNet18() if args.model == "resnet18" else Small()
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
