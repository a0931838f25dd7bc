"""How sure is a prediction? Coverage, width and false-feasible rates of the intervals, on unseen families.

Reads a work folder of ``benchmarks/unseen.py`` (its table, and the truths it measured: ``results.json``), predicts
every model again with its interval (:mod:`mmt_nas.predict.intervals`), and scores:

- **uncalibrated**: the prior interval (no measured model used);
- **conformal (LOFO)**: for each family, :class:`~mmt_nas.predict.intervals.ConformalIntervals` fitted on the models of
  every *other* family, scored on this family's: never on the models (or the family) it was fitted on.

For each: coverage of the 80/90/95% two-sided intervals (share of measured latencies inside), the median 90%
width relative to the prediction (against the table's noise floor and the truths' run-to-run spread), and at
budgets set at the 25th/50th/75th percentile of the measured latencies the false-feasible rate: among the
models a constraint calls feasible, the share measured over budget, for the point prediction and for the
chance constraint at confidence 0.9 (with how many models each keeps, since rejecting everything is trivially
safe). With ``--heldout TABLE`` the same for a generic table + the fallback.

Run:  python benchmarks/intervals.py --work-dir /tmp/unseen4 --resolutions 96,128,160,224 [--heldout T]
Prints the tables and rewrites the "intervals" section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "examples" / "zoo"))

import families  # noqa: E402
import torch  # noqa: E402
from results_md import machine_line, update_section  # noqa: E402

from mmt_nas.predict.fallback import LatencyRegressor, compare_regressors  # noqa: E402
from mmt_nas.predict.intervals import check_intervals  # noqa: E402
from mmt_nas.predict.predictor import LatencyPredictor  # noqa: E402
from mmt_nas.table.table import LatencyTable  # noqa: E402

LEVELS = (0.8, 0.9, 0.95)


def rows(label: str, s: dict, n: int) -> str:
    cov = " / ".join(f"{100 * s['coverage'][str(c)]:.0f}%" for c in LEVELS)
    ff = "; ".join(
        f"p{round(100 * float(q))}: {fmt(v['point'])} ({v['n_point']}) vs {fmt(v['chance'])} ({v['n_chance']}) "
        f"of {v['n_truly']}"
        for q, v in s["false_feasible"].items()
    )
    return f"| {label} | {n} | {cov} | {100 * s['median_width']:.0f}% | {ff} |"


def fmt(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.0f}%"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work-dir", type=Path, required=True, help="a benchmarks/unseen.py --work-dir that has run")
    ap.add_argument("--resolutions", default="160")
    ap.add_argument("--families", default="all")
    ap.add_argument("--heldout", type=Path, default=None, help="a generic table (mmt-nas sample --generic), metered")
    args = ap.parse_args()
    resolutions = [int(r) for r in args.resolutions.split(",")]
    cases = families.cases(resolutions, None if args.families == "all" else args.families.split(","))
    saved = json.loads((args.work_dir / "results.json").read_text())
    measured, spread = saved["measured"], saved["run_to_run"]
    family_of = {name: fam for name, fam, *_ in cases if name in measured}
    table = LatencyTable.load(args.work_dir / "table.json")
    predictors = {"in-table": LatencyPredictor(table)}
    if args.heldout is not None:
        gtable = LatencyTable.load(args.heldout)
        cv = compare_regressors(gtable, ("forest", "boosting"))
        best = min(cv, key=lambda k: cv[k]["mape_pct"])
        predictors["held-out"] = LatencyPredictor(
            gtable, on_missing="fallback", fallback=LatencyRegressor(best).fit(gtable)
        )
    out_rows, raw = [], {}
    for scenario, predictor in predictors.items():
        preds = {}
        for name, _fam, build, kwargs, shape in cases:
            if name in measured:
                torch.manual_seed(0)
                preds[name] = predictor.predict(build(**kwargs), shape)
        names = list(preds)
        checked = check_intervals(
            [float(preds[n]) for n in names], [preds[n].sigma for n in names], [measured[n] for n in names],
            [family_of[n] for n in names], LEVELS,
        )  # fmt: skip
        raw[scenario] = checked
        out_rows += [
            rows(f"{scenario}, uncalibrated (prior)", checked["prior"], len(names)),
            rows(f"{scenario}, conformal (LOFO)", checked["conformal"], len(names)),
        ]
        print(out_rows[-2] + "\n" + out_rows[-1], flush=True)
    floor = table.noise_floor()
    truths = statistics.median(v for v in spread.values() if v is not None)
    body = (
        "## How sure is a prediction? (`benchmarks/intervals.py`)\n\n"
        f"Machine: {machine_line()}. The {len(measured)} models of `benchmarks/unseen.py` "
        f"({', '.join(map(str, resolutions))}; 10 families), their table and truths. Intervals: the prior "
        "(uncalibrated), or conformal fitted for each family on the other nine families' models (LOFO). "
        f"Noise floors: the table's {floor.median_pct if floor else float('nan'):.1f}% (median run-to-run of its "
        f"ops), the truths' {100 * truths:.1f}% (median spread of a model's 3 rounds). False-feasible: among the "
        "models a constraint keeps at a budget (the 25th/50th/75th percentile of the measured latencies), the share "
        "measured over it, point prediction vs chance constraint at 0.9 (models kept, of those truly within).\n\n"
        "| intervals | models | coverage 80 / 90 / 95% | median 90% width | false-feasible: point (kept) vs "
        "chance 0.9 (kept) of truly feasible |\n| --- | --- | --- | --- | --- |\n" + "\n".join(out_rows) + "\n"
    )
    print(body)
    (args.work_dir / "intervals.json").write_text(json.dumps(raw, indent=1, default=str))
    update_section("intervals", body)


if __name__ == "__main__":
    main()
