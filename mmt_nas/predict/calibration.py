"""In-context calibration: from an op's time alone to its time inside a whole model.

An op timed alone runs with warm caches: its weights and input stay in cache
between runs. Inside a whole model the weights of every layer compete for the
cache, and large layers run several times slower (measured here: a 256-channel
3x3 convolution at 8x8 took 0.15 ms alone and 0.6 ms inside a ResNet-18). MNN's
per-op callback gives every op's time inside a whole model, and the op names it
reports carry the torch module path, so each profiled model yields one training
sample per op: (the op's features, its time as the predictor composes it, the
model's weight bytes) → (its time in context).

The predictor's ``context="model"`` already moves an op from its hot time toward its
cold time by :func:`mmt_nas.predict.cache.cold_share` of the model's weight bytes; the samples
are built from that composed time (:func:`samples_from_profile`), so the calibration
learns only what the composition misses, and never counts the cache twice.

:class:`InContextCalibration` learns the ratio from such samples (a scikit-learn
regressor on :func:`mmt_nas.predict.fallback.op_features`, the op's composed time and the
model's context) and the predictor multiplies each op's composed time by it. Out of
the training data's range (an op or a model unlike any it was fitted on), the
predicted log-ratio shrinks toward 0 (no correction) instead of extrapolating; see
:meth:`InContextCalibration.trust`. Fit it on models you measured; never score it on
the models it was fitted on (:func:`cross_fitted`, :func:`leave_one_group_out`).
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mmt_nas._files import atomic_write_text
from mmt_nas._imports import try_import
from mmt_nas.exceptions import NotFittedError, OptionError, TableError
from mmt_nas.predict.cache import CACHE_BYTES, CONTEXTS, Context, check_cache_bytes, cold_share, in_model_ms, is_block
from mmt_nas.predict.fallback import op_features, single_threaded
from mmt_nas.space.describe import record_from_parsed
from mmt_nas.space.trace import ParsedOp
from mmt_nas.table.records import OpRecord
from mmt_nas.table.table import Latency, TableEntry
from mmt_nas.vocab import check_choice

if TYPE_CHECKING:
    from mmt_nas.device.profile import OpProfile

#: The regression models :class:`InContextCalibration` can fit.
CalibrationKind = Literal["boosting", "forest"]
CALIBRATION_KINDS: tuple[CalibrationKind, ...] = ("boosting", "forest")
#: What :attr:`CalibrationSample.context` holds (:func:`model_context`).
CONTEXT_FEATURE_NAMES = ("log1p_model_weight_bytes", "cold_share")

__all__ = [
    "CalibrationKind",
    "CALIBRATION_KINDS",
    "CONTEXT_FEATURE_NAMES",
    "CalibrationSample",
    "InContextCalibration",
    "model_context",
    "model_weight_bytes",
    "profile_scope",
    "samples_from_profile",
    "cross_fitted",
    "leave_one_group_out",
]

_SCHEMA = "mmt_nas/calibration"
_SCHEMA_VERSION = 2  # 2: samples carry their model's context; params shrink and cache_bytes
#: Trust is computed from the mean distance to this many nearest training samples.
_TRUST_NEIGHBORS = 5
#: Trust is 1 up to this quantile of the training samples' own (leave-one-out) distances.
_TRUST_QUANTILE = 90
#: How many percentage points of MAPE a held-out group may lose to the correction before ``step_aside`` scales
#: it down (the noise of a model's profiled time on a shared VM is larger).
STEP_ASIDE_TOLERANCE = 0.5
_DAMPINGS = (1.0, 0.75, 0.5, 0.25)
_STEP_ASIDE_FOLDS = 5  # groups beyond this many are held out five folds at a time


def model_context(model_weight_bytes: float, cache_bytes: tuple[int, int] = CACHE_BYTES) -> tuple[float, float]:
    """The model-level features of the calibration (:data:`CONTEXT_FEATURE_NAMES`).

    Args:
        model_weight_bytes: The model's weight bytes, as the predictor counts them (:func:`model_weight_bytes`).
        cache_bytes: The device's ``(lo, hi)`` of :func:`mmt_nas.predict.cache.cold_share`.

    Returns:
        ``(log(1 + model_weight_bytes), cold_share(model_weight_bytes, cache_bytes))``.

    Raises:
        OptionError: ``model_weight_bytes`` is not a finite number >= 0.
    """
    w = model_weight_bytes
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
        raise OptionError(f"model_weight_bytes must be a finite number >= 0, but got {w!r}.")
    return (math.log1p(w), cold_share(w, cache_bytes))


def model_weight_bytes(ops: Sequence[ParsedOp], table: Any) -> int:
    """A model's weight bytes as the predictor's ``context="model"`` counts them: every non-fused op, once per
    call, from its table entry (or, for an op the table lacks, from its module's parameters; tensor functions
    and ops known by their key alone, without a module, count 0)."""
    total = 0
    for op in ops:
        if op.fused_into is not None:
            continue
        entry = table.get(op.key)
        if entry is not None:
            total += entry.op.weight_bytes
        elif op.module is not None:
            total += 4 * sum(p.numel() for p in op.module.parameters())
    return total


def profiled_module_ops(ops: Sequence[ParsedOp], times: Mapping[str, float]) -> list[tuple[ParsedOp, float]]:
    """The model's counted module ops (not fused, not tensor functions) that it calls once and whose module path
    has a profiled time in ``times`` (:func:`times_by_scope`), with that time."""
    counted = [op for op in ops if op.fused_into is None and op.function is None]
    calls: dict[str, int] = {}
    for op in counted:
        calls[op.name] = calls.get(op.name, 0) + 1
    return [(op, times[op.name]) for op in counted if calls[op.name] == 1 and op.name in times]


@dataclass(frozen=True)
class CalibrationSample:
    """One op seen inside one whole model.

    Attributes:
        model: Name of the profiled model (for cross-validation by model).
        key: The op's key.
        features: :func:`mmt_nas.predict.fallback.op_features` of the op.
        alone_ms: Its time before calibration, as the predictor composes it: its table time (core or wall),
            moved toward its cold time as the samples' ``context`` moves it (:func:`mmt_nas.predict.cache.
            in_model_ms`) where the entry has a cold time.
        in_context_ms: Its time inside the model (MNN's per-op profile, fused followers included).
        context: The model's :func:`model_context` (``()``: samples written before it existed).
    """

    model: str
    key: str
    features: tuple[float, ...]
    alone_ms: float
    in_context_ms: float
    context: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "model": self.model,
            "key": self.key,
            "features": list(self.features),
            "alone_ms": self.alone_ms,
            "in_context_ms": self.in_context_ms,
            "context": list(self.context),
        }

    @classmethod
    def from_dict(cls, d: Any) -> CalibrationSample:
        """Inverse of :meth:`to_dict` (dicts without ``context``, written before it existed, load with ``()``).

        Raises:
            TableError: ``d`` is not a sample.
        """
        try:
            return cls(
                str(d["model"]),
                str(d["key"]),
                tuple(float(v) for v in d["features"]),
                float(d["alone_ms"]),
                float(d["in_context_ms"]),
                tuple(float(v) for v in d.get("context") or ()),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise TableError(
                f"a calibration sample must have model, key, features, alone_ms and in_context_ms, but got {d!r} "
                f"({exc!r})."
            ) from None


def profile_scope(op_name: str) -> str | None:
    """The torch module path of an MNN op exported by mmt_nas, e.g. ``layers.0.conv1``.

    ONNX node names are scoped like ``/layers/layers.0/conv1/Conv_output_0``: each scope part is a child's
    own name, or, for the items of a container, the container's part with the index appended
    (``/features/features.1/body/body.0/body.0.0/Conv_output_0`` is ``features.1.body.0.0``). Ops without a
    scope (the model's last op is often renamed ``output...``) give ``None``.
    """
    if not op_name.startswith("/"):
        return None
    parts = op_name.strip("/").split("/")[:-1]
    name = prev = ""
    for part in parts:
        if prev and part.startswith(prev + "."):
            name = name[: len(name) - len(prev)] + part  # an item of the container just named
        else:
            name = f"{name}.{part}" if name else part
        prev = part
    return name


def times_by_scope(profile: Sequence[OpProfile], scale: float = 1.0) -> tuple[dict[str, float], dict[str, int]]:
    """The profile's time under each torch module path (:func:`profile_scope`), times ``scale``, and the index
    of each path's first profiled op."""
    times: dict[str, float] = {}
    first: dict[str, int] = {}
    for i, p in enumerate(profile):
        scope = profile_scope(p.name)
        if scope:
            first.setdefault(scope, i)
            times[scope] = times.get(scope, 0.0) + p.latency_ms * scale
    return times, first


def samples_from_profile(
    model_name: str,
    ops: Sequence[ParsedOp],
    profile: Iterable[OpProfile],
    table: Any,
    latency: Latency = "core",
    measured_ms: float | None = None,
    *,
    context: Context = "model",
    cache_bytes: tuple[int, int] = CACHE_BYTES,
    composed: Mapping[str, float] | None = None,
) -> list[CalibrationSample]:
    """Pair a model's counted module ops with their in-context times.

    An op is used when its module is called once and the profile holds ops under its
    module path (fused batch norms and activations run inside the convolution's op).
    Build the samples with the ``latency``, ``context`` and ``cache_bytes`` of the predictor
    the calibration will serve.

    Args:
        model_name: Name for the samples.
        ops: ``parse_model(model, shape)`` of the model.
        profile: ``profile_model`` of the same model's ``.mnn`` export.
        table: The latency table (its entries give features and times alone).
        latency: ``"core"`` or ``"wall"``: which time alone the predictor uses.
        measured_ms: The model's measured end-to-end time. The profile's per-op times are scaled
            so that they sum to it: the callbacks themselves cost about a microsecond per op, which
            is 5-10% of a small depthwise net.
        context: The predictor's composition: ``"model"`` (default), an op's ``alone_ms`` is its table time
            moved toward its cold time, its activations' part of its bytes all the way and its weights' part by
            ``cold_share(W)`` (``W``: the model's weight bytes, :func:`model_weight_bytes`), where its entry has
            both times (:func:`mmt_nas.predict.cache.in_model_ms`); ``"weights"``: its weights' part only;
            ``"alone"``: its table time.
        cache_bytes: The device's ``(lo, hi)`` of :func:`mmt_nas.predict.cache.cold_share`.
        composed: Each op's composed time by key, as an uncalibrated predictor gives it (``{o.key: o.latency_ms
            for o in prediction.ops}``), for a table that lacks some of the model's ops (a held-out table whose
            fallback estimates them). Given, it is each sample's ``alone_ms`` (``latency`` and ``context``
            were the predictor's) and ops the table lacks are sampled too.

    Returns:
        The samples, each with the model's :func:`model_context` (whatever ``context`` is).

    Raises:
        OptionError: Bad ``context`` or ``cache_bytes``.
    """
    context = check_choice("context", context, CONTEXTS)
    cache_bytes = check_cache_bytes(cache_bytes)
    profile = list(profile)
    total = sum(p.latency_ms for p in profile)
    scale = measured_ms / total if measured_ms and total > 0 else 1.0
    by_scope, _ = times_by_scope(profile, scale)
    ctx_features = model_context(model_weight_bytes(ops, table), cache_bytes)
    share = ctx_features[1] if context != "alone" else 0.0
    samples = []
    for op, ctx in profiled_module_ops(ops, by_scope):
        entry = table.get(op.key)
        if ctx <= 0 or (entry is None and (composed is None or op.key not in composed)):
            continue
        if composed is not None and op.key in composed:
            alone = float(composed[op.key])
        else:
            alone = (
                entry.time_ms(latency)
                if context == "alone"
                else in_model_ms(
                    entry,
                    entry.time_ms(latency),
                    share,
                    activations=context == "model" and not is_block(op.class_name, op.key),
                )
            )
        if alone > 0:
            feats = op_features(entry if entry is not None else record_from_parsed(op))
            samples.append(CalibrationSample(model_name, op.key, tuple(feats), alone, ctx, ctx_features))
    return samples


class InContextCalibration:
    """Learns how much slower (or faster) an op runs inside a whole model than its composed time.

    The regressor's input is the op's :func:`~mmt_nas.predict.fallback.op_features`, the log of its composed time
    and its model's :func:`model_context`; its target is ``log(in_context_ms / alone_ms)``.

    With ``shrink``, each prediction's log-ratio is multiplied by a trust weight ``w`` in ``[0, 1]``
    (:meth:`trust`): ``d`` is the mean distance of the standardized input to its nearest training samples,
    ``d0`` the 90th percentile of the same distance for the training samples themselves (leave one out), and
    ``w = exp(-((d - d0) / d0) ** 2)`` beyond ``d0`` (1 within it). An op as far from the training data as the
    training samples are from each other is corrected fully; twice as far, by 37%; three times, by 2%.

    Args:
        model: ``"boosting"`` (histogram gradient boosting, default) or ``"forest"``.
        max_ratio: Predicted ratios are clipped to ``[1 / max_ratio, max_ratio]``.
        random_state: Seed.
        shrink: Shrink the correction toward none out of the training data's range.
        cache_bytes: The ``(lo, hi)`` of :func:`mmt_nas.predict.cache.cold_share` the samples were built with (and the
            predictor uses); :meth:`ratios` computes a model's cold share with it.
        step_aside: Check, on the training data alone, whether the correction carries over between groups of
            models: leave each group out (in at most 5 folds), fit on the others, and compare each held-out
            model's profiled time as composed and as corrected with its time in context. The correction is
            then scaled by the one of 1, 0.75, 0.5, 0.25 with the lowest mean error among those that make no
            group's error worse by more than :data:`STEP_ASIDE_TOLERANCE` percentage points, or by 0: it steps
            aside (``damping_``). Needs models of at least 3 groups; with fewer it is 1.
        context: The predictor's ``context`` the samples' composed times were built with
            (:func:`samples_from_profile`); a predictor of another ``context`` refuses the calibration, which would
            count again what the composition now does. Files saved before 2026-12-03 load as ``"weights"``.
    """

    def __init__(
        self,
        model: CalibrationKind = "boosting",
        max_ratio: float = 20.0,
        random_state: int = 0,
        shrink: bool = True,
        cache_bytes: tuple[int, int] = CACHE_BYTES,
        step_aside: bool = True,
        context: Context = "model",
    ) -> None:
        self.model = model
        self.max_ratio = max_ratio
        self.random_state = random_state
        self.shrink = shrink
        self.cache_bytes = cache_bytes
        self.step_aside = step_aside
        self.context = context

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor parameters (scikit-learn convention)."""
        return {
            "model": self.model,
            "max_ratio": self.max_ratio,
            "random_state": self.random_state,
            "shrink": self.shrink,
            "cache_bytes": self.cache_bytes,
            "step_aside": self.step_aside,
            "context": self.context,
        }

    @staticmethod
    def _x(features: Sequence[float], alone_ms: float, context: Sequence[float] = ()) -> list[float]:
        return [*features, math.log(max(alone_ms, 1e-6)), *context]

    @single_threaded
    def fit(
        self, samples: Sequence[CalibrationSample], group: Callable[[str], str] | None = None
    ) -> InContextCalibration:
        """Fit on in-context samples; returns ``self``.

        Samples without a context (written before it existed) fit a calibration without context features,
        which ignores the model's weight bytes.

        Args:
            samples: The samples.
            group: Maps a model name to its group for ``step_aside`` (e.g. its family); default: the name
                before ``@`` (an architecture at several input sizes is one group).

        Raises:
            TableError: Fewer than 10 samples, or samples with and without a context mixed.
            OptionError: Bad parameters, or samples built with other ``cache_bytes``.
        """
        samples = list(samples)
        if len(samples) < 10:
            raise TableError(
                f"calibration needs at least 10 in-context op samples, but got {len(samples)}. "
                "Profile more models (mmt_nas.report.evaluation.evaluate collects them)."
            )
        check_choice("model", self.model, CALIBRATION_KINDS)
        if not isinstance(self.shrink, bool):
            raise OptionError(f"shrink must be True or False, but got shrink={self.shrink!r}.")
        if not isinstance(self.step_aside, bool):
            raise OptionError(f"step_aside must be True or False, but got step_aside={self.step_aside!r}.")
        cache_bytes = check_cache_bytes(self.cache_bytes)
        widths = {len(s.context) for s in samples}
        if widths not in ({0}, {len(CONTEXT_FEATURE_NAMES)}):
            raise TableError(
                "calibration samples must all carry their model's context (samples_from_profile writes it) or "
                f"all lack it (older files), but got context lengths {sorted(widths)}."
            )
        for s in samples:
            if s.context and abs(s.context[1] - cold_share(math.expm1(s.context[0]), cache_bytes)) > 1e-6:
                raise OptionError(
                    f"the samples of {s.model!r} were built with other cache_bytes than this calibration's "
                    f"{cache_bytes}: pass samples_from_profile(..., cache_bytes=...) and "
                    "InContextCalibration(cache_bytes=...) the same (the predictor's)."
                )
        with try_import("fallback", "the in-context calibration") as imported:
            from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor
            from sklearn.neighbors import NearestNeighbors
            from sklearn.preprocessing import StandardScaler
        imported.check()
        est = (
            HistGradientBoostingRegressor(
                max_iter=200, learning_rate=0.05, min_samples_leaf=10, random_state=self.random_state
            )
            if self.model == "boosting"
            else RandomForestRegressor(n_estimators=200, min_samples_leaf=3, random_state=self.random_state, n_jobs=1)
        )
        x = [self._x(s.features, s.alone_ms, s.context) for s in samples]
        est.fit(x, [math.log(s.in_context_ms / s.alone_ms) for s in samples])
        self.estimator_ = est
        self.samples_ = samples
        self.models_ = sorted({s.model for s in samples})
        if 0 in widths:
            self.default_context_: tuple[float, ...] = ()
        else:  # the median training model's weight bytes, for callers that do not give theirs
            per_model = {s.model: s.context[0] for s in samples}
            self.default_context_ = model_context(math.expm1(statistics.median(per_model.values())), cache_bytes)
        if self.shrink:
            self.scaler_ = StandardScaler().fit(x)
            xs = self.scaler_.transform(x)
            k = min(_TRUST_NEIGHBORS, len(samples) - 1)
            self.neighbors_ = NearestNeighbors(n_neighbors=k).fit(xs)
            dist, _ = self.neighbors_.kneighbors(xs, n_neighbors=k + 1)  # the first is the sample itself
            own = sorted(float(d) for d in dist[:, 1:].mean(axis=1))
            d0 = _percentile(own, _TRUST_QUANTILE)
            if d0 <= 1e-9:  # mostly duplicates: the typical distance between distinct samples
                positive = [d for d in own if d > 1e-9]
                d0 = _percentile(positive, _TRUST_QUANTILE) if positive else 1.0
            self.trust_scale_ = d0
        group = group if group is not None else _architecture
        self.groups_ = {m: str(group(m)) for m in self.models_}
        self.damping_ = 1.0
        self.damping_scores_: dict[str, dict[str, float]] = {}
        if self.step_aside and len(set(self.groups_.values())) >= 3:
            self.damping_, self.damping_scores_ = self._choose_damping(samples)
        return self

    @single_threaded
    def _log_ratios(self, samples: Sequence[CalibrationSample]) -> list[float]:
        """The clipped, trust-weighted log-ratios this calibration predicts for ``samples`` (undamped)."""
        x = [self._x(s.features, s.alone_ms, s.context) for s in samples]
        weights = self._trust(x) if self.shrink else [1.0] * len(x)
        lim = math.log(self.max_ratio)
        return [w * min(lim, max(-lim, float(v))) for v, w in zip(self.estimator_.predict(x), weights)]

    def _choose_damping(self, samples: Sequence[CalibrationSample]) -> tuple[float, dict[str, dict[str, float]]]:
        """Leave each group out, fit on the rest, and score the held-out models (see ``step_aside``)."""
        params = {**self.get_params(), "step_aside": False}
        distinct = sorted(set(self.groups_.values()))
        fold_of = {g: i % min(len(distinct), _STEP_ASIDE_FOLDS) for i, g in enumerate(distinct)}
        by_model: dict[str, tuple[list[CalibrationSample], list[float]]] = {}
        for f in sorted(set(fold_of.values())):
            inner = [s for s in samples if fold_of[self.groups_[s.model]] != f]
            held = [s for s in samples if fold_of[self.groups_[s.model]] == f]
            if len(inner) < 10:
                continue
            logs = InContextCalibration(**params).fit(inner)._log_ratios(held)
            for smp, lr in zip(held, logs):
                entry = by_model.setdefault(smp.model, ([], []))
                entry[0].append(smp)
                entry[1].append(lr)
        per_group: dict[str, list[tuple[list[CalibrationSample], list[float]]]] = {}
        for model, entry in by_model.items():
            per_group.setdefault(self.groups_[model], []).append(entry)

        def group_mape(models: list[tuple[list[CalibrationSample], list[float]]], lam: float) -> float:
            errs = []
            for smp, logs in models:
                truth = sum(s.in_context_ms for s in smp)
                got = sum(s.alone_ms * math.exp(lam * lr) for s, lr in zip(smp, logs))
                errs.append(abs(got - truth) / truth if truth > 0 else 0.0)
            return 100 * sum(errs) / len(errs)

        scores: dict[str, dict[str, float]] = {}
        base = {g: group_mape(m, 0.0) for g, m in per_group.items()}
        best, best_mean = 0.0, statistics.mean(base.values()) if base else 0.0
        for lam in _DAMPINGS:
            mapes = {g: group_mape(m, lam) for g, m in per_group.items()}
            worst = max((mapes[g] - base[g] for g in mapes), default=0.0)
            mean = statistics.mean(mapes.values()) if mapes else 0.0
            scores[str(lam)] = {"mean_mape_pct": mean, "worst_group_increase_pts": worst}
            if worst <= STEP_ASIDE_TOLERANCE and mean < best_mean:
                best, best_mean = lam, mean
        scores["0.0"] = {
            "mean_mape_pct": statistics.mean(base.values()) if base else 0.0,
            "worst_group_increase_pts": 0.0,
        }
        return best, scores

    def _check_fitted(self) -> None:
        if not hasattr(self, "estimator_"):
            raise NotFittedError("this InContextCalibration is not fitted yet; call fit(samples) first.")

    def _inputs(
        self, items: Sequence[tuple[TableEntry | OpRecord, float]], model_weight_bytes: float | None
    ) -> list[list[float]]:
        if not self.default_context_:
            ctx: tuple[float, ...] = ()
        elif model_weight_bytes is None:
            ctx = self.default_context_
        else:
            ctx = model_context(model_weight_bytes, check_cache_bytes(self.cache_bytes))
        return [self._x(op_features(e), ms, ctx) for e, ms in items]

    def ratio(self, entry: TableEntry | OpRecord, alone_ms: float, model_weight_bytes: float | None = None) -> float:
        """Predicted in-context / composed ratio of one op; see :meth:`ratios`."""
        return self.ratios([(entry, alone_ms)], model_weight_bytes)[0]

    @single_threaded
    def ratios(
        self, items: Sequence[tuple[TableEntry | OpRecord, float]], model_weight_bytes: float | None = None
    ) -> list[float]:
        """Predicted in-context / composed ratios of a model's ops.

        Args:
            items: ``(op, ms)`` pairs: the op (a table entry or a record) and its time *as composed before
                calibration*, the same way the samples' ``alone_ms`` was: its table time (core or wall) times
                the predictor's context ratio (``context="model"``: moved toward its cold time by the model's
                cold share; ``context="alone"``: its table time).
            model_weight_bytes: The whole model's weight bytes (:func:`model_weight_bytes`: every non-fused op
                once per call), the same for all items. ``None``: the median training model's (the correction
                then ignores the model's size). Ignored by a calibration fitted on samples without a context.

        Returns:
            One ratio per item, in ``[1 / max_ratio, max_ratio]``; with ``shrink``, ``exp(w * log_ratio)``
            with ``w`` from :meth:`trust`.

        Raises:
            NotFittedError: Not fitted.
            OptionError: ``model_weight_bytes`` is not a finite number >= 0.
        """
        self._check_fitted()
        if not items:
            return []
        x = self._inputs(items, model_weight_bytes)
        logs = self.estimator_.predict(x)
        weights = self._trust(x) if self.shrink else [1.0] * len(x)
        lim = math.log(self.max_ratio)
        damp = getattr(self, "damping_", 1.0)
        return [math.exp(damp * w * min(lim, max(-lim, float(v)))) for v, w in zip(logs, weights)]

    def trust(
        self, items: Sequence[tuple[TableEntry | OpRecord, float]], model_weight_bytes: float | None = None
    ) -> list[float]:
        """How much of its correction :meth:`ratios` applies to each item, in ``[0, 1]``.

        1 for an op (in a model) as close to the training samples as they are to each other, falling toward 0
        further out (see the class docstring); always 1 without ``shrink``. Arguments as :meth:`ratios`.

        Raises:
            NotFittedError: Not fitted.
        """
        self._check_fitted()
        if not items:
            return []
        x = self._inputs(items, model_weight_bytes)
        return self._trust(x) if self.shrink else [1.0] * len(x)

    def _trust(self, x: list[list[float]]) -> list[float]:
        dist, _ = self.neighbors_.kneighbors(self.scaler_.transform(x))
        d0 = self.trust_scale_
        return [math.exp(-((max(0.0, float(d) - d0) / d0) ** 2)) for d in dist.mean(axis=1)]

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the parameters and training samples as JSON (loading refits the estimator; never a pickle)."""
        if not hasattr(self, "samples_"):
            raise NotFittedError("this InContextCalibration is not fitted yet; fit it before saving it.")
        params = self.get_params()
        params["cache_bytes"] = list(self.cache_bytes)
        doc = {
            "schema": _SCHEMA,
            "schema_version": _SCHEMA_VERSION,
            "params": params,
            "models": self.models_,
            "groups": self.groups_,
            "samples": [s.to_dict() for s in self.samples_],
        }
        atomic_write_text(path, json.dumps(doc, allow_nan=False) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> InContextCalibration:
        """Read :meth:`save` output and refit (deterministic). Files written before schema version 2 (no
        context, no ``shrink``) load with the defaults of the new parameters.

        Raises:
            TableError: The file is missing or not a calibration.
        """
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise TableError(f"cannot read the calibration {str(path)!r}: {exc}.") from None
        if not isinstance(doc, dict) or doc.get("schema") != _SCHEMA:
            raise TableError(f"{str(path)!r} is not an mmt_nas calibration file.")
        version = doc.get("schema_version", 1)
        if not isinstance(version, int) or version > _SCHEMA_VERSION:
            raise TableError(
                f"{str(path)!r} has calibration schema version {version!r}; this mmt_nas reads up to "
                f"{_SCHEMA_VERSION}. Upgrade mmt_nas."
            )
        params = dict(doc.get("params") or {})
        if "cache_bytes" in params:
            params["cache_bytes"] = check_cache_bytes(params["cache_bytes"])
        samples = [CalibrationSample.from_dict(s) for s in doc.get("samples", [])]
        groups = doc.get("groups")
        if "step_aside" not in params:  # written before step_aside: it loads as it predicted
            params["step_aside"] = False
        if "context" not in params:  # written before the activations' cold part: composed with weights only
            params["context"] = "weights"
        if isinstance(groups, dict):
            return cls(**params).fit(samples, group=lambda m: str(groups.get(m, _architecture(m))))
        return cls(**params).fit(samples)


def _architecture(model_name: str) -> str:
    """A model's architecture: its name before ``@`` (``resnet18@160`` and ``resnet18@224`` are one)."""
    return model_name.split("@", 1)[0]


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of sorted values, linearly interpolated."""
    pos = (len(sorted_values) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def cross_fitted(
    samples: Sequence[CalibrationSample],
    folds: int = 5,
    group: Callable[[str], str] = lambda name: name,
    **params: Any,
) -> dict[str, InContextCalibration]:
    """For every profiled model, a calibration fitted without it: k-fold cross-fitting by group.

    Models are grouped (e.g. one architecture at several resolutions) and groups are dealt
    into ``folds`` folds; each model's calibration is fitted on the other folds' samples only,
    so scoring a model never uses a calibration that saw it.

    Args:
        samples: In-context samples of every model.
        folds: Number of folds (at most the number of groups).
        group: Maps a model name to its group.
        **params: Passed to :class:`InContextCalibration`.

    Returns:
        Model name → its calibration (calibrations are shared within a fold).
    """
    names = sorted({s.model for s in samples})
    groups = sorted({group(n) for n in names})
    if len(groups) < 2:
        raise TableError(f"cross-fitting needs models of at least 2 groups, but got {groups}.")
    folds = max(2, min(folds, len(groups)))
    fold_of = {g: i % folds for i, g in enumerate(groups)}
    out: dict[str, InContextCalibration] = {}
    for f in range(folds):
        train = [s for s in samples if fold_of[group(s.model)] != f]
        cal = InContextCalibration(**params).fit(train, group=group)
        for n in names:
            if fold_of[group(n)] == f:
                out[n] = cal
    return out


def leave_one_group_out(
    samples: Sequence[CalibrationSample],
    group: Callable[[str], str] = lambda name: name,
    **params: Any,
) -> dict[str, InContextCalibration]:
    """For every profiled model, a calibration fitted on the models of every other group (e.g. family).

    One calibration per group, fitted on all the samples of the other groups (scikit-learn's
    ``LeaveOneGroupOut`` over the models): the strictest test of how a calibration carries over
    to a family it never saw.

    Args:
        samples: In-context samples of every model.
        group: Maps a model name to its group.
        **params: Passed to :class:`InContextCalibration`.

    Returns:
        Model name → the calibration of its group (fitted without any model of that group).

    Raises:
        TableError: Fewer than 2 groups, or too few samples outside a group.
    """
    names = sorted({s.model for s in samples})
    groups = [group(n) for n in names]
    if len(set(groups)) < 2:
        raise TableError(f"leave-one-group-out needs models of at least 2 groups, but got {sorted(set(groups))}.")
    with try_import("fallback", "the in-context calibration") as imported:
        from sklearn.model_selection import LeaveOneGroupOut
    imported.check()
    out: dict[str, InContextCalibration] = {}
    for train_idx, test_idx in LeaveOneGroupOut().split([[0]] * len(names), groups=groups):
        seen = {names[i] for i in train_idx}
        cal = InContextCalibration(**params).fit([s for s in samples if s.model in seen], group=group)
        for i in test_idx:
            out[names[i]] = cal
    return out
