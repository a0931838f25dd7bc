"""First prediction of a model whose ops the table lacks: one fallback call per op vs one per model.

A held-out table (here the MobileNetV2-style space's block table from ``examples/nas_space.py``) lacks every op of
ResNet-18, so the regression fallback estimates all of them: its time, spread and cold ratio. Before
``LatencyRegressor.prepare`` each distinct op cost a forest call per quantity; now each model costs one per
quantity. Both are timed in one process, alternated pair by pair (A B, B A, ...), each from an empty estimate
cache (a search meets new ops in every new architecture), and the ratio of each pair is reported.

Run:  python benchmarks/fallback_batch.py [--pairs 30] [--work-dir D]
Prints the numbers and rewrites the "fallback-batch" section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "examples" / "resnet18"))

from nas_space import SPACES, build_table  # noqa: E402
from resnet18 import ResNet18  # noqa: E402
from results_md import machine_line, update_section  # noqa: E402

from mmt_nas.predict.fallback import LatencyRegressor  # noqa: E402
from mmt_nas.predict.predictor import LatencyPredictor  # noqa: E402

SHAPE = [1, 3, 224, 224]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=30)
    ap.add_argument("--work-dir", type=Path, default=Path("/tmp/mmt_nas_fallback_batch"))
    args = ap.parse_args()
    ops = build_table(SPACES["mobilenetv2"], args.work_dir / "mbv2", times=30)
    fallback = LatencyRegressor("forest").fit(LatencyPredictor(ops).table)
    predictor = LatencyPredictor(ops, on_missing="fallback", fallback=fallback)
    fallback.oof_log_std()  # once per fit, for both
    parsed = predictor.parse(ResNet18(), SHAPE)
    n_missing = len({o.key for o in parsed if o.key not in predictor.table and o.fused_into is None})
    prepare = LatencyRegressor.prepare

    def timed(batched: bool) -> tuple[float, float]:
        fallback.__dict__.pop("_op_cache", None)  # every op new, as in a new architecture
        if batched:
            LatencyRegressor.prepare = prepare
        else:
            del LatencyRegressor.prepare  # the predictor's getattr finds none: one call per op, as before
        try:
            t0 = time.perf_counter()
            value = float(predictor.predict_ops(parsed))
            return (time.perf_counter() - t0) * 1000, value
        finally:
            LatencyRegressor.prepare = prepare

    old, new, ratios = [], [], []
    for i in range(args.pairs):
        order = (False, True) if i % 2 == 0 else (True, False)
        got = {}
        for batched in order:
            got[batched] = timed(batched)
        assert got[True][1] == got[False][1], got  # the same prediction, bit for bit
        old.append(got[False][0])
        new.append(got[True][0])
        ratios.append(got[True][0] / got[False][0])
    q = statistics.quantiles(ratios, n=10)
    body = (
        "## Fallback estimates: one call per model (`benchmarks/fallback_batch.py`)\n\n"
        f"Machine: {machine_line()}. ResNet-18 at 224x224 predicted from the MobileNetV2-style space's block "
        f"table ({len(predictor.table)} blocks): all {n_missing} distinct ops are estimated by the forest "
        f"fallback, from an empty estimate cache each time. {args.pairs} pairs, alternated A B / B A in one "
        "process; the two give the same prediction bit for bit.\n\n"
        "| | median ms | p10-p90 ms |\n| --- | --- | --- |\n"
        f"| one call per op (before) | {statistics.median(old):.1f} | "
        f"{statistics.quantiles(old, n=10)[0]:.1f}-{statistics.quantiles(old, n=10)[-1]:.1f} |\n"
        f"| one call per model (`prepare`) | {statistics.median(new):.1f} | "
        f"{statistics.quantiles(new, n=10)[0]:.1f}-{statistics.quantiles(new, n=10)[-1]:.1f} |\n\n"
        f"Per pair, new/old: median {statistics.median(ratios):.3f} (p10-p90 {q[0]:.3f}-{q[-1]:.3f}).\n"
    )
    print(body)
    update_section("fallback-batch", body)


if __name__ == "__main__":
    main()
