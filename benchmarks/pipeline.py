"""Pipeline speed: export, metering and prediction; and the timing method's own overhead.

Run:  python benchmarks/pipeline.py [--times 100]
Prints a table and rewrites the "pipeline" section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "examples" / "resnet18"))

from results_md import machine_line, update_section  # noqa: E402

from mmt_nas.build.export import export_to_mnn  # noqa: E402
from mmt_nas.build.generate import generate_ops_list  # noqa: E402
from mmt_nas.device.meter import meter_ops  # noqa: E402
from mmt_nas.device.timing import mnn_runtime, quiet_native_output, time_model  # noqa: E402
from mmt_nas.parser import predict_latency  # noqa: E402
from mmt_nas.table.table import RuntimeSettings  # noqa: E402

SPACE = """
torch.nn:
  Conv2d:
    in_channels: [16, 32]
    out_channels: [16, 32, 64]
    kernel_size: [1, 3, 5]
    padding: [0]
    input_shape: [[1, 16, 28, 28], [1, 32, 28, 28]]
  BatchNorm2d:
    num_features: [16, 32, 64]
    input_shape: [[1, 16, 28, 28], [1, 32, 28, 28], [1, 64, 28, 28]]
  ReLU:
    no_params: true
    input_shape: [[1, 16, 28, 28], [1, 32, 28, 28], [1, 64, 28, 28]]
"""


def module_api_ms(path: Path, shape: list[int], n: int) -> float:
    """Median per-run time through MNN's nn module API (forward + read), for comparison."""
    mnn = mnn_runtime()
    with quiet_native_output():
        rt = mnn.nn.create_runtime_manager(({"backend": "CPU", "precision": "high", "numThread": 1},))
        net = mnn.nn.load_module_from_file(str(path), ["input"], ["output"], runtime_manager=rt)
    x = mnn.expr.placeholder(shape, mnn.expr.NCHW)
    x.write(np.random.rand(*shape).astype(np.float32))
    for _ in range(50):
        net.forward(x).read()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        net.forward(x).read()
        samples.append(time.perf_counter_ns() - t0)
    return statistics.median(samples) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--times", type=int, default=100)
    args = ap.parse_args()
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "ops.yaml").write_text(SPACE)
        t0 = time.perf_counter()
        res = generate_ops_list(work / "ops.yaml", work / "ops")
        gen_s = time.perf_counter() - t0
        n_ops = len(res.exported)
        rows.append(("ops exported (generic conv/BN/ReLU space)", f"{n_ops}"))
        rows.append(("seconds per exported op (build, dry run, ONNX, MNN)", f"{gen_s / n_ops:.3f}"))
        t0 = time.perf_counter()
        meter_ops(work / "ops", times=args.times)
        meter_s = time.perf_counter() - t0
        rows.append((f"ops metered per minute at times={args.times}", f"{n_ops / meter_s * 60:.0f}"))

        # the timing method: cost of the call path, from a trivial op
        import torch

        export_to_mnn(torch.nn.ReLU(), [1, 8], work / "trivial.mnn")
        export_to_mnn(torch.nn.ReLU(), [1, 32, 28, 28], work / "relu.mnn")
        settings = RuntimeSettings()
        for name, path, shape in (
            ("ReLU 1x8 (trivial)", work / "trivial.mnn", [1, 8]),
            ("ReLU 1x32x28x28", work / "relu.mnn", [1, 32, 28, 28]),
        ):
            ours = time_model(path, 2000, settings=settings).median_ms
            theirs = module_api_ms(path, shape, 2000)
            rows.append((f"{name}: runSession per run, us (our method)", f"{ours * 1e3:.2f}"))
            rows.append((f"{name}: nn module forward+read per run, us", f"{theirs * 1e3:.2f}"))

        # prediction on ResNet-18 from the demo's table
        from resnet18 import ResNet18

        generate_ops_list(ROOT / "examples" / "resnet18" / "ops.yaml", work / "r18")
        meter_ops(work / "r18", times=10)
        model = ResNet18().eval()
        predict_latency(model, work / "r18", [1, 3, 224, 224])  # loads and caches the table
        walls = []
        for _ in range(20):
            t0 = time.perf_counter()
            predict_latency(model, work / "r18", [1, 3, 224, 224])
            walls.append(time.perf_counter() - t0)
        rows.append(
            (
                "predict_latency on ResNet-18, table loaded, median ms (target < 20)",
                f"{statistics.median(walls) * 1e3:.1f}",
            )
        )

    width = max(len(k) for k, _ in rows)
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    update_section(
        "pipeline",
        f"## Pipeline speed (`benchmarks/pipeline.py`)\n\nMachine: {machine_line()}. MNN CPU backend, 1 thread, "
        f"high precision.\n\n| measure | value |\n| --- | --- |\n{table}\n\n"
        "Timing method: each run is one `Interpreter.runSession` call timed with `perf_counter_ns`. The trivial "
        "op's time is an upper bound on the call path's own cost; compare it with a 10 us op to see the share it "
        "can take.\n",
    )


if __name__ == "__main__":
    main()
