"""A zoo of hand-built CNN and transformer families, for benchmarking latency prediction on nets nobody tuned for.

Every model is written with ``torch.nn`` layers (random init, no downloads, no torchvision), takes
``[1, 3, R, R]`` and works at R in 96, 128, 160 and 224 (adaptive pooling before the classifier):

- ``inception``: GoogLeNet-style modules (1x1; 1x1-3x3; 1x1-5x5 or 1x1-3x3-3x3; maxpool-1x1), concatenated;
- ``fire``: SqueezeNet 1.0/1.1 fire modules (squeeze 1x1, expand 1x1 and 3x3), ceil-mode maxpools;
- ``dense``: DenseNet dense blocks (BN-ReLU-1x1-BN-ReLU-3x3, all features concatenated) and transitions;
- ``resnext``: ResNeXt bottlenecks (grouped 3x3, 8 or 32 groups) and RegNetX/Y blocks (group width 8/16, SE);
- ``effnet``: EfficientNet MBConv (3x3/5x5 depthwise, SiLU, SE with a sigmoid gate);
- ``mbv3``: MobileNetV3 (Hardswish, SE with a Hardsigmoid gate, 3x3/5x5 depthwise);
- ``mixdw``: inverted residuals with 3x3, 5x5 and 7x7 depthwise kernels mixed across stages, ReLU6, no SE;
- ``convnext``: ConvNeXt blocks (7x7 depthwise, channel LayerNorm by permuting to NHWC, GELU, layer scale),
  patchify stem and LayerNorm + 2x2 stride-2 downsampling;
- ``wide``: pre-activation WideResNets (width factor 4-6) and a wide plain VGG-like net;
- ``vit``: small vision transformers with hand-written multi-head self-attention (``nn.Linear``, matmul, softmax).

``cases()`` lists them as ``(name, family, build, kwargs, input_shape)``; ``build(**kwargs)`` returns a
fresh model in eval mode, its convolutions re-initialised by :func:`init_weights` so that activations stay
of order 1 (torch's default init shrinks them to ~1e-13 in the deepest nets, near subnormal numbers).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

FAMILIES: tuple[str, ...] = (
    "inception",
    "fire",
    "dense",
    "resnext",
    "effnet",
    "mbv3",
    "mixdw",
    "convnext",
    "wide",
    "vit",
)
RESOLUTIONS: tuple[int, ...] = (96, 128, 160, 224)

Case = tuple[str, str, Callable[..., nn.Module], dict[str, Any], list[int]]


def _ch(c: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor`` (as MobileNet does), never below 90%."""
    v = max(divisor, int(c + divisor / 2) // divisor * divisor)
    return v + divisor if v < 0.9 * c else v


def conv_bn(
    cin: int, cout: int, k: int, s: int = 1, groups: int = 1, act: type[nn.Module] | None = nn.ReLU
) -> nn.Sequential:
    """Convolution (padding ``k // 2``, no bias), batch norm and an optional activation."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class Classifier(nn.Module):
    """Global average pooling, flatten, (dropout,) linear."""

    def __init__(self, cin: int, num_classes: int = 1000, dropout: float = 0.0) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(torch.flatten(self.pool(x), 1)))


class SqueezeExcite(nn.Module):
    """Squeeze-excitation: adaptive average pool, 1x1 reduce, activation, 1x1 expand, gate, product."""

    def __init__(
        self,
        channels: int,
        squeeze: int,
        act: type[nn.Module] = nn.ReLU,
        gate: type[nn.Module] = nn.Sigmoid,
    ) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.act = act()
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.gate = gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))


# -- inception ------------------------------------------------------------------------------


class InceptionModule(nn.Module):
    """Four branches joined along channels: 1x1; 1x1-3x3; 1x1-5x5 (or 1x1-3x3-3x3); 3x3 maxpool-1x1."""

    def __init__(
        self, cin: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, pool_proj: int, double3: bool = False
    ) -> None:
        super().__init__()
        self.branch1 = conv_bn(cin, c1, 1)
        self.branch3 = nn.Sequential(conv_bn(cin, c3r, 1), conv_bn(c3r, c3, 3))
        if double3:
            self.branch5 = nn.Sequential(conv_bn(cin, c5r, 1), conv_bn(c5r, c5, 3), conv_bn(c5, c5, 3))
        else:
            self.branch5 = nn.Sequential(conv_bn(cin, c5r, 1), conv_bn(c5r, c5, 5))
        self.branch_pool = nn.Sequential(nn.MaxPool2d(3, 1, 1), conv_bn(cin, pool_proj, 1))
        self.out_channels = c1 + c3 + c5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch3(x), self.branch5(x), self.branch_pool(x)], 1)


# GoogLeNet's modules per stage: (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool projection)
GOOGLENET_STAGES: tuple[tuple[tuple[int, ...], ...], ...] = (
    ((64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64)),
    (
        (192, 96, 208, 16, 48, 64),
        (160, 112, 224, 24, 64, 64),
        (128, 128, 256, 24, 64, 64),
        (112, 144, 288, 32, 64, 64),
        (256, 160, 320, 32, 128, 128),
    ),
    ((256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128)),
)


class InceptionNet(nn.Module):
    """GoogLeNet with batch norm; ``width`` scales every branch, ``depth4`` keeps the first modules of stage 4."""

    def __init__(self, width: float = 1.0, depth4: int = 5, double3: bool = False, num_classes: int = 1000) -> None:
        super().__init__()
        c0, c1, c2 = _ch(64 * width), _ch(64 * width), _ch(192 * width)
        layers: list[nn.Module] = [
            conv_bn(3, c0, 7, 2),
            nn.MaxPool2d(3, 2, 1),
            conv_bn(c0, c1, 1),
            conv_bn(c1, c2, 3),
            nn.MaxPool2d(3, 2, 1),
        ]
        cin = c2
        stages = (GOOGLENET_STAGES[0], GOOGLENET_STAGES[1][:depth4], GOOGLENET_STAGES[2])
        for i, stage in enumerate(stages):
            if i > 0:
                layers.append(nn.MaxPool2d(3, 2, 1))
            for cfg in stage:
                module = InceptionModule(cin, *(_ch(c * width) for c in cfg), double3=double3)
                layers.append(module)
                cin = module.out_channels
        self.features = nn.Sequential(*layers)
        self.classifier = Classifier(cin, num_classes, 0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


# -- fire -----------------------------------------------------------------------------------


class Fire(nn.Module):
    """SqueezeNet's fire module: 1x1 squeeze, then 1x1 and 3x3 expands concatenated; optional bypass."""

    def __init__(self, cin: int, squeeze: int, expand: int, bypass: bool = False) -> None:
        super().__init__()
        self.squeeze = nn.Sequential(nn.Conv2d(cin, squeeze, 1), nn.ReLU())
        self.expand1 = nn.Sequential(nn.Conv2d(squeeze, expand, 1), nn.ReLU())
        self.expand3 = nn.Sequential(nn.Conv2d(squeeze, expand, 3, padding=1), nn.ReLU())
        self.bypass = bypass and cin == 2 * expand

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.squeeze(x)
        out = torch.cat([self.expand1(s), self.expand3(s)], 1)
        return out + x if self.bypass else out


# the layouts after the stem: "M" a 3x3 stride-2 ceil-mode maxpool, (squeeze, expand) a fire module
SQUEEZENET: dict[str, tuple[int, int, list[Any]]] = {
    "1.0": (96, 7, [(16, 64), (16, 64), (32, 128), "M", (32, 128), (48, 192), (48, 192), (64, 256), "M", (64, 256)]),
    "1.1": (64, 3, [(16, 64), (16, 64), "M", (32, 128), (32, 128), "M", (48, 192), (48, 192), (64, 256), (64, 256)]),
}


class SqueezeNet(nn.Module):
    """SqueezeNet 1.0 or 1.1 at ``width``; ``bypass`` adds the paper's simple bypass where shapes allow."""

    def __init__(self, version: str = "1.1", width: float = 1.0, bypass: bool = False, num_classes: int = 1000) -> None:
        super().__init__()
        stem, k, cfg = SQUEEZENET[version]
        cin = _ch(stem * width)
        layers: list[nn.Module] = [nn.Conv2d(3, cin, k, 2), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True)]
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(3, 2, ceil_mode=True))
            else:
                squeeze, expand = _ch(v[0] * width), _ch(v[1] * width)
                layers.append(Fire(cin, squeeze, expand, bypass))
                cin = 2 * expand
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Conv2d(cin, num_classes, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


# -- dense ----------------------------------------------------------------------------------


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 (``bn_size * growth``)-BN-ReLU-3x3 (``growth``) on the concatenation of all previous features."""

    def __init__(self, cin: int, growth: int, bn_size: int = 4) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(cin, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[0] if len(features) == 1 else torch.cat(features, 1)
        x = self.conv1(self.relu1(self.norm1(x)))
        return self.conv2(self.relu2(self.norm2(x)))


class DenseBlock(nn.Module):
    def __init__(self, layers: int, cin: int, growth: int, bn_size: int = 4) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DenseLayer(cin + i * growth, growth, bn_size) for i in range(layers))
        self.out_channels = cin + layers * growth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    """BN-ReLU-1x1 convolution, then a 2x2 average pool."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, cout, 1, bias=False), nn.AvgPool2d(2, 2))


class DenseNet(nn.Module):
    def __init__(
        self,
        growth: int = 32,
        blocks: Sequence[int] = (6, 12, 24, 16),
        init: int = 64,
        bn_size: int = 4,
        compression: float = 0.5,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_bn(3, init, 7, 2), nn.MaxPool2d(3, 2, 1)]
        cin = init
        for i, n in enumerate(blocks):
            block = DenseBlock(n, cin, growth, bn_size)
            layers.append(block)
            cin = block.out_channels
            if i < len(blocks) - 1:
                cout = int(cin * compression)
                layers.append(Transition(cin, cout))
                cin = cout
        layers += [nn.BatchNorm2d(cin), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.classifier = Classifier(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


# -- resnext and regnet ---------------------------------------------------------------------


class GroupedBottleneck(nn.Module):
    """1x1, grouped 3x3 (stride), optional SE, 1x1; projection shortcut where shapes change; ReLU after the sum."""

    def __init__(self, cin: int, inner: int, cout: int, stride: int, groups: int, se: bool = False) -> None:
        super().__init__()
        self.conv1 = conv_bn(cin, inner, 1)
        self.conv2 = conv_bn(inner, inner, 3, stride, groups=groups)
        self.se = SqueezeExcite(inner, max(1, cin // 4)) if se else None
        self.conv3 = conv_bn(inner, cout, 1, act=None)
        self.shortcut = conv_bn(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else None
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        if self.se is not None:
            out = self.se(out)
        out = self.conv3(out)
        return self.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class ResNeXt(nn.Module):
    """ResNeXt: stage ``i`` has ``groups * width_per_group * 2**i`` inner and ``out0 * 2**i`` output channels."""

    def __init__(
        self,
        depths: Sequence[int] = (3, 4, 6, 3),
        out0: int = 256,
        groups: int = 32,
        width_per_group: int = 4,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_bn(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1)]
        cin = 64
        for i, n in enumerate(depths):
            inner, cout = groups * width_per_group * 2**i, out0 * 2**i
            for j in range(n):
                layers.append(GroupedBottleneck(cin, inner, cout, 2 if (j == 0 and i > 0) else 1, groups))
                cin = cout
        self.features = nn.Sequential(*layers)
        self.classifier = Classifier(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class RegNet(nn.Module):
    """RegNetX (or RegNetY with ``se``): bottleneck ratio 1, grouped 3x3 of ``group_width`` channels per group."""

    def __init__(
        self,
        depths: Sequence[int] = (1, 1, 4, 7),
        widths: Sequence[int] = (24, 56, 152, 368),
        group_width: int = 8,
        se: bool = False,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_bn(3, 32, 3, 2)]
        cin = 32
        for n, w in zip(depths, widths):
            for j in range(n):
                layers.append(GroupedBottleneck(cin, w, w, 2 if j == 0 else 1, w // group_width, se=se))
                cin = w
        self.features = nn.Sequential(*layers)
        self.classifier = Classifier(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


# -- inverted residuals: effnet, mbv3, mixdw ---------------------------------------------------


class InvertedBottleneck(nn.Module):
    """1x1 expand (unless ``hidden == cin``), kxk depthwise, optional SE, 1x1 project; residual where shapes allow."""

    def __init__(
        self,
        cin: int,
        hidden: int,
        cout: int,
        kernel: int,
        stride: int,
        act: type[nn.Module] = nn.ReLU6,
        se_channels: int = 0,
        se_act: type[nn.Module] = nn.ReLU,
        se_gate: type[nn.Module] = nn.Hardsigmoid,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if hidden != cin:
            layers.append(conv_bn(cin, hidden, 1, act=act))
        layers.append(conv_bn(hidden, hidden, kernel, stride, groups=hidden, act=act))
        if se_channels:
            layers.append(SqueezeExcite(hidden, se_channels, se_act, se_gate))
        layers.append(conv_bn(hidden, cout, 1, act=None))
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.residual else out


# EfficientNet-B0's stages: (expansion, kernel, stride, channels, blocks)
EFFNET_B0: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)


class EfficientNet(nn.Module):
    """EfficientNet-B0 scaled by ``width`` (channels) and ``depth`` (blocks per stage, rounded up)."""

    def __init__(self, width: float = 1.0, depth: float = 1.0, num_classes: int = 1000) -> None:
        super().__init__()
        cin = _ch(32 * width)
        layers: list[nn.Module] = [conv_bn(3, cin, 3, 2, act=nn.SiLU)]
        for t, k, s, c, n in EFFNET_B0:
            cout = _ch(c * width)
            for j in range(math.ceil(n * depth)):
                se = max(1, cin // 4)
                layers.append(
                    InvertedBottleneck(cin, cin * t, cout, k, s if j == 0 else 1, nn.SiLU, se, nn.SiLU, nn.Sigmoid)
                )
                cin = cout
        last = _ch(1280 * max(1.0, width))
        layers.append(conv_bn(cin, last, 1, act=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.classifier = Classifier(last, num_classes, 0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


# MobileNetV3's blocks: (kernel, expanded channels, channels, SE, Hardswish, stride)
MBV3_LARGE: tuple[tuple[int, int, int, bool, bool, int], ...] = (
    (3, 16, 16, False, False, 1),
    (3, 64, 24, False, False, 2),
    (3, 72, 24, False, False, 1),
    (5, 72, 40, True, False, 2),
    (5, 120, 40, True, False, 1),
    (5, 120, 40, True, False, 1),
    (3, 240, 80, False, True, 2),
    (3, 200, 80, False, True, 1),
    (3, 184, 80, False, True, 1),
    (3, 184, 80, False, True, 1),
    (3, 480, 112, True, True, 1),
    (3, 672, 112, True, True, 1),
    (5, 672, 160, True, True, 2),
    (5, 960, 160, True, True, 1),
    (5, 960, 160, True, True, 1),
)
MBV3_SMALL: tuple[tuple[int, int, int, bool, bool, int], ...] = (
    (3, 16, 16, True, False, 2),
    (3, 72, 24, False, False, 2),
    (3, 88, 24, False, False, 1),
    (5, 96, 40, True, True, 2),
    (5, 240, 40, True, True, 1),
    (5, 240, 40, True, True, 1),
    (5, 120, 48, True, True, 1),
    (5, 144, 48, True, True, 1),
    (5, 288, 96, True, True, 2),
    (5, 576, 96, True, True, 1),
    (5, 576, 96, True, True, 1),
)


class MobileNetV3(nn.Module):
    """MobileNetV3 large or small at ``width``: Hardswish, SE gated by Hardsigmoid, Hardswish head."""

    def __init__(self, size: str = "large", width: float = 1.0, num_classes: int = 1000) -> None:
        super().__init__()
        blocks, head = (MBV3_LARGE, 1280) if size == "large" else (MBV3_SMALL, 1024)
        cin = _ch(16 * width)
        layers: list[nn.Module] = [conv_bn(3, cin, 3, 2, act=nn.Hardswish)]
        for k, exp, c, se, hs, s in blocks:
            hidden, cout = _ch(exp * width), _ch(c * width)
            act = nn.Hardswish if hs else nn.ReLU
            layers.append(InvertedBottleneck(cin, hidden, cout, k, s, act, _ch(hidden / 4) if se else 0))
            cin = cout
        last = 6 * cin
        layers.append(conv_bn(cin, last, 1, act=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(last, _ch(head * width)),
            nn.Hardswish(),
            nn.Dropout(0.2),
            nn.Linear(_ch(head * width), num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class MixDepthwise(nn.Module):
    """Inverted residuals (ReLU6, no SE) whose depthwise kernel changes from stage to stage.

    ``stages``: (expansion, channels, blocks, stride, kernel) after a 3x3 stride-2 stem.
    """

    def __init__(
        self, stages: Sequence[Sequence[int]], width: float = 1.0, last: int = 1280, num_classes: int = 1000
    ) -> None:
        super().__init__()
        cin = _ch(32 * width)
        layers: list[nn.Module] = [conv_bn(3, cin, 3, 2, act=nn.ReLU6)]
        for t, c, n, s, k in stages:
            cout = _ch(c * width)
            for j in range(n):
                layers.append(InvertedBottleneck(cin, cin * t, cout, k, s if j == 0 else 1))
                cin = cout
        layers.append(conv_bn(cin, last, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.classifier = Classifier(last, num_classes, 0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


# -- convnext -------------------------------------------------------------------------------


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of an NCHW tensor: permute to NHWC, ``nn.LayerNorm``, permute back."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """7x7 depthwise, LayerNorm, pointwise x4 expand, GELU, pointwise project, layer scale, residual.

    ``linear``: as ConvNeXt's code does, run the norm and pointwise layers as ``nn.Linear`` on NHWC
    (one permute each way); else as 1x1 convolutions on NCHW after :class:`LayerNorm2d`.
    """

    def __init__(self, dim: int, linear: bool = False, layer_scale: float = 1e-6) -> None:
        super().__init__()
        self.linear = linear
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        if linear:
            self.norm: nn.Module = nn.LayerNorm(dim, eps=1e-6)
            self.pw1: nn.Module = nn.Linear(dim, 4 * dim)
            self.pw2: nn.Module = nn.Linear(4 * dim, dim)
            self.gamma = nn.Parameter(torch.full((dim,), layer_scale))
        else:
            self.norm = LayerNorm2d(dim)
            self.pw1 = nn.Conv2d(dim, 4 * dim, 1)
            self.pw2 = nn.Conv2d(4 * dim, dim, 1)
            self.gamma = nn.Parameter(torch.full((dim, 1, 1), layer_scale))
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x)
        if self.linear:
            y = self.pw2(self.act(self.pw1(self.norm(y.permute(0, 2, 3, 1)))))
            return x + (self.gamma * y).permute(0, 3, 1, 2)
        return x + self.gamma * self.pw2(self.act(self.pw1(self.norm(y))))


class ConvNeXt(nn.Module):
    """Patchify stem (4x4 stride 4, LayerNorm), stages of :class:`ConvNeXtBlock`, downsampling by LayerNorm and
    a 2x2 stride-2 convolution."""

    def __init__(
        self,
        dims: Sequence[int] = (40, 80, 160, 320),
        depths: Sequence[int] = (2, 2, 6, 2),
        linear: bool = False,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, dims[0], 4, 4), LayerNorm2d(dims[0])]
        for i, (dim, n) in enumerate(zip(dims, depths)):
            if i > 0:
                layers += [LayerNorm2d(dims[i - 1]), nn.Conv2d(dims[i - 1], dim, 2, 2)]
            layers += [ConvNeXtBlock(dim, linear) for _ in range(n)]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(torch.flatten(self.pool(self.features(x)), 1)))


# -- wide -----------------------------------------------------------------------------------


class PreActBlock(nn.Module):
    """WideResNet's basic block: BN-ReLU-3x3 (stride)-BN-ReLU-3x3, 1x1 projection of the activated input."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = self.relu1(self.bn1(x))
        y = self.conv2(self.relu2(self.bn2(self.conv1(o))))
        return y + (x if self.shortcut is None else self.shortcut(o))


class WideResNet(nn.Module):
    """WRN-(6n+4)-k: a 3x3 stride-2 stem and maxpool, three groups of ``n`` blocks 16k, 32k, 64k wide.

    ``first_stride`` 2 also downsamples the first group (for the widest nets).
    """

    def __init__(self, n: int = 1, k: int = 4, first_stride: int = 1, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_bn(3, 16, 3, 2), nn.MaxPool2d(3, 2, 1)]
        cin = 16
        for i, c in enumerate((16 * k, 32 * k, 64 * k)):
            for j in range(n):
                layers.append(PreActBlock(cin, c, (first_stride if i == 0 else 2) if j == 0 else 1))
                cin = c
        layers += [nn.BatchNorm2d(cin), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.classifier = Classifier(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class WideVGG(nn.Module):
    """A shallow, very wide plain net: 3x3 stride-2 stem, then (maxpool, one wide 3x3 conv) per width."""

    def __init__(self, widths: Sequence[int] = (160, 320, 640, 1024), num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_bn(3, 64, 3, 2)]
        cin = 64
        for c in widths:
            layers += [nn.MaxPool2d(2, 2), conv_bn(cin, c, 3)]
            cin = c
        self.features = nn.Sequential(*layers)
        self.classifier = Classifier(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


# -- vit ------------------------------------------------------------------------------------


class Attention(nn.Module):
    """Multi-head self-attention by hand: one qkv ``nn.Linear``, matmul, softmax, matmul, projection."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.matmul(q * self.scale, k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj(torch.matmul(attn, v).transpose(1, 2).reshape(b, n, d))


class TransformerBlock(nn.Module):
    """Pre-norm transformer layer: x + attn(LN(x)), then x + MLP(LN(x)) with GELU."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """ViT: conv patch embedding, learned position embedding (sized for ``image_size``), optional class
    token, pre-norm layers, final LayerNorm, mean of the tokens (or the class token), linear head."""

    needs_resolution = True  # cases() passes image_size: the position embedding depends on it

    def __init__(
        self,
        image_size: int = 224,
        patch: int = 16,
        dim: int = 192,
        depth: int = 6,
        heads: int = 3,
        mlp_ratio: float = 4.0,
        cls_token: bool = False,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        tokens = (image_size // patch) ** 2
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02) if cls_token else None
        self.pos_embed = nn.Parameter(torch.randn(1, tokens + int(cls_token), dim) * 0.02)
        self.blocks = nn.Sequential(*(TransformerBlock(dim, heads, mlp_ratio) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1)
        x = self.norm(self.blocks(x + self.pos_embed))
        return self.head(x[:, 0] if self.cls_token is not None else x.mean(1))


# -- the set --------------------------------------------------------------------------------

MIXDW_A: tuple[tuple[int, ...], ...] = (
    (1, 16, 1, 1, 3),
    (6, 24, 2, 2, 5),
    (6, 32, 3, 2, 7),
    (6, 64, 3, 2, 3),
    (6, 96, 2, 1, 5),
    (6, 160, 2, 2, 7),
    (6, 320, 1, 1, 3),
)
MIXDW_B: tuple[tuple[int, ...], ...] = (
    (1, 16, 1, 1, 3),
    (4, 24, 3, 2, 7),
    (4, 40, 3, 2, 7),
    (4, 80, 4, 2, 5),
    (4, 112, 3, 1, 5),
    (4, 192, 4, 2, 3),
    (4, 320, 1, 1, 3),
)

# (variant, family, class, kwargs)
VARIANTS: tuple[tuple[str, str, type[nn.Module], dict[str, Any]], ...] = (
    ("inception-s", "inception", InceptionNet, {"width": 0.5, "depth4": 3}),
    ("inception-m", "inception", InceptionNet, {"width": 0.75, "double3": True}),
    ("inception-l", "inception", InceptionNet, {"width": 1.0}),
    ("fire-s", "fire", SqueezeNet, {"version": "1.1"}),
    ("fire-m", "fire", SqueezeNet, {"version": "1.0", "bypass": True}),
    ("fire-l", "fire", SqueezeNet, {"version": "1.1", "width": 2.0}),
    ("dense-s", "dense", DenseNet, {"growth": 12, "blocks": [6, 12, 24, 16], "init": 24}),
    ("dense-m", "dense", DenseNet, {"growth": 24, "blocks": [6, 12, 24, 16], "init": 48}),
    ("dense-w", "dense", DenseNet, {"growth": 32, "blocks": [4, 8, 12, 8], "init": 64}),
    ("resnext-s", "resnext", ResNeXt, {"depths": [2, 2, 2, 2], "out0": 128, "groups": 8, "width_per_group": 8}),
    ("resnext-m", "resnext", ResNeXt, {"depths": [2, 2, 2, 2], "out0": 192, "groups": 32, "width_per_group": 3}),
    ("regnetx-400mf", "resnext", RegNet, {"depths": [1, 2, 7, 12], "widths": [32, 64, 160, 384], "group_width": 16}),
    (
        "regnety-400mf",
        "resnext",
        RegNet,
        {"depths": [1, 3, 6, 6], "widths": [48, 104, 208, 440], "group_width": 8, "se": True},
    ),
    ("effnet-s", "effnet", EfficientNet, {"width": 0.75, "depth": 0.8}),
    ("effnet-b0", "effnet", EfficientNet, {}),
    ("effnet-l", "effnet", EfficientNet, {"width": 1.2, "depth": 1.4}),
    ("mbv3-small", "mbv3", MobileNetV3, {"size": "small"}),
    ("mbv3-large-w0.75", "mbv3", MobileNetV3, {"size": "large", "width": 0.75}),
    ("mbv3-large", "mbv3", MobileNetV3, {"size": "large"}),
    ("mixdw-a", "mixdw", MixDepthwise, {"stages": [list(s) for s in MIXDW_A]}),
    ("mixdw-b", "mixdw", MixDepthwise, {"stages": [list(s) for s in MIXDW_B], "width": 0.75}),
    ("convnext-atto", "convnext", ConvNeXt, {"dims": [40, 80, 160, 320], "depths": [2, 2, 6, 2]}),
    ("convnext-femto", "convnext", ConvNeXt, {"dims": [48, 96, 192, 384], "depths": [2, 2, 6, 2], "linear": True}),
    ("convnext-pico", "convnext", ConvNeXt, {"dims": [64, 128, 256, 512], "depths": [2, 2, 6, 2]}),
    ("wrn-10-4", "wide", WideResNet, {"n": 1, "k": 4}),
    ("wrn-16-6", "wide", WideResNet, {"n": 2, "k": 6, "first_stride": 2}),
    ("vgg-wide", "wide", WideVGG, {"widths": [160, 320, 640, 1024]}),
    ("vit-ti", "vit", VisionTransformer, {"dim": 192, "depth": 8, "heads": 3}),
    ("vit-m-cls", "vit", VisionTransformer, {"dim": 256, "depth": 6, "heads": 4, "cls_token": True}),
    ("vit-s4", "vit", VisionTransformer, {"dim": 384, "depth": 4, "heads": 6}),
)


def init_weights(model: nn.Module) -> nn.Module:
    """Re-initialise convolutions to keep activations of order 1 through the depth (Kaiming normal, fan in).

    With torch's default init, each convolution shrinks the signal about threefold and nothing (batch norm
    in eval mode is an identity) restores it: deep nets such as ``effnet`` end with features near 1e-13,
    a few layers from the subnormal numbers that slow CPUs down and would distort the timings.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


def _fresh(cls: type[nn.Module], **kwargs: Any) -> nn.Module:
    """A new ``cls(**kwargs)`` with :func:`init_weights`, in eval mode."""
    return init_weights(cls(**kwargs)).eval()


def cases(resolutions: Sequence[int] = RESOLUTIONS, families: Sequence[str] | None = None) -> list[Case]:
    """The model set: ``(name, family, build, kwargs, input_shape)``, one per variant and resolution.

    ``name`` is ``<variant>@<resolution>`` (unique); ``build(**kwargs)`` returns a fresh model in eval mode.

    Args:
        resolutions: Input sizes R (inputs are ``[1, 3, R, R]``); every model works at 96 to 224.
        families: Keep these families only (default: all of :data:`FAMILIES`).

    Raises:
        ValueError: An unknown family.
    """
    wanted = FAMILIES if families is None else tuple(families)
    unknown = [f for f in wanted if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown families {unknown}; choose from {list(FAMILIES)}")
    out: list[Case] = []
    for variant, family, cls, kwargs in VARIANTS:
        if family not in wanted:
            continue
        build = functools.partial(_fresh, cls)
        for r in resolutions:
            kw = {**kwargs, "image_size": r} if getattr(cls, "needs_resolution", False) else dict(kwargs)
            out.append((f"{variant}@{r}", family, build, kw, [1, 3, r, r]))
    return out
