"""Prediction speed of two checkouts of mmt_nas side by side, alternated call by call, on one table.

For a refactor that must not slow prediction down. The older checkout's package is copied under another
name (``mmt_nas_old``, its own imports renamed to match) so that both live in one process: the same
tables (ResNet-18's op space, and the MobileNetV2-style block space of ``examples/nas_space.py``),
metered once, are predicted by both, one call each in turn (A B, B A, ...), so the machine's drift
hits both alike and the ratio new/old is taken pair by pair. ``import mmt_nas.predict.predictor`` is timed in
fresh processes, alternated the same way, in a fresh interpreter and with torch already imported.

Run:  git worktree add /tmp/mmt_nas_old <old commit>
      python benchmarks/layout_ab.py --old /tmp/mmt_nas_old [--pairs 300] [--label "old -> new"]
Prints a table and rewrites the "layout-ab" section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "examples" / "resnet18"))

from results_md import machine_line, update_section  # noqa: E402

_IMPORTS = re.compile(r"\bmmt_nas(?=[.\s:,)\"'])")  # the package's name where code names it, not "mmt_nas/..."


def copy_renamed(old_root: Path, dest: Path) -> None:
    """Copy ``old_root/mmt_nas`` to ``dest/mmt_nas_old``, renaming the package wherever its code names it."""
    target = dest / "mmt_nas_old"
    shutil.copytree(old_root / "mmt_nas", target, ignore=shutil.ignore_patterns("__pycache__"))
    for path in target.rglob("*.py"):
        path.write_text(_IMPORTS.sub("mmt_nas_old", path.read_text(encoding="utf-8")), encoding="utf-8")


def pairs(fns: dict[str, Callable[[], Any]], n: int) -> dict[str, list[float]]:
    """``n`` timings (ms) of each function, one call of each in turn, the order alternating."""
    out: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    gc.disable()
    try:
        for i in range(n):
            for name in names if i % 2 == 0 else names[::-1]:
                t0 = time.perf_counter_ns()
                fns[name]()
                out[name].append((time.perf_counter_ns() - t0) / 1e6)
    finally:
        gc.enable()
    return out


def import_seconds(package_root: Path, module: str, torch_first: bool) -> float:
    code = (
        "import torch\n" if torch_first else ""
    ) + f"import time\nt = time.perf_counter()\nimport {module}\nprint(time.perf_counter() - t)"
    env = dict(os.environ, PYTHONPATH=str(package_root))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def summary(xs: list[float]) -> tuple[float, float, float]:
    qs = statistics.quantiles(xs, n=10)
    return statistics.median(xs), qs[0], qs[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", type=Path, required=True, help="a checkout of the older commit")
    ap.add_argument("--pairs", type=int, default=300, help="alternated prediction pairs per model family")
    ap.add_argument("--imports", type=int, default=8, help="alternated fresh-process import pairs")
    ap.add_argument("--label", default="before -> after", help="what is compared, for RESULTS.md")
    ap.add_argument(
        "--changed", action="store_true", help="the predictions may differ (a change of behaviour, not a refactor)"
    )
    ap.add_argument("--section", default="layout-ab", help="the section of RESULTS.md to rewrite")
    args = ap.parse_args()

    from nas_space import SPACES, build_table
    from resnet18 import ResNet18

    from mmt_nas.build.generate import generate_ops_list
    from mmt_nas.device.meter import meter_ops
    from mmt_nas.predict.predictor import LatencyPredictor

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        copy_renamed(args.old.resolve(), work / "old")
        sys.path.insert(0, str(work / "old"))
        old_predictor = importlib.import_module("mmt_nas_old.predictor")
        generate_ops_list(ROOT / "examples" / "resnet18" / "ops.yaml", work / "r18", show_progress=False)
        meter_ops(work / "r18", times=10, show_progress=False)
        mbv2 = build_table(SPACES["mobilenetv2"], work / "mbv2", times=10)

        shape = [1, 3, 224, 224]
        model = ResNet18().eval()
        new_r18, old_r18 = LatencyPredictor(work / "r18"), old_predictor.LatencyPredictor(work / "r18")
        if not args.changed:  # a refactor predicts exactly as before
            assert float(new_r18.predict(model, shape)) == float(old_r18.predict(model, shape))
        r18 = pairs(
            {"old": lambda: old_r18.predict(model, shape), "new": lambda: new_r18.predict(model, shape)}, args.pairs
        )

        space = SPACES["mobilenetv2"]
        new_mb, old_mb = LatencyPredictor(mbv2), old_predictor.LatencyPredictor(mbv2)
        rng = random.Random(0)
        models = [space.build(space.sample(rng)) for _ in range(10)]
        for m in models:
            if not args.changed:
                assert float(new_mb.predict(m, space.input_shape)) == float(old_mb.predict(m, space.input_shape))
        cycle = iter(range(10**9))
        mb = pairs(
            {
                "old": lambda: old_mb.predict(models[next(cycle) // 2 % 10], space.input_shape),
                "new": lambda: new_mb.predict(models[next(cycle) // 2 % 10], space.input_shape),
            },
            args.pairs,
        )

        imports: dict[str, dict[str, list[float]]] = {}
        for torch_first in (False, True):
            got: dict[str, list[float]] = {"old": [], "new": []}
            for i in range(args.imports):
                for side in ("old", "new") if i % 2 == 0 else ("new", "old"):
                    root, module = (
                        (work / "old", "mmt_nas_old.predictor")
                        if side == "old"
                        else (ROOT, "mmt_nas.predict.predictor")
                    )
                    got[side].append(1e3 * import_seconds(root, module, torch_first))
            imports["after torch" if torch_first else "fresh"] = got

    rows = []
    for name, runs in [
        ("ResNet-18: `predict` (new model)", r18),
        ("MBV2-space: `predict` (new model)", mb),
        ("`import mmt_nas.predict.predictor`, fresh process", imports["fresh"]),
        ("`import mmt_nas.predict.predictor`, torch already imported", imports["after torch"]),
    ]:
        o, n = summary(runs["old"]), summary(runs["new"])
        r = summary([b / a for a, b in zip(runs["old"], runs["new"])])
        rows.append(
            f"| {name} | {o[0]:.2f} ms ({o[1]:.2f}-{o[2]:.2f}) | {n[0]:.2f} ms ({n[1]:.2f}-{n[2]:.2f}) | "
            f"{r[0]:.3f} ({r[1]:.3f}-{r[2]:.3f}) |"
        )
    body = (
        f"## Prediction speed, two checkouts alternated (`benchmarks/layout_ab.py`)\n\nMachine: {machine_line()}. "
        f"{args.label}. Both packages in one process (the old one renamed), each prediction pair timed one call "
        f"of each in turn, order alternating: {args.pairs} pairs per family (MBV2: 10 sampled architectures in "
        f"turn); imports in fresh processes, {args.imports} pairs each. Figures: median (p10-p90); the ratio "
        "new/old taken pair by pair. "
        + (
            "The predictions differ by design (--changed)."
            if args.changed
            else "Both predicted the same latency for every model."
        )
        + "\n\n"
        "| measure | old | new | new/old |\n| --- | --- | --- | --- |\n" + "\n".join(rows) + "\n\n"
        "The import rows are what `import mmt_nas.predict.predictor` costs before any prediction; torch itself is "
        "imported by the first trace (or was already, by the caller's model code).\n"
    )
    print(body)
    update_section(args.section, body)


if __name__ == "__main__":
    main()
