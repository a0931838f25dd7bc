"""Is the drift of this device common to all ops (so that normalizing by a reference would remove it)?

The 72 ops of ``benchmarks/scale_out.py`` are loaded once and timed in ``--cycles`` cycles, each cycle every
op once for a block of ``--runs`` runs, in a new seeded shuffled order. Each block's median, divided by its
op's median over all cycles, is the block's *relative speed*. If the device's drift were common to all ops,
blocks timed close together would share it: the script prints the correlation between a block's relative
speed and that of its neighbours in time (other ops, within the window), and how much dividing by the
neighbours' speed lowers the block-to-block spread.

Then it plays two tables from the data: cycles ``0..R-1`` (table A) and ``K/2..K/2+R-1`` (table B), each op's
latency the median of its R blocks, as R shuffled rounds would give. Their run-to-run difference per op
(median, p90) is printed raw and normalized *within each table* (each block divided by the median speed of
its ``k`` nearest blocks in time of other ops, fitted on that table's blocks alone, as a metering run could),
which is what a sentinel-style normalization could at best achieve.

Run:  python benchmarks/drift.py [--cycles 20] [--runs 50]   (about a minute)
Prints a table and rewrites the "drift" section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from results_md import machine_line, update_section  # noqa: E402
from scale_out import SPACE  # noqa: E402

from mmt_nas.build.generate import generate_ops_list  # noqa: E402
from mmt_nas.device.timing import _Session, timed_runs  # noqa: E402
from mmt_nas.table.table import RuntimeSettings  # noqa: E402


def normalized(t: np.ndarray, x: np.ndarray, k: int, iters: int = 3) -> np.ndarray:
    """Each op's median over its blocks after dividing every block by the median relative speed of its
    ``k`` nearest blocks in time (before and after) of other ops; ``t``, ``x``: (ops, blocks)."""
    n_op, n_blocks = x.shape
    times, values = t.ravel(), x.ravel()
    op = np.repeat(np.arange(n_op), n_blocks)
    order = np.argsort(times)
    pos = np.empty_like(order)
    pos[order] = np.arange(len(times))
    f = np.ones_like(values)
    for _ in range(iters):
        base = np.median((values / f).reshape(n_op, n_blocks), axis=1)
        rel = values / base[op]
        new = np.empty_like(values)
        for i in range(len(values)):
            nb = order[max(0, pos[i] - k) : pos[i] + k + 1]
            nb = nb[op[nb] != op[i]]
            new[i] = np.median(rel[nb]) if len(nb) else 1.0
        f = new / np.median(new)
    return np.median((values / f).reshape(n_op, n_blocks), axis=1)


def apart(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a - b) / ((a + b) / 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=20)
    ap.add_argument("--runs", type=int, default=50, help="runs per block")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    settings = RuntimeSettings()
    with tempfile.TemporaryDirectory(prefix="mmt_nas_drift_") as tmp:
        work = Path(tmp)
        (work / "ops.yaml").write_text(SPACE)
        generate_ops_list(work / "ops.yaml", work / "ops", show_progress=False)
        files = sorted((work / "ops").rglob("*.mnn"))
        sessions = [_Session(f, settings) for f in files]
        rng = random.Random(args.seed)
        t = np.zeros((len(files), args.cycles))
        x = np.zeros_like(t)
        t0 = time.monotonic()
        for c in range(args.cycles):
            order = list(range(len(files)))
            rng.shuffle(order)
            for i in order:
                x[i, c] = timed_runs(sessions[i].run, args.runs, prepare=sessions[i].write_input).median_ms
                t[i, c] = time.monotonic() - t0
        seconds = time.monotonic() - t0
    rel = x / np.median(x, axis=1, keepdims=True)
    cv = float(np.median(rel.std(axis=1)))
    lines = []
    for w in (0.5, 2.0):
        flat_t, flat_r = t.ravel(), rel.ravel()
        near = np.empty_like(flat_r)
        for i in range(len(flat_t)):
            m = np.abs(flat_t - flat_t[i]) <= w
            m[i] = False
            near[i] = np.median(flat_r[m]) if m.any() else 1.0
        corr = float(np.corrcoef(np.log(flat_r), np.log(near))[0, 1])
        after = float(np.median((rel / near.reshape(rel.shape)).std(axis=1)))
        lines.append(
            f"- neighbours within {w:g} s: correlation of log relative speeds {corr:.2f}; "
            f"block-to-block spread {100 * cv:.1f}% -> {100 * after:.1f}% after dividing by theirs "
            "(an upper bound: the neighbours' speeds come from the same data)."
        )
    half = args.cycles // 2
    rows = []
    for r in (2, 3, 5, half):
        if r > half:
            continue
        a_raw, b_raw = np.median(x[:, :r], axis=1), np.median(x[:, half : half + r], axis=1)
        raw = apart(a_raw, b_raw)
        cells = [f"{100 * np.median(raw):.1f}% / {100 * np.percentile(raw, 90):.1f}%"]
        for k in (4, 16):
            a = normalized(t[:, :r], x[:, :r], k)
            b = normalized(t[:, half : half + r], x[:, half : half + r], k)
            d = apart(a, b)
            cells.append(f"{100 * np.median(d):.1f}% / {100 * np.percentile(d, 90):.1f}%")
        rows.append(f"| {r} | " + " | ".join(cells) + " |")
    speeds = np.median(rel, axis=0)
    body = (
        "## Is the drift common to all ops? (`benchmarks/drift.py`)\n\n"
        f"Machine: {machine_line()}. {len(files)} ops, {args.cycles} cycles of one {args.runs}-run block per op "
        f"(shuffled, seed {args.seed}), {seconds:.0f} s. Block-to-block spread of an op (std of its blocks' "
        f"medians / its median; median over ops): **{100 * cv:.1f}%**. Median relative speed per cycle: "
        f"{' '.join(f'{v:.2f}' for v in speeds)}.\n\n" + "\n".join(lines) + "\n\n"
        "Two tables played from the data (A: the first R cycles, B: R cycles from the middle), run-to-run "
        "difference per op, median / p90, raw and normalized within each table by its k nearest blocks:\n\n"
        "| rounds R | raw | normalized, k=4 | normalized, k=16 |\n| --- | --- | --- | --- |\n" + "\n".join(rows) + "\n"
    )
    print(body)
    update_section("drift", body)
    print(f"median of medians {statistics.median(np.median(x, axis=1)):.4f} ms")


if __name__ == "__main__":
    main()
