"""Measure, predict and profile whole models, journaling the measurements so an interrupted run continues.

For each model: measure it end to end with MNN as a deployed app runs it (input written, run, output
read; the same settings as the table; all models in interleaved rounds, so each one's run-to-run spread
is known), predict it from the table, and profile it op by op in context, so the error can be split by
op category (:func:`evaluate`, giving one :class:`ModelResult` per model).

Measuring is the slow part, so :func:`evaluate` can journal each model's measurements as soon as
they are complete (``journal=``, one fsynced JSON line per model): a report that is interrupted
(Ctrl-C, a crash, a kill) continues where it stopped when run again with the same settings.
:mod:`mmt_nas.report` renders the results.

torch is imported when :func:`evaluate` runs (through the converter and the calibration), not with this module.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
import statistics
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mmt_nas._files import open_journal, pid_alive
from mmt_nas.device.endtoend import InterleavedResult, Method, measure_interleaved
from mmt_nas.device.facts import device_info
from mmt_nas.device.profile import OpProfile, profile_model
from mmt_nas.exceptions import MeteringError, MmtNasError, OpSpaceError
from mmt_nas.progress import bar, progress
from mmt_nas.space.opspace import load_model, yaml_error_text
from mmt_nas.vocab import check_shape, mnn_category, op_category, op_family

if TYPE_CHECKING:
    import torch

    from mmt_nas.predict.calibration import CalibrationSample
    from mmt_nas.predict.predictor import LatencyPredictor, Prediction
    from mmt_nas.space.trace import ParsedOp
    from mmt_nas.table.table import LatencyTable

__all__ = ["JOURNAL_FILENAME", "ModelSpec", "ModelCase", "ModelResult", "load_model_specs", "evaluate"]

# the name it had before the split: the CLI's log lines (``WARNING mmt_nas.report: ...``) and any logging
# configuration of it stay as they were
_logger = logging.getLogger("mmt_nas.report")
#: The measurement journal :func:`evaluate` keeps in a report's folder while it runs.
JOURNAL_FILENAME = "report.json.journal"
_JOURNAL_SCHEMA = "mmt_nas/report-journal"
_JOURNAL_SCHEMA_VERSION = 1
# how a model's end-to-end latency is timed: as a deployed app runs it (input written, run, output read)
_METHOD: Method = "inference"

# -- the models to evaluate -----------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """A model named by where its constructor lives.

    Attributes:
        name: Display name.
        target: ``package.module:callable`` or ``path/to/file.py:callable``.
        input_shape: Input shape.
        kwargs: Keyword arguments for the callable.
    """

    name: str
    target: str
    input_shape: tuple[int, ...]
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def build(self) -> torch.nn.Module:
        """Import the callable and build the model (eval mode)."""
        return load_model(self.target, self.kwargs)


#: One model to evaluate: ``(name, nn.Module or ModelSpec, input_shape)``.
ModelCase = tuple[str, "torch.nn.Module | ModelSpec", Sequence[int]]


def load_model_specs(path: str | os.PathLike[str]) -> list[ModelSpec]:
    """Read a model list::

        models:
          - name: resnet18
            model: examples/resnet18/resnet18.py:ResNet18   # relative paths: from this file's folder
            input_shape: [1, 3, 224, 224]
            kwargs: {num_classes: 10}

    Args:
        path: The YAML file.

    Returns:
        One spec per entry, in the file's order; ``name`` defaults to the target.

    Raises:
        OpSpaceError: The file is missing, not YAML, or an entry is malformed.
    """
    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise OpSpaceError(f"cannot read the model list {str(p)!r}: {exc.strerror or exc}.") from None
    except yaml.YAMLError as exc:
        raise OpSpaceError(f"model list {str(p)!r} is not valid YAML{yaml_error_text(exc)}.") from None
    models = doc.get("models") if isinstance(doc, dict) else None
    if not isinstance(models, list) or not models:
        raise OpSpaceError(f"model list {str(p)!r} must have a non-empty list under 'models:', but got {doc!r}.")
    specs = []
    for i, m in enumerate(models):
        where = f"models[{i}]"
        if not isinstance(m, dict) or not isinstance(m.get("model"), str) or ":" not in m["model"]:
            raise OpSpaceError(f"{where} must have model: 'module:callable' or 'file.py:callable', but got {m!r}.")
        shape = list(check_shape(m.get("input_shape"), f"{where}.input_shape"))
        kwargs = m.get("kwargs") or {}
        if not isinstance(kwargs, dict):
            raise OpSpaceError(f"{where}.kwargs must be a mapping, but got {kwargs!r}.")
        target = m["model"]
        module, _, attr = target.rpartition(":")
        if module.endswith(".py") and not os.path.isabs(module):
            target = f"{(p.parent / module).resolve()}:{attr}"
        specs.append(ModelSpec(str(m.get("name") or target), target, tuple(shape), kwargs))
    return specs


# -- one model's outcome ----------------------------------------------------------------


@dataclass
class ModelResult:
    """The outcome for one model. ``error`` is set (and numbers may be missing) when a step failed.

    Attributes:
        name: The model's name.
        input_shape: Its input shape.
        measured_ms: Median of the rounds' medians (each round: ``times`` runs of the model, the models
            interleaved; see :func:`evaluate`).
        run_medians_ms: Each round's median, in round order.
        within_run_cv: Mean spread (std / mean) of the runs within a round.
        predicted_ms: The prediction.
        prediction: The prediction's ``to_dict()`` (every op's share).
        by_category: Predicted vs in-context ms per op category.
        error: What failed, if anything.
        samples: In-context calibration samples of the profiled ops (not written to JSON).
        profile: MNN's per-op profile of the whole model (not written to JSON).
        reused: The measurements came from the journal of an interrupted run.
        timing_method: What a timed run is: ``"inference"`` (input written from a host array, the run,
            the output read back to a host array: :func:`mmt_nas.device.endtoend.time_inference`); ``None`` when
            nothing was measured.
        ops_in_context: One row per profiled op of the model (:func:`ops_in_context`): its time alone (hot),
            cold, as predicted and inside the model, its bytes and what ran before it.
    """

    name: str
    input_shape: tuple[int, ...]
    measured_ms: float | None = None
    run_medians_ms: list[float] = field(default_factory=list)
    within_run_cv: float | None = None
    predicted_ms: float | None = None
    prediction: dict[str, Any] | None = None
    by_category: dict[str, dict[str, float]] = field(default_factory=dict)
    error: str | None = None
    samples: list[CalibrationSample] = field(default_factory=list, repr=False)
    profile: list[OpProfile] = field(default_factory=list, repr=False)
    reused: bool = False
    timing_method: str | None = None
    ops_in_context: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Both a measurement and a prediction exist."""
        return self.measured_ms is not None and self.predicted_ms is not None

    @property
    def error_pct(self) -> float | None:
        """Signed relative error of the prediction, in percent."""
        if not self.ok:
            return None
        assert self.measured_ms is not None and self.predicted_ms is not None
        return 100 * (self.predicted_ms - self.measured_ms) / self.measured_ms

    @property
    def run_to_run_cv(self) -> float | None:
        """Spread of the repeated measurements' medians (std / mean)."""
        xs = self.run_medians_ms
        if len(xs) < 2:
            return None
        mean = sum(xs) / len(xs)
        return math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) / mean

    @property
    def run_to_run(self) -> float | None:
        """Spread of the rounds' medians relative to their median, ``(max - min) / median`` (as
        :attr:`mmt_nas.device.endtoend.InterleavedResult.run_to_run`); ``None`` for fewer than two rounds."""
        xs = self.run_medians_ms
        if len(xs) < 2:
            return None
        mid = statistics.median(xs)
        return (max(xs) - min(xs)) / mid if mid > 0 else None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "status": "ok" if self.ok else "failed",
            "error": self.error,
            "measured_ms": self.measured_ms,
            "run_medians_ms": self.run_medians_ms,
            "within_run_cv": self.within_run_cv,
            "run_to_run_cv": self.run_to_run_cv,
            "run_to_run": self.run_to_run,
            "rounds": len(self.run_medians_ms),
            "timing_method": self.timing_method,
            "predicted_ms": self.predicted_ms,
            "error_pct": self.error_pct,
            "by_category": self.by_category,
            "measurement_reused": self.reused,
            "prediction": self.prediction,
            "ops_in_context": self.ops_in_context,
        }


def ops_in_context(
    ops: Sequence[ParsedOp],
    prediction: Prediction,
    profile: Sequence[OpProfile],
    table: LatencyTable,
    scale: float = 1.0,
) -> list[dict[str, Any]]:
    """Each counted module op of a model that MNN's profile shows under its module path, once called: what it
    took alone (hot ``core_ms``), cold (``cold_ms``), as predicted (the context and calibration applied), and
    inside the model (the profile's ops under its path, times ``scale``), with its ratio in-context / alone, op
    family, weight, input and output bytes, and the MNN op type that ran just before it (``"Raster"``: a layout
    conversion; ``"Concat"``-like joins show as ``Raster`` too).

    Args:
        ops: The model's parsed ops (:meth:`LatencyPredictor.parse`).
        prediction: Its prediction from those ops.
        profile: MNN's per-op profile of the whole model, in execution order.
        table: The table the prediction used.
        scale: Multiplies the profile's times (e.g. measured / profiled total).
    """
    from mmt_nas.predict.calibration import profiled_module_ops, times_by_scope

    in_ctx, first = times_by_scope(profile, scale)
    predicted = {name: c.latency_ms for c in prediction.ops for name in c.names}
    rows = []
    for op, ctx in profiled_module_ops(ops, in_ctx):
        entry = table.get(op.key)
        idx = first[op.name]
        rec = entry.op if entry is not None else None
        alone = entry.time_ms("core") if entry is not None else None
        rows.append(
            {
                "name": op.name,
                "key": op.key,
                "class_name": op.class_name,
                "family": op_family(op.class_name, dict(rec.args) if rec is not None else None, op.key),
                "alone_ms": alone,
                "cold_ms": entry.cold_ms if entry is not None else None,
                "predicted_ms": predicted.get(op.name),
                "in_context_ms": ctx,
                "ratio": ctx / alone if alone else None,
                "weight_bytes": rec.weight_bytes if rec is not None else None,
                "input_bytes": 4 * math.prod(op.input_shape),
                "output_bytes": 4 * math.prod(op.output_shape) if op.output_shape else None,
                "before": profile[idx - 1].type if idx > 0 else None,
            }
        )
    return rows


def _category_split(prediction: Prediction, profile: Iterable[OpProfile]) -> dict[str, dict[str, float]]:
    """Predicted ms (from the prediction's ops) and in-context ms (from MNN's profile) per op category."""
    split: dict[str, dict[str, float]] = {}
    for op in prediction.ops:
        cat = op_category(op.class_name, op.key)
        split.setdefault(cat, {"predicted_ms": 0.0, "in_context_ms": 0.0})["predicted_ms"] += op.total_ms
    for p in profile:
        cat = mnn_category(p.type)
        split.setdefault(cat, {"predicted_ms": 0.0, "in_context_ms": 0.0})["in_context_ms"] += p.latency_ms
    return split


# -- work folders of killed runs ------------------------------------------------------------

_WORK_PREFIX = "mmt_nas_report_"


def _remove_dead_work_dirs() -> None:
    """Remove the temporary work folders (exported models) of :func:`evaluate` runs that were killed."""
    root = Path(tempfile.gettempdir())
    pattern = re.compile(rf"{_WORK_PREFIX}(\d+)_[a-z0-9_]{{8}}")
    try:
        names = os.listdir(root)
    except OSError:
        return
    for name in names:
        m = pattern.fullmatch(name)
        if m is None or int(m[1]) == os.getpid():
            continue
        if pid_alive(int(m[1])):
            continue  # its process is alive (or the id was reused): leave it
        shutil.rmtree(root / name, ignore_errors=True)
        _logger.info("removed %s, left by a killed report", root / name)


# -- the measurement journal ------------------------------------------------------------------


class _JournalError(MeteringError):
    """The measurement journal cannot be read or written (fatal to :func:`evaluate`, unlike a model's error)."""


class _Journal:
    """The measurements of an interrupted :func:`evaluate`, one JSON line per model, appended and fsynced.

    Each line holds a key (the model, its input shape, the measurement settings and the device) and
    what was measured. Lines that do not parse or do not validate (a torn last line) are ignored.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._saved: dict[str, dict[str, Any]] = {}
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            lines = []
        except (OSError, UnicodeDecodeError) as exc:
            raise _JournalError(
                f"cannot read the measurement journal {str(self.path)!r}: {exc}. Delete it (or pass --fresh) to "
                "measure every model again."
            ) from None
        for i, line in enumerate(lines, 1):
            try:
                doc = json.loads(line)
                _check_journal_line(doc)
            except ValueError as exc:
                _logger.warning("%s line %d ignored (an interrupted write, or edited): %s", self.path, i, exc)
                continue
            self._saved[_canonical(doc["key"])] = doc

    def get(self, key: Mapping[str, Any]) -> dict[str, Any] | None:
        """The measurements journaled under ``key``, or ``None``."""
        return self._saved.get(_canonical(key))

    def append(self, key: Mapping[str, Any], result: ModelResult) -> None:
        """Journal ``result``'s measurements under ``key``, on disk before this returns."""
        doc = {
            "schema": _JOURNAL_SCHEMA,
            "schema_version": _JOURNAL_SCHEMA_VERSION,
            "key": json.loads(_canonical(key)),
            "run_medians_ms": result.run_medians_ms,
            "within_run_cv": result.within_run_cv,
            "profile": [[p.name, p.type, p.latency_ms] for p in result.profile],
        }
        line = json.dumps(doc, allow_nan=False) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open_journal(self.path) as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise _JournalError(
                f"cannot append to the measurement journal {str(self.path)!r}: {exc}. Check that the report folder "
                "is writable and has space."
            ) from exc
        self._saved[_canonical(key)] = doc


def _canonical(key: Mapping[str, Any]) -> str:
    return json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)


def _check_journal_line(doc: Any) -> None:
    """Raise ``ValueError`` unless ``doc`` is a journal line this version wrote."""
    if (
        not isinstance(doc, dict)
        or doc.get("schema") != _JOURNAL_SCHEMA
        or doc.get("schema_version") != _JOURNAL_SCHEMA_VERSION
    ):
        raise ValueError("not a line of a report measurement journal of this version")
    if not isinstance(doc.get("key"), dict):
        raise ValueError(f"key must be a mapping, but got {doc.get('key')!r}")
    runs = doc.get("run_medians_ms")
    if not isinstance(runs, list) or not runs or not all(_positive(x) for x in runs):
        raise ValueError(f"run_medians_ms must be a non-empty list of positive numbers, but got {runs!r}")
    cv = doc.get("within_run_cv")
    if not (_positive(cv) or cv == 0):
        raise ValueError(f"within_run_cv must be a number >= 0, but got {cv!r}")
    profile = doc.get("profile")
    if not isinstance(profile, list) or not all(
        isinstance(p, list)
        and len(p) == 3
        and isinstance(p[0], str)
        and isinstance(p[1], str)
        and (_positive(p[2]) or p[2] == 0)
        for p in profile
    ):
        raise ValueError("profile must be a list of [name, type, ms]")


def _positive(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def _journal_key(
    name: str, spec: ModelSpec | None, model: Any, shape: Sequence[int], settings: Mapping[str, Any]
) -> dict[str, Any]:
    """What a journaled measurement must match to be reused: the model as named and as built, its input
    shape, how it was measured (times, repeats, profile runs, MNN settings) and the device."""
    if spec is not None:
        where: Any = {"target": spec.target, "kwargs": dict(spec.kwargs)}
    else:
        where = f"{type(model).__module__}.{type(model).__qualname__}"
    return {
        "name": name,
        "model": where,
        "architecture": hashlib.sha256(repr(model).encode("utf-8")).hexdigest(),
        "input_shape": [int(d) for d in shape],
        **settings,
    }


# -- evaluation -------------------------------------------------------------------------


def evaluate(
    predictor: LatencyPredictor,
    cases: Iterable[ModelCase],
    *,
    times: int = 100,
    repeats: int = 3,
    profile_times: int = 10,
    on_result: Callable[[ModelResult], None] | None = None,
    journal: str | os.PathLike[str] | None = None,
    show_progress: bool | None = None,
) -> list[ModelResult]:
    """Measure, predict and profile every model. A model that fails is recorded with its error.

    Each model is traced once (:meth:`LatencyPredictor.parse`); its ops give both the prediction and
    the in-context calibration samples. Then every model is exported and profiled op by op, and the
    models are measured together in ``repeats`` interleaved rounds
    (:func:`mmt_nas.device.endtoend.measure_interleaved`): in each round every model once, in a seeded shuffled
    order, ``times`` runs each, so a slow spell of the machine hits every model a little, not one model
    a lot. A model's measured latency is the median of its rounds' medians; ``run_medians_ms`` keeps
    each round's, and ``run_to_run`` their spread.

    What is timed (the deployed app's latency, ``timing_method="inference"``): each run writes the
    input from a host numpy array, runs the model and reads its output back into a host numpy array,
    with MNN's module API (:func:`mmt_nas.device.endtoend.time_inference`); the bare session run that op
    tables are metered with measures a few percent less.

    Args:
        predictor: Predicts from the table (its settings are used to measure).
        cases: ``(name, model, input_shape)``; ``model`` is an ``nn.Module`` or a :class:`ModelSpec`.
        times: Timed runs of each model per round.
        repeats: Rounds (the model's measurements, each of ``times`` runs); the reported value is the
            median of their medians.
        profile_times: Runs of the in-context per-op profile (0 to skip it).
        on_result: Called with each result, in the order of ``cases``, once all are measured.
        journal: A file (e.g. ``report/`` + :data:`JOURNAL_FILENAME`) to which each model's measurements
            are appended, on disk, as soon as its last round is timed, and from which they are reused: a model
            journaled with the same name, definition (target and kwargs, or class) and architecture
            (its ``repr``), input shape, ``times``, ``repeats``, ``profile_times``, MNN settings and device
            is not measured again (``result.reused``); predictions are always recomputed. Delete the file
            once the results are saved, or to measure everything again. ``None``: no journal.
        show_progress: Progress bars with their ETA, one while the models are built, predicted, exported and
            profiled, one while they are measured (:func:`mmt_nas.progress.bar`); ``None`` shows them on a
            terminal only.

    Returns:
        One result per case, in order.

    Raises:
        MeteringError: ``times`` or ``repeats`` is not an integer >= 1, or the journal cannot be read or
            written.
    """
    from mmt_nas.build.export import export_to_mnn
    from mmt_nas.predict.calibration import samples_from_profile  # these import torch

    settings = predictor.table.settings
    _check_measuring(times, repeats)
    _remove_dead_work_dirs()
    jr = _Journal(journal) if journal is not None else None
    how: dict[str, Any] = {}
    if jr is not None:
        dev = device_info()
        how = {
            "times": times,
            "repeats": repeats,
            "profile_times": profile_times,
            "runtime": settings.to_dict(),
            "device": {k: dev.get(k) for k in ("hostname", "cpu_model", "cpu_count", "mnn_version")},
            # journal lines of other definitions of the truth (the bare session, back-to-back) are not reused
            "method": _METHOD,
            "interleaved": True,
        }
    pending: list[_Pending] = []
    to_measure: dict[str, Path] = {}
    # the work folder carries this process's id, so that the next run removes it if we are killed
    with tempfile.TemporaryDirectory(prefix=f"{_WORK_PREFIX}{os.getpid()}_") as tmp:
        # 1. every model: built, predicted, and exported and profiled unless its measurement is journaled
        cases = list(cases)
        for index, (name, case, shape) in enumerate(
            progress(cases, len(cases), "prepare", show_progress, unit="model")
        ):
            item = _Pending(ModelResult(name, tuple(shape)))
            pending.append(item)
            result = item.result
            try:
                if isinstance(case, ModelSpec):
                    spec, model = case, case.build()
                else:
                    spec, model = None, case
                try:
                    item.ops = predictor.parse(model, shape)  # traced once: the prediction and the samples share ops
                    item.prediction = predictor.predict_ops(item.ops)
                    result.predicted_ms = float(item.prediction)
                    result.prediction = item.prediction.to_dict()
                except MmtNasError as exc:
                    result.error = f"predict: {exc}"
                item.key = _journal_key(name, spec, model, shape, how) if jr is not None else None
                saved = jr.get(item.key) if jr is not None and item.key is not None else None
                if saved is not None:
                    result.run_medians_ms = list(saved["run_medians_ms"])
                    result.within_run_cv = saved["within_run_cv"]
                    result.profile = [OpProfile(*p) for p in saved["profile"]]
                    result.reused = True
                else:
                    path = Path(tmp) / f"model-{index}.mnn"
                    export_to_mnn(model, shape, path, onnx_path=Path(tmp) / f"model-{index}.onnx")
                    if profile_times > 0:
                        result.profile = profile_model(path, profile_times, settings=settings)
                    to_measure[str(index)] = path
            except Exception as exc:  # a failing model is reported, never fatal to the report
                item.fail(exc)

        # 2. the models to measure, in interleaved rounds (a round: each model once, in a seeded shuffled order);
        # each is journaled as soon as its last round is timed
        def complete(label: str, measured: InterleavedResult) -> None:
            item = pending[int(label)]
            item.result.run_medians_ms = list(measured.rounds_ms)
            item.result.within_run_cv = measured.within_run_cv
            if jr is not None and item.key is not None:
                jr.append(item.key, item.result)  # a _JournalError propagates: continuing would lose what it is for

        if to_measure:
            _logger.info(
                "measuring %d model(s) in %d interleaved round(s) of %d run(s) each",
                len(to_measure),
                repeats,
                times,
            )
            with bar(
                len(to_measure) * repeats, f"measure ({repeats} rounds)", unit="model", enabled=show_progress
            ) as b:
                measure_interleaved(
                    to_measure,
                    times * repeats,  # each round: `times` runs of every model
                    rounds=repeats,
                    settings=settings,
                    method=_METHOD,
                    on_complete=complete,
                    on_error=lambda label, exc: pending[int(label)].fail(exc),
                    on_step=lambda label, r: b.update(),
                )

    # 3. what follows from the measurements, and the results in order
    results = []
    for item in pending:
        result = item.result
        try:
            if result.run_medians_ms:
                result.measured_ms = statistics.median(result.run_medians_ms)
                result.timing_method = _METHOD
                if item.prediction is not None and profile_times > 0:
                    result.by_category = _category_split(item.prediction, result.profile)
                    profiled = sum(p.latency_ms for p in result.profile)
                    result.ops_in_context = ops_in_context(
                        item.ops,
                        item.prediction,
                        result.profile,
                        predictor.table,
                        result.measured_ms / profiled if profiled > 0 else 1.0,
                    )
                    result.samples = samples_from_profile(
                        result.name,
                        item.ops,
                        result.profile,
                        predictor.table,
                        predictor.latency,
                        result.measured_ms,
                        context=predictor.context,
                        cache_bytes=predictor.cache_bytes,
                    )
        except Exception as exc:
            item.fail(exc)
        _logger.info(
            "%s: measured %s ms, predicted %s ms%s",
            result.name,
            result.measured_ms,
            result.predicted_ms,
            " (measurement reused from the journal)" if result.reused else "",
        )
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def _check_measuring(times: Any, repeats: Any) -> None:
    for what, v in (("times", times), ("repeats", repeats)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise MeteringError(f"`{what}` must be an integer >= 1, but got {what}={v!r}.")


@dataclass
class _Pending:
    """A model of :func:`evaluate` between its preparation and its result."""

    result: ModelResult
    ops: list[ParsedOp] = field(default_factory=list)
    prediction: Prediction | None = None
    key: dict[str, Any] | None = None

    def fail(self, exc: Exception) -> None:
        """Record ``exc`` as (another of) the model's errors; a journal error is fatal instead."""
        if isinstance(exc, _JournalError):
            raise exc
        r = self.result
        r.error = (r.error + "; " if r.error else "") + f"{type(exc).__name__}: {exc}"
