"""Accuracy on networks nobody tuned for: the families of ``examples/zoo/families.py``, per family.

As a new user would: one op space written from all the models (``space_from_model``), generated and metered
into one table (the defaults: shuffled rounds, sentinel, hot and cold times), then every model measured end
to end (``measure_models``: interleaved rounds, input written and output read every run) right after. The
same table and truths score each composition side by side, nothing fitted on these models:

- ``alone``: every op as timed alone (hot caches), the composition before the cold times existed;
- ``model``: the default, each op moved toward its cold time by the model's weight bytes
  (``mmt_nas.predict.cache.cold_share``; its bytes measured on a synthetic chain, ``benchmarks/context.py``);
- ``model + calibration (LOFO)``: the default plus an in-context calibration fitted, for each model, on the
  MNN per-op profiles of the models of every *other* family (``leave_one_group_out``): never on its own family.

Run:  python benchmarks/unseen.py [--resolutions 160] [--families all] [--times 100] [--work-dir D [--rescore]]
Prints per-family and overall metrics and rewrites the "unseen" section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "examples" / "zoo"))

import families  # noqa: E402
from results_md import machine_line, update_section  # noqa: E402

from mmt_nas.build.generate import generate_ops_list  # noqa: E402
from mmt_nas.build.measure import measure_models  # noqa: E402
from mmt_nas.device.meter import meter_ops  # noqa: E402
from mmt_nas.device.profile import profile_model  # noqa: E402
from mmt_nas.predict.cache import CONTEXTS  # noqa: E402
from mmt_nas.predict.calibration import leave_one_group_out, samples_from_profile  # noqa: E402
from mmt_nas.predict.fallback import LatencyRegressor, compare_regressors  # noqa: E402
from mmt_nas.predict.predictor import LatencyPredictor  # noqa: E402
from mmt_nas.report.metrics import beyond_noise_of, compute_metrics, noise_variance  # noqa: E402
from mmt_nas.space.describe import space_from_model  # noqa: E402
from mmt_nas.space.opspace import dump_space  # noqa: E402
from mmt_nas.table.table import LatencyTable  # noqa: E402

CALIBRATED = "model + calibration (LOFO)"
HELDOUT = "held-out: generic table + fallback"
HELDOUT_CAL = "held-out + calibration (LOFO)"


def merged_space(spaces: list[dict]) -> dict:
    """One op space holding every entry of ``spaces`` once."""
    out: dict = {}
    seen: set[str] = set()
    for space in spaces:
        for module, classes in space.items():
            for cls, entries in classes.items():
                for entry in entries if isinstance(entries, list) else [entries]:
                    key = json.dumps([module, cls, entry], sort_keys=True, default=str)
                    if key not in seen:
                        seen.add(key)
                        out.setdefault(module, {}).setdefault(cls, []).append(entry)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolutions", default="160", help="comma-separated, e.g. 96,128,160,224")
    ap.add_argument("--families", default="all")
    ap.add_argument("--times", type=int, default=100, help="timed runs per op and per model")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the truths (their times split)")
    ap.add_argument("--threads", type=int, default=1, help="MNN threads, for the table and the truths")
    ap.add_argument("--work-dir", type=Path, default=None, help="keep the table and truths here")
    ap.add_argument(
        "--rescore", action="store_true",
        help="reuse the table, exported models and truths of an earlier run in --work-dir: predict and score again",
    )  # fmt: skip
    ap.add_argument(
        "--heldout", type=Path, default=None,
        help="also score a generic table (mmt-nas sample --generic, generated and metered) + the fallback",
    )  # fmt: skip
    args = ap.parse_args()
    resolutions = [int(r) for r in args.resolutions.split(",")]
    fams = None if args.families == "all" else args.families.split(",")
    cases = families.cases(resolutions, fams)
    models = {}
    for name, _family, build, kwargs, shape in cases:
        torch.manual_seed(0)
        models[name] = (build(**kwargs), shape)
    family_of = {name: family for name, family, *_ in cases}
    tmp = tempfile.TemporaryDirectory(prefix="mmt_nas_unseen_")
    work = args.work_dir or Path(tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    if args.rescore:  # the table, the exported models and the truths of an earlier run in --work-dir
        table = LatencyTable.load(work / "table.json")
        saved = json.loads((work / "results.json").read_text())
        measured, spread = saved["measured"], saved["run_to_run"]
        rounds = saved.get("rounds_ms") or {}  # (runs before the beyond-noise column kept no rounds)
        t_gen, t_meter, t_measure = (saved.get("seconds") or {}).get("steps") or [float("nan")] * 3
    else:
        t0 = time.perf_counter()
        space = merged_space([space_from_model(m, s) for m, s in models.values()])
        dump_space(space, work / "ops.yaml")
        generate_ops_list(work / "ops.yaml", work / "ops", show_progress=False)
        t_gen = time.perf_counter() - t0
        t0 = time.perf_counter()
        table = meter_ops(
            work / "ops", args.times, output=work / "table.json", threads=args.threads, show_progress=False
        )
        t_meter = time.perf_counter() - t0
        t0 = time.perf_counter()
        truths = measure_models(models, args.times, rounds=args.rounds, threads=args.threads, keep_mnn=work / "models")
        t_measure = time.perf_counter() - t0
        measured = {n: r.latency.median_ms for n, r in truths.items()}
        spread = {n: r.run_to_run for n, r in truths.items()}
        rounds = {n: list(r.rounds_ms) for n, r in truths.items()}
    profiles = {
        name: profile_model(work / "models" / f"model-{i}.mnn", 10, settings=table.settings)
        for i, name in enumerate(models)
    }
    predictors = {c: LatencyPredictor(table, context=c) for c in CONTEXTS}
    kinds = [*CONTEXTS, CALIBRATED]
    predicted: dict[str, dict[str, float]] = {c: {} for c in kinds}
    parsed = {}
    samples = []
    noise: dict[str, dict[str, float | None]] = {"table": {}, "generic": {}}  # each model's noise variance
    for name, (model, shape) in models.items():
        ops = parsed[name] = predictors["alone"].parse(model, shape)
        for c, p in predictors.items():
            pred = p.predict_ops(ops)
            predicted[c][name] = float(pred)
            if c == "model":
                noise["table"][name] = noise_variance(rounds.get(name, []), pred.to_dict()["ops"])
        samples += samples_from_profile(name, ops, profiles[name], table, measured_ms=measured[name])
    calibrations = leave_one_group_out(samples, group=family_of.__getitem__)
    for name in models:
        cal = calibrations.get(name)
        p = LatencyPredictor(table, calibration=cal) if cal is not None else predictors["model"]
        predicted[CALIBRATED][name] = float(p.predict_ops(parsed[name]))
    if args.heldout is not None:
        gtable = LatencyTable.load(args.heldout)
        cv = compare_regressors(gtable, ("forest", "boosting"))
        best = min(cv, key=lambda k: cv[k]["mape_pct"])
        fallback = LatencyRegressor(best).fit(gtable)
        held = LatencyPredictor(gtable, on_missing="fallback", fallback=fallback)
        kinds += [HELDOUT, HELDOUT_CAL]
        predicted[HELDOUT], predicted[HELDOUT_CAL] = {}, {}
        held_samples, fb_share = [], []
        for name in models:
            pred = held.predict_ops(parsed[name])
            predicted[HELDOUT][name] = float(pred)
            noise["generic"][name] = noise_variance(rounds.get(name, []), pred.to_dict()["ops"])
            fb_share.append(pred.source_ms("fallback") / float(pred))
            composed = {o.key: o.latency_ms for o in pred.ops if o.source != "fused"}
            held_samples += samples_from_profile(
                name, parsed[name], profiles[name], gtable, measured_ms=measured[name], composed=composed
            )
        held_cals = leave_one_group_out(held_samples, group=family_of.__getitem__)
        for name in models:
            cal = held_cals.get(name)
            p = (
                held
                if cal is None
                else LatencyPredictor(gtable, on_missing="fallback", fallback=fallback, calibration=cal)
            )
            predicted[HELDOUT_CAL][name] = float(p.predict_ops(parsed[name]))
        heldout_text = (
            f" Held-out columns: a generic table of {len(gtable)} ops (`mmt-nas sample --generic`, not written from "
            f"any model) + the {best} fallback (5-fold CV MAPE on the table's ops {cv[best]['mape_pct']:.1f}%); the "
            f"fallback gave a median {100 * statistics.median(fb_share):.0f}% of each model's predicted time."
        )
    else:
        heldout_text = ""
    seconds = {"steps": [t_gen, t_meter, t_measure] if t_gen == t_gen else None}  # NaN (a rescore): not known
    doc = {"measured": measured, "predicted": predicted, "run_to_run": spread, "rounds_ms": rounds, "seconds": seconds}
    (work / "results.json").write_text(json.dumps(doc))

    def row(label: str, names: list[str]) -> str:
        cells = []
        for c in kinds:
            m = compute_metrics([predicted[c][n] for n in names], [measured[n] for n in names])
            var = noise["generic" if c in (HELDOUT, HELDOUT_CAL) else "table"]
            b = beyond_noise_of(
                [predicted[c][n] for n in names], [measured[n] for n in names], [var.get(n) for n in names]
            )
            beyond = "–" if b is None else str(b)
            cells.append(
                f"{m['within_10_pct']:.0f}% / {m['within_5_pct']:.0f}% / {m['mape_pct']:.1f}% / "
                f"{m['mean_signed_error_pct']:+.1f}% / {beyond}"
            )
        return f"| {label} | {len(names)} | " + " | ".join(cells) + " |"

    names = list(models)
    rows = [row(f, [n for n in names if family_of[n] == f]) for f in dict.fromkeys(family_of.values())]
    rows += (
        [row(f"@{r}", [n for n in names if n.endswith(f"@{r}")]) for r in resolutions] if len(resolutions) > 1 else []
    )
    rows.append(row("**all**", names))
    per_model = "\n".join(
        f"| {n} | {family_of[n]} | {measured[n]:.2f} | {(spread[n] or 0):.1%} | "
        + " | ".join(f"{predicted[c][n]:.2f} ({predicted[c][n] / measured[n] - 1:+.1%})" for c in kinds)
        + " |"
        for n in names
    )
    floor = table.noise_floor()
    floor_text = f"{floor.median_pct:.1f}% median, {floor.p90_pct:.1f}% p90" if floor is not None else "unknown"
    runs = [s for s in spread.values() if s is not None]
    body = (
        "## Accuracy on unseen families (`benchmarks/unseen.py`)\n\n"
        f"Machine: {machine_line()}. {len(names)} models of `examples/zoo/families.py` at "
        f"{', '.join(map(str, resolutions))}, one table of {len(table)} ops from their op spaces ("
        + (
            f"generated in {t_gen:.0f} s, metered in {t_meter:.0f} s with the defaults), the truths measured right "
            f"after ({t_measure:.0f} s; "
            if t_gen == t_gen  # not NaN: measured in this run
            else "generated and metered with the defaults, the truths measured right after, in an earlier run: this "
            "one rescored them ("
        )
        + f"{args.rounds} interleaved rounds, {args.times} runs in all, input written and output read; "
        f"{table.settings.threads} MNN thread(s)). "
        f"Table's noise floor (run-to-run of its ops' rounds): {floor_text}; truths' run-to-run (spread of a "
        f"model's rounds): median {100 * statistics.median(runs):.1f}%, max {100 * max(runs):.1f}%. Nothing is "
        "fitted on these models."
        + heldout_text
        + " Cells: within ±10% / within ±5% / MAPE / mean signed error / error beyond the noise "
        "(RMS log error less the truths' and the table's noise variance, "
        "`mmt_nas.report.metrics.error_beyond_noise`; 90% bootstrap interval over the models).\n\n"
        "| family | models | " + " | ".join(f"context={c}" if c in CONTEXTS else c for c in kinds) + " |\n"
        "| --- | --- | " + " | ".join("---" for _ in kinds) + " |\n" + "\n".join(rows) + "\n\n"
        "<details><summary>Per model</summary>\n\n| model | family | measured ms | run-to-run | "
        + " | ".join(f"{c} ms" for c in kinds)
        + " |\n| --- | --- | --- | --- | "
        + " | ".join("---" for _ in kinds)
        + " |\n"
        + per_model
        + "\n\n</details>\n"
    )
    print(body)
    section = "unseen" if resolutions == [160] else "unseen-" + "-".join(map(str, resolutions))
    update_section(section + ("" if table.settings.threads == 1 else f"-t{table.settings.threads}"), body)


if __name__ == "__main__":
    main()
