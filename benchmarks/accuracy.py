"""Accuracy benchmark: predicted vs measured latency over the model set in examples/zoo/.

Scenarios, reported separately:
  (a) in-table: the table covers every op of the models (built with space_from_model from the set);
  (b) held-out: a generic op space that does not include the models' exact ops. Until the regression
      fallback exists, only its coverage is reported: the predictor refuses ops it does not know.

Run:  python benchmarks/accuracy.py [--quick] [--times 100] [--repeats 3]
Prints one table, writes the full report (JSON, Markdown, HTML, plots) into --work-dir, and rewrites
the "accuracy" section (or "accuracy-quick") of benchmarks/RESULTS.md, or of --results.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "examples" / "zoo"))

import nas_zoo  # noqa: E402
from results_md import RESULTS, machine_line, update_section  # noqa: E402

from mmt_nas.converter import _prepare, generate_ops_list  # noqa: E402
from mmt_nas.meter import meter_ops  # noqa: E402
from mmt_nas.opspace import dump_space, expand_space, space_from_model  # noqa: E402
from mmt_nas.parser import parse_model  # noqa: E402
from mmt_nas.predictor import LatencyPredictor  # noqa: E402
from mmt_nas.report import Report, evaluate  # noqa: E402

RESOLUTIONS = {224: [112, 56, 28, 14, 7], 160: [80, 40, 20, 10, 5], 128: [64, 32, 16, 8, 4], 96: [48, 24, 12, 6, 3]}


def generic_space(channels: list[int], sizes: list[int]) -> dict[str, Any]:
    """A generic op space on a grid of channel counts and feature-map sizes (not fitted to any model)."""
    shapes = [[1, c, s, s] for c in channels for s in sizes]
    conv_blocks = [{"in_channels": [c], "out_channels": channels, "kernel_size": [1, 3], "stride": [1, 2],
                    "padding": [0, 1], "bias": [False], "input_shape": [[1, c, s, s] for s in sizes]}
                   for c in channels]
    dw_blocks = [{"in_channels": [c], "out_channels": [c], "groups": [c], "kernel_size": [3, 5, 7],
                  "stride": [1, 2], "padding": [1, 2, 3], "bias": [False], "input_shape": [[1, c, s, s] for s in sizes]}
                 for c in channels]
    return {"torch.nn": {
        "Conv2d": conv_blocks + dw_blocks,
        "BatchNorm2d": [{"num_features": [c], "input_shape": [[1, c, s, s] for s in sizes]} for c in channels],
        "ReLU": {"no_params": True, "input_shape": shapes},
        "ReLU6": {"no_params": True, "input_shape": shapes},
    }}


def merge_spaces(docs: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, dict[str, list[Any]]] = {}
    for doc in docs:
        for module, classes in doc.items():
            for cls, blocks in classes.items():
                merged.setdefault(module, {}).setdefault(cls, []).extend(blocks)
    return merged


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a handful of small models, fewer repeats")
    ap.add_argument("--times", type=int, default=None, help="timed runs per op and per measurement")
    ap.add_argument("--repeats", type=int, default=None, help="measurements per model")
    ap.add_argument("--work-dir", default=None, help="default: benchmarks/work/accuracy[-quick]")
    ap.add_argument("--results", default=str(RESULTS), help="results file to update")
    args = ap.parse_args()
    times = args.times or (20 if args.quick else 100)
    repeats = args.repeats or (2 if args.quick else 3)
    work = Path(args.work_dir or ROOT / "benchmarks" / "work" / ("accuracy-quick" if args.quick else "accuracy"))
    t_start = time.perf_counter()

    cases = nas_zoo.cases(quick=args.quick)
    models = [(name, builder(**kwargs).eval(), shape) for name, builder, kwargs, shape in cases]
    print(f"{len(models)} models; times={times}, repeats={repeats}; work dir {work}")

    # (a) in-table
    space = merge_spaces([space_from_model(m, shape) for _, m, shape in models])
    dump_space(space, work / "intable.yaml")
    t0 = time.perf_counter()
    gen = generate_ops_list(work / "intable.yaml", work / "intable_ops")
    t_gen = time.perf_counter() - t0
    print(f"in-table space: {gen.summary()} ({t_gen:.0f} s)")
    t0 = time.perf_counter()
    table = meter_ops(work / "intable_ops", times=times)
    t_meter = time.perf_counter() - t0
    print(f"metered {len(table)} ops ({t_meter:.0f} s)")
    predictor = LatencyPredictor(table)

    def show(r: Any) -> None:
        err = "failed: " + (r.error or "")[:80] if r.error_pct is None else f"{r.error_pct:+6.1f}%"
        print(f"  {r.name:24s} measured {r.measured_ms or 0:8.3f} ms  predicted {r.predicted_ms or 0:8.3f} ms  {err}")

    t0 = time.perf_counter()
    results = evaluate(predictor, models, times=times, repeats=repeats, profile_times=5 if args.quick else 10,
                       on_result=show)
    t_eval = time.perf_counter() - t0
    report = Report(results, table, {"scenario": "in-table", "times": times, "repeats": repeats,
                                     "quick": args.quick, "models": len(models)})
    report.write(work / "report-intable")
    m = report.metrics

    # (b) held-out: coverage of a generic space
    res = max(shape[-1] for _, _, shape in models)
    sizes = RESOLUTIONS.get(res, RESOLUTIONS[224])
    generic_specs = expand_space(generic_space([16, 32, 64, 128, 256, 512], sizes))
    ready, _ = _prepare(generic_specs, ROOT)
    generic_keys = {r.key for r, _ in ready}
    runs = hits = 0
    distinct: set[str] = set()
    distinct_hits: set[str] = set()
    for _, model, shape in models:
        for op in parse_model(model, shape):
            runs += 1
            hits += op.key in generic_keys
            distinct.add(op.key)
            if op.key in generic_keys:
                distinct_hits.add(op.key)
    coverage_runs = 100 * hits / runs
    coverage_distinct = 100 * len(distinct_hits) / len(distinct)
    covered_models = sum(all(op.key in generic_keys for op in parse_model(mm, sh)) for _, mm, sh in models)

    def f(v: Any, spec: str = ".1f", unit: str = "%") -> str:
        return "–" if v is None else f"{v:{spec}}{unit}"

    rows = [
        ("models (failed)", f"{m['n_models']} ({m['n_failed']})"),
        ("within ±10%", f(m.get("within_10_pct"))),
        ("within ±5%", f(m.get("within_5_pct"))),
        ("MAPE", f(m.get("mape_pct"))),
        ("RMSPE", f(m.get("rmspe_pct"))),
        ("mean signed error (bias)", f(m.get("mean_signed_error_pct"), "+.1f")),
        ("MAE / RMSE", f"{f(m.get('mae_ms'), '.2f', '')} / {f(m.get('rmse_ms'), '.2f', ' ms')}"),
        ("Kendall τ / Spearman ρ", f"{f(m.get('kendall_tau'), '.3f', '')} / {f(m.get('spearman_rho'), '.3f', '')}"),
        ("measurement noise: within-run CV / run-to-run CV",
         f"{f(m.get('mean_within_run_cv_pct'))} / {f(m.get('mean_run_to_run_cv_pct'))}"),
        ("share of predicted time from table / fallback",
         f"{f(m.get('table_share_pct'), '.0f')} / {f(m.get('fallback_share_pct'), '.0f')}"),
    ]
    cats = report.category_totals()
    cat_rows = "\n".join(
        f"| {c} | {v['predicted_ms']:.1f} | {v['in_context_ms']:.1f} | {v['predicted_ms'] - v['in_context_ms']:+.1f} |"
        for c, v in sorted(cats.items(), key=lambda kv: -abs(kv[1]["predicted_ms"] - kv[1]["in_context_ms"]))
    )
    worst = sorted((r for r in results if r.ok), key=lambda r: -abs(r.error_pct or 0))[:5]
    print("\nin-table scenario")
    for k, v in rows:
        print(f"  {k:50s} {v}")
    print(f"held-out scenario: generic space of {len(generic_keys)} ops covers {coverage_runs:.1f}% of op runs, "
          f"{coverage_distinct:.1f}% of distinct ops, {covered_models}/{len(models)} models fully")
    total = time.perf_counter() - t_start
    print(f"total {total:.0f} s")

    name = "accuracy-quick" if args.quick else "accuracy"
    body = f"""## Accuracy{' (quick mode)' if args.quick else ''} (`benchmarks/accuracy.py{' --quick' if args.quick else ''}`)

Machine: {machine_line()}. MNN CPU backend, 1 thread, high precision. {len(models)} models from
`examples/zoo/nas_zoo.py`; each op timed {times} times; each model measured {repeats}x{times} runs end to end
(median of the medians). Prediction: the sum of the table's medians of the modules the model runs (no fusion
awareness, no calibration, no fallback). Took {total / 60:.1f} min (generate {t_gen:.0f} s, meter {t_meter:.0f} s,
measure and predict {t_eval:.0f} s).

### (a) In-table: the table holds every op of every model ({len(table)} ops)

| metric | value |
| --- | --- |
""" + "\n".join(f"| {k} | {v} |" for k, v in rows) + f"""

Where the error comes from, summed over the models (predicted: ops timed alone; in context: MNN's per-op
profile of each whole model, by MNN op type):

| op category | predicted ms | in-context ms | difference ms |
| --- | --- | --- | --- |
{cat_rows}

Worst models: {', '.join(f'{r.name} {r.error_pct:+.1f}%' for r in worst)}.

### (b) Held-out: a generic op space ({len(generic_keys)} ops on a grid of channels 16-512, sizes {sizes})

Covers {coverage_runs:.1f}% of the models' op runs ({coverage_distinct:.1f}% of their distinct ops);
{covered_models} of {len(models)} models are fully covered. Without the regression fallback the predictor
refuses the others (never 0 ms), so no held-out accuracy is reported yet.
"""
    update_section(name, body, Path(args.results))
    print(f"updated {args.results}; report in {work / 'report-intable'}")


if __name__ == "__main__":
    main()
