"""The accuracy benchmark's model set: torchvision-style CNNs built from ``torch.nn`` layers, no downloads.

- ResNet-18/34 (basic blocks) and ResNet-50 (bottlenecks), each at width 0.5 and 1.0;
- MobileNetV2 at width 1.0 and 0.75;
- 20 architectures sampled with a fixed seed from a MobileNetV2-style search space
  (kernel 3/5/7, expansion 3/6, 2-4 blocks per stage, width 0.75/1.0/1.25), each at 224 and 160;
- a VGG-style plain net, a ShuffleNetV2-style net (channel split and shuffle), a net with
  squeeze-excitation, and a MobileNetV1-style depthwise-separable net.

``cases()`` lists them as ``(name, builder, kwargs, input_shape)``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn


def _ch(c: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor`` (as MobileNet does), never below 90%."""
    v = max(divisor, int(c + divisor / 2) // divisor * divisor)
    return v + divisor if v < 0.9 * c else v


def conv_bn(
    cin: int, cout: int, k: int, s: int, groups: int = 1, act: type[nn.Module] | None = nn.ReLU
) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


# -- ResNets --------------------------------------------------------------------------


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = conv_bn(cin, planes, 1, stride, act=None) if stride != 1 or cin != planes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        cout = planes * 4
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.downsample = conv_bn(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    def __init__(self, depth: int = 18, width: float = 1.0, num_classes: int = 1000) -> None:
        super().__init__()
        block, layers = {
            18: (BasicBlock, [2, 2, 2, 2]),
            34: (BasicBlock, [3, 4, 6, 3]),
            50: (Bottleneck, [3, 4, 6, 3]),
        }[depth]
        widths = [_ch(64 * width * m) for m in (1, 2, 4, 8)]
        self.stem = nn.Sequential(conv_bn(3, widths[0], 7, 2), nn.MaxPool2d(3, 2, 1))
        blocks: list[nn.Module] = []
        cin = widths[0]
        for i, (planes, n) in enumerate(zip(widths, layers)):
            for j in range(n):
                blocks.append(block(cin, planes, 2 if (j == 0 and i > 0) else 1))
                cin = planes * block.expansion
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


# -- MobileNetV2 and its search space ------------------------------------------------------


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expansion: int, kernel: int, se: bool = False) -> None:
        super().__init__()
        hidden = _ch(cin * expansion)
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(conv_bn(cin, hidden, 1, 1, act=nn.ReLU6))
        layers.append(conv_bn(hidden, hidden, kernel, stride, groups=hidden, act=nn.ReLU6))
        if se:
            layers.append(SqueezeExcite(hidden))
        layers.append(conv_bn(hidden, cout, 1, 1, act=None))
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.residual else out


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        mid = _ch(channels / reduction)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, mid, 1)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(mid, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc2(self.relu(self.fc1(self.pool(x)))))


# (expansion, channels, blocks, stride) of MobileNetV2's stages after the first
MBV2_STAGES = [(6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


class MobileNetV2(nn.Module):
    """MobileNetV2; ``blocks`` overrides (kernel, expansion) per block and ``depths`` the blocks per stage."""

    def __init__(
        self,
        width: float = 1.0,
        depths: Sequence[int] | None = None,
        blocks: Sequence[tuple[int, int]] | None = None,
        se: bool = False,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        depths = list(depths or [n for _, _, n, _ in MBV2_STAGES])
        choices = iter(blocks or [(3, t) for (t, _, _, _), n in zip(MBV2_STAGES, depths) for _ in range(n)])
        cin = _ch(32 * width)
        layers: list[nn.Module] = [conv_bn(3, cin, 3, 2, act=nn.ReLU6)]
        first = _ch(16 * width)
        layers.append(InvertedResidual(cin, first, 1, 1, 3))
        cin = first
        for (_, c, _, s), n in zip(MBV2_STAGES, depths):
            cout = _ch(c * width)
            for j in range(n):
                k, t = next(choices)
                layers.append(InvertedResidual(cin, cout, s if j == 0 else 1, t, k, se=se))
                cin = cout
        last = _ch(1280 * max(1.0, width))
        layers.append(conv_bn(cin, last, 1, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def sample_mbv2(seed: int) -> dict[str, Any]:
    """Sample one architecture of the MobileNetV2-style space (kernel 3/5/7, expansion 3/6, depth 2-4)."""
    rng = random.Random(seed)
    depths = [rng.choice([2, 3, 4]) for _ in MBV2_STAGES[:-1]] + [1]
    blocks = [(rng.choice([3, 5, 7]), rng.choice([3, 6])) for _ in range(sum(depths))]
    return {"width": rng.choice([0.75, 1.0, 1.25]), "depths": depths, "blocks": blocks}


# -- other shapes of network ------------------------------------------------------------


class VGGSmall(nn.Module):
    """VGG-11 layout at half width."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        cfg: list[Any] = [32, "M", 64, "M", 128, 128, "M", 256, 256, "M", 256, 256, "M"]
        layers: list[nn.Module] = []
        cin = 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers.append(conv_bn(cin, v, 3, 1))
                cin = v
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit: channel split (stride 1) or two branches (stride 2), concat, channel shuffle."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        half = cout // 2
        if stride == 2:
            self.left = nn.Sequential(conv_bn(cin, cin, 3, 2, groups=cin, act=None), conv_bn(cin, half, 1, 1))
        branch_in = cin if stride == 2 else cin // 2
        self.right = nn.Sequential(
            conv_bn(branch_in, half, 1, 1),
            conv_bn(half, half, 3, stride, groups=half, act=None),
            conv_bn(half, half, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            a, b = x.chunk(2, dim=1)
            out = torch.cat([a, self.right(b)], 1)
        else:
            out = torch.cat([self.left(x), self.right(x)], 1)
        n, c, h, w = out.shape
        return out.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleNetLike(nn.Module):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_bn(3, 24, 3, 2), nn.MaxPool2d(3, 2, 1)]
        cin = 24
        for cout, n in ((116, 4), (232, 8), (464, 4)):
            for j in range(n):
                layers.append(ShuffleUnit(cin, cout, 2 if j == 0 else 1))
                cin = cout
        layers.append(conv_bn(cin, 1024, 1, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


class DepthwiseSeparable(nn.Module):
    """MobileNetV1 layout at width 0.75."""

    def __init__(self, num_classes: int = 1000, width: float = 0.75) -> None:
        super().__init__()
        cfg = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
        cin = _ch(32 * width)
        layers: list[nn.Module] = [conv_bn(3, cin, 3, 2)]
        for c, s in cfg:
            cout = _ch(c * width)
            layers += [conv_bn(cin, cin, 3, s, groups=cin), conv_bn(cin, cout, 1, 1)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def cases(quick: bool = False) -> list[tuple[str, Callable[..., nn.Module], dict[str, Any], list[int]]]:
    """The model set: ``(name, builder, kwargs, input_shape)``.

    Args:
        quick: A handful of small models at low resolution, for smoke runs.
    """
    if quick:
        return [
            ("resnet18-w0.5@128", ResNet, {"depth": 18, "width": 0.5}, [1, 3, 128, 128]),
            ("mbv2-w0.75@128", MobileNetV2, {"width": 0.75}, [1, 3, 128, 128]),
            ("mbv2-sample0@96", MobileNetV2, sample_mbv2(0), [1, 3, 96, 96]),
            ("dwsep@128", DepthwiseSeparable, {}, [1, 3, 128, 128]),
            ("mbv2-se@96", MobileNetV2, {"width": 0.75, "se": True}, [1, 3, 96, 96]),
        ]
    out: list[tuple[str, Callable[..., nn.Module], dict[str, Any], list[int]]] = []
    for depth in (18, 34, 50):
        for width in (0.5, 1.0):
            out.append((f"resnet{depth}-w{width}", ResNet, {"depth": depth, "width": width}, [1, 3, 224, 224]))
    for width in (1.0, 0.75):
        out.append((f"mbv2-w{width}", MobileNetV2, {"width": width}, [1, 3, 224, 224]))
    for seed in range(20):
        arch = sample_mbv2(seed)
        for res in (224, 160):
            out.append((f"mbv2-sample{seed}@{res}", MobileNetV2, arch, [1, 3, res, res]))
    out += [
        ("vgg11-w0.5", VGGSmall, {}, [1, 3, 224, 224]),
        ("shufflenetv2-like", ShuffleNetLike, {}, [1, 3, 224, 224]),
        ("mbv2-se-w1.0", MobileNetV2, {"width": 1.0, "se": True}, [1, 3, 224, 224]),
        ("mobilenetv1-w0.75", DepthwiseSeparable, {}, [1, 3, 224, 224]),
    ]
    return out
