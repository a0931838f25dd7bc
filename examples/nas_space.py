"""A MobileNetV2-style search space, the digits data, and the latency table that covers the space.

Shared by ``examples/optuna_search.py``, ``examples/darts_latency.py`` and
``benchmarks/prediction_speed.py``.

The latency table holds whole blocks (:class:`ConvBNAct`, :class:`MBBlock`, :class:`Head`),
the way Once-for-All's latency table does: every block a candidate can contain is metered
once, with its fusions and residual addition inside, and a candidate's latency is the sum
of its blocks. Each block's ``repr()`` names all of its arguments (the rule for table keys),
so ``predictor.predict(net, shape)`` counts each block as one op, and the same sum can be
had from the architecture alone (:meth:`Space.describe` + ``KeyBuilder``) without building
the network.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

MODULE = "nas_space"  # how the op space names this file (it must be importable under this name)


class ConvBNAct(nn.Module):
    """Convolution, batch norm and ReLU6 (MNN runs them as one fused op)."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1) -> None:
        super().__init__()
        self.cin, self.cout, self.kernel, self.stride = cin, cout, kernel, stride
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU6()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def __repr__(self) -> str:
        return f"ConvBNAct({self.cin}, {self.cout}, kernel={self.kernel}, stride={self.stride})"


class MBBlock(nn.Module):
    """MobileNetV2's inverted residual: 1x1 expansion, kxk depthwise, 1x1 projection, residual if shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int, kernel: int) -> None:
        super().__init__()
        self.cin, self.cout, self.stride, self.expansion, self.kernel = cin, cout, stride, expansion, kernel
        hidden = cin * expansion
        self.body = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            nn.Conv2d(hidden, hidden, kernel, stride, kernel // 2, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.residual else out

    def __repr__(self) -> str:
        return (
            f"MBBlock({self.cin}, {self.cout}, stride={self.stride}, expansion={self.expansion}, kernel={self.kernel})"
        )


class Head(nn.Module):
    """1x1 convolution to ``hidden`` channels, global pooling and the classifier."""

    def __init__(self, cin: int, hidden: int, num_classes: int) -> None:
        super().__init__()
        self.cin, self.hidden, self.num_classes = cin, hidden, num_classes
        self.conv = ConvBNAct(cin, hidden, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.conv(x)), 1))

    def __repr__(self) -> str:
        return f"Head({self.cin}, {self.hidden}, {self.num_classes})"


class SearchNet(nn.Module):
    """A network of the space: stem, the chosen blocks, head; its forward only chains them."""

    def __init__(self, blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


@dataclass(frozen=True)
class Position:
    """One block slot of the space: its channels, stride and input shape."""

    stage: int
    index: int
    cin: int
    cout: int
    stride: int
    input_shape: tuple[int, ...]


@dataclass(frozen=True)
class Space:
    """A MobileNetV2-style space: per stage a depth choice, per block a kernel and an expansion.

    Attributes:
        in_channels: Input channels.
        resolution: Input height and width.
        stem: Stem channels.
        stem_stride: Stem stride.
        stages: ``(channels, first block's stride, depth choices)`` per stage.
        kernels: Depthwise kernel choices.
        expansions: Expansion-ratio choices.
        head: Channels of the head's 1x1 convolution.
        num_classes: Classifier outputs.
    """

    in_channels: int = 1
    resolution: int = 16
    stem: int = 16
    stem_stride: int = 1
    stages: tuple[tuple[int, int, tuple[int, ...]], ...] = ((24, 2, (1, 2, 3)), (40, 2, (1, 2, 3)), (64, 1, (1, 2)))
    kernels: tuple[int, ...] = (3, 5, 7)
    expansions: tuple[int, ...] = (3, 6)
    head: int = 128
    num_classes: int = 10

    @property
    def input_shape(self) -> list[int]:
        return [1, self.in_channels, self.resolution, self.resolution]

    def positions(self, depths: Sequence[int]) -> list[Position]:
        """The block slots of a network with these stage depths, with their input shapes."""
        size = -(-self.resolution // self.stem_stride)
        cin, out = self.stem, []
        for s, ((cout, stride, _), depth) in enumerate(zip(self.stages, depths)):
            for i in range(depth):
                st = stride if i == 0 else 1
                out.append(Position(s, i, cin, cout, st, (1, cin, size, size)))
                size = -(-size // st)
                cin = cout
        return out

    def _head_shape(self) -> tuple[int, ...]:
        last = self.positions([1] * len(self.stages))[-1]
        size = -(-last.input_shape[2] // last.stride)
        return (1, last.cout, size, size)

    def sample(self, rng: random.Random) -> dict[str, list[int]]:
        """A random architecture: ``{"depths", "kernels", "expansions"}`` (one kernel/expansion per block)."""
        depths = [rng.choice(d) for _, _, d in self.stages]
        n = sum(depths)
        return {
            "depths": depths,
            "kernels": [rng.choice(self.kernels) for _ in range(n)],
            "expansions": [rng.choice(self.expansions) for _ in range(n)],
        }

    def suggest(self, trial: Any) -> dict[str, list[int]]:
        """An architecture from an Optuna trial (fixed-size: every slot is sampled; depths pick the used ones)."""
        depths, kernels, expansions = [], [], []
        for s, (_, _, choices) in enumerate(self.stages):
            depths.append(trial.suggest_categorical(f"depth{s}", list(choices)))
            for i in range(max(choices)):
                k = trial.suggest_categorical(f"kernel{s}_{i}", list(self.kernels))
                e = trial.suggest_categorical(f"expansion{s}_{i}", list(self.expansions))
                if i < depths[-1]:
                    kernels.append(k)
                    expansions.append(e)
        return {"depths": depths, "kernels": kernels, "expansions": expansions}

    def describe(self, arch: Mapping[str, Sequence[int]]) -> list[tuple[str, str, dict[str, int], tuple[int, ...]]]:
        """The architecture's blocks as op descriptions ``(module, class, kwargs, input_shape)``."""
        out = [
            (
                MODULE,
                "ConvBNAct",
                {"cin": self.in_channels, "cout": self.stem, "kernel": 3, "stride": self.stem_stride},
                tuple(self.input_shape),
            )
        ]
        for p, k, e in zip(self.positions(arch["depths"]), arch["kernels"], arch["expansions"]):
            out.append(
                (
                    MODULE,
                    "MBBlock",
                    {"cin": p.cin, "cout": p.cout, "stride": p.stride, "expansion": e, "kernel": k},
                    p.input_shape,
                )
            )
        out.append(
            (
                MODULE,
                "Head",
                {"cin": self.stages[-1][0], "hidden": self.head, "num_classes": self.num_classes},
                self._head_shape(),
            )
        )
        return out

    def build(self, arch: Mapping[str, Sequence[int]]) -> SearchNet:
        """The network of an architecture (eval mode)."""
        classes = {"ConvBNAct": ConvBNAct, "MBBlock": MBBlock, "Head": Head}
        return SearchNet([classes[c](**kw) for _, c, kw, _ in self.describe(arch)]).eval()

    def op_space(self) -> dict[str, Any]:
        """The op space (``mmt-nas generate`` format) holding every block any architecture can contain."""
        mb = []
        for p in self.positions([max(d) for _, _, d in self.stages]):
            if p.index <= 1:  # a stage's first block, and the one shape all its later blocks share
                mb.append(
                    {
                        "cin": [p.cin],
                        "cout": [p.cout],
                        "stride": [p.stride],
                        "expansion": list(self.expansions),
                        "kernel": list(self.kernels),
                        "input_shape": [list(p.input_shape)],
                    }
                )
        stem, *_, head = self.describe(self.sample(random.Random(0)))
        return {
            MODULE: {
                "ConvBNAct": {k: [v] for k, v in stem[2].items()} | {"input_shape": [list(stem[3])]},
                "MBBlock": mb,
                "Head": {k: [v] for k, v in head[2].items()} | {"input_shape": [list(head[3])]},
            }
        }


SPACES = {
    "digits": Space(),
    # MobileNetV2's layout at 224x224 with kernel, expansion and depth searched per stage
    "mobilenetv2": Space(
        in_channels=3,
        resolution=224,
        stem=32,
        stem_stride=2,
        stages=(
            (16, 1, (1,)),
            (24, 2, (2, 3, 4)),
            (32, 2, (2, 3, 4)),
            (64, 2, (2, 3, 4)),
            (96, 1, (2, 3, 4)),
            (160, 2, (2, 3, 4)),
            (320, 1, (1,)),
        ),
        head=1280,
        num_classes=1000,
    ),
}


def build_net(
    depths: Sequence[int], kernels: Sequence[int], expansions: Sequence[int], space: str = "digits"
) -> SearchNet:
    """Build a network of a named space: the ``file.py:callable`` a model list for ``mmt-nas report`` names."""
    return SPACES[space].build({"depths": list(depths), "kernels": list(kernels), "expansions": list(expansions)})


def build_table(space: Space, work_dir: Path, times: int = 30) -> Path:
    """Generate and meter every block of ``space`` into ``work_dir/ops`` (reuses what is already there)."""
    import yaml

    from mmt_nas.build.generate import generate_ops_list
    from mmt_nas.device.meter import meter_ops

    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "space.yaml").write_text(yaml.safe_dump(space.op_space(), sort_keys=False))
    result = generate_ops_list(work_dir / "space.yaml", work_dir / "ops", show_progress=False)
    if result.failed:
        raise RuntimeError(f"some blocks failed to export: {result.failed}")
    meter_ops(work_dir / "ops", times=times, show_progress=False)
    return work_dir / "ops"


def digits(size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled 8x8 digits, upscaled to ``size`` (bilinear): train x, train y, val x, val y (75/25)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    y = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    cut = len(y) * 3 // 4
    return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)``, in eval mode."""
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def train(model: nn.Module, data: tuple[torch.Tensor, ...], epochs: int, lr: float = 0.003, seed: int = 0) -> float:
    """Train briefly with Adam (batch 64); return the validation accuracy."""
    xt, yt, xv, yv = data
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(yt)).split(64):
            opt.zero_grad()
            F.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    return accuracy(model, xv, yv)
