"""Optuna integration: a latency constraint, penalty forms, and a search log.

Inside an objective, :class:`LatencyConstraint` predicts the trial's model, stores the
prediction on the trial and sets Optuna's constraint, before any training::

    constraint = LatencyConstraint("ops/", budget_ms=5.0, prune_factor=1.5)

    def objective(trial):
        model = build(trial)                                    # the trial's architecture
        latency = constraint(trial, model, [1, 3, 224, 224])    # may raise optuna.TrialPruned
        return train_and_evaluate(model), latency

    study = optuna.create_study(directions=["maximize", "minimize"])
    study.optimize(objective, n_trials=50, callbacks=[SearchLog("search.json")])
    study.best_trials                                           # the feasible Pareto front

On Optuna >= 5 the constraint is ``trial.set_constraint("latency_ms", predicted - budget)``,
read by every constrained sampler (TPE, NSGA-II, GP, ...) with no further setup; a value
<= 0 is feasible. On Optuna 4.x, give the sampler ``constraints_func=constraint.constraints_func``.
Constraints are soft: an infeasible trial still completes and teaches the sampler; with
``prune_factor`` a trial predicted far over budget is pruned before training instead (it
keeps its constraint, so the sampler still learns from it).

For samplers without constraint support, fold the latency into the objective with
:func:`hinge_penalty`, :func:`mnasnet_penalty` or :func:`linear_penalty`.

Distributed studies: every worker process creates its own :class:`LatencyConstraint` from
the table's path; the table is loaded once per process and per file version
(:func:`mmt_nas.predictor.load_table_cached`). :meth:`SearchLog.from_study` collects every
worker's trials from the shared storage.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mmt_nas.integrations import SearchError, require
from mmt_nas.predictor import LatencyPredictor, Prediction
from mmt_nas.table import LatencyTable, atomic_write_text

if TYPE_CHECKING:
    from collections.abc import Hashable

    import optuna
    import torch

__all__ = [
    "PREDICTED_ATTR",
    "BUDGET_ATTR",
    "LatencyConstraint",
    "hinge_penalty",
    "mnasnet_penalty",
    "linear_penalty",
    "TrialRecord",
    "SearchLog",
]

#: The user attribute holding a trial's predicted latency in ms.
PREDICTED_ATTR = "predicted_latency_ms"
#: The user attribute holding the latency budget the trial was checked against, in ms.
BUDGET_ATTR = "latency_budget_ms"
_DIRECTIONS = ("maximize", "minimize")
_LOG_SCHEMA = "mmt_nas/search-log"


def _optuna() -> Any:
    return require("optuna", "optuna")


def _positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise SearchError(f"{name} must be a finite number > 0 (milliseconds), but got {name}={value!r}.")
    return float(value)


class LatencyConstraint:
    """Predicts a trial's latency and turns it into an Optuna constraint.

    Args:
        predictor: A :class:`~mmt_nas.predictor.LatencyPredictor`, a
            :class:`~mmt_nas.table.LatencyTable`, or the path of a table (or its ops folder).
        budget_ms: The latency budget; a trial is feasible when its prediction is <= this.
        prune_factor: If given (>= 1), a trial predicted above ``prune_factor * budget_ms`` raises
            ``optuna.TrialPruned`` from :meth:`__call__`, before training. Its constraint is set first.
        name: The constraint's key in ``trial.constraints``.
    """

    def __init__(
        self,
        predictor: LatencyPredictor | LatencyTable | str | os.PathLike[str],
        budget_ms: float,
        *,
        prune_factor: float | None = None,
        name: str = "latency_ms",
    ) -> None:
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
                (see :meth:`~mmt_nas.predictor.LatencyPredictor.predict_cached`).

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

        Returns:
            The constraint value, ``latency_ms - budget_ms`` (<= 0 is feasible).

        Raises:
            optuna.TrialPruned: ``latency_ms`` exceeds ``prune_factor * budget_ms``.
        """
        latency = float(latency_ms)
        if not math.isfinite(latency) or latency < 0:
            raise SearchError(f"latency_ms must be a finite number >= 0, but got {latency_ms!r}.")
        violation = latency - self.budget_ms
        trial.set_user_attr(PREDICTED_ATTR, latency)
        trial.set_user_attr(BUDGET_ATTR, self.budget_ms)
        if hasattr(trial, "set_constraint"):  # Optuna >= 5; 4.x reads the attributes via constraints_func
            trial.set_constraint(self.name, violation)
        if self.prune_factor is not None and latency > self.prune_factor * self.budget_ms:
            raise _optuna().TrialPruned(
                f"predicted latency {latency:.4g} ms is over {self.prune_factor:g} x the budget of "
                f"{self.budget_ms:g} ms; pruned before training."
            )
        return violation

    def constraints_func(self, trial: optuna.trial.FrozenTrial) -> tuple[float]:
        """The constraint for a sampler's ``constraints_func`` (Optuna 4.x; deprecated in 5).

        Computed from the trial's user attributes; a finished trial without a prediction (its
        objective never called this constraint) counts as infeasible (``inf``).
        """
        latency = trial.user_attrs.get(PREDICTED_ATTR)
        if latency is None:
            return (math.inf,)
        return (float(latency) - float(trial.user_attrs.get(BUDGET_ATTR, self.budget_ms)),)


# -- penalties for samplers without constraints ----------------------------------------------


def _direction(direction: str) -> bool:
    """True for maximize."""
    if direction not in _DIRECTIONS:
        raise SearchError(f"direction must be 'maximize' or 'minimize', but got direction={direction!r}.")
    return direction == "maximize"


def hinge_penalty(
    objective: float, latency_ms: float, budget_ms: float, *, lam: float = 1.0, direction: str = "maximize"
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
    """
    sign = -1.0 if _direction(direction) else 1.0
    return float(objective) + sign * _weight("lam", lam) * max(0.0, _ratio(latency_ms, budget_ms) - 1.0)


def mnasnet_penalty(
    objective: float,
    latency_ms: float,
    budget_ms: float,
    *,
    alpha: float = -0.07,
    beta: float | None = None,
    direction: str = "maximize",
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
    """
    maximize = _direction(direction)
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
    objective: float, latency_ms: float, budget_ms: float, *, lam: float = 0.1, direction: str = "maximize"
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
    """
    sign = -1.0 if _direction(direction) else 1.0
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


# -- the search log ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialRecord:
    """What a search learned about one trial.

    Attributes:
        number: The trial's number.
        state: ``"COMPLETE"``, ``"PRUNED"``, ``"FAIL"``, ...
        params: Its sampled parameters.
        values: Its objective values (``None`` unless complete).
        predicted_latency_ms: The prediction stored by :class:`LatencyConstraint` (``None`` if none).
        budget_ms: The budget it was checked against (``None`` if none).
        constraints: Its constraint values (<= 0 is feasible).
    """

    number: int
    state: str
    params: Mapping[str, Any] = field(default_factory=dict)
    values: tuple[float, ...] | None = None
    predicted_latency_ms: float | None = None
    budget_ms: float | None = None
    constraints: Mapping[str, float] = field(default_factory=dict)

    @property
    def feasible(self) -> bool | None:
        """Whether every constraint is <= 0 (``None`` when the trial has no constraint)."""
        return all(v <= 0 for v in self.constraints.values()) if self.constraints else None

    @classmethod
    def from_trial(cls, trial: optuna.trial.FrozenTrial) -> TrialRecord:
        """Read a finished trial."""
        latency = trial.user_attrs.get(PREDICTED_ATTR)
        budget = trial.user_attrs.get(BUDGET_ATTR)
        constraints = dict(getattr(trial, "constraints", None) or {})
        if not constraints and latency is not None and budget is not None:  # Optuna 4.x
            constraints = {"latency_ms": float(latency) - float(budget)}
        return cls(
            number=trial.number,
            state=trial.state.name,
            params=dict(trial.params),
            values=None if trial.values is None else tuple(float(v) for v in trial.values),
            predicted_latency_ms=None if latency is None else float(latency),
            budget_ms=None if budget is None else float(budget),
            constraints=constraints,
        )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "number": self.number,
            "state": self.state,
            "params": dict(self.params),
            "values": None if self.values is None else list(self.values),
            "predicted_latency_ms": self.predicted_latency_ms,
            "budget_ms": self.budget_ms,
            "constraints": dict(self.constraints),
            "feasible": self.feasible,
        }


def _dominates(a: Sequence[float], b: Sequence[float], maximize: Sequence[bool]) -> bool:
    better = [(x >= y) if up else (x <= y) for x, y, up in zip(a, b, maximize)]
    return all(better) and any(x != y for x, y in zip(a, b))


class SearchLog:
    """A callback for ``study.optimize(callbacks=[...])`` recording each finished trial.

    It keeps every trial's number, parameters, values, predicted latency and feasibility,
    writes them as JSON (atomically, after every trial when ``path`` is given), finds the
    feasible Pareto front, and writes a model list for ``mmt-nas report`` so the front's
    models can be measured and the predictions checked.

    Args:
        path: If given, the JSON file rewritten after every trial.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = None if path is None else Path(path)
        self.records: list[TrialRecord] = []
        self.directions: list[str] = []

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Record ``trial`` (Optuna calls this after each trial of this process)."""
        self.directions = [d.name.lower() for d in study.directions]
        self.records.append(TrialRecord.from_trial(trial))
        if self.path is not None:
            self.write(self.path)

    @classmethod
    def from_study(cls, study: optuna.Study) -> SearchLog:
        """A log of every finished trial in the study's storage, whichever process ran it."""
        log = cls()
        log.directions = [d.name.lower() for d in study.directions]
        log.records = [TrialRecord.from_trial(t) for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
        return log

    def to_dict(self) -> dict[str, Any]:
        """The JSON document: schema, directions, and one entry per trial."""
        return {
            "schema": _LOG_SCHEMA,
            "schema_version": 1,
            "directions": list(self.directions),
            "trials": [r.to_dict() for r in self.records],
        }

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the log as JSON, atomically; returns the path."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1, allow_nan=False, default=str) + "\n")
        return Path(path)

    def pareto_front(self) -> list[TrialRecord]:
        """Complete, feasible (or unconstrained) trials that no other such trial dominates, by number."""
        maximize = [d == "maximize" for d in self.directions]
        pool = [r for r in self.records if r.state == "COMPLETE" and r.values is not None and r.feasible is not False]
        return [
            r for r in pool if not any(_dominates(o.values, r.values, maximize) for o in pool if o is not r)  # type: ignore[arg-type]
        ]

    def write_models(
        self,
        path: str | os.PathLike[str],
        to_model: Callable[[Mapping[str, Any]], tuple[str, Mapping[str, Any]]],
        input_shape: Sequence[int],
        *,
        which: str = "pareto",
    ) -> Path:
        """Write a model list for ``mmt-nas report --models`` (the trials' architectures).

        Args:
            path: The YAML file to write.
            to_model: Maps a trial's parameters to ``("module:callable" or "file.py:callable", kwargs)``;
                the callable builds the model from the kwargs (JSON-like values).
            input_shape: The models' input shape.
            which: ``"pareto"`` (the feasible Pareto front), ``"feasible"`` or ``"all"`` complete trials.

        Returns:
            The path written. Each entry also carries the trial's ``predicted_latency_ms``.
        """
        if which == "pareto":
            chosen = self.pareto_front()
        elif which in ("feasible", "all"):
            chosen = [r for r in self.records if r.state == "COMPLETE" and (which == "all" or r.feasible is not False)]
        else:
            raise SearchError(f"which must be 'pareto', 'feasible' or 'all', but got which={which!r}.")
        if not chosen:
            raise SearchError(f"no trial to write: the log has no {which} complete trial ({len(self.records)} trials).")
        models = []
        for r in chosen:
            target, kwargs = to_model(r.params)
            module, sep, attr = target.rpartition(":")
            if not sep or not module or not attr:
                raise SearchError(
                    f"to_model must return ('module:callable' or 'file.py:callable', kwargs), but returned "
                    f"target {target!r} for trial {r.number}."
                )
            if module.endswith(".py"):
                target = f"{Path(module).resolve()}:{attr}"  # the report reads relative paths from the YAML's folder
            entry: dict[str, Any] = {
                "name": f"trial-{r.number}",
                "model": target,
                "input_shape": [int(d) for d in input_shape],
                "kwargs": json.loads(json.dumps(dict(kwargs))),
            }
            if r.predicted_latency_ms is not None:
                entry["predicted_latency_ms"] = r.predicted_latency_ms
            models.append(entry)
        atomic_write_text(path, yaml.safe_dump({"models": models}, sort_keys=False, width=120))
        return Path(path)
