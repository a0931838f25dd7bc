"""Quick start: build a latency table for your own model, predict it, and check the prediction.

Run from the repository's root:  python examples/quickstart.py  [--times 100] [--work-dir quickstart_ops]

It uses the three calls of the MMT tool (generate_ops_list, meter_ops, predict_latency),
with the op space written from the model itself (space_from_model).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from mmt_nas.build.generate import generate_ops_list
from mmt_nas.build.measure import measure_latency
from mmt_nas.device.meter import meter_ops
from mmt_nas.parser import predict_latency
from mmt_nas.space.describe import space_from_model
from mmt_nas.space.opspace import dump_space


def small_mobilenet(width: int = 16) -> nn.Module:
    """A small depthwise-separable network for 1x3x64x64 inputs."""

    def dw_sep(cin: int, cout: int, stride: int) -> list[nn.Module]:
        return [
            nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
            nn.BatchNorm2d(cin),
            nn.ReLU6(),
            nn.Conv2d(cin, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(),
        ]

    return nn.Sequential(
        nn.Conv2d(3, width, 3, 2, 1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU6(),
        *dw_sep(width, 2 * width, 1),
        *dw_sep(2 * width, 4 * width, 2),
        *dw_sep(4 * width, 4 * width, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * width, 10),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--times", type=int, default=100, help="timed runs per op and for the model")
    parser.add_argument("--work-dir", default="quickstart_ops")
    args = parser.parse_args()
    work = Path(args.work_dir)
    shape = [1, 3, 64, 64]
    model = small_mobilenet().eval()

    dump_space(space_from_model(model, shape), work / "ops.yaml")  # 1. the op space, in YAML
    result = generate_ops_list(work / "ops.yaml", work / "ops")  # 2. every op -> .mnn
    print("generate:", result.summary())
    table = meter_ops(work / "ops", times=args.times)  # 3. time them with MNN
    print(f"meter: {len(table)} ops on {table.device['cpu_model']}")
    pred = predict_latency(model, work / "ops", shape)  # 4. predict the model
    print(pred.explain())
    measured = measure_latency(model, shape, times=args.times)  # 5. the truth, end to end
    error = (float(pred) - measured.median_ms) / measured.median_ms
    print(f"predicted {float(pred):.3f} ms, measured {measured.median_ms:.3f} ms, error {error:+.1%}")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
