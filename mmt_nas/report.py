"""Prediction-error reports: predicted vs measured end-to-end latency, with metrics and plots.

For each model: measure it end to end with MNN (the same settings as the table,
repeated so its own run-to-run spread is known), predict it from the table, and
profile it op by op in context, so the error can be split by op type.

Measuring is the slow part, so :func:`evaluate` can journal each model's measurements as soon as
they are taken (``journal=``, one fsynced JSON line per model): a report that is interrupted
(Ctrl-C, a crash, a kill) continues where it stopped when run again with the same settings.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import html
import json
import logging
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mmt_nas.exceptions import MeteringError, MmtNasError, OpSpaceError
from mmt_nas._files import atomic_write_text, open_journal, pid_alive, remove_stale_temp_files
from mmt_nas.table import LatencyTable

if TYPE_CHECKING:
    import torch

    from mmt_nas.predictor import LatencyPredictor

__all__ = [
    "JOURNAL_FILENAME",
    "REPORT_FILES",
    "ModelSpec",
    "ModelResult",
    "Report",
    "load_model_specs",
    "evaluate",
    "compute_metrics",
    "kendall_tau",
    "spearman_rho",
    "op_category",
    "mnn_category",
]

_logger = logging.getLogger(__name__)
_SCHEMA = "mmt_nas/report"
_SCHEMA_VERSION = 1
_JOURNAL_SCHEMA = "mmt_nas/report-journal"
#: The measurement journal :func:`evaluate` keeps in a report's folder while it runs.
JOURNAL_FILENAME = "report.json.journal"
#: The files :meth:`Report.write` writes (names or patterns).
REPORT_FILES = ("report.json", "report.md", "report.html", "*.png")

# -- op categories, to split the error by what kind of work it is -------------------

_TORCH_CATEGORIES = {
    "conv": ("Conv1d Conv2d Conv3d ConvTranspose1d ConvTranspose2d ConvTranspose3d Linear Bilinear LazyLinear "
             "MultiheadAttention"),
    "norm": ("BatchNorm1d BatchNorm2d BatchNorm3d LayerNorm GroupNorm InstanceNorm1d InstanceNorm2d "
             "InstanceNorm3d LocalResponseNorm"),
    "activation": ("ReLU ReLU6 LeakyReLU PReLU ELU SELU CELU GELU SiLU Mish Hardswish Hardsigmoid Hardtanh Sigmoid "
                   "Tanh Softplus Softsign Softmax LogSoftmax"),
    "pool": ("MaxPool1d MaxPool2d MaxPool3d AvgPool1d AvgPool2d AvgPool3d AdaptiveAvgPool1d AdaptiveAvgPool2d "
             "AdaptiveAvgPool3d AdaptiveMaxPool1d AdaptiveMaxPool2d AdaptiveMaxPool3d"),
    "layout": "Flatten Unflatten Identity Dropout Dropout1d Dropout2d Dropout3d ChannelShuffle PixelShuffle "
              "PixelUnshuffle Upsample ZeroPad2d ConstantPad2d ReflectionPad2d",
}
_MNN_CATEGORIES = {
    "conv": "Convolution ConvolutionDepthwise Deconvolution DeconvolutionDepthwise MatMul BatchMatMul InnerProduct "
            "Convolution3D Deconvolution3D",
    "norm": "BatchNorm Scale LayerNorm GroupNorm InstanceNorm Normalize",
    "activation": "ReLU ReLU6 PReLU ELU Selu Sigmoid TanH UnaryOp Softmax GELU",
    "pool": "Pooling Pooling3D AdaptivePooling Reduction",
    "elementwise": "BinaryOp Eltwise",
    "layout": "Raster Reshape Permute Transpose Concat Slice StridedSlice Squeeze Unsqueeze ConvertTensor Flatten "
              "Gather GatherV2 Padding Interp Shape Cast Const",
}
_TORCH_INDEX = {name: cat for cat, names in _TORCH_CATEGORIES.items() for name in names.split()}
_MNN_INDEX = {name: cat for cat, names in _MNN_CATEGORIES.items() for name in names.split()}


def op_category(class_name: str, key: str = "") -> str:
    """The category of a torch op class: conv, norm, activation, pool, layout, elementwise (tensor
    functions such as additions, by their function), or block (anything else)."""
    if class_name == "Functional":
        from mmt_nas.ops import function_category

        fn = key.split("|", 2)[1].split("(", 1)[0] if key.count("|") >= 2 else ""
        return function_category(fn)
    return _TORCH_INDEX.get(class_name, "block")


def mnn_category(op_type: str) -> str:
    """The category of an MNN op type: conv, norm, activation, pool, elementwise, layout or other."""
    return _MNN_INDEX.get(op_type, "other")


# -- metrics --------------------------------------------------------------------------


def _ranks(xs: Sequence[float]) -> list[float]:
    """Average ranks (1-based), ties sharing the mean of their positions."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    ranks = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _pearson(xs: Sequence[float], ys: Sequence[float]) -> float:
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else float("nan")


def spearman_rho(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Spearman's rank correlation (Pearson correlation of average ranks); NaN if undefined."""
    if len(xs) != len(ys) or len(xs) < 2:
        return float("nan")
    return _pearson(_ranks(xs), _ranks(ys))


def kendall_tau(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Kendall's tau-b between two rankings (ties handled as in tau-b); NaN if undefined."""
    n = len(xs)
    if n != len(ys) or n < 2:
        return float("nan")
    concordant = discordant = ties_x = ties_y = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = xs[i] - xs[j], ys[i] - ys[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    denom = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return (concordant - discordant) / denom if denom > 0 else float("nan")


def compute_metrics(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, float]:
    """Error metrics of predictions against measurements (both in ms).

    Returns:
        ``n``, ``mae_ms``, ``rmse_ms``, ``mape_pct``, ``rmspe_pct``, ``within_5_pct`` and
        ``within_10_pct`` (share of models whose error is within ±5% / ±10%, in percent),
        ``kendall_tau``, ``spearman_rho``, and ``mean_signed_error_pct`` (bias).

    Raises:
        ValueError: The sequences differ in length or a measurement is not positive.
    """
    if len(predicted) != len(measured):
        raise ValueError(f"predicted and measured must have the same length, got {len(predicted)} and "
                         f"{len(measured)}.")
    if any(m <= 0 for m in measured):
        raise ValueError("measured latencies must be > 0.")
    n = len(measured)
    if n == 0:
        return {"n": 0}
    err = [p - m for p, m in zip(predicted, measured)]
    rel = [e / m for e, m in zip(err, measured)]
    return {
        "n": n,
        "mae_ms": sum(abs(e) for e in err) / n,
        "rmse_ms": math.sqrt(sum(e * e for e in err) / n),
        "mape_pct": 100 * sum(abs(r) for r in rel) / n,
        "rmspe_pct": 100 * math.sqrt(sum(r * r for r in rel) / n),
        "within_5_pct": 100 * sum(abs(r) <= 0.05 for r in rel) / n,
        "within_10_pct": 100 * sum(abs(r) <= 0.10 for r in rel) / n,
        "mean_signed_error_pct": 100 * sum(rel) / n,
        "kendall_tau": kendall_tau(predicted, measured),
        "spearman_rho": spearman_rho(predicted, measured),
    }


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
        from mmt_nas.opspace import load_model

        return load_model(self.target, self.kwargs)


def load_model_specs(path: str | os.PathLike[str]) -> list[ModelSpec]:
    """Read a model list::

        models:
          - name: resnet18
            model: examples/resnet18/resnet18.py:ResNet18   # relative paths: from this file's folder
            input_shape: [1, 3, 224, 224]
            kwargs: {num_classes: 10}

    Raises:
        OpSpaceError: The file is missing, not YAML, or an entry is malformed.
    """
    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise OpSpaceError(f"cannot read the model list {str(p)!r}: {exc.strerror or exc}.") from None
    except yaml.YAMLError as exc:
        raise OpSpaceError(f"model list {str(p)!r} is not valid YAML: {exc}.") from None
    models = doc.get("models") if isinstance(doc, dict) else None
    if not isinstance(models, list) or not models:
        raise OpSpaceError(f"model list {str(p)!r} must have a non-empty list under 'models:', but got {doc!r}.")
    specs = []
    for i, m in enumerate(models):
        where = f"models[{i}]"
        if not isinstance(m, dict) or not isinstance(m.get("model"), str) or ":" not in m["model"]:
            raise OpSpaceError(f"{where} must have model: 'module:callable' or 'file.py:callable', but got {m!r}.")
        shape = m.get("input_shape")
        if not isinstance(shape, list) or not shape or not all(isinstance(d, int) and d > 0 for d in shape):
            raise OpSpaceError(f"{where}.input_shape must be a list of positive integers, but got {shape!r}.")
        kwargs = m.get("kwargs") or {}
        if not isinstance(kwargs, dict):
            raise OpSpaceError(f"{where}.kwargs must be a mapping, but got {kwargs!r}.")
        target = m["model"]
        module, _, attr = target.rpartition(":")
        if module.endswith(".py") and not os.path.isabs(module):
            target = f"{(p.parent / module).resolve()}:{attr}"
        specs.append(ModelSpec(str(m.get("name") or target), target, tuple(shape), kwargs))
    return specs


# -- evaluation -------------------------------------------------------------------------


@dataclass
class ModelResult:
    """The outcome for one model. ``error`` is set (and numbers may be missing) when a step failed."""

    name: str
    input_shape: tuple[int, ...]
    measured_ms: float | None = None
    run_medians_ms: list[float] = field(default_factory=list)
    within_run_cv: float | None = None
    predicted_ms: float | None = None
    prediction: dict[str, Any] | None = None
    by_category: dict[str, dict[str, float]] = field(default_factory=dict)
    error: str | None = None
    samples: list[Any] = field(default_factory=list, repr=False)  # CalibrationSample, not written to JSON
    profile: list[Any] = field(default_factory=list, repr=False)  # OpProfile of the whole model
    reused: bool = False  # the measurements came from the journal of an interrupted run

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
            "predicted_ms": self.predicted_ms,
            "error_pct": self.error_pct,
            "by_category": self.by_category,
            "measurement_reused": self.reused,
            "prediction": self.prediction,
        }


ModelCase = tuple[str, Any, Sequence[int]]  # (name, nn.Module or ModelSpec, input_shape)


def _category_split(prediction: Any, profile: Iterable[Any]) -> dict[str, dict[str, float]]:
    split: dict[str, dict[str, float]] = {}
    for op in prediction.ops:
        cat = op_category(op.class_name, op.key)
        split.setdefault(cat, {"predicted_ms": 0.0, "in_context_ms": 0.0})["predicted_ms"] += op.total_ms
    for op in profile:
        cat = mnn_category(op.type)
        split.setdefault(cat, {"predicted_ms": 0.0, "in_context_ms": 0.0})["in_context_ms"] += op.latency_ms
    return split


_WORK_PREFIX = "mmt_nas_report_"


def _remove_dead_work_dirs() -> None:
    """Remove the temporary work folders (exported models) of :func:`evaluate` runs that were killed."""
    import re
    import shutil

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
            "schema_version": _SCHEMA_VERSION,
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
    if not isinstance(doc, dict) or doc.get("schema") != _JOURNAL_SCHEMA or doc.get("schema_version") != 1:
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
        isinstance(p, list) and len(p) == 3 and isinstance(p[0], str) and isinstance(p[1], str)
        and (_positive(p[2]) or p[2] == 0) for p in profile
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


def evaluate(
    predictor: LatencyPredictor,
    cases: Iterable[ModelCase],
    *,
    times: int = 100,
    repeats: int = 3,
    profile_times: int = 10,
    on_result: Callable[[ModelResult], None] | None = None,
    journal: str | os.PathLike[str] | None = None,
) -> list[ModelResult]:
    """Measure, predict and profile every model. A model that fails is recorded with its error.

    Args:
        predictor: Predicts from the table (its settings are used to measure).
        cases: ``(name, model, input_shape)``; ``model`` is an ``nn.Module`` or a :class:`ModelSpec`.
        times: Timed runs per measurement.
        repeats: Measurements per model (each is ``times`` runs); the reported value is their median.
        profile_times: Runs of the in-context per-op profile (0 to skip it).
        on_result: Called with each result as soon as it is ready.
        journal: A file (e.g. ``report/`` + :data:`JOURNAL_FILENAME`) to which each model's measurements
            are appended, on disk, as soon as they are taken, and from which they are reused: a model
            journaled with the same name, definition (target and kwargs, or class) and architecture
            (its ``repr``), input shape, ``times``, ``repeats``, ``profile_times``, MNN settings and device
            is not measured again (``result.reused``); predictions are always recomputed. Delete the file
            once the results are saved, or to measure everything again. ``None``: no journal.

    Raises:
        MeteringError: The journal cannot be read or written.
    """
    from mmt_nas.calibration import samples_from_profile
    from mmt_nas.converter import export_to_mnn
    from mmt_nas.meter import OpProfile, device_info, profile_model, time_model
    from mmt_nas.trace import parse_model

    settings = predictor.table.settings
    _remove_dead_work_dirs()
    jr = _Journal(journal) if journal is not None else None
    how: dict[str, Any] = {}
    if jr is not None:
        dev = device_info()
        how = {"times": times, "repeats": repeats, "profile_times": profile_times, "runtime": settings.to_dict(),
               "device": {k: dev.get(k) for k in ("hostname", "cpu_model", "cpu_count", "mnn_version")}}
    results = []
    for name, model, shape in cases:
        result = ModelResult(name, tuple(shape))
        try:
            spec = model if isinstance(model, ModelSpec) else None
            if spec is not None:
                model = spec.build()
            try:
                prediction = predictor.predict(model, shape)
                result.predicted_ms = float(prediction)
                result.prediction = prediction.to_dict()
            except MmtNasError as exc:
                result.error = f"predict: {exc}"
                prediction = None
            key = _journal_key(name, spec, model, shape, how) if jr is not None else None
            saved = jr.get(key) if jr is not None and key is not None else None
            if saved is not None:
                result.run_medians_ms = list(saved["run_medians_ms"])
                result.within_run_cv = saved["within_run_cv"]
                result.profile = [OpProfile(*p) for p in saved["profile"]]
                result.reused = True
            else:
                # the work folder carries this process's id, so that the next run removes it if we are killed
                with tempfile.TemporaryDirectory(prefix=f"{_WORK_PREFIX}{os.getpid()}_") as tmp:
                    path = Path(tmp) / "model.mnn"
                    export_to_mnn(model, shape, path, onnx_path=Path(tmp) / "model.onnx")
                    runs = [time_model(path, times, settings=settings) for _ in range(repeats)]
                    result.run_medians_ms = [r.median_ms for r in runs]
                    result.within_run_cv = sum(r.cv for r in runs) / len(runs)
                    if profile_times > 0:
                        result.profile = profile_model(path, profile_times, settings=settings)
                if jr is not None and key is not None:
                    jr.append(key, result)
            result.measured_ms = sorted(result.run_medians_ms)[len(result.run_medians_ms) // 2]
            if prediction is not None and profile_times > 0:
                result.by_category = _category_split(prediction, result.profile)
                ops = parse_model(model, shape, known=predictor.table.__contains__, composition=predictor.composition)
                result.samples = samples_from_profile(name, ops, result.profile, predictor.table, predictor.latency,
                                                      result.measured_ms)
        except _JournalError:
            raise  # the journal itself failed: continuing would lose what it is for
        except Exception as exc:  # a failing model is reported, never fatal to the report
            result.error = (result.error + "; " if result.error else "") + f"{type(exc).__name__}: {exc}"
        _logger.info("%s: measured %s ms, predicted %s ms%s", name, result.measured_ms, result.predicted_ms,
                     " (measurement reused from the journal)" if result.reused else "")
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


class Report:
    """Results over a set of models, with metrics, and writers for JSON, Markdown, HTML and plots.

    Args:
        results: Per-model results from :func:`evaluate`.
        table: The table the predictions came from.
        settings: How the report was made (times, repeats, scenario, ...), recorded as given.
    """

    def __init__(self, results: Sequence[ModelResult], table: LatencyTable, settings: Mapping[str, Any]) -> None:
        self.results = list(results)
        self.table = table
        self.settings = dict(settings)

    @property
    def metrics(self) -> dict[str, Any]:
        """Metrics over the models that were both measured and predicted."""
        ok = [r for r in self.results if r.ok]
        m: dict[str, Any] = compute_metrics([r.predicted_ms for r in ok], [r.measured_ms for r in ok])  # type: ignore[misc]
        m["n_models"] = len(self.results)
        m["n_failed"] = len(self.results) - len(ok)
        cvs = [r.within_run_cv for r in self.results if r.within_run_cv is not None]
        m["mean_within_run_cv_pct"] = 100 * sum(cvs) / len(cvs) if cvs else None
        rr = [r.run_to_run_cv for r in self.results if r.run_to_run_cv is not None]
        m["mean_run_to_run_cv_pct"] = 100 * sum(rr) / len(rr) if rr else None
        total = table_ms = 0.0
        for r in ok:
            for op in (r.prediction or {}).get("ops", []):
                total += op["total_ms"]
                table_ms += op["total_ms"] if op["source"] == "table" else 0.0
        m["table_share_pct"] = 100 * (table_ms / total) if total else None  # x / x is exactly 1; 100 * x / x is not
        m["fallback_share_pct"] = 100 - m["table_share_pct"] if total else None
        return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in m.items()}

    def category_totals(self) -> dict[str, dict[str, float]]:
        """Predicted vs in-context ms per op category, summed over the models."""
        out: dict[str, dict[str, float]] = {}
        for r in self.results:
            for cat, v in r.by_category.items():
                d = out.setdefault(cat, {"predicted_ms": 0.0, "in_context_ms": 0.0})
                d["predicted_ms"] += v["predicted_ms"]
                d["in_context_ms"] += v["in_context_ms"]
        return out

    def to_dict(self) -> dict[str, Any]:
        """The whole report as a JSON-ready dict."""
        return {
            "schema": _SCHEMA,
            "schema_version": _SCHEMA_VERSION,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "settings": self.settings,
            "table": {
                "entries": len(self.table),
                "runtime": self.table.settings.to_dict(),
                "device": self.table.device,
            },
            "metrics": self.metrics,
            "by_category": self.category_totals(),
            "models": [r.to_dict() for r in self.results],
        }

    def markdown(self) -> str:
        """A Markdown summary: metrics, error by op category, and one row per model."""
        m = self.metrics
        dev = self.table.device
        lines = [
            "# Prediction-error report",
            "",
            f"Device: {dev.get('cpu_model', '?')}, {dev.get('cpu_count', '?')} cores, MNN {dev.get('mnn_version', '?')}; "
            f"{self.table.settings}. Settings: {json.dumps(self.settings)}.",
            "",
            "| metric | value |",
            "| --- | --- |",
        ]
        for key in ("n_models", "n_failed", "within_10_pct", "within_5_pct", "mape_pct", "rmspe_pct", "mae_ms",
                    "rmse_ms", "mean_signed_error_pct", "kendall_tau", "spearman_rho", "mean_within_run_cv_pct",
                    "mean_run_to_run_cv_pct", "table_share_pct", "fallback_share_pct"):
            lines.append(f"| {key} | {_fmt(m.get(key))} |")
        cats = self.category_totals()
        if cats:
            lines += ["", "Where the time goes, summed over the models: predicted (ops timed alone) vs in context "
                      "(MNN's per-op profile of each whole model). `block`: composite modules counted whole.", "",
                      "| op category | predicted ms | in-context ms | difference ms |", "| --- | --- | --- | --- |"]
            for cat, v in sorted(cats.items(), key=lambda kv: -abs(kv[1]["predicted_ms"] - kv[1]["in_context_ms"])):
                lines.append(f"| {cat} | {v['predicted_ms']:.2f} | {v['in_context_ms']:.2f} | "
                             f"{v['predicted_ms'] - v['in_context_ms']:+.2f} |")
        lines += ["", "| model | input | measured ms | run-to-run CV | predicted ms | error | note |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for r in self.results:
            note = (r.error or "").replace("|", "/").replace("\n", " ")[:160]
            lines.append(
                f"| {r.name} | {'x'.join(map(str, r.input_shape))} | {_fmt(r.measured_ms)} | "
                f"{_fmt(None if r.run_to_run_cv is None else 100 * r.run_to_run_cv)}% | {_fmt(r.predicted_ms)} | "
                f"{'' if r.error_pct is None else f'{r.error_pct:+.1f}%'} | {note} |"
            )
        return "\n".join(lines) + "\n"

    def write(self, folder: str | os.PathLike[str], *, plots: bool = True) -> dict[str, Path]:
        """Write ``report.json``, ``report.md``, the PNG plots and ``report.html`` into ``folder``.

        Each file is written atomically (the old one or the new one, never half); temporaries that a
        killed writer left there are removed.

        Returns:
            The paths written, by name.
        """
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"json": out / "report.json", "md": out / "report.md"}
        atomic_write_text(paths["json"], json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")
        atomic_write_text(paths["md"], self.markdown())
        if plots:
            paths.update(self._plots(out))
            paths["html"] = out / "report.html"
            atomic_write_text(paths["html"], self._html(paths))
        remove_stale_temp_files(out, REPORT_FILES)
        return paths

    def _plots(self, out: Path) -> dict[str, Path]:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError as exc:
            raise MmtNasError(f"plots need matplotlib ({exc}); install it with `pip install mmt-nas[plots]`, or "
                              "write the report with plots=False.") from exc
        ok = [r for r in self.results if r.ok]
        meas = [r.measured_ms for r in ok]
        pred = [r.predicted_ms for r in ok]
        paths = {}

        fig, ax = plt.subplots(figsize=(5.5, 5))
        if ok:
            lo, hi = min(meas + pred) * 0.8, max(meas + pred) * 1.25  # type: ignore[operator]
            xs = [lo, hi]
            ax.fill_between(xs, [x * 0.9 for x in xs], [x * 1.1 for x in xs], color="tab:green", alpha=0.15,
                            label="±10%")
            ax.plot(xs, xs, color="gray", lw=1, label="predicted = measured")
            ax.scatter(meas, pred, s=18, color="tab:blue", zorder=3)
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_xlabel("measured latency (ms)")
        ax.set_ylabel("predicted latency (ms)")
        ax.set_title(f"{len(ok)} models, ±10%: {_fmt(self.metrics.get('within_10_pct'))}%")
        ax.legend(loc="upper left")
        paths["pred_vs_measured"] = _save(fig, out / "pred_vs_measured.png", plt)

        fig, ax = plt.subplots(figsize=(6, 4))
        errs = [r.error_pct for r in ok]
        ax.hist(errs, bins=max(5, min(30, len(errs))), color="tab:blue")
        ax.axvline(0, color="gray", lw=1)
        for v in (-10, 10):
            ax.axvline(v, color="tab:green", lw=1, ls="--")
        ax.set_xlabel("prediction error (%)")
        ax.set_ylabel("models")
        paths["error_histogram"] = _save(fig, out / "error_histogram.png", plt)

        cats = self.category_totals()
        fig, ax = plt.subplots(figsize=(7, 4))
        names = sorted(cats, key=lambda c: -abs(cats[c]["predicted_ms"] - cats[c]["in_context_ms"]))
        if names:
            idx = range(len(names))
            ax.bar([i - 0.2 for i in idx], [cats[c]["predicted_ms"] for c in names], 0.4, label="predicted (alone)")
            ax.bar([i + 0.2 for i in idx], [cats[c]["in_context_ms"] for c in names], 0.4, label="in context")
            ax.set_xticks(list(idx))
            ax.set_xticklabels(names)
            ax.legend()
        ax.set_ylabel("ms, summed over models")
        ax.set_title("Error by op type: predicted vs in-context time")
        paths["error_by_op_type"] = _save(fig, out / "error_by_op_type.png", plt)
        return paths

    def _html(self, paths: Mapping[str, Path]) -> str:
        imgs = "".join(
            f'<img alt="{name}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
            for name, p in paths.items() if p.suffix == ".png"
        )
        body = html.escape(self.markdown())
        return (
            "<!doctype html><html><head><meta charset='utf-8'><title>mmt_nas prediction-error report</title>"
            "<style>body{font-family:sans-serif;margin:2em}img{max-width:32%;margin:0.5%}"
            "pre{white-space:pre-wrap}</style></head><body><h1>mmt_nas prediction-error report</h1>"
            f"<div>{imgs}</div><pre>{body}</pre></body></html>\n"
        )


def _save(fig: Any, path: Path, plt: Any) -> Path:
    # the temporaries' pattern is atomic_write_text's, which remove_stale_temp_files knows
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:  # held open while written, so no cleanup takes it for a leftover
            fig.savefig(fh, format="png", dpi=110, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)
    return path


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.3g}" if abs(v) < 100 else f"{v:.1f}"
    return str(v)
