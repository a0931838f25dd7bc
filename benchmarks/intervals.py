"""How sure is a prediction? Coverage, width and false-feasible rates of the intervals, on unseen families.

Reads a work folder of ``benchmarks/unseen.py`` (its table, and the truths it measured: ``results.json``), predicts
every model again with its interval (:mod:`mmt_nas.intervals`), and scores:

- **uncalibrated**: the prior interval (no measured model used);
- **conformal (LOFO)**: for each family, :class:`~mmt_nas.intervals.ConformalIntervals` fitted on the models of
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

from mmt_nas.fallback import LatencyRegressor, compare_regressors  # noqa: E402
from mmt_nas.intervals import ConformalIntervals  # noqa: E402
from mmt_nas.predictor import LatencyPredictor, Prediction  # noqa: E402
from mmt_nas.table import LatencyTable  # noqa: E402

LEVELS = (0.8, 0.9, 0.95)


def lofo(preds: dict[str, Prediction], measured: dict[str, float], family_of: dict[str, str]) -> dict[str, Prediction]:
    """Each model's prediction with intervals fitted on the other families' models only."""
    out = {}
    for fam in sorted(set(family_of.values())):
        train = [n for n in preds if family_of[n] != fam]
        cal = ConformalIntervals().fit(
            [float(preds[n]) for n in train], [preds[n].sigma for n in train], [measured[n] for n in train], train
        )
        assert not {family_of[m] for m in cal.models_} & {fam}
        for n in preds:
            if family_of[n] == fam:
                out[n] = Prediction(float(preds[n]), preds[n].ops, preds[n].sigma, cal)
    return out


def score(preds: dict[str, Prediction], measured: dict[str, float]) -> dict[str, object]:
    names = list(preds)
    cover = {
        c: sum(lo <= measured[n] <= hi for n in names for lo, hi in [preds[n].interval(c)]) / len(names) for c in LEVELS
    }
    widths = [(hi - lo) / float(preds[n]) for n in names for lo, hi in [preds[n].interval(0.9)]]
    lats = sorted(measured[n] for n in names)
    budgets = {q: lats[int(q * (len(lats) - 1))] for q in (0.25, 0.5, 0.75)}
    ff = {}
    for q, b in budgets.items():
        point = [n for n in names if float(preds[n]) <= b]
        chance = [n for n in names if preds[n].upper(0.9) <= b]
        truly = sum(measured[n] <= b for n in names)

        def rate(kept: list[str]) -> float | None:
            return sum(measured[n] > b for n in kept) / len(kept) if kept else None

        ff[q] = {"budget_ms": b, "point": rate(point), "n_point": len(point), "chance": rate(chance),
                 "n_chance": len(chance), "n_truly": truly}  # fmt: skip
    return {"coverage": cover, "median_width_90": statistics.median(widths), "false_feasible": ff, "n": len(names)}


def rows(label: str, s: dict) -> str:
    cov = " / ".join(f"{100 * s['coverage'][c]:.0f}%" for c in LEVELS)
    ff = "; ".join(
        f"p{int(100 * q)}: {fmt(v['point'])} ({v['n_point']}) vs {fmt(v['chance'])} ({v['n_chance']}) of {v['n_truly']}"
        for q, v in s["false_feasible"].items()
    )
    return f"| {label} | {s['n']} | {cov} | {100 * s['median_width_90']:.0f}% | {ff} |"


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
        prior, conformal = score(preds, measured), score(lofo(preds, measured, family_of), measured)
        raw[scenario] = {"uncalibrated": prior, "conformal": conformal}
        out_rows += [rows(f"{scenario}, uncalibrated (prior)", prior), rows(f"{scenario}, conformal (LOFO)", conformal)]
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
