"""Which truth: a model's end-to-end latency as a deployed app sees it vs the bare session run.

A deployed app writes its input and reads its output on every inference, so ``measure_latency`` and
``mmt-nas report`` time that (:func:`mmt_nas.device.endtoend.time_inference`: input copied in from a host numpy
array, the run, the outputs read back into host numpy arrays, MNN's module API). Op tables are metered
with the bare session run (:func:`mmt_nas.device.timing.time_model`: one ``Interpreter.runSession``, the input
already in place). This measures the difference on the CNNs of ``examples/zoo`` in interleaved rounds
(each round: every model once, in a seeded shuffled order, as :func:`mmt_nas.device.endtoend.measure_interleaved`
runs them). In its turn a model is timed twice:

* as the tools time it: ``time_inference`` and ``time_model``, back to back in a seeded order, each
  loading the model, warming up and timing its share of the runs. The rounds' medians give each method's
  run-to-run spread;
* alternated run by run (inference, session, session, inference, ...; both loaded, both warmed up), so
  that the drift of a shared host, which moves a model's time by tens of percent within seconds, hits
  both sides of each pair alike: the ratio inference / session is the median of these pairs' ratios.

Run:  python benchmarks/truth.py [--models 16|all] [--times 90] [--rounds 3] [--threads 1]
Prints a table and rewrites the "truth" section of benchmarks/RESULTS.md (or of --results).
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "examples" / "zoo"))

import nas_zoo  # noqa: E402
from results_md import RESULTS, machine_line, update_section  # noqa: E402

from mmt_nas.build.export import export_to_mnn  # noqa: E402
from mmt_nas.device.endtoend import InterleavedResult, _Inference, time_inference  # noqa: E402
from mmt_nas.device.rounds import (
    round_order,  # noqa: E402
    round_times,  # noqa: E402
)
from mmt_nas.device.timing import _Session, time_model  # noqa: E402
from mmt_nas.table.table import LatencyStats, RuntimeSettings  # noqa: E402


def zoo(which: str) -> list[tuple[str, Any, dict[str, Any], list[int]]]:
    """The zoo's models: all of them, or 16 of every family and size (the ResNets, the MobileNetV2s at
    both widths, four sampled MobileNetV2s at two resolutions, VGG, ShuffleNet-like, SE and V1)."""
    cases = nas_zoo.cases()
    if which == "all":
        return cases
    samples = {f"mbv2-sample{s}@{r}" for s in (0, 1) for r in (224, 160)}
    keep = [c for c in cases if not c[0].startswith("mbv2-sample") or c[0] in samples]
    assert len(keep) == 16, [c[0] for c in keep]
    return keep


def alternated(path: Path, n: int, settings: RuntimeSettings) -> list[tuple[float, float]]:
    """``n`` pairs of runs (inference ms, session ms) of one model, alternated run by run (ABBA order)."""
    inf, ses = _Inference(path, settings), _Session(path, settings)
    for _ in range(5):  # the tools' warm-up: at least 5 runs and 20 ms of each
        inf.run(), ses.write_input(), ses.run()
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 0.04:
        inf.run(), ses.write_input(), ses.run()
    clock = time.perf_counter_ns
    out = []
    gc.disable()
    try:
        for k in range(n):
            times = {}
            for name, run in (("i", inf.run), ("s", ses.run)) if k % 2 == 0 else (("s", ses.run), ("i", inf.run)):
                if name == "s":
                    ses.write_input()  # untimed, as time_model does: the last run overwrote it
                t = clock()
                run()
                times[name] = clock() - t
            out.append((times["i"] / 1e6, times["s"] / 1e6))
    finally:
        gc.enable()
    return out


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--models", choices=["16", "all"], default="16")
    ap.add_argument("--times", type=int, default=90, help="timed runs per model and method, over all rounds")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--results", type=Path, default=RESULTS, help="the results file to update")
    args = ap.parse_args(argv)

    cases = zoo(args.models)
    settings = RuntimeSettings("CPU", args.threads, "high")
    with tempfile.TemporaryDirectory(prefix="mmt_nas_truth_") as tmp:
        t0 = time.perf_counter()
        files = {}
        for i, (name, build, kwargs, shape) in enumerate(cases):
            files[name] = Path(tmp) / f"model-{i}.mnn"
            export_to_mnn(build(**kwargs).eval(), shape, files[name])
        print(f"exported {len(files)} models ({time.perf_counter() - t0:.0f} s); timing {args.times} runs per model "
              f"and method in {args.rounds} interleaved rounds, {settings}")  # fmt: skip
        stats: dict[str, dict[str, list[LatencyStats]]] = {n: {"inference": [], "session": []} for n in files}
        pairs: dict[str, list[tuple[float, float]]] = {n: [] for n in files}
        t0 = time.perf_counter()
        for r, runs in enumerate(round_times(args.times, args.rounds)):
            for name in round_order(files, args.seed, r):
                methods = ["inference", "session"]
                random.Random(f"truth:{args.seed}:{r}:{name}").shuffle(methods)
                for m in methods:
                    timer = time_inference if m == "inference" else time_model
                    stats[name][m].append(timer(files[name], runs, settings=settings))
                pairs[name] += alternated(files[name], runs, settings)
        seconds = time.perf_counter() - t0
        res = {f"{n}|{m}": InterleavedResult.from_rounds(st, m) for n, by in stats.items() for m, st in by.items()}

    rows = []
    for name in files:
        inf, ses = res[f"{name}|inference"], res[f"{name}|session"]
        ratios = [i / s for i, s in pairs[name]]
        rows.append(
            {
                "name": name,
                "inf": inf,
                "ses": ses,
                "ratio": statistics.median(ratios),
                "iqr": statistics.quantiles(ratios, n=4)[::2],
                "extra_us": 1000 * statistics.median(i - s for i, s in pairs[name]),
                "alt_ms": statistics.median(s for _, s in pairs[name]),
                "rounds_ratio": inf.latency.median_ms / ses.latency.median_ms,
            }
        )

    head = (
        "| model | session ms | inference / session (pairs) | pairs' IQR | + µs | inference / session (rounds) | "
        "run-to-run (inference) | run-to-run (session) |\n|---|---|---|---|---|---|---|---|"
    )
    lines = [
        f"| {r['name']} | {r['alt_ms']:.3f} | {r['ratio']:.3f} | {r['iqr'][0]:.3f}–{r['iqr'][1]:.3f} | "
        f"{r['extra_us']:+.0f} | {r['rounds_ratio']:.3f} | {pct(r['inf'].run_to_run or 0)} | "
        f"{pct(r['ses'].run_to_run or 0)} |"
        for r in rows
    ]
    ratios = sorted(r["ratio"] for r in rows)
    by_rounds = sorted(r["rounds_ratio"] for r in rows)
    extra = sorted(r["extra_us"] for r in rows)
    rr_inf = [x for r in rows if (x := r["inf"].run_to_run) is not None]
    rr_ses = [x for r in rows if (x := r["ses"].run_to_run) is not None]
    mid = statistics.median(ratios)
    summary = (
        f"Over {len(rows)} models, alternated run by run: inference / session median **{mid:.3f}**, range "
        f"{ratios[0]:.3f}–{ratios[-1]:.3f} across models ({sum(x < 1 for x in ratios)} of {len(rows)} below 1); "
        f"the bare session run measures {pct(1 - 1 / mid)} less (median). Per inference the difference is "
        f"{statistics.median(extra):+.0f} µs (median; range {extra[0]:+.0f} to {extra[-1]:+.0f}). From the "
        f"rounds' medians instead (minutes apart, not paired): median {statistics.median(by_rounds):.3f}, range "
        f"{by_rounds[0]:.3f}–{by_rounds[-1]:.3f}. Run-to-run spread, (max − min) / median of a model's "
        f"{args.rounds} round medians: inference median {pct(statistics.median(rr_inf))} (max "
        f"{pct(max(rr_inf))}), session median {pct(statistics.median(rr_ses))} (max {pct(max(rr_ses))})."
    )
    body = "\n".join(
        [
            "## Which truth: end-to-end inference vs the bare session run (`benchmarks/truth.py`)",
            "",
            f"Machine: {machine_line()}. {settings}.",
            "",
            "*Inference* (what `measure_latency` and `mmt-nas report` time, a deployed app's latency): each run "
            "writes the input from a host numpy array, runs the model with MNN's module API and reads the output "
            "back into a host numpy array. *Session* (how op tables are metered, and how models were measured "
            "before): one `Interpreter.runSession`, the input already in place. "
            f"{args.rounds} interleaved rounds (seed {args.seed}; each round: every model once, in a shuffled "
            "order); in its turn a model is timed by both methods back to back as the tools do (load, warm up, "
            "time: the rounds' medians and run-to-run spreads), then by both alternated run by run (the paired "
            f"ratios); {args.times} runs per model and method each way; {seconds:.0f} s of timing. Session ms: the "
            "median of the alternated session runs.",
            "",
            summary,
            "",
            head,
            *lines,
        ]
    )
    print(head)
    print("\n".join(lines))
    print(summary)
    update_section("truth", body, args.results)
    print(f"wrote the 'truth' section of {args.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
