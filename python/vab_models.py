"""vab's networks as PyTorch modules, and a loader for the `model.safetensors` files vab writes.

Module and parameter names match vab's (`crates/vab-core/src/models`), so an exported state
dict loads with `load_state_dict`. The file's metadata key `vab` holds the architecture, the
input channels, the number of classes and the input normalisation (`ModelCard` in
`crates/vab-core/src/engine/export.rs`).

    from vab_models import load
    model, card = load("runs/vab/model.safetensors")
    logits = model(normalise(images_uint8, card))
"""
import json

import torch
import torch.nn as nn
import torch.nn.functional as F

ARCHS = ("resnet18", "resnet18-imagenet", "preact-resnet18", "small")


class Shortcut(nn.Module):
    """1x1 projection on the skip path; with batch norm except in PreAct blocks."""

    def __init__(self, cin, cout, stride, with_bn=True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, stride, bias=False)
        self.bn = nn.BatchNorm2d(cout) if with_bn else None

    def forward(self, x):
        x = self.conv(x)
        return x if self.bn is None else self.bn(x)


class Block(nn.Module):
    """Basic residual block, post-activation or pre-activation (PreAct-ResNet)."""

    def __init__(self, cin, cout, stride, preact=False):
        super().__init__()
        self.preact = preact
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cin if preact else cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        needs_projection = stride != 1 or cin != cout
        self.shortcut = Shortcut(cin, cout, stride, not preact) if needs_projection else None

    def forward(self, x):
        if self.preact:
            out = F.relu(self.bn1(x))
            skip = x if self.shortcut is None else self.shortcut(out)
            out = self.conv1(out)
            return self.conv2(F.relu(self.bn2(out))) + skip
        skip = x if self.shortcut is None else self.shortcut(x)
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + skip)


class ResNet18(nn.Module):
    """ResNet-18: variant "cifar" (3x3 stem), "imagenet" (7x7 stride-2 stem + max-pool) or
    "preact" (pre-activation blocks, CIFAR stem)."""

    def __init__(self, num_classes=10, in_channels=3, variant="cifar"):
        super().__init__()
        preact = variant == "preact"
        if variant == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        else:
            self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
            self.maxpool = None
        self.bn1 = None if preact else nn.BatchNorm2d(64)
        layers, cin = [], 64
        for width, stride in zip([64, 128, 256, 512], [1, 2, 2, 2]):
            layers.append(nn.ModuleList([Block(cin, width, stride, preact), Block(width, width, 1, preact)]))
            cin = width
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.fc = nn.Linear(512, num_classes)

    def features(self, x):
        """The final feature maps (the input of the global average pool)."""
        x = self.conv1(x)
        if self.bn1 is not None:
            x = F.relu(self.bn1(x))
        if self.maxpool is not None:
            x = self.maxpool(x)
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in layer:
                x = block(x)
        return x

    def forward(self, x):
        return self.fc(self.features(x).mean(dim=(2, 3)))


class Stage(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class Small(nn.Module):
    """vab's small CPU network: four conv-bn-relu stages (widths w, 2w, 4w, 8w) with 2x2
    max-pools between them, global average pool, linear head."""

    def __init__(self, num_classes=10, in_channels=3, width=32):
        super().__init__()
        widths, cin, stages = [width, 2 * width, 4 * width, 8 * width], in_channels, []
        for w in widths:
            stages.append(Stage(cin, w))
            cin = w
        self.stages = nn.ModuleList(stages)
        self.fc = nn.Linear(8 * width, num_classes)

    def features(self, x):
        """The final feature maps (the input of the global average pool)."""
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i + 1 < len(self.stages):
                x = F.max_pool2d(x, 2)
        return x

    def forward(self, x):
        return self.fc(self.features(x).mean(dim=(2, 3)))


def build(arch, num_classes=10, in_channels=3):
    """A fresh module of one of ARCHS."""
    if arch == "small":
        return Small(num_classes, in_channels)
    variants = {"resnet18": "cifar", "resnet18-imagenet": "imagenet", "preact-resnet18": "preact"}
    if arch not in variants:
        raise ValueError(f"unknown architecture {arch!r}; vab exports {', '.join(ARCHS)}")
    return ResNet18(num_classes, in_channels, variants[arch])


def load(path):
    """The eval-mode module saved in a vab `model.safetensors`, and its card (a dict)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(path, "pt") as f:
        meta = f.metadata() or {}
    if "vab" not in meta:
        raise ValueError(f"{path}: no `vab` metadata; was it written by `vab train`?")
    card = json.loads(meta["vab"])
    model = build(card["arch"], card["num_classes"], card["in_channels"])
    missing, unexpected = model.load_state_dict(load_file(path), strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"{path}: parameters do not match {card['arch']}: missing {missing}, unexpected {unexpected}")
    return model.eval(), card


def normalise(images, card):
    """uint8 images [N, C, H, W] (numpy or torch) to the network's float input."""
    x = torch.as_tensor(images).float() / 255.0
    mean = torch.tensor(card["normalization"]["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(card["normalization"]["std"]).view(1, -1, 1, 1)
    return (x - mean) / std
