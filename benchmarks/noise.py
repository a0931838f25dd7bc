"""Run-to-run noise of metering, today's protocol against shuffled rounds, quiet and under a bounded load.

The same 72 ops (the op space of ``benchmarks/scale_out.py``) are metered twice with each protocol, the
protocols alternated (old, new, old, new), once on a quiet machine and once while a synthetic load (a numpy
loop copying a 64 MB buffer, one process on the other core) runs for the middle third of every metering run,
started and stopped by this script. Per op, the run-to-run difference is ``|a - b| / mean(a, b)`` of the two
tables' medians; the script prints its median and p90, the share of ops more than 10% apart, the tables'
own noise floor (new protocol) and the wall time of each protocol.

- old: ``meter_ops(rounds=1, sentinel_every=0)``: every op once, in folder order (the protocol before);
- new: ``meter_ops()`` with its defaults: two rounds, each in its own seeded shuffled order, and the sentinel.

The per-model half does the same with 8 CNNs of ``examples/zoo`` measured end to end, each protocol twice
(alternated), quiet and under the same load for the middle third:

- old: every model once in turn, ``time_model`` (the bare session run), 100 runs each;
- new: ``measure_interleaved`` with its defaults (3 interleaved rounds, each model loaded afresh each round,
  the input written and the output read every run), 100 runs each over the rounds.

Run:  python benchmarks/noise.py [--times 1000] [--model-times 100]   (about 8 minutes)
Prints a table and rewrites the "noise" section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "examples" / "zoo"))

import nas_zoo  # noqa: E402
from results_md import machine_line, update_section  # noqa: E402
from scale_out import SPACE  # noqa: E402

from mmt_nas.build.export import export_to_mnn  # noqa: E402
from mmt_nas.build.generate import generate_ops_list  # noqa: E402
from mmt_nas.device.endtoend import measure_interleaved  # noqa: E402
from mmt_nas.device.meter import meter_ops  # noqa: E402
from mmt_nas.device.state import DeviceActivity  # noqa: E402
from mmt_nas.device.timing import time_model  # noqa: E402
from mmt_nas.table.table import LatencyTable  # noqa: E402

_LOAD = (
    "import os, numpy as np\n"
    "os.sched_setaffinity(0, {os.cpu_count() - 1}) if hasattr(os, 'sched_setaffinity') else None\n"
    "a = np.ones(8_000_000)\n"
    "while True:\n"
    "    a = a.copy()\n"
)
MODELS = (
    "resnet18-w0.5", "mbv2-w1.0", "mbv2-sample0@160", "mbv2-sample1@160",
    "vgg11-w0.5", "shufflenetv2-like", "mbv2-se-w1.0", "mobilenetv1-w0.75",
)  # fmt: skip
PROTOCOLS = {
    "old (1 round, folder order, no sentinel)": {"rounds": 1, "sentinel_every": 0},
    "new (defaults: 2 shuffled rounds, sentinel)": {},
}


def under_load(job: Callable[[], Any], load: tuple[float, float] | None) -> float:
    """Run ``job``; with ``load=(start, stop)`` seconds, run the synthetic load in that window. Wall seconds.

    The load process is started (and its numpy imported) before metering, paused with SIGSTOP, and let run
    with SIGCONT for the window only, so the window is exact.
    """
    procs: list[subprocess.Popen[bytes]] = []
    if load is not None:
        procs.append(subprocess.Popen([sys.executable, "-c", _LOAD]))
        time.sleep(1.0)  # numpy imported, buffer allocated
        procs[0].send_signal(signal.SIGSTOP)

    def start() -> None:
        for p in procs:
            p.send_signal(signal.SIGCONT)

    def stop() -> None:  # killed, not waited for here: a waited child's CPU time would count as the meter's own
        for p in procs:
            p.kill()

    timers = [] if load is None else [threading.Timer(load[0], start), threading.Timer(load[1], stop)]
    t0 = time.perf_counter()
    for t in timers:
        t.start()
    try:
        job()
    finally:
        for t in timers:
            t.cancel()
        stop()
        for p in procs:
            p.wait()
    return time.perf_counter() - t0


def diffs(a: LatencyTable, b: LatencyTable) -> list[float]:
    out = []
    for e in a:
        other = b.get(e.op.key)
        assert other is not None, e.op.key
        mean = (e.latency_ms + other.latency_ms) / 2
        out.append(abs(e.latency_ms - other.latency_ms) / mean if mean > 0 else 0.0)
    return sorted(out)


def model_protocols(files: dict[str, Path], times: int) -> dict[str, Callable[[], dict[str, float]]]:
    """The two ways of measuring the models: name -> a call returning model -> median ms."""

    def old() -> dict[str, float]:
        return {name: time_model(path, times).median_ms for name, path in files.items()}

    def new() -> dict[str, float]:
        return {name: r.latency.median_ms for name, r in measure_interleaved(files, times).items()}

    return {
        "old (one after another, 1 pass, bare session run)": old,
        "new (defaults: 3 interleaved rounds, input written, output read)": new,
    }


def spread(a: dict[str, float], b: dict[str, float]) -> list[float]:
    return sorted(abs(a[k] - b[k]) / ((a[k] + b[k]) / 2) for k in a)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--times", type=int, default=1000, help="timed runs per op (split over the rounds)")
    ap.add_argument("--model-times", type=int, default=100, help="timed runs per model (split over the rounds)")
    args = ap.parse_args()
    rows, model_rows = [], []
    walls: dict[str, list[float]] = {name: [] for name in PROTOCOLS}
    model_walls: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="mmt_nas_noise_") as tmp:
        work = Path(tmp)
        (work / "ops.yaml").write_text(SPACE)
        generate_ops_list(work / "ops.yaml", work / "ops", show_progress=False)
        ops = work / "ops"
        cases = {c[0]: c for c in nas_zoo.cases()}
        files = {}
        for i, name in enumerate(MODELS):
            _, build, kwargs, shape = cases[name]
            files[name] = work / f"model-{i}.mnn"
            export_to_mnn(build(**kwargs).eval(), shape, files[name])
        by_model = model_protocols(files, args.model_times)
        model_walls = {name: [] for name in by_model}
        quiet_wall: dict[str, float] = {}
        for condition in ("quiet", "load"):
            tables: dict[str, list[LatencyTable]] = {name: [] for name in PROTOCOLS}
            for rep in range(2):
                for name, kwargs in PROTOCOLS.items():
                    out = work / f"{condition}-{rep}-{len(tables[name])}-{kwargs.get('rounds', 2)}.json"
                    window = None
                    if condition == "load":
                        length = quiet_wall[name]
                        window = (length / 3, 2 * length / 3)

                    def job(out: Path = out, kwargs: dict[str, int] = kwargs) -> None:
                        meter_ops(ops, args.times, output=out, show_progress=False, **kwargs)

                    wall = under_load(job, window)
                    walls[name].append(wall)
                    if condition == "quiet":
                        quiet_wall[name] = max(quiet_wall.get(name, 0.0), wall)
                    tables[name].append(LatencyTable.load(out))
                    print(f"{condition} ops {name} run {rep + 1}: {wall:.1f} s", flush=True)
            for name in PROTOCOLS:
                a, b = tables[name]
                d = diffs(a, b)
                floors = [f for t in (a, b) if (f := t.noise_floor()) is not None]
                floor = (
                    f"{statistics.median(f.median_pct for f in floors):.1f}% / "
                    f"{statistics.median(f.p90_pct for f in floors):.1f}%"
                    if floors
                    else "-"
                )
                busy = [DeviceActivity.from_dict(t.timing.get("device_state")).others_share for t in (a, b)]
                others = "/".join(f"{x:.0%}" for x in busy if x is not None) or "-"
                rows.append(
                    f"| {condition} | {name} | {statistics.median(d):.1%} | {d[int(0.9 * (len(d) - 1))]:.1%} | "
                    f"{sum(x > 0.10 for x in d) / len(d):.0%} | {floor} | {others} | "
                    f"{statistics.median([w for w in walls[name]]):.1f} |"
                )
            measured: dict[str, list[dict[str, float]]] = {name: [] for name in by_model}
            for rep in range(2):
                for name, measure in by_model.items():
                    key = f"model:{name}"
                    window = None
                    if condition == "load":
                        window = (quiet_wall[key] / 3, 2 * quiet_wall[key] / 3)
                    got: dict[str, float] = {}
                    wall = under_load(lambda got=got, measure=measure: got.update(measure()), window)
                    model_walls[name].append(wall)
                    if condition == "quiet":
                        quiet_wall[key] = max(quiet_wall.get(key, 0.0), wall)
                    measured[name].append(got)
                    print(f"{condition} models {name} run {rep + 1}: {wall:.1f} s", flush=True)
            for name in by_model:
                d = spread(*measured[name])
                model_rows.append(
                    f"| {condition} | {name} | {statistics.median(d):.1%} | {d[-1]:.1%} | "
                    f"{sum(x > 0.02 for x in d)} of {len(d)} | {statistics.median(model_walls[name]):.1f} |"
                )
        n = len(tables[next(iter(PROTOCOLS))][0])
    old_name, new_name = PROTOCOLS
    cost = statistics.median(walls[new_name]) / statistics.median(walls[old_name])
    old_m, new_m = model_walls
    model_cost = statistics.median(model_walls[new_m]) / statistics.median(model_walls[old_m])
    body = (
        f"## Metering noise, old protocol vs shuffled rounds (`benchmarks/noise.py`)\n\nMachine: {machine_line()}. "
        f"{n} ops (conv, BN, ReLU; the op space of `benchmarks/scale_out.py`), times={args.times}, MNN CPU, 1 "
        "thread. Each protocol metered the table twice, protocols alternated (old, new, old, new); under load, a "
        "numpy loop copying a 64 MB buffer ran on the other core for the middle third of every run. Run-to-run "
        "difference per op: |a - b| / mean of the two tables' medians. Own noise floor: the tables' "
        "`noise_floor()` (median / p90 spread of each op's round medians). Others: the share of the CPU other "
        "processes took during each run (`timing.device_state`).\n\n"
        "| condition | protocol | median diff | p90 diff | ops > 10% apart | own noise floor | others | wall s |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- |\n" + "\n".join(rows) + "\n\n"
        f"Cost: the new protocol's median wall time is {cost:.2f}x the old one's.\n\n"
        f"Per model: {len(MODELS)} CNNs of `examples/zoo` ({', '.join(MODELS)}), {args.model_times} runs each, "
        "measured twice by each protocol (alternated), quiet and under the same load for the middle third. "
        "Difference: |a - b| / mean of a model's two medians.\n\n"
        "| condition | protocol | median diff | max diff | models > 2% apart | wall s |\n"
        "| --- | --- | --- | --- | --- | --- |\n" + "\n".join(model_rows) + "\n\n"
        f"Cost per model: the new protocol's median wall time is {model_cost:.2f}x the old one's.\n"
    )
    print(body)
    update_section("noise", body)


if __name__ == "__main__":
    main()
