"""Does the composition match what a model's ops take inside it? A check the host's drift cannot fool.

A table metered at one time and a model measured at another disagree by the host's drift (5-11% over minutes on
this project's VMs), so an end-to-end benchmark cannot tell a composition rule's error from the host's. Here each
model is exported and, in rounds, its whole-model per-op profile (MNN's callbacks: each op in context) and each of
its ops alone (hot, ``core_ms``, and cold, ``cold_core_ms``) are timed within the same minute; each composition
rule then composes the ops' times of that round, and is compared with the same ops' sum in context:

- ``alone``: every op hot;
- ``weights``: the weights' part of each op's bytes moved from hot toward cold by the model's cold share (the
  composition before 2026-12-03);
- ``model``: the default: that, and the activations' part of its bytes at their cold timing's state
  (:func:`mmt_nas.predict.cache.in_model_ms`).

Ops the model calls more than once and tensor functions are left out (their in-context times are not separable
by module path). Nothing is fitted: the models' table comes from their own op spaces.

Run:  python benchmarks/in_context.py [--families effnet,fire,...] [--resolution 160] [--rounds 3] [--models N]
Prints a table and rewrites the "in-context" section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "examples" / "zoo"))

import families  # noqa: E402
from results_md import machine_line, update_section  # noqa: E402
from unseen import merged_space  # noqa: E402

from mmt_nas.build.export import export_to_mnn  # noqa: E402
from mmt_nas.build.generate import generate_ops_list  # noqa: E402
from mmt_nas.device.meter import meter_ops  # noqa: E402
from mmt_nas.device.profile import cold_core_ms, core_ms, profile_model  # noqa: E402
from mmt_nas.predict.cache import cold_part, cold_share  # noqa: E402
from mmt_nas.predict.calibration import model_weight_bytes, times_by_scope  # noqa: E402
from mmt_nas.space.describe import space_from_model  # noqa: E402
from mmt_nas.space.opspace import dump_space  # noqa: E402
from mmt_nas.space.trace import parse_model  # noqa: E402
from mmt_nas.table.records import load_ops_meta  # noqa: E402

RULES = ("alone", "weights", "model")


def compose(rule: str, hot: float, cold: float, weights_part: float, share: float) -> float:
    """One op's time under ``rule`` from its hot and cold time of the same round."""
    if rule == "alone":
        return hot
    return hot + cold_part(weights_part, share, activations=rule == "model") * (cold - hot)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--families", default="inception,fire,dense,resnext,effnet,convnext,wide,vit")
    ap.add_argument("--resolution", type=int, default=160)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--times", type=int, default=20, help="profiled runs per model and per op, per round")
    ap.add_argument("--models", type=int, default=2, help="models per family (the first ones)")
    ap.add_argument("--threads", type=int, default=1, help="MNN threads")
    args = ap.parse_args()
    per_family: dict[str, int] = collections.Counter()
    cases = []
    for case in families.cases([args.resolution], args.families.split(",")):
        if per_family[case[1]] < args.models:
            per_family[case[1]] += 1
            cases.append(case)
    with tempfile.TemporaryDirectory(prefix="mmt_nas_in_context_") as tmp:
        work = Path(tmp)
        models = {}
        for name, family, build, kwargs, shape in cases:
            torch.manual_seed(0)
            models[name] = (family, build(**kwargs), shape)
        dump_space(merged_space([space_from_model(m, s) for _, m, s in models.values()]), work / "ops.yaml")
        generate_ops_list(work / "ops.yaml", work / "ops", show_progress=False)
        table = meter_ops(work / "ops", 40, threads=args.threads, show_progress=False)
        settings = table.settings
        records = {r.key: r for r in load_ops_meta(work / "ops")}
        rows = []
        for name, (family, model, shape) in models.items():
            path = work / f"{name}.mnn"
            export_to_mnn(model, shape, path)
            parsed = parse_model(model, shape, known=records.__contains__)
            share = cold_share(model_weight_bytes([o for o in parsed if o.fused_into is None], table))
            ops = [o for o in parsed if o.fused_into is None and o.function is None and o.key in records]
            calls = collections.Counter(o.name for o in ops)
            ops = [o for o in ops if calls[o.name] == 1]
            keys = sorted({o.key for o in ops})
            sums: dict[str, list[float]] = collections.defaultdict(list)
            for rnd in range(args.rounds):
                ctx, _ = times_by_scope(profile_model(path, args.times, settings=settings))
                hot, cold = {}, {}
                for key in keys if rnd % 2 == 0 else keys[::-1]:
                    op_file = work / "ops" / records[key].file
                    hot[key] = core_ms(profile_model(op_file, args.times, settings=settings))
                    cold[key] = cold_core_ms(op_file, records[key].footprint_bytes, args.times, settings=settings)
                total: dict[str, float] = collections.defaultdict(float)
                for o in ops:
                    if o.name in ctx:
                        total["context"] += ctx[o.name]
                        for rule in RULES:
                            w = records[o.key].weight_fraction
                            total[rule] += compose(rule, hot[o.key], cold[o.key], w, share)
                for k, v in total.items():
                    sums[k].append(v)
            med = {k: statistics.median(v) for k, v in sums.items()}
            rel = {rule: med[rule] / med["context"] - 1 for rule in RULES}
            print(f"{name}: share {share:.2f}, {len(ops)} ops, " + ", ".join(f"{r} {v:+.1%}" for r, v in rel.items()))
            rows.append((name, family, share, len(ops), med["context"], rel))
    lines = [
        f"| {n} | {f} | {s:.2f} | {k} | {c:.3f} | " + " | ".join(f"{100 * rel[r]:+.1f}%" for r in RULES) + " |"
        for n, f, s, k, c, rel in rows
    ]
    means = {
        rule: (statistics.mean(r[5][rule] for r in rows), statistics.mean(abs(r[5][rule]) for r in rows))
        for rule in RULES
    }
    summary = " | ".join(f"{100 * m:+.1f}% / {100 * a:.1f}%" for m, a in means.values())
    body = (
        "## Does the composition match the ops in context? (`benchmarks/in_context.py`)\n\n"
        f"Machine: {machine_line()}. {args.threads} MNN thread(s). {len(rows)} models of "
        f"`examples/zoo/families.py` at {args.resolution} "
        f"({args.families}), their table from their own op spaces. Per model, in {args.rounds} rounds: its "
        f"whole-model per-op profile and each of its ops alone, hot and cold, {args.times} runs each, in the same "
        "minute (so the host's drift cannot pass for the composition's error). Each cell: a rule's composed sum of "
        "the model's ops (called once, not tensor functions) against the same ops' sum in context, median over the "
        "rounds. `share`: the model's cold share of its weights.\n\n"
        "| model | family | share | ops | in context ms | alone | weights (before) | model (default) |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- |\n" + "\n".join(lines) + "\n"
        f"| **mean / mean abs** | | | | | {summary} |\n"
    )
    print(body)
    update_section("in-context" + ("" if args.threads == 1 else f"-t{args.threads}"), body)


if __name__ == "__main__":
    main()
