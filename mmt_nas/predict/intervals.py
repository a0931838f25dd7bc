"""How sure a prediction is: an interval from the sources of uncertainty, made honest on measured models.

A prediction ``T`` (ms) is a sum of op times. Three things make the device's real latency differ from it:

- each table entry's **measurement spread** (its shuffled rounds disagree: :func:`entry_sigma`);
- the **fallback**'s error on ops the table lacks (:meth:`mmt_nas.predict.fallback.LatencyRegressor.log_std_op`);
- the **composition**'s error on the whole model (cache state, layout conversions, branch joins: what
  no single op shows), which only measured models reveal.

The first two are per op: ``sigma`` (the prediction's *source spread*, relative, in log units) is
``sqrt(sum((share_i * sigma_i) ** 2))`` over its distinct ops. The third is the model's:

- :class:`ConformalIntervals` (fitted on measured models) is split-conformal prediction on the normalised
  log error ``log(measured / T) / s`` with ``s = sqrt(sigma ** 2 + ref ** 2)`` (``ref``: the median
  ``sigma`` of its models), so fallback-heavy predictions get wider intervals. A quantile ``p`` is the
  ``ceil((n + 1) p)``-th smallest of the ``n`` scores (the finite-sample correction that makes coverage at
  least ``p`` when the scored model is exchangeable with the fitted ones). It is asymmetric: a predictor
  that runs low gets an interval that reaches up.
- :class:`PriorIntervals` (no measured models): a log-normal of spread ``sqrt(sigma ** 2 + prior ** 2)``, with
  ``prior`` = :data:`PRIOR_SIGMA`, the spread of the default predictor's log errors on 120 models of ten
  families it never saw (``benchmarks/unseen.py``: 0.139 on the project's VM, rounded up): wide by
  construction, and marked uncalibrated.

Standard library only; JSON round trips, never a pickle. MAPIE's split-conformal regressor computes the
same quantiles (``tests/test_intervals.py`` checks they agree) but fixes the confidence levels when fitted;
a search asks for a quantile per trial, so the order statistics are read here directly.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mmt_nas._files import atomic_write_text
from mmt_nas.exceptions import NotFittedError, OptionError, TableError

if TYPE_CHECKING:
    from mmt_nas.table.table import TableEntry

__all__ = [
    "PRIOR_SIGMA",
    "IntervalModel",
    "PriorIntervals",
    "ConformalIntervals",
    "entry_sigma",
    "check_confidence",
    "check_probability",
    "interval_model_from_dict",
    "check_intervals",
    "ONE_SD",
    "log_sd",
]

#: The model-level log spread an uncalibrated interval assumes (see the module docstring).
PRIOR_SIGMA = 0.15
_SCHEMA = "mmt_nas.conformal_intervals"
_SCHEMA_VERSION = 1
# d2(R): the expected range of R standard normal draws (to read a standard deviation from a range).
_D2 = {2: 1.128, 3: 1.693, 4: 2.059, 5: 2.326, 6: 2.534, 7: 2.704, 8: 2.847, 9: 2.970, 10: 3.078}


def entry_sigma(entry: TableEntry) -> float | None:
    """The relative standard deviation (log units) of a table entry's time, read from its rounds: the rounds'
    range over their median is ``run_to_run``; a single round's spread is ``range / d2(R)`` and the entry
    (the median of all its runs) averages ``R`` rounds. ``None`` for entries timed in one round."""
    spread = entry.run_to_run
    rounds = entry.rounds_ms
    if spread is None or rounds is None:
        return None
    r = len(rounds)
    d2 = _D2.get(r, 2 * math.sqrt(2 * math.log(r)))
    return spread / d2 / math.sqrt(r)


#: The normal CDF at one standard deviation: ``log_quantile(ONE_SD, sigma)`` is one standard deviation up.
ONE_SD = statistics.NormalDist().cdf(1.0)


def log_sd(model: IntervalModel, sigma: float = 0.0) -> float:
    """One standard deviation (log units) of a prediction of source spread ``sigma`` under ``model``: the
    distance from the median to its one-sigma quantile (``sigma=0``: the model-level part alone)."""
    return model.log_quantile(ONE_SD, sigma)


def check_probability(name: str, p: Any) -> float:
    """Return ``p`` as a float if it is strictly between 0 and 1, else raise :class:`OptionError`."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p < 1:
        raise OptionError(f"{name} must be a number strictly between 0 and 1 (e.g. 0.9), but got {name}={p!r}.")
    return float(p)


def check_confidence(confidence: Any) -> float:
    """Return ``confidence`` if it is strictly between 0 and 1, else raise :class:`OptionError`."""
    return check_probability("confidence", confidence)


class IntervalModel(Protocol):
    """What a :class:`~mmt_nas.predict.predictor.Prediction` asks of its interval model."""

    calibrated: bool

    def log_quantile(self, p: float, sigma: float) -> float:
        """``log(q_p / T)``: the ``p``-quantile of the latency over the prediction ``T``, in log units, for a
        prediction of source spread ``sigma``."""

    def describe(self) -> str:
        """One line saying where the interval comes from."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready parameters."""


class PriorIntervals:
    """The interval of a predictor with no measured models: log-normal, ``sqrt(sigma ** 2 + prior ** 2)`` wide.

    Args:
        prior: The model-level log spread (default :data:`PRIOR_SIGMA`).
    """

    calibrated = False

    def __init__(self, prior: float = PRIOR_SIGMA) -> None:
        if isinstance(prior, bool) or not isinstance(prior, (int, float)) or not math.isfinite(prior) or prior < 0:
            raise OptionError(f"prior must be a finite number >= 0 (log units), but got prior={prior!r}.")
        self.prior = float(prior)

    def log_quantile(self, p: float, sigma: float) -> float:
        """See :class:`IntervalModel`."""
        return statistics.NormalDist().inv_cdf(p) * math.hypot(sigma, self.prior)

    def describe(self) -> str:
        """See :class:`IntervalModel`."""
        return (
            f"uncalibrated: a log-normal of spread sqrt(sources^2 + {self.prior:g}^2), no measured models to "
            "calibrate on (mmt-nas report --fit-intervals FILE fits one)"
        )

    def to_dict(self) -> dict[str, Any]:
        """See :class:`IntervalModel`."""
        return {"kind": "prior", "prior": self.prior}

    def __repr__(self) -> str:
        return f"PriorIntervals(prior={self.prior:g})"


class ConformalIntervals:
    """Split-conformal intervals fitted on measured models (see the module docstring).

    Fit on models *other* than those it will be scored on; :func:`mmt_nas.report.evaluation` scores it leave one
    model group out. With ``n`` models, a quantile beyond ``n / (n + 1)`` (or below ``1 / (n + 1)``) is not
    certified by the data; it is then the prior's (:class:`PriorIntervals`) or the most extreme score,
    whichever reaches further, and :meth:`describe` says how many models back each confidence.
    """

    calibrated = True

    def fit(
        self, predicted_ms: Sequence[float], sigmas: Sequence[float], measured_ms: Sequence[float],
        models: Sequence[str] | None = None,
    ) -> ConformalIntervals:  # fmt: skip
        """Fit on measured models.

        Args:
            predicted_ms: Each model's prediction (a :class:`~mmt_nas.predict.predictor.Prediction` or a float).
            sigmas: Each prediction's source spread (``Prediction.sigma``).
            measured_ms: Each model's measured latency.
            models: Their names (kept, so the caller can check none is scored later).

        Raises:
            OptionError: Lengths differ, fewer than 2 models, or a value is not a finite number > 0
                (``sigmas`` >= 0).
        """
        pred, sig, meas = list(predicted_ms), list(sigmas), list(measured_ms)
        names = [str(m) for m in models] if models is not None else [f"#{i}" for i in range(len(pred))]
        if not len(pred) == len(sig) == len(meas) == len(names):
            raise OptionError(
                f"predicted_ms, sigmas, measured_ms (and models) must have one value per model, but got "
                f"{len(pred)}, {len(sig)}, {len(meas)} (and {len(names)})."
            )
        if len(pred) < 2:
            raise OptionError(f"conformal intervals need at least 2 measured models, but got {len(pred)}.")
        for name, values, low in (("predicted_ms", pred, 0.0), ("measured_ms", meas, 0.0), ("sigmas", sig, None)):
            bad = [
                v for v in values
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                or (v <= 0 if low is not None else v < 0)
            ]  # fmt: skip
            if bad:
                rule = "> 0" if low is not None else ">= 0"
                raise OptionError(f"{name} must be finite numbers {rule}, but got {bad[0]!r}.")
        self.ref_sigma_ = statistics.median(float(s) for s in sig)
        # with no source spread known (ref 0) the scale is 1: the scores are plain log errors
        self.scores_ = sorted(math.log(m / p) / self._scale(s) for p, s, m in zip(pred, sig, meas))
        self.models_ = names
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "scores_"):
            raise NotFittedError("this ConformalIntervals is not fitted yet; call fit(...) on measured models first.")

    def _scale(self, sigma: float) -> float:
        return math.hypot(sigma, self.ref_sigma_) if self.ref_sigma_ > 0 else 1.0

    def score_quantile(self, p: float) -> float:
        """The conformal ``p``-quantile of the normalised scores (see the class docstring for the tails)."""
        self._check_fitted()
        n = len(self.scores_)
        if p >= 0.5:
            k = math.ceil((n + 1) * p)
            return self.scores_[k - 1] if k <= n else math.inf
        k = math.floor((n + 1) * p)
        return self.scores_[k - 1] if k >= 1 else -math.inf

    def log_quantile(self, p: float, sigma: float) -> float:
        """See :class:`IntervalModel`."""
        z = self.score_quantile(p)
        scale = self._scale(sigma)
        if math.isinf(z):  # beyond what n models certify: the prior's tail, or the extreme score
            prior = PriorIntervals().log_quantile(p, sigma)
            edge = (self.scores_[-1] if z > 0 else self.scores_[0]) * scale
            return max(prior, edge) if z > 0 else min(prior, edge)
        return z * scale

    def describe(self) -> str:
        """See :class:`IntervalModel`."""
        self._check_fitted()
        n = len(self.scores_)
        return (
            f"conformal on {n} measured models (certified up to {n / (n + 1):.0%} one-sided; beyond, the prior's "
            "tail); valid for models like those"
        )

    def to_dict(self) -> dict[str, Any]:
        """See :class:`IntervalModel`."""
        self._check_fitted()
        return {"kind": "conformal", "ref_sigma": self.ref_sigma_, "scores": self.scores_, "models": self.models_}

    @classmethod
    def from_dict(cls, d: Any) -> ConformalIntervals:
        """Rebuild from :meth:`to_dict` output.

        Raises:
            TableError: ``d`` is not such a dict.
        """
        ok = (
            isinstance(d, dict)
            and d.get("kind") == "conformal"
            and isinstance(d.get("ref_sigma"), (int, float))
            and isinstance(d.get("scores"), list)
            and len(d["scores"]) >= 2
            and all(isinstance(s, (int, float)) and math.isfinite(s) for s in d["scores"])
            and isinstance(d.get("models", []), list)
        )
        if not ok:
            raise TableError(f"not conformal intervals (want kind, ref_sigma, scores, models): {str(d)[:200]!r}.")
        out = cls()
        out.ref_sigma_ = float(d["ref_sigma"])
        out.scores_ = sorted(float(s) for s in d["scores"])
        out.models_ = [str(m) for m in d.get("models", [])]
        return out

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write as JSON (schema ``mmt_nas.conformal_intervals``)."""
        doc = {"schema": _SCHEMA, "schema_version": _SCHEMA_VERSION, **self.to_dict()}
        atomic_write_text(path, json.dumps(doc, allow_nan=False) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ConformalIntervals:
        """Read :meth:`save` output.

        Raises:
            TableError: The file is missing, or not (a readable version of) such a file.
        """
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise TableError(f"cannot read the intervals file {str(path)!r}: {exc}.") from None
        if not isinstance(doc, dict) or doc.get("schema") != _SCHEMA:
            raise TableError(f"{str(path)!r} is not an mmt_nas intervals file (mmt-nas report --fit-intervals).")
        if not isinstance(doc.get("schema_version"), int) or doc["schema_version"] > _SCHEMA_VERSION:
            raise TableError(
                f"{str(path)!r} has intervals schema version {doc.get('schema_version')!r}; this mmt_nas reads up "
                f"to {_SCHEMA_VERSION}. Upgrade mmt_nas."
            )
        return cls.from_dict(doc)

    def __repr__(self) -> str:
        n = len(getattr(self, "scores_", ()))
        return f"ConformalIntervals({n} models)" if n else "ConformalIntervals(not fitted)"


def interval_model_from_dict(d: Any) -> IntervalModel:
    """:class:`PriorIntervals` or :class:`ConformalIntervals` from its ``to_dict()``."""
    if isinstance(d, dict) and d.get("kind") == "prior":
        return PriorIntervals(d.get("prior", PRIOR_SIGMA))
    return ConformalIntervals.from_dict(d)


def check_intervals(
    predicted_ms: Sequence[float],
    sigmas: Sequence[float],
    measured_ms: Sequence[float],
    groups: Sequence[str] | None = None,
    levels: Sequence[float] = (0.8, 0.9, 0.95),
    confidence: float = 0.9,
) -> dict[str, Any]:
    """How honest the intervals are on measured models: each model's interval is fitted on the *other* groups'
    models only (:class:`ConformalIntervals`, leave one group out; a group per model by default), and the
    uncalibrated prior's is scored too.

    Args:
        predicted_ms: The models' predictions.
        sigmas: Their source spreads (``Prediction.sigma``).
        measured_ms: Their measured latencies.
        groups: A group per model (e.g. its family, or its architecture across input sizes); default: each
            model its own group.
        levels: The two-sided confidences to check coverage at.
        confidence: The chance constraint's confidence for the false-feasible rates.

    Returns:
        ``{"n_models", "conformal": {...}, "prior": {...}}``; each holds ``coverage`` (level -> share of the
        measured latencies inside), ``median_width`` (of the ``confidence`` interval, relative to the
        prediction) and ``false_feasible``: at budgets at the 25th, 50th and 75th percentile of the measured
        latencies, among the models the point prediction (``point``) or the chance constraint (``chance``)
        keeps, the share measured over budget, with how many each keeps (``n_point``, ``n_chance``) and how
        many are truly within (``n_truly``). ``conformal`` is ``None`` with fewer than 3 groups.
    """
    n = len(predicted_ms)
    names = list(groups) if groups is not None else [str(i) for i in range(n)]
    if not len(sigmas) == len(measured_ms) == len(names) == n:
        raise OptionError(
            f"one value per model is needed, but got {n}, {len(sigmas)}, {len(measured_ms)}, {len(names)}."
        )
    models: dict[str, IntervalModel] = {}
    distinct = sorted(set(names))
    if len(distinct) >= 3:
        for g in distinct:
            keep = [i for i in range(n) if names[i] != g]
            models[g] = ConformalIntervals().fit(
                [predicted_ms[i] for i in keep], [sigmas[i] for i in keep], [measured_ms[i] for i in keep],
                [names[i] for i in keep],
            )  # fmt: skip
    prior = PriorIntervals()

    def scored(get: Any) -> dict[str, Any]:
        def quantile(i: int, p: float) -> float:
            return float(predicted_ms[i]) * math.exp(get(i).log_quantile(p, float(sigmas[i])))

        cover = {
            str(c): sum(quantile(i, (1 - c) / 2) <= measured_ms[i] <= quantile(i, (1 + c) / 2) for i in range(n)) / n
            for c in levels
        }
        widths = [
            (quantile(i, (1 + confidence) / 2) - quantile(i, (1 - confidence) / 2)) / predicted_ms[i] for i in range(n)
        ]
        lats = sorted(measured_ms)
        ff = {}
        for q in (0.25, 0.5, 0.75):
            b = lats[round(q * (n - 1))]
            point = [i for i in range(n) if predicted_ms[i] <= b]
            chance = [i for i in range(n) if quantile(i, confidence) <= b]

            def rate(kept: list[int], b: float = b) -> float | None:
                return sum(measured_ms[i] > b for i in kept) / len(kept) if kept else None

            ff[str(q)] = {
                "budget_ms": b, "point": rate(point), "n_point": len(point), "chance": rate(chance),
                "n_chance": len(chance), "n_truly": sum(m <= b for m in measured_ms),
            }  # fmt: skip
        return {"coverage": cover, "median_width": statistics.median(widths), "false_feasible": ff}

    return {
        "n_models": n,
        "confidence": confidence,
        "conformal": scored(lambda i: models[names[i]]) if models else None,
        "prior": scored(lambda i: prior),
    }
