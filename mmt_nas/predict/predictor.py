"""Predict model latency from a latency table, explaining every op's share."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from mmt_nas.device.facts import device_info
from mmt_nas.exceptions import OpSpaceError, OptionError, TableError, UnknownOpError
from mmt_nas.predict.cache import (
    CACHE_BYTES,
    CONTEXTS,
    Context,
    check_cache_bytes,
    cold_part,
    cold_share,
    in_model_ms,
    is_block,
)
from mmt_nas.predict.calibration import model_weight_bytes
from mmt_nas.predict.intervals import (
    IntervalModel,
    PriorIntervals,
    check_confidence,
    check_probability,
    entry_sigma,
    interval_model_from_dict,
    log_sd,
)
from mmt_nas.space.describe import record_from_parsed
from mmt_nas.space.trace import Composition, ParsedOp, check_composition, parse_model
from mmt_nas.table.records import TABLE_FILENAME, OpRecord
from mmt_nas.table.table import Latency, LatencyTable, Precision, RuntimeSettings, TableEntry, check_latency
from mmt_nas.vocab import check_choice, parse_key

if TYPE_CHECKING:
    from collections.abc import Hashable, Iterable

    import torch

    from mmt_nas.predict.calibration import InContextCalibration

__all__ = [
    "OnMissing",
    "ON_MISSING",
    "check_on_missing",
    "Source",
    "OpContribution",
    "Prediction",
    "LatencyPredictor",
    "OpEstimator",
    "load_table_cached",
    "Context",
    "CONTEXTS",
    "CACHE_BYTES",
    "cold_share",
]

_logger = logging.getLogger(__name__)
_WARNED: set[int] = set()

#: The relative spread (log units) counted for a fallback estimate when the estimator gives none of its own
#: (:class:`~mmt_nas.predict.fallback.LatencyRegressor` does: ``log_std_op``).
FALLBACK_SIGMA = 0.3

#: What the predictor does with an op that is not in the table: raise (``"error"``) or ask its fallback.
OnMissing = Literal["error", "fallback"]
ON_MISSING: tuple[OnMissing, ...] = ("error", "fallback")
#: Where an op's time in a prediction came from.
Source = Literal["table", "fallback", "fused"]


def check_on_missing(on_missing: Any) -> OnMissing:
    """Return ``on_missing`` if it is ``"error"`` or ``"fallback"``, else raise :class:`OptionError`."""
    return check_choice("on_missing", on_missing, ON_MISSING)


class OpEstimator(Protocol):
    """What the predictor needs of a fallback for ops missing from the table."""

    def predict_op(self, op: ParsedOp) -> float:
        """Estimated latency of ``op`` in milliseconds.

        An estimator may also have ``cold_ratio_op(op) -> float | None``, the op's estimated cold-over-hot
        time ratio (as :class:`~mmt_nas.predict.fallback.LatencyRegressor` has): then the ops it estimates move toward
        their cold time in a large model (``context="model"``) like the table's ops. And
        ``log_std_op(op) -> float``, the relative standard deviation (log units) of its estimate, for the
        prediction's interval; without it an estimate counts :data:`FALLBACK_SIGMA`. And
        ``prepare(ops) -> None``, called first with each model's missing ops (one of each key), to estimate
        them all at once.
        """


@dataclass(frozen=True)
class OpContribution:
    """One distinct op of a prediction.

    Attributes:
        key: The op's key.
        class_name: Its class name.
        count: How many times the model runs it.
        latency_ms: Latency of one run, in ms.
        total_ms: ``count * latency_ms``.
        share: Fraction of the predicted total.
        source: ``"table"``, ``"fallback"``, or ``"fused"`` (MNN folds it into the op named in
            ``names``' ``fused_into``; it costs no time of its own).
        names: The module names that run it.
        ratio: The in-context calibration factor applied to ``latency_ms`` (1 without calibration).
        sigma: The relative standard deviation (log units) of ``latency_ms``: the table entry's measurement
            spread (:func:`~mmt_nas.predict.intervals.entry_sigma`) or the fallback's (0 for fused ops).
    """

    key: str
    class_name: str
    count: int
    latency_ms: float
    total_ms: float
    share: float
    source: Source
    names: tuple[str, ...]
    ratio: float = 1.0
    sigma: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {**self.__dict__, "names": list(self.names)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> OpContribution:
        """Rebuild from :meth:`to_dict` output (``sigma`` defaults to 0 for dicts written before it)."""
        return cls(**{**d, "names": tuple(d.get("names", ()))})


class Prediction(float):
    """A predicted latency in milliseconds that can explain itself and say how sure it is.

    It is a ``float`` (so ``prediction < budget`` works); ``ops`` holds each distinct op with its count,
    latency, share, source and spread; :meth:`interval`, :meth:`quantile` and :attr:`std_ms` say how far
    the device's latency may be from it (see :mod:`mmt_nas.predict.intervals`).

    Attributes:
        ops: The distinct ops.
        sigma: The source spread: ``sqrt(sum((share * sigma) ** 2))`` over the ops (relative, log units).
        intervals: The interval model (:class:`~mmt_nas.predict.intervals.PriorIntervals` when uncalibrated).
    """

    ops: tuple[OpContribution, ...]
    sigma: float
    intervals: IntervalModel

    def __new__(
        cls,
        latency_ms: float,
        ops: Sequence[OpContribution] = (),
        sigma: float | None = None,
        intervals: IntervalModel | None = None,
    ) -> Prediction:
        obj = super().__new__(cls, latency_ms)
        obj.ops = tuple(ops)
        obj.sigma = math.sqrt(sum((o.share * o.sigma) ** 2 for o in obj.ops)) if sigma is None else float(sigma)
        obj.intervals = intervals if intervals is not None else PriorIntervals()
        return obj

    @property
    def latency_ms(self) -> float:
        """The prediction as a plain float, in ms."""
        return float(self)

    def source_ms(self, source: Source) -> float:
        """Milliseconds of the prediction that came from ``source`` (``"table"`` or ``"fallback"``)."""
        return sum(o.total_ms for o in self.ops if o.source == source)

    def quantile(self, p: float) -> float:
        """The latency (ms) the device stays under with probability ``p``.

        Raises:
            OptionError: ``p`` is not strictly between 0 and 1.
        """
        p = check_probability("p", p)
        return float(self) * math.exp(self.intervals.log_quantile(p, self.sigma))

    def upper(self, confidence: float = 0.9) -> float:
        """One-sided: the latency (ms) the device stays under with probability ``confidence``
        (``quantile(confidence)``; what :class:`~mmt_nas.integrations.optuna.LatencyConstraint` compares)."""
        return self.quantile(check_confidence(confidence))

    def interval(self, confidence: float = 0.9) -> tuple[float, float]:
        """Two-sided: ``(lower, upper)`` in ms, holding the device's latency with probability ``confidence``
        (the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles).

        Raises:
            OptionError: ``confidence`` is not strictly between 0 and 1.
        """
        c = check_confidence(confidence)
        return self.quantile((1 - c) / 2), self.quantile((1 + c) / 2)

    @property
    def std_ms(self) -> float:
        """A standard deviation in ms: half the width of the central 68.3% interval."""
        lo, hi = self.interval(0.6827)
        return (hi - lo) / 2

    @property
    def calibrated(self) -> bool:
        """Whether the interval was calibrated on measured models (conformal) or is the prior's."""
        return bool(self.intervals.calibrated)

    def width_sources(self, n: int = 3) -> list[tuple[str, float]]:
        """What makes the interval wide: ``(what, share of the log variance)``, largest first: the model-level
        term (the composition's error, from measured models or the prior) and the ``n`` ops whose spread
        (measurement or fallback) weighs most."""
        model_var = max(log_sd(self.intervals), 1e-12) ** 2
        parts = [("whole-model composition", model_var)]
        parts += [(f"{o.source} op {o.key}", (o.share * o.sigma) ** 2) for o in self.ops if o.sigma > 0]
        total = sum(v for _, v in parts) or 1.0
        ranked = sorted(parts, key=lambda kv: -kv[1])
        return [(what, v / total) for what, v in ranked[: n + 1]]

    def to_dict(self, confidence: float = 0.9) -> dict[str, Any]:
        """Return a JSON-ready dict: the latency, its ``confidence`` interval and standard deviation, what the
        interval rests on, and the ops."""
        lo, hi = self.interval(confidence)
        return {
            "latency_ms": float(self),
            "interval": {
                "confidence": confidence,
                "lower_ms": lo,
                "upper_ms": hi,
                "std_ms": self.std_ms,
                "calibrated": self.calibrated,
                "basis": self.intervals.describe(),
            },
            "sigma": self.sigma,
            "intervals": self.intervals.to_dict(),
            "ops": [o.to_dict() for o in self.ops],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Prediction:
        """Rebuild from :meth:`to_dict` output (dicts written before intervals get the uncalibrated prior)."""
        ops = [OpContribution.from_dict(o) for o in d.get("ops", [])]
        model = interval_model_from_dict(d["intervals"]) if "intervals" in d else None
        return cls(float(d["latency_ms"]), ops, d.get("sigma"), model)

    def explain(self, confidence: float = 0.9) -> str:
        """A text table of the ops, largest share first, under the interval and what makes it wide."""
        lo, hi = self.interval(confidence)
        lines = [
            f"predicted latency: {float(self):.3f} ms from {sum(o.count for o in self.ops)} op runs",
            f"{confidence:.0%} interval: {lo:.3f} to {hi:.3f} ms ({self.intervals.describe()})",
            "its width comes from: " + "; ".join(f"{what[:80]} {share:.0%}" for what, share in self.width_sources()),
        ]
        lines.append(f"{'source':8} {'count':>5} {'ms each':>9} {'ms total':>9} {'share':>6} {'spread':>6}  key")
        for o in sorted(self.ops, key=lambda o: -o.total_ms):
            key = o.key if len(o.key) <= 100 else o.key[:97] + "..."
            lines.append(
                f"{o.source:8} {o.count:5d} {o.latency_ms:9.4f} {o.total_ms:9.4f} {o.share:6.1%} {o.sigma:6.1%}  {key}"
            )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Prediction({float(self)!r} ms, {len(self.ops)} distinct ops)"

    def __reduce__(self) -> Any:
        return (Prediction, (float(self), self.ops, self.sigma, self.intervals))


_TABLE_CACHE: dict[str, tuple[tuple[int, int], LatencyTable]] = {}


def load_table_cached(path: str | os.PathLike[str]) -> LatencyTable:
    """Load a table once per file version (path, modification time and size)."""
    p = Path(path)
    if p.is_dir():
        p = p / TABLE_FILENAME
    try:
        st = p.stat()
    except OSError:
        return LatencyTable.load(p)  # raises the clear "not found" error
    stamp = (st.st_mtime_ns, st.st_size)
    hit = _TABLE_CACHE.get(str(p.resolve()))
    if hit is not None and hit[0] == stamp:
        return hit[1]
    table = LatencyTable.load(p)
    _TABLE_CACHE[str(p.resolve())] = (stamp, table)
    return table


class LatencyPredictor:
    """Predicts model latency: table lookups first, then an optional fallback estimator.

    Args:
        table: A :class:`LatencyTable`, or the path of one (or of its ops folder).
        on_missing: ``"error"`` (default) raises :class:`UnknownOpError` for ops not in the
            table; ``"fallback"`` asks ``fallback`` to estimate them.
        fallback: Estimator for missing ops (required with ``on_missing="fallback"``).
        backend: If given, refuse a table measured on another backend.
        threads: If given, refuse a table measured with another thread count.
        precision: If given, refuse a table measured with another precision.
        composition: ``"mnn"`` (default) counts what MNN runs: the tensor functions a model
            calls (additions, reshapes, ...) as ops, and the ops MNN's converter fuses into the
            op before them (Conv+BN+ReLU, Add+ReLU) as costing nothing of their own.
            ``"modules"`` sums the model's modules only (the MMT tool's way).
        latency: ``"core"`` (default) uses each op's own time inside its timed model (MNN's
            per-op profile, without the layout conversions at its input and output, which a
            whole model does once), where the table has it; ``"wall"`` uses the op's end-to-end median.
        calibration: A fitted :class:`~mmt_nas.predict.calibration.InContextCalibration`: each module op's
            time is multiplied by its predicted in-context ratio (``OpContribution.ratio``).
        device: If given, refuse a table measured on another device: a mapping of device facts
            (e.g. ``{"cpu_model": "..."}``, see :meth:`~mmt_nas.table.table.LatencyTable.check_device`), or
            ``"local"`` for this machine.
        context: ``"model"`` (default): where the table has an op's cold time (``cold_ms``), its time moves
            from hot toward cold part by part of its bytes (:func:`~mmt_nas.predict.cache.in_model_ms`): its
            activations (input and output) all the way, as a model's rotating buffers leave them, and its weights
            by :func:`cold_share` of the model's weight bytes (small models keep their weights in the caches,
            large ones do not); ``"weights"``: only the weights' part moves (the composition before 2026-12-03);
            ``"alone"``: every op as timed alone (hot). Tables without cold times predict the same in all three.
            The factor is in ``OpContribution.ratio`` (with the calibration's).
        cache_bytes: The device's ``(lo, hi)`` weight bytes of :func:`cold_share`. ``None`` (default):
            :data:`CACHE_BYTES` (from a synthetic chain on this project's VM); ``"table"``: the sizes the table's
            cache probe measured on its device (:attr:`~mmt_nas.table.table.LatencyTable.cache_bytes`; not the
            default: on this project's Xeon VM they predicted 30 unseen models worse, -11.0% against -1.8%, see
            ``benchmarks/RESULTS.md``). Which one is in :attr:`cache_bytes_source`.
        intervals: How predictions' intervals are made (:mod:`mmt_nas.predict.intervals`): a fitted
            :class:`~mmt_nas.predict.intervals.ConformalIntervals` (``mmt-nas report --fit-intervals``), or ``None``
            for the uncalibrated :class:`~mmt_nas.predict.intervals.PriorIntervals`. Fit it with this predictor's
            settings (table, fallback, calibration), on other models than those it will serve.
    """

    def __init__(
        self,
        table: LatencyTable | str | os.PathLike[str],
        *,
        on_missing: OnMissing = "error",
        fallback: OpEstimator | None = None,
        backend: str | None = None,
        threads: int | None = None,
        precision: Precision | None = None,
        composition: Composition = "mnn",
        latency: Latency = "core",
        calibration: InContextCalibration | None = None,
        device: Mapping[str, Any] | str | None = None,
        context: Context = "model",
        cache_bytes: tuple[int, int] | Literal["table"] | None = None,
        intervals: IntervalModel | None = None,
    ) -> None:
        self.intervals: IntervalModel = intervals if intervals is not None else PriorIntervals()
        self.composition: Composition = check_composition(composition)
        self.context: Context = check_choice("context", context, CONTEXTS)
        given = None if cache_bytes is None or cache_bytes == "table" else check_cache_bytes(cache_bytes)
        self.latency: Latency = check_latency(latency)
        fitted_for = getattr(calibration, "context", self.context)
        if calibration is not None and fitted_for != self.context:
            raise OptionError(
                f"the calibration was fitted on times composed with context={fitted_for!r}, but this predictor "
                f"composes with context={self.context!r}: it would correct again what the composition already "
                f"counts. Refit it (mmt-nas report --fit-calibration), or pass context={fitted_for!r}."
            )
        self.calibration = calibration
        check_on_missing(on_missing)
        if on_missing == "fallback" and fallback is None:
            raise OptionError("on_missing='fallback' needs a fallback estimator; pass fallback=... .")
        self.table = table if isinstance(table, LatencyTable) else load_table_cached(table)
        measured = self.table.cache_bytes if cache_bytes == "table" else None
        if cache_bytes == "table" and measured is None:
            raise OptionError(
                "cache_bytes='table' needs a table whose metering probed the device's caches, but this one has no "
                f"cache sizes (timing['cache_probe'] = {self.table.timing.get('cache_probe')!r}). Meter it again "
                "without --no-cache-probe, or pass cache_bytes=(lo, hi)."
            )
        self.cache_bytes: tuple[int, int] = given or measured or CACHE_BYTES
        #: Where :attr:`cache_bytes` came from: ``"given"``, ``"table"`` (its device's probe) or ``"default"``.
        self.cache_bytes_source: Literal["given", "table", "default"] = (
            "given" if given is not None else "table" if measured is not None else "default"
        )
        timing = self.table.timing
        if timing.get("method") == "runSession" and "input" not in timing and id(self.table) not in _WARNED:
            _WARNED.add(id(self.table))
            _logger.warning(
                "this table was metered before mmt_nas wrote each op's input again before every run: ops timed "
                "long enough may have decayed into denormal numbers and measured up to 100x too slow. Meter it "
                "again (mmt-nas meter OPS_DIR -o NEW.json)."
            )
        self.on_missing = on_missing
        self.fallback = fallback
        asked = self.table.settings
        wanted = RuntimeSettings(
            backend if backend is not None else asked.backend,
            threads if threads is not None else asked.threads,
            precision if precision is not None else asked.precision,
        )
        self.table.check_settings(wanted)
        if device is not None:
            if device == "local":
                device = device_info()
            if isinstance(device, str):
                raise TableError(f"device must be a mapping of device facts or 'local', but got device={device!r}.")
            self.table.check_device(device)

    def predict(self, model: torch.nn.Module, input_shape: Sequence[int]) -> Prediction:
        """Predict the latency of ``model`` on ``input_shape``.

        Raises:
            UnknownOpError: Ops are missing and ``on_missing="error"``.
        """
        return self.predict_ops(self.parse(model, input_shape))

    def parse(self, model: torch.nn.Module, input_shape: Sequence[int]) -> list[ParsedOp]:
        """The ops of ``model`` as this predictor counts them: modules the table knows whole, the rest down to
        leaves, with this predictor's ``composition`` (see :func:`mmt_nas.space.trace.parse_model`).

        :meth:`predict_ops` of the result is :meth:`predict`; trace once and use both when the ops are
        needed too (as :func:`mmt_nas.report.evaluation.evaluate` does).

        Raises:
            OpSpaceError: The shape is malformed, or the model fails to run on it.
        """
        return parse_model(
            model,
            input_shape,
            known=self.table.__contains__,
            composition=self.composition,
            known_output=self._known_output,
        )

    def _known_output(self, key: str) -> tuple[int, ...] | None:
        entry = self.table.get(key)
        return entry.op.output_shape if entry is not None and entry.op.single_output else None

    def entry_ms(self, entry: TableEntry) -> float:
        """The latency of a table entry as this predictor counts it (see ``latency``)."""
        return entry.time_ms(self.latency)

    def predict_ops(self, ops: Sequence[ParsedOp]) -> Prediction:
        """Sum the latencies of already parsed ops.

        Raises:
            UnknownOpError: Ops are missing and ``on_missing="error"``.
        """
        grouped: dict[str, list[ParsedOp]] = {}
        fused: dict[str, list[ParsedOp]] = {}
        for op in ops:
            (grouped if op.fused_into is None else fused).setdefault(op.key, []).append(op)
        missing = [k for k in grouped if k not in self.table]
        if missing and self.on_missing == "error":
            raise UnknownOpError(self._missing_message(missing, grouped), missing)
        parts: list[tuple[str, list[ParsedOp], float, Source]] = []
        sigmas: list[float] = []
        prepare = getattr(self.fallback, "prepare", None) if missing else None
        if prepare is not None:  # estimate all of them at once (optional protocol: LatencyRegressor.prepare)
            prepare([grouped[k][0] for k in missing])
        for key, group in grouped.items():
            entry = self.table.get(key)
            if entry is not None:
                parts.append((key, group, self.entry_ms(entry), "table"))
                sigmas.append(self._entry_sigma(entry))
            else:
                assert self.fallback is not None
                parts.append((key, group, float(self.fallback.predict_op(group[0])), "fallback"))
                log_std = getattr(self.fallback, "log_std_op", None)
                sigmas.append(float(log_std(group[0])) if log_std is not None else FALLBACK_SIGMA)
        weights = model_weight_bytes([op for _, group, _, _ in parts for op in group], self.table)
        context = self._context_ratios(parts, weights)
        ratios = [c * r for c, r in zip(context, self._calibration_ratios(parts, context, weights))]
        parts = [(key, group, ms * r, source) for (key, group, ms, source), r in zip(parts, ratios)]
        parts += [(key, group, 0.0, "fused") for key, group in fused.items()]
        ratios += [1.0] * len(fused)
        sigmas += [0.0] * len(fused)
        total = sum(len(g) * ms for _, g, ms, _ in parts)
        contributions = [
            OpContribution(
                key=key,
                class_name=group[0].class_name,
                count=len(group),
                latency_ms=ms,
                total_ms=len(group) * ms,
                share=(len(group) * ms / total) if total > 0 else 0.0,
                source=source,
                names=tuple(o.name for o in group),
                ratio=r,
                sigma=sg,
            )
            for (key, group, ms, source), r, sg in zip(parts, ratios, sigmas)
        ]
        return Prediction(total, contributions, intervals=self.intervals)

    def _entry_sigma(self, entry: TableEntry) -> float:
        """An entry's measurement spread (:func:`~mmt_nas.predict.intervals.entry_sigma`), remembered by key; for an
        entry timed in one round, the table's median spread (0 if no entry has rounds)."""
        cache: dict[str, float] = self.__dict__.setdefault("_sigma_cache", {})
        hit = cache.get(entry.op.key)
        if hit is None:
            sigma = entry_sigma(entry)
            hit = cache[entry.op.key] = float(self.table_sigma() if sigma is None else sigma)
        return hit

    def table_sigma(self) -> float:
        """The table's typical measurement spread: the median :func:`~mmt_nas.predict.intervals.entry_sigma` of its
        entries timed in rounds (0 if none was); remembered until :meth:`clear_cache`."""
        if "_table_sigma" not in self.__dict__:
            known = sorted(x for e in self.table if (x := entry_sigma(e)) is not None)
            self.__dict__["_table_sigma"] = known[len(known) // 2] if known else 0.0
        return float(self.__dict__["_table_sigma"])

    def _context_ratios(self, parts: list[tuple[str, list[ParsedOp], float, Source]], weights: int) -> list[float]:
        """Each op's factor from its time alone to its time in this model's cache state (``context``), for a
        model of ``weights`` weight bytes (:func:`~mmt_nas.predict.cache.in_model_ms`)."""
        ratios = [1.0] * len(parts)
        if self.context == "alone":
            return ratios
        share = cold_share(weights, self.cache_bytes)
        activations = self.context == "model"
        if share == 0.0 and not activations:
            return ratios
        cold_ratio = getattr(self.fallback, "cold_ratio_op", None)
        for i, (key, group, ms, source) in enumerate(parts):
            if ms <= 0:
                continue
            entry = self.table.get(key) if source == "table" else None
            if entry is not None:
                whole = activations and not is_block(group[0].class_name, key)
                ratios[i] = in_model_ms(entry, ms, share, activations=whole) / ms
            elif source == "fallback" and cold_ratio is not None:
                cold = cold_ratio(group[0])
                if cold is not None:
                    part = cold_part(record_from_parsed(group[0]).weight_fraction, share, activations=activations)
                    ratios[i] = 1.0 + part * (float(cold) - 1.0)
        return ratios

    def _calibration_ratios(
        self, parts: list[tuple[str, list[ParsedOp], float, Source]], context: list[float], weights: int
    ) -> list[float]:
        """In-context ratios of the module ops (functions and unknown shapes keep 1), on top of ``context``'s:
        the calibration learned what the composition misses (its samples' time alone is the composed time)."""
        ratios = [1.0] * len(parts)
        if self.calibration is None:
            return ratios
        todo = [i for i, (_, group, _, _) in enumerate(parts) if group[0].function is None]
        items: list[tuple[TableEntry | OpRecord, float]] = []
        for i in todo:
            key, group, ms, _ = parts[i]
            items.append((self.table.get(key) or record_from_parsed(group[0]), ms * context[i]))
        for i, r in zip(todo, self.calibration.ratios(items, model_weight_bytes=weights)):
            ratios[i] = r
        return ratios

    def _missing_message(self, missing: list[str], grouped: dict[str, list[ParsedOp]]) -> str:
        lines = [
            f"{len(missing)} op(s) of the model are not in the latency table, and mmt_nas never counts an "
            "unknown op as 0 ms. Add them to the op space (mmt-nas space writes one from the model), "
            "generate and meter them; or use a fallback estimator. Missing:"
        ]
        shapes: dict[tuple[str, str], list[str]] = {}  # (class, repr) -> the input shapes the table has it at
        for k in self.table.keys():
            try:
                parts = parse_key(k)
            except OpSpaceError:  # a key written by hand, not by op_key: no shape to compare
                continue
            shapes.setdefault((parts.class_name, parts.repr), []).append("x".join(map(str, parts.input_shape)))
        for key in missing:
            op = grouped[key][0]
            lines.append(f"  - {key}  (at {op.name or '<model>'}, {len(grouped[key])}x)")
            try:
                parts = parse_key(key)
            except OpSpaceError:  # a key made by hand (predict_ops): listed without the shape hint
                other, shape = [], ""
            else:
                shape = "x".join(map(str, parts.input_shape))
                other = [s for s in shapes.get((parts.class_name, parts.repr), []) if s != shape]
            if other:
                lines.append(
                    f"      the table has this op at input shape {', '.join(other[:8])}"
                    f"{f' (and {len(other) - 8} more)' if len(other) > 8 else ''}, not {shape}: "
                    "was the model asked at another input shape than the table was generated for?"
                )
            close = self.table.closest_keys(key, op.class_name)
            if close:
                lines.append("      closest in the table: " + "; ".join(close))
        return "\n".join(lines)

    # -- fast paths for search loops ----------------------------------------------------------

    #: How many models :meth:`predict_cached` remembers (least recently used are dropped).
    predict_cache_size: int = 4096

    def predict_keys(self, keys: Iterable[str], *, modules: dict[str, Any] | None = None) -> Prediction:
        """Predict from op keys alone: no model is built or traced.

        Each occurrence of a key counts as one run of that op, summed exactly as
        :meth:`predict_ops` sums parsed ops (same missing-op error, same fallback). A
        fallback receives :class:`~mmt_nas.space.trace.ParsedOp` records named ``#<position>``,
        with the class name and input shape read from the key and the module from
        ``modules`` (``None`` if not given; :class:`~mmt_nas.predict.fallback.LatencyRegressor` needs it).

        Args:
            keys: Op keys (see :func:`mmt_nas.vocab.op_key`), one per run, e.g. built by
                :class:`mmt_nas.integrations.keys.KeyBuilder` from op-space entries.
            modules: Optional ``key -> nn.Module`` for the ops a fallback must estimate
                (``KeyBuilder.predict`` passes them).

        Raises:
            OpSpaceError: A key is not of the form ``Class|repr|1x3x224x224``.
            UnknownOpError: Keys are missing from the table and ``on_missing="error"``.
        """
        ops = []
        for i, key in enumerate(keys):
            parts = parse_key(key, what=f"key #{i}")
            module = modules.get(key) if modules else None
            ops.append(ParsedOp(key, parts.class_name, f"#{i}", parts.input_shape, None, module))
        return self.predict_ops(ops)

    def predict_cached(
        self, model: torch.nn.Module, input_shape: Sequence[int], *, config: Hashable | None = None
    ) -> Prediction:
        """:meth:`predict`, remembering the result for models predicted again.

        The cache key is ``(config, input shape)``, or ``(repr(model), input shape)`` when
        ``config`` is ``None``; plus the table's identity and size. Without ``config`` this
        relies on the rule op keys already rely on: a module's ``repr()`` shows every argument
        that changes it (true of torch's layers; a custom module must override ``__repr__``),
        so two models with the same ``repr()`` run the same ops. ``config`` (any hashable value
        that determines the architecture, such as a search's sampled parameters) skips the
        ``repr()`` of a large model; it is then the caller's promise. Only predictions made
        wholly from the table are remembered (a fallback may be refit), and the cache assumes
        no entry of the table is replaced in place (:meth:`LatencyTable.add` of an existing key);
        call :meth:`clear_cache` after doing that.

        Raises:
            UnknownOpError: Ops are missing and ``on_missing="error"``.
        """
        cache: dict[Any, Prediction] = self.__dict__.setdefault("_predict_cache", {})
        ident = (repr(model) if config is None else config, tuple(input_shape), id(self.table), len(self.table))
        hit = cache.pop(ident, None)
        if hit is None:
            hit = self.predict(model, input_shape)
            if any(o.source == "fallback" for o in hit.ops):
                return hit
            while len(cache) >= self.predict_cache_size:
                cache.pop(next(iter(cache)))
        cache[ident] = hit  # (re)inserted last: the dict's order is the recency order
        return hit

    def clear_cache(self) -> None:
        """Forget every prediction :meth:`predict_cached` remembers (and each entry's spread)."""
        for name in ("_predict_cache", "_sigma_cache", "_table_sigma"):
            self.__dict__.pop(name, None)
