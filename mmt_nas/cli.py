"""The ``mmt-nas`` command line. The only module that configures logging and prints."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from mmt_nas import __version__
from mmt_nas._files import atomic_write_text, exclusive_lock, lock_path
from mmt_nas.device.meter import meter_ops
from mmt_nas.device.state import DeviceActivity
from mmt_nas.exceptions import MeteringError, MmtNasError, OpSpaceError, OptionError, TableError
from mmt_nas.report.document import Report
from mmt_nas.report.evaluation import JOURNAL_FILENAME, evaluate, load_model_specs
from mmt_nas.space.opspace import dump_space, load_space, space_of, yaml_error_text
from mmt_nas.space.opspace import load_model as _load_model
from mmt_nas.table.merge import merge_tables
from mmt_nas.table.records import TABLE_FILENAME
from mmt_nas.table.table import LatencyTable
from mmt_nas.vocab import did_you_mean

# The modules above import neither torch nor scikit-learn, so `mmt-nas meter` runs on a device with the base
# install. Those that do (describe, converter, predictor, fallback, calibration, parser) are imported by the
# commands that need them.

_logger = logging.getLogger("mmt_nas.cli")


def _shape(text: str) -> list[int]:
    try:
        # a trailing comma is fine (1,3,224,224,); an empty part inside (1,3,,224) is an error, not skipped
        shape = [int(p) for p in text.strip().replace("x", ",").removesuffix(",").split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a shape such as 1,3,224,224, but got {text!r}") from None
    if not shape or any(d <= 0 for d in shape):
        raise argparse.ArgumentTypeError(f"expected positive sizes such as 1,3,224,224, but got {text!r}")
    return shape


def load_model(spec: str, kwargs: str | None = None) -> Any:
    """Build a model from the command line's MODULE:CALLABLE and --kwargs (YAML/JSON mapping)."""

    try:
        args = yaml.safe_load(kwargs) if kwargs else {}
    except yaml.YAMLError as exc:
        raise OpSpaceError(
            f"--kwargs must be a YAML mapping such as '{{num_classes: 10}}', but {kwargs!r} is not valid YAML"
            f"{yaml_error_text(exc)}."
        ) from None
    if not isinstance(args, dict):
        raise OpSpaceError(f"--kwargs must be a mapping such as '{{num_classes: 10}}', but got {kwargs!r}.")
    return _load_model(spec, args)


def _runtime_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default="CPU", help="MNN backend (default: CPU)")
    p.add_argument("--threads", type=int, default=1, help="MNN threads (default: 1)")
    p.add_argument("--precision", default="high", choices=["high", "normal", "low"], help="MNN precision")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="package.module:callable or file.py:callable returning an nn.Module")
    p.add_argument("--input-shape", type=_shape, required=True, help="e.g. 1,3,224,224")
    p.add_argument("--kwargs", default=None, help="keyword arguments for the callable, as YAML/JSON")


def _cmd_space(a: argparse.Namespace) -> int:
    from mmt_nas.space.describe import space_from_model

    doc = space_from_model(load_model(a.model, a.kwargs), a.input_shape)
    dump_space(doc, a.output)
    n = sum(len(blocks) for classes in doc.values() for blocks in classes.values())
    print(f"wrote {a.output}: {n} ops")
    return 0


def _cmd_generate(a: argparse.Namespace) -> int:
    from mmt_nas.build.generate import generate_ops_list

    result = generate_ops_list(a.yaml, a.out_dir, keep_onnx=a.keep_onnx, show_progress=a.verbose or None)
    print(result.summary())
    for s in result.skipped[: 10 if not a.verbose else None]:
        print(f"  skipped {s}")
    if len(result.skipped) > 10 and not a.verbose:
        print(f"  ... {len(result.skipped) - 10} more skipped (use -v to list all)")
    for key, reason in result.failed:
        print(f"  FAILED {key}: {reason}")
    return 1 if result.failed else 0


def _cmd_meter(a: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    table = meter_ops(
        a.ops_dir,
        a.times,
        warmup=a.warmup,
        backend=a.backend,
        threads=a.threads,
        precision=a.precision,
        show_progress=a.verbose or None,
        shard=a.shard,
        output=a.output,
        rounds=a.rounds,
        seed=a.seed,
        sentinel_every=a.sentinel_every,
        cold=a.cold,
        cache_probe=a.cache_probe,
    )
    part = f" (shard {a.shard})" if a.shard else ""
    print(f"{len(table)} ops in the table{part} ({time.perf_counter() - t0:.1f} s); {table.settings}")
    floor = table.noise_floor()
    print(
        f"noise floor: {floor}" if floor else "noise floor: unknown (every op was timed in one round; use --rounds 2)"
    )
    state = table.timing.get("device_state")
    if isinstance(state, dict):
        print(DeviceActivity.from_dict(state).summary())
    guard = table.timing.get("sentinel")
    if isinstance(guard, dict) and guard.get("series"):
        drift = guard.get("max_drift_pct")
        print(
            f"sentinel: {len(guard['series'])} readings of {guard['key'][:60]}, drift up to "
            f"{'?' if drift is None else f'{drift:+.0f}%'}; {len(guard.get('remeasured', []))} timing(s) timed again"
        )
    return 0


def _cmd_merge(a: argparse.Namespace) -> int:

    def resolve(p: str) -> Path:
        return Path(p) / TABLE_FILENAME if Path(p).is_dir() else Path(p)

    inputs = [resolve(p) for p in a.tables]
    out = resolve(a.output)
    if out.exists() and out.resolve() not in {p.resolve() for p in inputs}:
        raise TableError(
            f"the output {str(out)!r} exists and is not among the tables to merge, so merging would replace it. "
            "List it among the inputs to merge into it, or delete it first."
        )
    with exclusive_lock(lock_path(out), f"writing {str(out)!r}", "merge into another file"):  # as meter does
        merged, report = merge_tables([LatencyTable.load(p) for p in inputs], rtol=a.rtol)
        merged.save(out)
    print(f"wrote {out}: {len(merged)} entries; {report.summary()}")
    for p, n in zip(inputs, report.sources):
        print(f"  {n:6d} from {p}")
    worst = report.disagreements
    for c in worst[:10]:
        print(
            f"  disagree {c.rel_diff:+.0%}: kept {c.kept_ms:.4f} ms (n={c.kept_n}, {c.kept_device}) over "
            f"{c.other_ms:.4f} ms (n={c.other_n}, {c.other_device}): {c.key}"
        )
    if len(worst) > 10:
        print(f"  ... {len(worst) - 10} more disagreements")
    if a.report:
        doc = {
            "output": str(out),
            "inputs": [str(p) for p in inputs],
            "sources": report.sources,
            "rtol": a.rtol,
            "conflicts": [dict(vars(c), rel_diff=c.rel_diff) for c in report.conflicts],
        }
        atomic_write_text(a.report, json.dumps(doc, indent=1, default=str) + "\n")
        print(f"wrote {a.report}")
    return 0


def _predictor(a: argparse.Namespace) -> Any:
    """The predictor the command's --table, --fallback and --calibration ask for."""
    from mmt_nas.predict.predictor import LatencyPredictor, load_table_cached

    table = load_table_cached(a.table)
    kwargs: dict[str, Any] = {}
    if getattr(a, "fallback", False):
        from mmt_nas.predict.fallback import LatencyRegressor

        kwargs.update(on_missing="fallback", fallback=LatencyRegressor().fit(table))
    if getattr(a, "calibration", None):
        from mmt_nas.predict.calibration import InContextCalibration

        kwargs["calibration"] = InContextCalibration.load(a.calibration)
    if getattr(a, "intervals", None):
        from mmt_nas.predict.intervals import ConformalIntervals

        kwargs["intervals"] = ConformalIntervals.load(a.intervals)
    expect = getattr(a, "expect_device", None)
    if expect is not None and expect != "local":
        try:
            expect = yaml.safe_load(expect)
        except yaml.YAMLError:
            expect = None
        if not isinstance(expect, dict):
            raise TableError(
                f"--expect-device must be 'local' or a mapping such as '{{cpu_model: ...}}', "
                f"but got {a.expect_device!r}."
            )
    return LatencyPredictor(
        table,
        **kwargs,
        backend=getattr(a, "backend", None),
        threads=getattr(a, "threads", None),
        precision=getattr(a, "precision", None),
        device=expect,
    )


def _calibration_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--fallback",
        action="store_true",
        help="estimate ops missing from the table with the "
        "regression fallback (fitted on the table) instead of refusing them",
    )
    p.add_argument(
        "--calibration",
        default=None,
        help="apply an in-context calibration (mmt-nas report --fit-calibration writes one)",
    )
    p.add_argument(
        "--intervals",
        default=None,
        metavar="FILE",
        help="calibrated prediction intervals (mmt-nas report --fit-intervals writes them); default: uncalibrated",
    )


def _cmd_predict(a: argparse.Namespace) -> int:
    from mmt_nas.predict.intervals import check_confidence

    confidence = check_confidence(a.confidence)
    pred = _predictor(a).predict(load_model(a.model, a.kwargs), a.input_shape)
    if a.json:
        print(json.dumps(pred.to_dict(confidence), indent=1))
    elif a.explain:
        print(pred.explain(confidence))
    else:
        lo, hi = pred.interval(confidence)
        how = "calibrated" if pred.calibrated else "uncalibrated"
        print(f"{float(pred):.3f} ms ({confidence:.0%} interval {lo:.3f} to {hi:.3f} ms, {how})")
    return 0


def _cmd_measure(a: argparse.Namespace) -> int:
    from mmt_nas.build.measure import measure_latency

    stats = measure_latency(
        load_model(a.model, a.kwargs),
        a.input_shape,
        a.times,
        backend=a.backend,
        threads=a.threads,
        precision=a.precision,
    )
    print(
        json.dumps({"latency_ms": stats.to_dict()})
        if a.json
        else f"median {stats.median_ms:.3f} ms (mean {stats.mean_ms:.3f}, std {stats.std_ms:.3f}, n={stats.n})"
    )
    return 0


def _cmd_report(a: argparse.Namespace) -> int:
    from mmt_nas.report.document import report_lock

    specs = load_model_specs(a.models)
    predictor = _predictor(a)
    with report_lock(a.out):  # from the journal to the last file: two reports into one folder would interleave
        return _report_locked(a, specs, predictor)


def _report_locked(a: argparse.Namespace, specs: Sequence[Any], predictor: Any) -> int:
    journal = Path(a.out) / JOURNAL_FILENAME
    if a.fresh:
        try:
            journal.unlink(missing_ok=True)
        except OSError as exc:
            raise MeteringError(
                f"--fresh cannot remove the measurement journal {str(journal)!r}: {exc}. Remove it by hand."
            ) from None
    elif journal.is_file():
        print(
            f"continuing an interrupted report: measurements journaled in {journal} are reused where the model "
            "and settings match (--fresh measures everything again)"
        )

    def show(r: Any) -> None:
        err = "" if r.error_pct is None else f" error {r.error_pct:+.1f}%"
        fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        print(
            f"  {r.name}: measured {fmt(r.measured_ms)} ms, predicted {fmt(r.predicted_ms)} ms{err}"
            + (" (measurement reused)" if r.reused else "")
            + (f"  [{r.error.splitlines()[0][:120]}]" if r.error else ""),
            flush=True,
        )

    results = evaluate(
        predictor,
        [(s.name, s, s.input_shape) for s in specs],
        times=a.times,
        repeats=a.repeats,
        profile_times=a.profile_times,
        on_result=show,
        journal=journal,
        show_progress=a.verbose or None,
    )
    report = Report(
        results,
        predictor.table,
        {"times": a.times, "repeats": a.repeats, "models": str(a.models), "table": str(a.table)},
    )
    paths = report.write(a.out, plots=not a.no_plots, lock=False)  # _cmd_report holds the lock
    journal.unlink(missing_ok=True)  # the report holds every measurement now
    m = report.metrics

    def pct(key: str, spec: str = ".1f") -> str:
        return "-" if m.get(key) is None else format(m[key], spec)

    print(
        f"{m['n_models']} models ({m['n_failed']} failed): within ±10% {pct('within_10_pct')}%, "
        f"MAPE {pct('mape_pct')}%, Kendall tau {pct('kendall_tau', '.3f')}"
    )
    reused = sum(r.reused for r in results)
    if reused:
        print(f"{reused} of {len(results)} models' measurements reused from the interrupted run")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    if a.fit_intervals:
        intervals = report.fit_intervals()
        intervals.save(a.fit_intervals)
        print(
            f"wrote {a.fit_intervals}: conformal intervals fitted on {len(intervals.models_)} measured models; use "
            "them for other models (mmt-nas predict --intervals)"
        )
    if a.fit_calibration:
        from mmt_nas.predict.calibration import InContextCalibration

        cal = InContextCalibration().fit([smp for r in results for smp in r.samples])
        cal.save(a.fit_calibration)
        print(
            f"wrote {a.fit_calibration}: calibration fitted on {len(cal.samples_)} ops of {len(cal.models_)} "
            "models; score it only on other models"
        )
    return 0


def _cmd_sample(a: argparse.Namespace) -> int:
    if a.generic:
        if a.candidates is not None or a.table is not None:
            raise OptionError(
                "mmt-nas sample --generic draws from its own grid; it takes no candidates file and no --table "
                f"(got candidates={a.candidates!r}, --table={a.table!r}). Drop them, or drop --generic."
            )
        from mmt_nas.space.generic import generic_space

        budget = 2000 if a.budget is None else a.budget
        doc = generic_space(budget, seed=a.seed)
        dump_space(doc, a.output)
        n = sum(len(blocks) for classes in doc.values() for blocks in classes.values())
        print(
            f"wrote {n} generic ops (seed {a.seed}) to {a.output}. Next: mmt-nas generate {a.output} OPS_DIR && "
            "mmt-nas meter OPS_DIR; predict with --fallback for the ops a model has that the table lacks"
        )
        return 0
    if a.near_budget is not None:
        return _sample_near_budget(a)
    if a.candidates is None or a.table is None:
        raise OptionError(
            "mmt-nas sample needs a candidates file and --table (to propose where the fallback is least sure), "
            f"or --generic (a generic table's ops); got candidates={a.candidates!r}, --table={a.table!r}."
        )
    from mmt_nas.build.generate import prepare_ops
    from mmt_nas.predict.fallback import propose_samples

    table = LatencyTable.load(a.table)
    ready, skipped = prepare_ops(load_space(a.candidates), Path(a.candidates).parent)
    chosen = propose_samples(table, [r for r, _ in ready], 100 if a.budget is None else a.budget)
    dump_space(space_of(chosen), a.output)
    print(
        f"{len(ready)} candidate ops ({len(skipped)} invalid skipped), {sum(r.key in table for r, _ in ready)} "
        f"already measured; wrote the {len(chosen)} the fallback is least sure of to {a.output}. "
        f"Next: mmt-nas generate {a.output} OPS_DIR && mmt-nas meter OPS_DIR"
    )
    return 0


def _sample_near_budget(a: argparse.Namespace) -> int:
    from mmt_nas.predict.decisions import propose_for_budget
    from mmt_nas.predict.fallback import LatencyRegressor
    from mmt_nas.predict.predictor import LatencyPredictor, load_table_cached

    if a.table is None or a.models is None or a.candidates is not None:
        raise OptionError(
            "mmt-nas sample --near-budget MS needs --table and --models (the candidate architectures, a model list "
            f"as mmt-nas report reads), and no candidates file; got --table={a.table!r}, --models={a.models!r}, "
            f"candidates={a.candidates!r}."
        )
    table = load_table_cached(a.table)
    predictor = LatencyPredictor(table, on_missing="fallback", fallback=LatencyRegressor().fit(table))
    specs = load_model_specs(a.models)
    chosen = propose_for_budget(
        predictor,
        [(s.name, s.build(), s.input_shape) for s in specs],
        a.near_budget,
        100 if a.budget is None else a.budget,
        show_progress=a.verbose or None,
    )
    dump_space(space_of([p.record for p in chosen]), a.output)
    print(
        f"{len(specs)} models; wrote the {len(chosen)} ops whose measurement would most narrow the intervals of "
        f"the models nearest {a.near_budget:g} ms to {a.output}"
        + (f" (first: {chosen[0].record.key}, in {', '.join(chosen[0].models[:3])})" if chosen else "")
        + f". Next: mmt-nas generate {a.output} OPS_DIR && mmt-nas meter OPS_DIR"
    )
    return 0


def _find_example(example_dir: str | None) -> Path:
    if example_dir is not None:
        return Path(example_dir)
    for base in (Path.cwd(), Path(__file__).resolve().parents[1]):
        if (base / "examples" / "resnet18" / "ops.yaml").is_file():
            return base / "examples" / "resnet18"
    raise OpSpaceError(
        "the demo needs examples/resnet18/ (ops.yaml and resnet18.py) from the mmt_nas repository: run it from "
        "the repository's root, or pass --example-dir."
    )


def _cmd_demo(a: argparse.Namespace) -> int:
    from mmt_nas.build.generate import generate_ops_list
    from mmt_nas.build.measure import measure_latency
    from mmt_nas.parser import predict_latency

    example = _find_example(a.example_dir)
    ops_dir = Path(a.work_dir) / "ops"
    shape = [1, 3, 224, 224]
    t0 = time.perf_counter()
    print(f"mmt-nas demo: ResNet-18 from {example}, ops in {ops_dir}")
    result = generate_ops_list(example / "ops.yaml", ops_dir, show_progress=a.verbose or None)
    print(f"[1/4] generate ({time.perf_counter() - t0:.0f} s): {result.summary()}")
    table = meter_ops(ops_dir, a.times, show_progress=a.verbose or None)
    print(
        f"[2/4] meter    ({time.perf_counter() - t0:.0f} s): {len(table)} ops, {a.times} runs each, "
        f"{table.settings.backend}, {table.settings.threads} thread(s), {table.device.get('cpu_model')}"
    )
    model = load_model(f"{example / 'resnet18.py'}:ResNet18")
    pred = predict_latency(model, ops_dir, shape)
    print(f"[3/4] predict  ({time.perf_counter() - t0:.0f} s): {float(pred):.2f} ms")
    print("\n".join("      " + line for line in pred.explain().splitlines()))
    measured = measure_latency(model, shape, a.times)
    err = (float(pred) - measured.median_ms) / measured.median_ms
    print(
        f"[4/4] measure  ({time.perf_counter() - t0:.0f} s): {measured.median_ms:.2f} ms end to end "
        f"(std {measured.std_ms:.2f} ms over {measured.n} runs)"
    )
    print(f"\nprediction {float(pred):.2f} ms vs measured {measured.median_ms:.2f} ms: error {err:+.1%}")
    print(
        "The prediction counts what MNN runs (Conv+BN+ReLU fused, tensor functions such as flatten "
        "included) from each op's own time, moved toward its cold time: its activations as a model's buffers leave "
        "them, its weights as far as the model's weight bytes take them out of the caches. One model proves "
        "little either way: see benchmarks/RESULTS.md and "
        "`mmt-nas report`."
    )
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with "did you mean" for a mistyped command, choice or option (difflib, :func:`vocab.did_you_mean`)."""

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        choices = action.choices
        if choices is not None and value not in choices:
            shown = ", ".join(map(repr, choices))
            hint = did_you_mean(value, [str(c) for c in choices]) if isinstance(value, str) else ""
            raise argparse.ArgumentError(action, f"invalid choice: {value!r} (choose from {shown}).{hint}")

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:  # type: ignore[override]
        ns, extras = self.parse_known_args(args, namespace)
        if extras:
            sub = self._subparser(getattr(ns, "command", None))
            argv = list(sys.argv[1:] if args is None else args)
            before = set(argv[: argv.index("--")] if "--" in argv else argv)  # after a bare "--": not options
            hints = [
                (word, hint)
                for word in extras
                if word.startswith("--") and len(word) > 2 and word in before and (hint := self._suggest(word, sub))
            ]
            said = "".join(f" {w!r}:{h}" if len(hints) > 1 else h for w, h in hints)
            (sub or self).error(f"unrecognized arguments: {' '.join(extras)}.{said}")
        return ns

    def _suggest(self, word: str, sub: argparse.ArgumentParser | None) -> str:
        """A hint for the unknown option ``word``: the command's options close to it, else mmt-nas's own, which go
        before the command."""
        name = word.split("=", 1)[0]
        own = [o for a in self._actions for o in a.option_strings if o.startswith("--")]
        if sub is None:
            return did_you_mean(name, own)
        command = sub.prog.split()[-1]
        if name in own:
            return f" {name} is an option of mmt-nas itself: put it before the command (mmt-nas {name} {command} ...)."
        if hint := did_you_mean(name, [o for a in sub._actions for o in a.option_strings if o.startswith("--")]):
            return hint
        hint = did_you_mean(name, own)
        return f"{hint} (an option of mmt-nas itself: before the command, mmt-nas OPTION {command} ...)" if hint else ""

    def _subparser(self, command: str | None) -> argparse.ArgumentParser | None:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction) and command in action.choices:
                return action.choices[command]
        return None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``mmt-nas``."""
    parser = _Parser(
        prog="mmt-nas",
        description="Operator latency tables and model latency prediction with MNN, for neural architecture search.",
    )
    parser.add_argument("--version", action="version", version=f"mmt-nas {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress and details")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="generate, meter, predict and measure the ResNet-18 example")
    p.add_argument("--example-dir", default=None, help="folder with ops.yaml and resnet18.py")
    p.add_argument("--work-dir", default="mmt_nas_demo", help="where the ops and table go (default: ./mmt_nas_demo)")
    p.add_argument("--times", type=int, default=100, help="timed runs per op and for the model")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("space", help="write the op-space YAML covering every op of a model")
    _model_args(p)
    p.add_argument("-o", "--output", default="ops.yaml", help="YAML file to write (default: ops.yaml)")
    p.set_defaults(func=_cmd_space)

    p = sub.add_parser("generate", help="export every op of an op space to MNN")
    p.add_argument("yaml", help="the op-space YAML")
    p.add_argument("out_dir", help="the ops folder")
    p.add_argument("--keep-onnx", action="store_true", help="keep the intermediate ONNX files")
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("meter", help="time every op of an ops folder and save meta_latency.json")
    p.add_argument("ops_dir")
    p.add_argument("--times", type=int, default=100, help="timed runs per op (default: 100)")
    p.add_argument("--warmup", type=int, default=None, help="untimed runs first (default: auto)")
    p.add_argument(
        "--rounds", type=int, default=2,
        help="passes over the ops, each in its own shuffled order; the --times runs are split over them "
        "(default: 2; an op's rounds give its run-to-run spread, the table's noise floor)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of the rounds' shuffled orders (default: 0)")
    p.add_argument(
        "--sentinel-every", type=int, default=16,
        help="re-time a reference op before every N timings; timings next to a drifted reading are timed again "
        "(default: 16; 0: none)",
    )  # fmt: skip
    p.add_argument(
        "--no-cold", dest="cold", action="store_false",
        help="do not also time each op cold (copies cycled, as in a large model); predictions then count every "
        "op as timed alone",
    )  # fmt: skip
    p.add_argument(
        "--no-cache-probe", dest="cache_probe", action="store_false",
        help="do not measure the device's cache sizes (one op at growing reuse distances, a few seconds) into "
        "the table's timing",
    )  # fmt: skip
    p.add_argument(
        "--shard",
        default=None,
        metavar="I/N",
        help="meter only the I-th of N shares of the ops "
        "(by a hash of each key, the same on every machine); the table goes to "
        "meta_latency.shard-I-of-N.json unless --output is given; join shards with mmt-nas merge",
    )
    p.add_argument("-o", "--output", default=None, help="table file to write (default: OPS_DIR/meta_latency.json)")
    _runtime_args(p)
    p.set_defaults(func=_cmd_meter)

    p = sub.add_parser("merge", help="join latency tables of the same device and settings (e.g. metering shards)")
    p.add_argument(
        "tables",
        nargs="+",
        help="tables (or ops folders) to join; on a conflict the entry with more "
        "timed runs wins, then the earlier table",
    )
    p.add_argument("-o", "--output", required=True, help="the merged table (may be one of the inputs)")
    p.add_argument(
        "--rtol",
        type=float,
        default=0.1,
        help="report conflicts that differ by more than this relative amount and beyond their noise (default: 0.1)",
    )
    p.add_argument("--report", default=None, metavar="FILE", help="also write every conflict as JSON")
    p.set_defaults(func=_cmd_merge)

    p = sub.add_parser("predict", help="predict a model's latency from a table")
    _model_args(p)
    p.add_argument("--table", required=True, help="meta_latency.json or its ops folder")
    p.add_argument("--explain", action="store_true", help="print the per-op breakdown")
    p.add_argument("--json", action="store_true", help="print the prediction as JSON")
    p.add_argument(
        "--confidence", type=float, default=0.9, help="the interval's confidence (default: 0.9, a 90%% interval)"
    )
    p.add_argument("--backend", default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--precision", default=None)
    p.add_argument(
        "--expect-device",
        default=None,
        metavar="SPEC",
        help="refuse a table measured on another "
        "device: 'local' (this machine) or a mapping such as '{cpu_model: Cortex-A76, cpu_count: 4}'",
    )
    _calibration_args(p)
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("report", help="measure and predict a list of models; write a prediction-error report")
    p.add_argument("--table", required=True, help="meta_latency.json or its ops folder")
    p.add_argument("--models", required=True, help="YAML model list (see mmt_nas.report.evaluation.load_model_specs)")
    p.add_argument("--out", default="report", help="output folder (default: ./report)")
    p.add_argument("--times", type=int, default=100, help="timed runs per measurement")
    p.add_argument("--repeats", type=int, default=3, help="measurements per model")
    p.add_argument("--profile-times", type=int, default=10, help="runs of the per-op profile (0: none)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots and HTML")
    p.add_argument(
        "--fresh",
        action="store_true",
        help="measure every model again, ignoring the measurements "
        "an interrupted run journaled in the output folder (by default they are reused)",
    )
    p.add_argument(
        "--fit-calibration",
        default=None,
        metavar="FILE",
        help="also fit an in-context calibration on these models' profiles and write it to FILE",
    )
    p.add_argument(
        "--fit-intervals",
        default=None,
        metavar="FILE",
        help="also fit conformal prediction intervals on these models and write them to FILE",
    )
    _calibration_args(p)
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser(
        "sample", help="propose the ops to measure next, where the fallback is least sure; or a generic table's ops"
    )
    p.add_argument("candidates", nargs="?", default=None, help="op-space YAML of candidate ops (can be large)")
    p.add_argument("--table", default=None, help="the measured table (meta_latency.json or its folder)")
    p.add_argument(
        "--generic",
        action="store_true",
        help="instead, draw ops for a generic table from a broad grid of CNN and transformer ops (no model needed)",
    )
    p.add_argument(
        "--budget", type=int, default=None, help="how many ops to propose (default: 100; 2000 with --generic)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the --generic draw (default: 0)")
    p.add_argument(
        "--near-budget",
        type=float,
        default=None,
        metavar="MS",
        help="instead, rank the ops --table lacks by how much measuring them would settle which of --models fit MS",
    )
    p.add_argument("--models", default=None, help="with --near-budget: the candidate architectures (a model list)")
    p.add_argument("-o", "--output", default="sampled_ops.yaml", help="op-space YAML to write")
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser("measure", help="measure a model end to end with MNN (the ground truth)")
    _model_args(p)
    p.add_argument("--times", type=int, default=100)
    p.add_argument("--json", action="store_true")
    _runtime_args(p)
    p.set_defaults(func=_cmd_measure)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mmt-nas``; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args))
    except MmtNasError as exc:
        print(f"mmt-nas {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mmt-nas {args.command}: interrupted; rerun to continue where it stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
