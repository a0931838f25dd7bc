"""Accuracy benchmark: predicted vs measured latency over the model set in examples/zoo/.

Scenarios, reported separately:
  (a) in-table: the table covers every op of the models (built with space_from_model from the set);
  (b) held-out: a generic op space that does not include the models' exact ops; the regression
      fallback estimates the ops it lacks.
Each is reported for each step of the composition: the MMT tool's plain sum of modules, then fusion and
tensor functions, then each op's own (core) time, then the in-context calibration. The calibration is
always fitted on other models than the ones it scores (5-fold cross-validation by architecture).

Run:  python benchmarks/accuracy.py [--quick] [--times 100] [--repeats 3]
Prints the tables, writes the full report (JSON, Markdown, HTML, plots) into --work-dir, and rewrites
the "accuracy" section (or "accuracy-quick") of benchmarks/RESULTS.md, or of --results.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "examples" / "zoo"))

import nas_zoo  # noqa: E402
from results_md import RESULTS, machine_line, update_section  # noqa: E402

from mmt_nas._files import atomic_write_text  # noqa: E402
from mmt_nas.build.generate import generate_ops_list  # noqa: E402
from mmt_nas.device.meter import meter_ops  # noqa: E402
from mmt_nas.device.profile import OpProfile  # noqa: E402
from mmt_nas.parser import parse_model  # noqa: E402
from mmt_nas.predict.calibration import InContextCalibration, cross_fitted, samples_from_profile  # noqa: E402
from mmt_nas.predict.fallback import LatencyRegressor, compare_regressors  # noqa: E402
from mmt_nas.predict.predictor import LatencyPredictor, Prediction  # noqa: E402
from mmt_nas.report.document import Report  # noqa: E402
from mmt_nas.report.evaluation import ModelResult, _category_split, evaluate  # noqa: E402
from mmt_nas.report.metrics import beyond_noise_of, compute_metrics, noise_variance  # noqa: E402
from mmt_nas.space.describe import space_from_model  # noqa: E402
from mmt_nas.space.opspace import dump_space  # noqa: E402
from mmt_nas.table.table import LatencyTable  # noqa: E402

RESOLUTIONS = {224: [112, 56, 28, 14, 7], 160: [80, 40, 20, 10, 5], 128: [64, 32, 16, 8, 4], 96: [48, 24, 12, 6, 3]}
Models = list[tuple[str, Any, list[int]]]


def generic_space(channels: list[int], sizes: list[int]) -> dict[str, Any]:
    """A generic op space on a grid of channel counts and feature-map sizes (not fitted to any model)."""
    shapes = [[1, c, s, s] for c in channels for s in sizes]
    per_channel = [[[1, c, s, s] for s in sizes] for c in channels]
    conv = [
        {
            "in_channels": [c],
            "out_channels": channels,
            "kernel_size": [1],
            "stride": [1, 2],
            "bias": [False],
            "input_shape": sh,
        }
        for c, sh in zip(channels, per_channel)
    ]
    conv += [
        {
            "in_channels": [c],
            "out_channels": channels,
            "kernel_size": [3],
            "stride": [1, 2],
            "padding": [1],
            "bias": [False],
            "input_shape": sh,
        }
        for c, sh in zip(channels, per_channel)
    ]
    dw = [
        {
            "in_channels": [c],
            "out_channels": [c],
            "groups": [c],
            "kernel_size": [k],
            "stride": [1, 2],
            "padding": [k // 2],
            "bias": [False],
            "input_shape": sh,
        }
        for c, sh in zip(channels, per_channel)
        for k in (3, 5, 7)
    ]
    add = [{"fn": ["Tensor.add"], "args": [[{"input": True}, {"tensor": sh}]], "input_shape": [sh]} for sh in shapes]
    return {
        "torch.nn": {
            "Conv2d": conv + dw,
            "BatchNorm2d": [{"num_features": [c], "input_shape": sh} for c, sh in zip(channels, per_channel)],
            "ReLU": {"no_params": True, "input_shape": shapes},
            "MaxPool2d": {"kernel_size": [3], "stride": [2], "padding": [1], "input_shape": shapes},
            "AdaptiveAvgPool2d": {"output_size": [1], "input_shape": shapes},
            "Linear": {"in_features": channels, "out_features": [1000], "input_shape": [[1, c] for c in channels]},
        },
        "mmt_nas.space.ops": {"Functional": add},
    }


def merge_spaces(docs: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, dict[str, list[Any]]] = {}
    for doc in docs:
        for module, classes in doc.items():
            for cls, blocks in classes.items():
                merged.setdefault(module, {}).setdefault(cls, []).extend(blocks)
    return merged


def group_of(name: str) -> str:
    """Cross-validation groups by architecture: the same net at two resolutions stays in one fold."""
    return name.split("@", 1)[0]


def predict_all(predictor: LatencyPredictor, models: Models) -> dict[str, Prediction]:
    out = {}
    for name, model, shape in models:
        try:
            out[name] = predictor.predict(model, shape)
        except Exception as exc:  # reported as a failed prediction
            print(f"  {name}: {type(exc).__name__}: {str(exc)[:200]}")
    return out


def cv_predictions(
    results: list[ModelResult], models: Models, make: Callable[[InContextCalibration], LatencyPredictor]
) -> dict[str, Prediction]:
    """Predict each model with a calibration fitted only on other folds' models (see cross_fitted)."""
    cals = cross_fitted([s for r in results for s in r.samples], folds=5, group=group_of)
    out: dict[str, Prediction] = {}
    for cal in {id(c): c for c in cals.values()}.values():
        assert not {group_of(n) for n in cal.models_} & {group_of(n) for n, c in cals.items() if c is cal}
        out |= predict_all(make(cal), [m for m in models if cals.get(m[0]) is cal])
    return out


ROUNDS: dict[str, list[float]] = {}  # each measured model's rounds' medians (set once measured)


def score(preds: dict[str, Prediction], measured: dict[str, float]) -> dict[str, Any]:
    names = [n for n in measured if n in preds]
    m = compute_metrics([float(preds[n]) for n in names], [measured[n] for n in names])
    beyond = beyond_noise_of(
        [float(preds[n]) for n in names],
        [measured[n] for n in names],
        [noise_variance(ROUNDS.get(n, []), preds[n].to_dict()["ops"]) for n in names],
    )
    return m | {"n_failed": len(measured) - len(names), "beyond": beyond}


def beyond_cell(m: dict[str, Any]) -> str:
    """The error beyond the noise with its 90% bootstrap interval, e.g. ``3.1% (1.2-4.4)``."""
    b = m.get("beyond")
    return "–" if b is None else str(b)


def fmt(v: Any, spec: str = ".1f", unit: str = "%") -> str:
    return "–" if v is None else f"{v:{spec}}{unit}"


def metrics_table(variants: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| prediction | models (failed) | within ±10% | within ±5% | MAPE | RMSPE | bias | beyond noise (90%) | "
        "Kendall τ | Spearman ρ |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, m in variants.items():
        lines.append(
            f"| {label} | {m.get('n', 0)} ({m['n_failed']}) | {fmt(m.get('within_10_pct'))} | "
            f"{fmt(m.get('within_5_pct'))} | {fmt(m.get('mape_pct'))} | {fmt(m.get('rmspe_pct'))} | "
            f"{fmt(m.get('mean_signed_error_pct'), '+.1f')} | {beyond_cell(m)} | "
            f"{fmt(m.get('kendall_tau'), '.3f', '')} | "
            f"{fmt(m.get('spearman_rho'), '.3f', '')} |"
        )
    return "\n".join(lines)


def build_table(space: dict[str, Any], folder: Path, times: int) -> tuple[LatencyTable, str, float]:
    t0 = time.perf_counter()
    dump_space(space, folder.with_suffix(".yaml"))
    gen = generate_ops_list(folder.with_suffix(".yaml"), folder)
    table = meter_ops(folder, times=times)
    return table, gen.summary(), time.perf_counter() - t0


def save_measurements(path: Path, results: list[ModelResult]) -> None:
    """Keep the expensive part (measurements and per-op profiles) for --reuse-measurements."""
    doc = {
        r.name: {
            "input_shape": list(r.input_shape),
            "measured_ms": r.measured_ms,
            "run_medians_ms": r.run_medians_ms,
            "within_run_cv": r.within_run_cv,
            "error": r.error,
            "profile": [[p.name, p.type, p.latency_ms] for p in r.profile],
        }
        for r in results
    }
    atomic_write_text(path, json.dumps(doc))


def load_measurements(path: Path, predictor: LatencyPredictor, models: Models) -> list[ModelResult]:
    """Rebuild results from saved measurements; predictions and calibration samples are recomputed."""
    doc = json.loads(path.read_text())
    results = []
    for name, model, shape in models:
        d = doc[name]
        r = ModelResult(name, tuple(shape), d["measured_ms"], d["run_medians_ms"], d["within_run_cv"], error=d["error"])
        r.profile = [OpProfile(*p) for p in d["profile"]]
        try:
            pred = predictor.predict(model, shape)
            r.predicted_ms, r.prediction = float(pred), pred.to_dict()
            r.by_category = _category_split(pred, r.profile)
            ops = parse_model(model, shape, known=predictor.table.__contains__)
            r.samples = samples_from_profile(name, ops, r.profile, predictor.table, predictor.latency, r.measured_ms)
        except Exception as exc:  # reported as a failed prediction
            r.error = f"predict: {exc}"
        results.append(r)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a handful of small models, fewer repeats")
    ap.add_argument("--times", type=int, default=None, help="timed runs per op and per measurement")
    ap.add_argument("--repeats", type=int, default=None, help="measurements per model")
    ap.add_argument("--work-dir", default=None, help="default: benchmarks/work/accuracy[-quick]")
    ap.add_argument("--results", default=str(RESULTS), help="results file to update")
    ap.add_argument(
        "--reuse-measurements",
        action="store_true",
        help="reuse the models' measurements and profiles saved in the work dir by an earlier run",
    )
    args = ap.parse_args()
    times = args.times or (20 if args.quick else 100)
    repeats = args.repeats or (2 if args.quick else 3)
    work = Path(args.work_dir or ROOT / "benchmarks" / "work" / ("accuracy-quick" if args.quick else "accuracy"))
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    models: Models = [(n, b(**kw).eval(), shape) for n, b, kw, shape in nas_zoo.cases(quick=args.quick)]
    print(f"{len(models)} models; times={times}, repeats={repeats}; work dir {work}")

    # (a) in-table: every op of every model (fused ones too, for the plain-sum baseline)
    space = merge_spaces([space_from_model(m, shape, include_fused=True) for _, m, shape in models])
    table, summary, t_table = build_table(space, work / "intable_ops", times)
    print(f"in-table: {summary}; metered {len(table)} ops ({t_table:.0f} s)")
    t0 = time.perf_counter()

    def show(r: ModelResult) -> None:
        err = "failed: " + (r.error or "")[:80] if r.error_pct is None else f"{r.error_pct:+6.1f}%"
        print(f"  {r.name:24s} measured {r.measured_ms or 0:8.3f} ms  core sum {r.predicted_ms or 0:8.3f} ms  {err}")

    saved = work / "measurements.json"
    if args.reuse_measurements and saved.exists():
        results = load_measurements(saved, LatencyPredictor(table), models)
    else:
        results = evaluate(
            LatencyPredictor(table),
            models,
            times=times,
            repeats=repeats,
            profile_times=5 if args.quick else 10,
            on_result=show,
        )
        save_measurements(saved, results)
    t_eval = time.perf_counter() - t0
    measured = {r.name: r.measured_ms for r in results if r.measured_ms is not None}
    ROUNDS.update({r.name: list(r.run_medians_ms) for r in results})
    calibrated = cv_predictions(results, models, lambda cal: LatencyPredictor(table, calibration=cal))
    intable = {
        "sum of modules alone (the MMT tool's way)": score(
            predict_all(LatencyPredictor(table, composition="modules", latency="wall"), models), measured
        ),
        "+ fusion and tensor functions": score(predict_all(LatencyPredictor(table, latency="wall"), models), measured),
        "+ each op's own time (core)": score(predict_all(LatencyPredictor(table), models), measured),
        "+ in-context calibration (5-fold CV)": score(calibrated, measured),
    }
    for r in results:  # the written report shows the final, calibrated predictions
        if r.name in calibrated:
            r.predicted_ms, r.prediction = float(calibrated[r.name]), calibrated[r.name].to_dict()
    report = Report(
        results,
        table,
        {
            "scenario": "in-table",
            "times": times,
            "repeats": repeats,
            "quick": args.quick,
            "calibration": "5-fold cross-validation by architecture",
        },
    )
    report.write(work / "report-intable")
    m = report.metrics

    # (b) held-out: a generic table + the regression fallback (+ calibration, CV)
    sizes = RESOLUTIONS.get(max(shape[-1] for _, _, shape in models), RESOLUTIONS[224])
    channels = [16, 32, 64, 128, 256, 512] if not args.quick else [16, 32, 64, 128]
    gtable, gsummary, t_generic = build_table(generic_space(channels, sizes), work / "generic_ops", times)
    print(f"generic: {gsummary}; metered {len(gtable)} ops ({t_generic:.0f} s)")
    counted = [op for _, model, shape in models for op in parse_model(model, shape) if op.fused_into is None]
    coverage_runs = 100 * sum(op.key in gtable for op in counted) / len(counted)
    distinct = {op.key for op in counted}
    coverage_distinct = 100 * sum(k in gtable for k in distinct) / len(distinct)
    regressors = compare_regressors(gtable)
    best = min(regressors, key=lambda k: regressors[k]["mape_pct"])
    fallback = LatencyRegressor(best).fit(gtable)
    plain = predict_all(LatencyPredictor(gtable, on_missing="fallback", fallback=fallback), models)
    held_cal = cv_predictions(
        results, models, lambda cal: LatencyPredictor(gtable, on_missing="fallback", fallback=fallback, calibration=cal)
    )
    heldout = {
        "generic table + fallback": score(plain, measured),
        "+ in-context calibration (5-fold CV)": score(held_cal, measured),
    }
    fb_share = [p.source_ms("fallback") / float(p) for p in held_cal.values() if float(p) > 0]

    intable_md, heldout_md = metrics_table(intable), metrics_table(heldout)
    print("\nin-table scenario\n" + intable_md)
    print(f"\nheld-out scenario (fallback: {best})\n" + heldout_md)
    total = time.perf_counter() - t_start
    print(f"total {total:.0f} s")

    cats = report.category_totals()
    cat_rows = "\n".join(
        f"| {c} | {v['predicted_ms']:.1f} | {v['in_context_ms']:.1f} | {v['predicted_ms'] - v['in_context_ms']:+.1f} |"
        for c, v in sorted(cats.items(), key=lambda kv: -abs(kv[1]["predicted_ms"] - kv[1]["in_context_ms"]))
    )
    worst = sorted((r for r in results if r.ok), key=lambda r: -abs(r.error_pct or 0))[:5]
    reg_text = ", ".join(f"{k} MAPE {v['mape_pct']:.1f}%" for k, v in regressors.items())
    quick = " --quick" if args.quick else ""
    body = f"""## Accuracy{" (quick mode)" if args.quick else ""} (`benchmarks/accuracy.py{quick}`)

Machine: {machine_line()}. MNN CPU backend, 1 thread, high precision. {len(models)} models from
`examples/zoo/nas_zoo.py`; each op timed {times} times; each model measured {repeats}x{times} runs end to end
(median of the medians). Measurement noise: within-run CV {fmt(m.get("mean_within_run_cv_pct"))}, run-to-run CV
{fmt(m.get("mean_run_to_run_cv_pct"))}. Took {total / 60:.1f} min (in-table ops {t_table:.0f} s; measure, profile and
predict {t_eval:.0f} s; generic table {t_generic:.0f} s).

The calibration is fitted on MNN's per-op profiles of the other folds' models only: 5 folds by architecture
(a net at 224 and at 160 stays in one fold), so no model is scored by a calibration that saw it.

### (a) In-table: the table holds every op of every model ({len(table)} ops)

{intable_md}

Where the time goes before calibration, summed over the models (fusion-aware core-time predictions vs MNN's
per-op profile of each whole model, by op type):

| op category | predicted ms | in-context ms | difference ms |
| --- | --- | --- | --- |
{cat_rows}

Worst models: {", ".join(f"{r.name} {r.error_pct:+.1f}%" for r in worst)}.

### (b) Held-out: a generic op space ({len(gtable)} ops; channels {channels}, sizes {sizes}) + fallback

The generic table holds {coverage_runs:.1f}% of the models' counted op runs ({coverage_distinct:.1f}% of their
distinct ops); the rest come from the regression fallback: {best}, the best by 5-fold CV on the table
({reg_text}). Fallback share of predicted time: {fmt(100 * sum(fb_share) / max(len(fb_share), 1))} on average.

{heldout_md}
"""
    update_section("accuracy-quick" if args.quick else "accuracy", body, Path(args.results))
    print(f"updated {args.results}; report in {work / 'report-intable'}")


if __name__ == "__main__":
    main()
