"""Ranking within one search space: Kendall's tau between predicted and measured latency of sampled architectures.

A search compares architectures of one space, often close to each other, so what it needs of a predictor is
the order. This samples ``--samples`` architectures of the MobileNetV2-style space of ``examples/nas_space.py``
at 224x224 (seeded), predicts each from the space's block table (every block metered once, as Once-for-All's
table does), measures all of them end to end (interleaved rounds, input written and output read every run),
and reports Kendall's tau, its spread over bootstrap resamples of the architectures, and the same for the truths
against themselves (two halves of the rounds: the order the measurement itself can resolve).

Run:  python benchmarks/ranking.py [--samples 30] [--times 60] [--work-dir D]
Prints the numbers and rewrites the "ranking" section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "examples"))

from nas_space import SPACES, build_table  # noqa: E402
from results_md import machine_line, update_section  # noqa: E402

from mmt_nas.build.measure import measure_models  # noqa: E402
from mmt_nas.predict.predictor import LatencyPredictor  # noqa: E402
from mmt_nas.report.metrics import compute_metrics, kendall_tau  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=30)
    ap.add_argument("--times", type=int, default=60, help="timed runs per architecture (over 4 rounds)")
    ap.add_argument("--work-dir", type=Path, default=None)
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory(prefix="mmt_nas_ranking_")
    work = args.work_dir or Path(tmp.name)
    space = SPACES["mobilenetv2"]
    t0 = time.perf_counter()
    predictor = LatencyPredictor(build_table(space, work / "mbv2", times=30))
    t_table = time.perf_counter() - t0
    rng = random.Random(0)
    archs = [space.sample(rng) for _ in range(args.samples)]
    models = {f"arch{i}": (space.build(a).eval(), space.input_shape) for i, a in enumerate(archs)}
    predicted = {n: float(predictor.predict(m, s)) for n, (m, s) in models.items()}
    t0 = time.perf_counter()
    truths = measure_models(models, args.times, rounds=4)
    t_measure = time.perf_counter() - t0
    names = list(models)
    measured = [truths[n].latency.median_ms for n in names]
    pred = [predicted[n] for n in names]
    tau = kendall_tau(pred, measured)
    boot = []
    brng = random.Random(1)
    for _ in range(500):
        idx = [brng.randrange(len(names)) for _ in names]
        if len({pred[i] for i in idx}) > 2:
            boot.append(kendall_tau([pred[i] for i in idx], [measured[i] for i in idx]))
    boot.sort()
    halves = [
        [statistics.median(truths[n].rounds_ms[k::2]) for n in names] for k in (0, 1)
    ]  # rounds 1 and 3 vs rounds 2 and 4
    tau_truth = kendall_tau(*halves)
    m = compute_metrics(pred, measured)
    spread = statistics.median(r.run_to_run for r in truths.values() if r.run_to_run is not None)
    lo, hi = min(measured), max(measured)
    body = (
        "## Ranking within a search space (`benchmarks/ranking.py`)\n\n"
        f"Machine: {machine_line()}. {len(names)} architectures sampled (seed 0) from the MobileNetV2-style space "
        f"of `examples/nas_space.py` at 224x224, measured {lo:.1f}-{hi:.1f} ms; predicted from the space's block "
        f"table ({len(predictor.table)} blocks, metered in {t_table:.0f} s), measured end to end in 4 interleaved "
        f"rounds ({args.times} runs each model, {t_measure:.0f} s; run-to-run median {100 * spread:.1f}%).\n\n"
        "| | Kendall tau | bootstrap 5-95% | within ±10% | MAPE | mean signed error |\n"
        "| --- | --- | --- | --- | --- | --- |\n"
        f"| predicted vs measured | {tau:.3f} | {boot[len(boot) // 20]:.3f}-{boot[-len(boot) // 20]:.3f} | "
        f"{m['within_10_pct']:.0f}% | {m['mape_pct']:.1f}% | {m['mean_signed_error_pct']:+.1f}% |\n"
        f"| measured vs measured (rounds 1+3 vs 2+4) | {tau_truth:.3f} | | | | |\n\n"
        "The second row is the order the measurement itself can resolve on this host: a predictor cannot be "
        "checked beyond it.\n"
    )
    print(body)
    update_section("ranking", body)


if __name__ == "__main__":
    main()
