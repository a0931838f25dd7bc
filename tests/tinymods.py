"""Tiny modules and models the tests build op spaces and tables from."""

from __future__ import annotations

import torch
from torch import nn


class TinyBlock(nn.Module):
    """A conv + ReLU with a residual addition; its repr carries its arguments."""

    def __init__(self, channels: int, kernel: int = 3) -> None:
        super().__init__()
        self.channels, self.kernel = channels, kernel
        self.conv = nn.Conv2d(channels, channels, kernel, padding=kernel // 2)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x)) + x

    def __repr__(self) -> str:
        return f"TinyBlock-{self.channels}-{self.kernel}"


class SameRepr(nn.Module):
    """Breaks the MMT contract: its repr ignores its argument."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

    def __repr__(self) -> str:
        return "SameRepr"


class NotExportable(nn.Module):
    """Runs in eager torch but has no ONNX export (FFT)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.fft(x).real


class NeedsItem(nn.Module):
    """Reads a tensor value in forward, so it cannot run on meta tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x) * float(x.abs().sum().item() >= 0)


class TinyNet(nn.Module):
    """stem conv, ReLU, a TinyBlock, pooling, flatten and a linear head; input 1x3x16x16."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.relu = nn.ReLU()
        self.block = TinyBlock(width)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(self.relu(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def conv_stack(width: int = 24, depth: int = 12) -> nn.Module:
    """A stem conv from 3 channels and ``depth`` width x width 3x3 convs: one op key repeated ``depth`` times."""
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), *[nn.Conv2d(width, width, 3, padding=1) for _ in range(depth)]
    ).eval()


def chain(blocks: int) -> nn.Module:
    """A net made of the tiny table's ops only (no glue code between modules): deeper is slower."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), *[TinyBlock(8) for _ in range(blocks)], nn.AdaptiveAvgPool2d(1)
    ).eval()
