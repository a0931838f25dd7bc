"""The latency constraint of an Optuna trial, and penalty forms for samplers without constraints.

:class:`LatencyConstraint` predicts a trial's model, stores the prediction on the trial (the user
attributes :data:`PREDICTED_ATTR` and :data:`BUDGET_ATTR`) and sets Optuna's constraint. For samplers
without constraint support, :func:`hinge_penalty`, :func:`mnasnet_penalty` and :func:`linear_penalty`
fold the latency into the objective.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from mmt_nas.exceptions import SearchError
from mmt_nas.integrations.optuna._deps import import_optuna
from mmt_nas.predict.predictor import LatencyPredictor, Prediction
from mmt_nas.vocab import check_choice

if TYPE_CHECKING:
    from collections.abc import Hashable

    import optuna
    import torch

    from mmt_nas.table.table import LatencyTable

__all__ = [
    "PREDICTED_ATTR",
    "BUDGET_ATTR",
    "BOUND_ATTR",
    "LOWER_ATTR",
    "UPPER_ATTR",
    "CONFIDENCE_ATTR",
    "OVER_BUDGET_ATTR",
    "FEASIBLE_ATTR",
    "Direction",
    "DIRECTIONS",
    "check_direction",
    "LatencyConstraint",
    "hinge_penalty",
    "mnasnet_penalty",
    "linear_penalty",
]

#: The user attribute holding a trial's predicted latency in ms.
PREDICTED_ATTR = "predicted_latency_ms"
#: The user attribute holding the latency budget the trial was checked against, in ms.
BUDGET_ATTR = "latency_budget_ms"
#: The user attribute holding the bound the constraint compared (the upper bound at its confidence), in ms.
BOUND_ATTR = "latency_bound_ms"
#: The user attributes holding the prediction's 90% interval, in ms.
LOWER_ATTR, UPPER_ATTR = "latency_90_lower_ms", "latency_90_upper_ms"
#: The user attribute holding the constraint's confidence (absent for a point constraint).
CONFIDENCE_ATTR = "latency_confidence"
#: The user attribute holding the constraint's value in ms (the bound, or the prediction, minus the budget; <= 0 is
#: feasible). It repeats ``trial.constraints`` where optuna-dashboard shows it (0.21 reads only Optuna 4's format).
OVER_BUDGET_ATTR = "latency_over_budget_ms"
#: The user attribute saying whether the latency constraint holds (a bool).
FEASIBLE_ATTR = "latency_feasible"

#: A study's direction, as the penalties take it.
Direction = Literal["maximize", "minimize"]
DIRECTIONS: tuple[Direction, ...] = ("maximize", "minimize")


def check_direction(direction: Any) -> Direction:
    """Return ``direction`` if it is ``"maximize"`` or ``"minimize"``.

    Raises:
        SearchError: It is neither.
    """
    return check_choice("direction", direction, DIRECTIONS, error=SearchError)


def _positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise SearchError(f"{name} must be a finite number > 0 (milliseconds), but got {name}={value!r}.")
    return float(value)


class LatencyConstraint:
    """Predicts a trial's latency and turns it into an Optuna constraint.

    Args:
        predictor: A :class:`~mmt_nas.predict.predictor.LatencyPredictor`, a
            :class:`~mmt_nas.table.table.LatencyTable`, or the path of a table (or its ops folder).
        budget_ms: The latency budget; a trial is feasible when its prediction is <= this.
        prune_factor: If given (>= 1), a trial predicted above ``prune_factor * budget_ms`` raises
            ``optuna.TrialPruned`` from :meth:`__call__`, before training. Its constraint is set first.
        name: The constraint's key in ``trial.constraints``.
        confidence: If given (strictly between 0 and 1), a chance constraint: a trial is feasible when
            P[latency <= budget] >= ``confidence``, i.e. the constraint value is the prediction's one-sided
            upper bound at that confidence (:meth:`~mmt_nas.predict.predictor.Prediction.upper`) minus the budget.
            ``None`` (default): the point prediction minus the budget.

    Raises:
        SearchError: ``budget_ms`` is not a finite number > 0, ``prune_factor`` is below 1, or ``confidence``
            is not strictly between 0 and 1.
    """

    def __init__(
        self,
        predictor: LatencyPredictor | LatencyTable | str | os.PathLike[str],
        budget_ms: float,
        *,
        prune_factor: float | None = None,
        name: str = "latency_ms",
        confidence: float | None = None,
    ) -> None:
        if confidence is not None and (
            isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 < confidence < 1
        ):
            raise SearchError(
                f"confidence must be a number strictly between 0 and 1 (e.g. 0.9), or None for the point "
                f"prediction, but got confidence={confidence!r}."
            )
        self.confidence = None if confidence is None else float(confidence)
        self.predictor = predictor if isinstance(predictor, LatencyPredictor) else LatencyPredictor(predictor)
        self.budget_ms = _positive("budget_ms", budget_ms)
        if prune_factor is not None and (_positive("prune_factor", prune_factor) < 1):
            raise SearchError(
                f"prune_factor must be >= 1 (a trial within budget is never pruned), but got "
                f"prune_factor={prune_factor!r}. Use None to never prune."
            )
        self.prune_factor = None if prune_factor is None else float(prune_factor)
        self.name = name

    def __call__(
        self,
        trial: optuna.trial.BaseTrial,
        model: torch.nn.Module,
        input_shape: Sequence[int],
        *,
        config: Hashable | None = None,
    ) -> Prediction:
        """Predict ``model`` and :meth:`record` the prediction on ``trial``.

        Args:
            trial: The trial (from ``study.optimize`` or ``study.ask()``).
            model: The trial's model.
            input_shape: Its input shape.
            config: A hashable value that determines the architecture (e.g. ``tuple(sorted(trial.params.items()))``):
                repeated architectures are then predicted from a cache without calling ``repr(model)``
                (see :meth:`~mmt_nas.predict.predictor.LatencyPredictor.predict_cached`).

        Returns:
            The prediction (a float in ms with its breakdown).

        Raises:
            optuna.TrialPruned: The prediction exceeds ``prune_factor * budget_ms``.
            UnknownOpError: The model runs ops the table lacks and the predictor has no fallback.
        """
        prediction = self.predictor.predict_cached(model, input_shape, config=config)
        self.record(trial, prediction)
        return prediction

    def record(self, trial: optuna.trial.BaseTrial, latency_ms: float) -> float:
        """Store an already predicted latency on ``trial`` and set its constraint.

        Use this with predictions made another way, e.g. from op descriptions
        (:meth:`~mmt_nas.integrations.keys.KeyBuilder.predict`).

        Args:
            trial: The trial.
            latency_ms: Its predicted latency.

        Returns:
            The constraint value (<= 0 is feasible): ``latency_ms - budget_ms``, or with ``confidence`` the
            upper bound at that confidence minus ``budget_ms``.

        Raises:
            SearchError: ``latency_ms`` is not a finite number >= 0; or ``confidence`` is set and
                ``latency_ms`` is a plain number, not a :class:`~mmt_nas.predict.predictor.Prediction` (no interval).
            optuna.TrialPruned: ``latency_ms`` exceeds ``prune_factor * budget_ms``.
        """
        latency = float(latency_ms)
        if not math.isfinite(latency) or latency < 0:
            raise SearchError(f"latency_ms must be a finite number >= 0, but got {latency_ms!r}.")
        bound = latency
        if isinstance(latency_ms, Prediction):
            lo, hi = latency_ms.interval(0.9)
            trial.set_user_attr(LOWER_ATTR, lo)
            trial.set_user_attr(UPPER_ATTR, hi)
            if self.confidence is not None:
                bound = latency_ms.upper(self.confidence)
        elif self.confidence is not None:
            raise SearchError(
                f"this constraint has confidence={self.confidence:g}, which needs the prediction's interval, but "
                f"got a plain number ({latency_ms!r}). Pass the Prediction (e.g. KeyBuilder.predict's result)."
            )
        violation = bound - self.budget_ms
        trial.set_user_attr(PREDICTED_ATTR, latency)
        trial.set_user_attr(BUDGET_ATTR, self.budget_ms)
        if self.confidence is not None:
            trial.set_user_attr(BOUND_ATTR, bound)
            trial.set_user_attr(CONFIDENCE_ATTR, self.confidence)
        trial.set_user_attr(OVER_BUDGET_ATTR, violation)
        trial.set_user_attr(FEASIBLE_ATTR, violation <= 0)
        if hasattr(trial, "set_constraint"):  # Optuna >= 5; 4.x reads the attributes via constraints_func
            trial.set_constraint(self.name, violation)
        if self.prune_factor is not None and latency > self.prune_factor * self.budget_ms:
            raise import_optuna().TrialPruned(
                f"predicted latency {latency:.4g} ms is over {self.prune_factor:g} x the budget of "
                f"{self.budget_ms:g} ms; pruned before training."
            )
        return violation

    def constraints_func(self, trial: optuna.trial.FrozenTrial) -> tuple[float]:
        """The constraint for a sampler's ``constraints_func`` (Optuna 4.x; deprecated in 5).

        Computed from the trial's user attributes; a finished trial without a prediction (its
        objective never called this constraint) counts as infeasible (``inf``).

        Args:
            trial: A finished trial.

        Returns:
            ``(latency_ms - budget_ms,)`` (with ``confidence``, the stored upper bound minus the budget), or
            ``(inf,)`` without a prediction.
        """
        latency = trial.user_attrs.get(BOUND_ATTR if self.confidence is not None else PREDICTED_ATTR)
        if latency is None:
            return (math.inf,)
        return (float(latency) - float(trial.user_attrs.get(BUDGET_ATTR, self.budget_ms)),)


# -- penalties for samplers without constraints ----------------------------------------------


def hinge_penalty(
    objective: float, latency_ms: float, budget_ms: float, *, lam: float = 1.0, direction: Direction = "maximize"
) -> float:
    """Objective with a hinge penalty on the relative excess over the budget.

    ``objective - lam * max(0, latency/budget - 1)`` when maximizing, ``+`` when minimizing:
    no cost within budget, then a cost linear in the excess: the l1 penalty function of
    constrained optimization (Nocedal & Wright, *Numerical Optimization*, 2nd ed., §17.2)
    applied to the constraint ``latency/budget - 1 <= 0``. :func:`mmt_nas.integrations.torch.hinge_loss`
    is its differentiable counterpart.

    Args:
        objective: The objective value (accuracy, loss, ...).
        latency_ms: Predicted latency.
        budget_ms: Latency budget ``T``.
        lam: Penalty weight ``λ`` (>= 0), in objective units per 100% of excess.
        direction: The study's direction, ``"maximize"`` or ``"minimize"``.

    Returns:
        The penalized objective.

    Raises:
        SearchError: An argument is out of range, or ``direction`` is neither direction.
    """
    sign = -1.0 if check_direction(direction) == "maximize" else 1.0
    return float(objective) + sign * _weight("lam", lam) * max(0.0, _ratio(latency_ms, budget_ms) - 1.0)


def mnasnet_penalty(
    objective: float,
    latency_ms: float,
    budget_ms: float,
    *,
    alpha: float = -0.07,
    beta: float | None = None,
    direction: Direction = "maximize",
) -> float:
    """MnasNet's multiplicative reward ``objective * (latency/budget)^w``.

    From Tan et al., *MnasNet: Platform-Aware Neural Architecture Search for Mobile*
    (CVPR 2019), eq. 2: ``ACC(m) * [LAT(m)/T]^w`` with ``w = alpha`` if ``LAT <= T`` else
    ``beta``. The paper's soft constraint is ``alpha = beta = -0.07`` (the default: doubling
    the latency costs about 5% of the reward); its hard constraint is ``alpha = 0, beta = -1``.

    For a minimized objective (a loss or an error rate, >= 0) the exponent's sign is flipped,
    ``objective * (latency/budget)^(-w)``, so that slower models still score worse.

    Args:
        objective: The objective value; must be >= 0 (the form is multiplicative).
        latency_ms: Predicted latency.
        budget_ms: Latency budget ``T``.
        alpha: Exponent within budget (<= 0).
        beta: Exponent over budget (<= 0); defaults to ``alpha``.
        direction: The study's direction, ``"maximize"`` or ``"minimize"``.

    Returns:
        The penalized objective.

    Raises:
        SearchError: An argument is out of range, or ``direction`` is neither direction.
    """
    maximize = check_direction(direction) == "maximize"
    beta = alpha if beta is None else beta
    for name, w in (("alpha", alpha), ("beta", beta)):
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w > 0:
            raise SearchError(f"{name} must be a finite number <= 0 (MnasNet uses -0.07), but got {name}={w!r}.")
    if not math.isfinite(objective) or objective < 0:
        raise SearchError(
            f"mnasnet_penalty multiplies the objective, so it must be >= 0, but got objective={objective!r}. "
            "Use hinge_penalty or linear_penalty for signed objectives."
        )
    ratio = _ratio(latency_ms, budget_ms)
    w = alpha if ratio <= 1.0 else beta
    return float(objective) * ratio ** (w if maximize else -w)


def linear_penalty(
    objective: float, latency_ms: float, budget_ms: float, *, lam: float = 0.1, direction: Direction = "maximize"
) -> float:
    """Objective with an additive latency term, ``objective - lam * latency/budget``.

    The weighted-sum scalarization of accuracy and latency (``+`` when minimizing), the
    discrete counterpart of ProxylessNAS's ``add#linear`` loss (Cai et al., *ProxylessNAS:
    Direct Neural Architecture Search on Target Task and Hardware*, ICLR 2019, §3.3.1).
    Unlike the hinge it rewards being faster even within budget.

    Args:
        objective: The objective value.
        latency_ms: Predicted latency.
        budget_ms: The reference latency ``T`` that normalizes it.
        lam: Weight ``λ`` (>= 0).
        direction: The study's direction, ``"maximize"`` or ``"minimize"``.

    Returns:
        The penalized objective.

    Raises:
        SearchError: An argument is out of range, or ``direction`` is neither direction.
    """
    sign = -1.0 if check_direction(direction) == "maximize" else 1.0
    return float(objective) + sign * _weight("lam", lam) * _ratio(latency_ms, budget_ms)


def _ratio(latency_ms: float, budget_ms: float) -> float:
    budget = _positive("budget_ms", budget_ms)
    if isinstance(latency_ms, bool) or not math.isfinite(latency_ms) or latency_ms < 0:
        raise SearchError(f"latency_ms must be a finite number >= 0, but got latency_ms={latency_ms!r}.")
    return float(latency_ms) / budget


def _weight(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise SearchError(f"{name} must be a finite number >= 0, but got {name}={value!r}.")
    return float(value)
