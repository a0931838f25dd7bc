"""In-context calibration: from an op's time alone to its time inside a whole model.

An op timed alone runs with warm caches: its weights and input stay in cache
between runs. Inside a whole model the weights of every layer compete for the
cache, and large layers run several times slower (measured here: a 256-channel
3x3 convolution at 8x8 took 0.15 ms alone and 0.6 ms inside a ResNet-18). MNN's
per-op callback gives every op's time inside a whole model, and the op names it
reports carry the torch module path, so each profiled model yields one training
sample per op: (the op's features and its time alone) → (its time in context).

:class:`InContextCalibration` learns the ratio from such samples (a scikit-learn
regressor on :func:`mmt_nas.fallback.op_features` plus the op's time alone) and the
predictor multiplies each op's table time by it. Fit it on models you measured;
never score it on the models it was fitted on (the accuracy benchmark uses
cross-validation by model).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mmt_nas._files import atomic_write_text
from mmt_nas._imports import try_import
from mmt_nas.exceptions import NotFittedError, TableError
from mmt_nas.fallback import op_features
from mmt_nas.records import OpRecord
from mmt_nas.table import Latency, TableEntry
from mmt_nas.trace import ParsedOp
from mmt_nas.vocab import check_choice

if TYPE_CHECKING:
    from mmt_nas.meter import OpProfile

#: The regression models :class:`InContextCalibration` can fit.
CalibrationKind = Literal["boosting", "forest"]
CALIBRATION_KINDS: tuple[CalibrationKind, ...] = ("boosting", "forest")

__all__ = [
    "CalibrationKind",
    "CALIBRATION_KINDS",
    "CalibrationSample",
    "InContextCalibration",
    "profile_scope",
    "samples_from_profile",
    "cross_fitted",
]

_SCHEMA = "mmt_nas/calibration"


@dataclass(frozen=True)
class CalibrationSample:
    """One op seen inside one whole model.

    Attributes:
        model: Name of the profiled model (for cross-validation by model).
        key: The op's key.
        features: :func:`mmt_nas.fallback.op_features` of the op.
        alone_ms: Its time alone, as the predictor counts it (core time).
        in_context_ms: Its time inside the model (MNN's per-op profile, fused followers included).
    """

    model: str
    key: str
    features: tuple[float, ...]
    alone_ms: float
    in_context_ms: float

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "model": self.model,
            "key": self.key,
            "features": list(self.features),
            "alone_ms": self.alone_ms,
            "in_context_ms": self.in_context_ms,
        }


def profile_scope(op_name: str) -> str | None:
    """The torch module path of an MNN op exported by mmt_nas, e.g. ``layers.0.conv1``.

    ONNX node names are scoped like ``/layers/layers.0/conv1/Conv_output_0``; each scope
    part is either a child's own name or its qualified name. Ops without a scope (the
    model's last op is often renamed ``output...``) give ``None``.
    """
    if not op_name.startswith("/"):
        return None
    parts = op_name.strip("/").split("/")[:-1]
    name = ""
    for part in parts:
        name = part if (not name or part.startswith(name + ".")) else f"{name}.{part}"
    return name


def samples_from_profile(
    model_name: str,
    ops: Sequence[ParsedOp],
    profile: Iterable[OpProfile],
    table: Any,
    latency: Latency = "core",
    measured_ms: float | None = None,
) -> list[CalibrationSample]:
    """Pair a model's counted module ops with their in-context times.

    An op is used when its module is called once and the profile holds ops under its
    module path (fused batch norms and activations run inside the convolution's op).

    Args:
        model_name: Name for the samples.
        ops: ``parse_model(model, shape)`` of the model.
        profile: ``profile_model`` of the same model's ``.mnn`` export.
        table: The latency table (its entries give features and times alone).
        latency: ``"core"`` or ``"wall"``: which time alone the predictor uses.
        measured_ms: The model's measured end-to-end time. The profile's per-op times are scaled
            so that they sum to it: the callbacks themselves cost about a microsecond per op, which
            is 5-10% of a small depthwise net.
    """
    profile = list(profile)
    total = sum(p.latency_ms for p in profile)
    scale = measured_ms / total if measured_ms and total > 0 else 1.0
    by_scope: dict[str, float] = {}
    for p in profile:
        scope = profile_scope(p.name)
        if scope:
            by_scope[scope] = by_scope.get(scope, 0.0) + p.latency_ms * scale
    counted = [op for op in ops if op.fused_into is None and op.function is None]
    calls: dict[str, int] = {}
    for op in counted:
        calls[op.name] = calls.get(op.name, 0) + 1
    samples = []
    for op in counted:
        entry = table.get(op.key)
        ctx = by_scope.get(op.name)
        if entry is None or ctx is None or calls[op.name] != 1 or ctx <= 0:
            continue
        alone = entry.time_ms(latency)
        if alone > 0:
            samples.append(CalibrationSample(model_name, op.key, tuple(op_features(entry)), alone, ctx))
    return samples


class InContextCalibration:
    """Learns how much slower (or faster) an op runs inside a whole model than alone.

    Args:
        model: ``"boosting"`` (histogram gradient boosting, default) or ``"forest"``.
        max_ratio: Predicted ratios are clipped to ``[1 / max_ratio, max_ratio]``.
        random_state: Seed.
    """

    def __init__(self, model: CalibrationKind = "boosting", max_ratio: float = 20.0, random_state: int = 0) -> None:
        self.model = model
        self.max_ratio = max_ratio
        self.random_state = random_state

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor parameters (scikit-learn convention)."""
        return {"model": self.model, "max_ratio": self.max_ratio, "random_state": self.random_state}

    @staticmethod
    def _x(features: Sequence[float], alone_ms: float) -> list[float]:
        return [*features, math.log(max(alone_ms, 1e-6))]

    def fit(self, samples: Sequence[CalibrationSample]) -> InContextCalibration:
        """Fit on in-context samples; returns ``self``.

        Raises:
            TableError: Fewer than 10 samples.
            OptionError: Bad parameters.
        """
        samples = list(samples)
        if len(samples) < 10:
            raise TableError(
                f"calibration needs at least 10 in-context op samples, but got {len(samples)}. "
                "Profile more models (mmt_nas.report.evaluate collects them)."
            )
        check_choice("model", self.model, CALIBRATION_KINDS)
        with try_import("fallback", "the in-context calibration") as imported:
            from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor
        imported.check()
        est = (
            HistGradientBoostingRegressor(
                max_iter=200, learning_rate=0.05, min_samples_leaf=10, random_state=self.random_state
            )
            if self.model == "boosting"
            else RandomForestRegressor(n_estimators=200, min_samples_leaf=3, random_state=self.random_state, n_jobs=1)
        )
        est.fit(
            [self._x(s.features, s.alone_ms) for s in samples],
            [math.log(s.in_context_ms / s.alone_ms) for s in samples],
        )
        self.estimator_ = est
        self.samples_ = samples
        self.models_ = sorted({s.model for s in samples})
        return self

    def ratio(self, entry: TableEntry | OpRecord, alone_ms: float) -> float:
        """Predicted in-context / alone ratio for an op (a table entry or a record) whose time alone is
        ``alone_ms``."""
        return self.ratios([(entry, alone_ms)])[0]

    def ratios(self, items: Sequence[tuple[TableEntry | OpRecord, float]]) -> list[float]:
        """Batched :meth:`ratio`."""
        if not hasattr(self, "estimator_"):
            raise NotFittedError("this InContextCalibration is not fitted yet; call fit(samples) first.")
        if not items:
            return []
        logs = self.estimator_.predict([self._x(op_features(e), ms) for e, ms in items])
        lim = math.log(self.max_ratio)
        return [math.exp(min(lim, max(-lim, float(v)))) for v in logs]

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the parameters and training samples as JSON (loading refits the estimator; never a pickle)."""
        if not hasattr(self, "samples_"):
            raise NotFittedError("this InContextCalibration is not fitted yet; fit it before saving it.")
        doc = {
            "schema": _SCHEMA,
            "schema_version": 1,
            "params": self.get_params(),
            "models": self.models_,
            "samples": [s.to_dict() for s in self.samples_],
        }
        atomic_write_text(path, json.dumps(doc, allow_nan=False) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> InContextCalibration:
        """Read :meth:`save` output and refit (deterministic).

        Raises:
            TableError: The file is missing or not a calibration.
        """
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise TableError(f"cannot read the calibration {str(path)!r}: {exc}.") from None
        if not isinstance(doc, dict) or doc.get("schema") != _SCHEMA:
            raise TableError(f"{str(path)!r} is not an mmt_nas calibration file.")
        samples = [
            CalibrationSample(s["model"], s["key"], tuple(s["features"]), s["alone_ms"], s["in_context_ms"])
            for s in doc.get("samples", [])
        ]
        return cls(**doc.get("params", {})).fit(samples)


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
        cal = InContextCalibration(**params).fit(train)
        for n in names:
            if fold_of[group(n)] == f:
                out[n] = cal
    return out
