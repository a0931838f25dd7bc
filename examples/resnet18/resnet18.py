"""A ResNet-18 built from a custom block, as in the MMT README.

The block overrides ``__repr__`` with its arguments: the latency table tells ops
apart by class, ``repr()`` and input shape, so every argument that changes the
op must appear in the repr.
"""

from __future__ import annotations

import torch
from torch import nn


class ResNetBasicBlock(nn.Module):
    """Two kxk convolutions with batch norm, a shortcut and a residual addition."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, kernel: int = 3) -> None:
        super().__init__()
        self.name = f"ResNetBasicBlock-{in_channels}-{out_channels}-{stride}-{kernel}-"
        pad = kernel // 2
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel, stride, pad, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel, 1, pad, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))

    def __repr__(self) -> str:
        return self.name


class ResNet18(nn.Module):
    """ResNet-18 (torchvision's layout) for 224x224 inputs."""

    def __init__(self, num_classes: int = 1000, kernel: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        blocks = []
        in_ch = 64
        for out_ch, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [ResNetBasicBlock(in_ch, out_ch, stride, kernel), ResNetBasicBlock(out_ch, out_ch, 1, kernel)]
            in_ch = out_ch
        self.layers = nn.Sequential(*blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.avgpool(self.layers(x))
        return self.fc(torch.flatten(x, 1))
