"""Sharded metering: what splitting a table over processes costs in time and in agreement.

Meters one generic op space four ways on this machine and compares the tables key by key:

1. one process (the reference),
2. one process again (the run-to-run noise floor: the same command twice),
3. two shards one after the other, merged with ``merge_tables`` (what n identical devices give),
4. two shards at the same time on this machine, merged (what sharding on one multi-core host gives).

Run:  python benchmarks/scale_out.py [--times 300]
Prints a table and rewrites the "scale-out" section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from results_md import machine_line, update_section  # noqa: E402

from mmt_nas.build.generate import generate_ops_list  # noqa: E402
from mmt_nas.device.meter import meter_ops  # noqa: E402
from mmt_nas.table.merge import merge_tables  # noqa: E402
from mmt_nas.table.table import LatencyTable  # noqa: E402

SPACE = """
torch.nn:
  Conv2d:
    in_channels: [16, 32, 64]
    out_channels: [16, 32, 64]
    kernel_size: [1, 3]
    padding: [0]
    input_shape: [[1, 16, 14, 14], [1, 16, 28, 28], [1, 16, 56, 56], [1, 32, 14, 14], [1, 32, 28, 28], [1, 32, 56, 56], [1, 64, 14, 14], [1, 64, 28, 28], [1, 64, 56, 56]]
  BatchNorm2d:
    num_features: [16, 32, 64]
    input_shape: [[1, 16, 14, 14], [1, 16, 28, 28], [1, 16, 56, 56], [1, 32, 14, 14], [1, 32, 28, 28], [1, 32, 56, 56], [1, 64, 14, 14], [1, 64, 28, 28], [1, 64, 56, 56]]
  ReLU:
    no_params: true
    input_shape: [[1, 16, 14, 14], [1, 16, 28, 28], [1, 16, 56, 56], [1, 32, 14, 14], [1, 32, 28, 28], [1, 32, 56, 56], [1, 64, 14, 14], [1, 64, 28, 28], [1, 64, 56, 56]]
"""


def meter_shards_concurrently(ops: Path, times: int, n: int) -> tuple[list[LatencyTable], float]:
    """Run ``mmt-nas meter --shard i/n`` for every i at once, as separate processes."""
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mmt_nas.cli",
                "meter",
                str(ops),
                "--times",
                str(times),
                "--shard",
                f"{i}/{n}",
                "-o",
                str(ops / f"conc-{i}.json"),
            ],
            stdout=subprocess.DEVNULL,
        )
        for i in range(1, n + 1)
    ]
    for p in procs:
        if p.wait() != 0:
            raise SystemExit(f"a shard process failed with status {p.returncode}")
    return [LatencyTable.load(ops / f"conc-{i}.json") for i in range(1, n + 1)], time.perf_counter() - t0


def compare(ref: LatencyTable, other: LatencyTable) -> tuple[float, float, float]:
    """Median and 90th percentile of |relative difference| of medians, and the share beyond 10%."""
    diffs = sorted(abs(other.get(k).latency_ms - e.latency_ms) / e.latency_ms for k in ref.keys() for e in [ref.get(k)])
    p90 = diffs[min(len(diffs) - 1, int(0.9 * len(diffs)))]
    return statistics.median(diffs), p90, sum(d > 0.10 for d in diffs) / len(diffs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--times", type=int, default=300)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mmt_nas_scale_") as tmp:
        work = Path(tmp)
        (work / "ops.yaml").write_text(SPACE)
        generate_ops_list(work / "ops.yaml", work / "ops")
        ops = work / "ops"
        runs: dict[str, tuple[LatencyTable, float, str]] = {}

        t0 = time.perf_counter()
        ref = meter_ops(ops, a.times, output=work / "ref.json")
        runs["one process (reference)"] = (ref, time.perf_counter() - t0, "")
        t0 = time.perf_counter()
        again = meter_ops(ops, a.times, output=work / "again.json")
        runs["one process, again (noise floor)"] = (again, time.perf_counter() - t0, "")

        t0 = time.perf_counter()
        seq = [meter_ops(ops, a.times, shard=(i, 2), output=work / f"seq-{i}.json") for i in (1, 2)]
        merged, report = merge_tables(seq)
        runs["2 shards one after the other, merged"] = (merged, time.perf_counter() - t0, report.summary())

        conc, wall = meter_shards_concurrently(ops, a.times, 2)
        merged, report = merge_tables(conc)
        runs["2 shards at once on this machine, merged"] = (merged, wall, report.summary())

        cross, cross_report = merge_tables([ref, again])
        shutil.rmtree(ops)

    n = len(ref)
    rows = []
    for name, (table, seconds, _note) in runs.items():
        assert set(table.keys()) == set(ref.keys()), name
        med, p90, share = compare(ref, table) if table is not ref else (0.0, 0.0, 0.0)
        rows.append(f"| {name} | {seconds:.1f} | {med:.1%} | {p90:.1%} | {share:.0%} |")
    body = f"""## Sharded metering (`benchmarks/scale_out.py`)

Machine: {machine_line()}. MNN CPU backend, 1 thread, high precision; {n} ops (conv, BN, ReLU), times={a.times}.
Each table is compared with the reference key by key (|relative difference of medians|).

| run | wall s | median diff | p90 diff | ops > 10% apart |
| --- | --- | --- | --- | --- |
{chr(10).join(rows)}

`merge_tables` of the reference and its rerun (same device, same settings): {cross_report.summary()}.
Those are the run-to-run drift that each table's own within-run spread does not show: the rerun row is the floor
any other row must be read against.
Shards on separate devices of one kind behave like "one after the other"; several shards on one host share
its cores, caches and memory bandwidth, which is what the last row measures.
"""
    print(body)
    update_section("scale-out", body)


if __name__ == "__main__":
    main()
