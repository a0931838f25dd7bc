"""Prediction speed of two checkouts of mmt_nas side by side, alternated (A B A B ...), on one table.

For a refactor that must not slow prediction down: the same tables (ResNet-18's op space, and the
MobileNetV2-style block space of ``examples/nas_space.py``), metered once, are predicted by the
package of each checkout in its own fresh process, in turns, so the machine's drift hits both alike.
Each process times ``LatencyPredictor.predict`` (meta trace + lookups) on ResNet-18 and on sampled
MBV2-space architectures, and ``import mmt_nas.predictor`` once; the ratio new/old is taken pair by pair.

Run:  git worktree add /tmp/mmt_nas_old <old commit>
      python benchmarks/layout_ab.py --old /tmp/mmt_nas_old [--rounds 6] [--label "old -> new"]
Prints a table and rewrites the "layout-ab" section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "examples"))

from results_md import machine_line, update_section  # noqa: E402

# Runs in a fresh interpreter with one checkout's package first on sys.path.
_WORKER = r"""
import gc, json, random, statistics, sys, time
t0 = time.perf_counter()
import mmt_nas.predictor
import_s = time.perf_counter() - t0
sys.path[:0] = [EXAMPLES, EXAMPLES + "/resnet18"]
from nas_space import SPACES
from resnet18 import ResNet18
from mmt_nas.predictor import LatencyPredictor
assert mmt_nas.predictor.__file__.startswith(PACKAGE_ROOT), mmt_nas.predictor.__file__

def timed(fn, n):
    out = []
    gc.disable()
    try:
        for _ in range(n):
            t = time.perf_counter_ns(); fn(); out.append(time.perf_counter_ns() - t)
    finally:
        gc.enable()
    return statistics.median(out) / 1e6

r18 = LatencyPredictor(R18_TABLE)
model = ResNet18().eval()
r18.predict(model, [1, 3, 224, 224])
r18_ms = timed(lambda: r18.predict(model, [1, 3, 224, 224]), 15)
space = SPACES["mobilenetv2"]
mb = LatencyPredictor(MBV2_TABLE)
rng = random.Random(0)
models = [space.build(space.sample(rng)) for _ in range(N_ARCHS)]
mb.predict(models[0], space.input_shape)
mb_ms = statistics.median(timed(lambda: mb.predict(m, space.input_shape), 3) for m in models)
print(json.dumps({"import_s": import_s, "r18_ms": r18_ms, "mbv2_ms": mb_ms,
                  "r18_pred": float(r18.predict(model, [1, 3, 224, 224]))}))
"""


def run_side(package_root: Path, r18: Path, mbv2: Path, n_archs: int) -> dict[str, float]:
    code = (
        f"EXAMPLES = {str(ROOT / 'examples')!r}\nPACKAGE_ROOT = {str(package_root)!r}\nR18_TABLE = {str(r18)!r}\n"
        f"MBV2_TABLE = {str(mbv2)!r}\nN_ARCHS = {n_archs}\n" + _WORKER
    )
    env = dict(os.environ, PYTHONPATH=str(package_root))
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=package_root,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"the worker for {package_root} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", type=Path, required=True, help="a checkout of the older commit")
    ap.add_argument("--rounds", type=int, default=6, help="pairs of runs (A B)")
    ap.add_argument("--archs", type=int, default=8, help="MBV2-space architectures per run")
    ap.add_argument("--label", default="before -> after", help="what is compared, for RESULTS.md")
    args = ap.parse_args()
    from nas_space import SPACES, build_table

    from mmt_nas.converter import generate_ops_list
    from mmt_nas.meter import meter_ops

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        generate_ops_list(ROOT / "examples" / "resnet18" / "ops.yaml", work / "r18", show_progress=False)
        meter_ops(work / "r18", times=10, show_progress=False)
        build_table(SPACES["mobilenetv2"], work / "mbv2", times=10)
        sides = {"old": args.old.resolve(), "new": ROOT}
        runs: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
        for i in range(args.rounds):
            for side in ("old", "new") if i % 2 == 0 else ("new", "old"):
                runs[side].append(run_side(sides[side], work / "r18", work / "mbv2", args.archs))
                print(f"round {i + 1} {side}: {runs[side][-1]}", flush=True)
    assert len({r["r18_pred"] for r in runs["old"] + runs["new"]}) == 1, "the two predict different latencies"

    def med(side: str, key: str) -> tuple[float, float, float]:
        xs = [r[key] for r in runs[side]]
        return statistics.median(xs), min(xs), max(xs)

    def ratio(key: str) -> tuple[float, float, float]:
        xs = [n[key] / o[key] for o, n in zip(runs["old"], runs["new"])]
        return statistics.median(xs), min(xs), max(xs)

    rows = []
    for key, name, unit, scale in [
        ("r18_ms", "ResNet-18: `predict` (new model)", "ms", 1.0),
        ("mbv2_ms", "MBV2-space: `predict` (new model)", "ms", 1.0),
        ("import_s", "`import mmt_nas.predictor` (fresh process)", "ms", 1e3),
    ]:
        o, n, r = med("old", key), med("new", key), ratio(key)
        rows.append(
            f"| {name} | {o[0] * scale:.2f} {unit} ({o[1] * scale:.2f}-{o[2] * scale:.2f}) | "
            f"{n[0] * scale:.2f} {unit} ({n[1] * scale:.2f}-{n[2] * scale:.2f}) | "
            f"{r[0]:.3f} ({r[1]:.3f}-{r[2]:.3f}) |"
        )
    body = (
        f"## Prediction speed, two checkouts alternated (`benchmarks/layout_ab.py`)\n\nMachine: {machine_line()}. "
        f"{args.label}: {args.rounds} rounds, each one fresh process per checkout, in turns (A B, B A, ...), on "
        f"the same two tables; each figure is the median over rounds (min-max), the ratio new/old taken pair by "
        f"pair. Both predicted the same ResNet-18 latency ({runs['new'][0]['r18_pred']:.3f} ms).\n\n"
        "| measure | old | new | new/old |\n| --- | --- | --- | --- |\n" + "\n".join(rows) + "\n"
    )
    print(body)
    update_section("layout-ab", body)


if __name__ == "__main__":
    main()
