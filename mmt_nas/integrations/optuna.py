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

Distributed studies: :func:`create_study` opens (or creates) one named study in a database
that many worker processes share, on one machine or many::

    study = create_study("postgresql://user@dbhost/search", study_name="mbv2",
                         directions=["maximize", "minimize"])
    study.optimize(objective, n_trials=20)

Its storage has a heartbeat: a trial whose worker was killed is marked ``FAIL`` by the next
worker that asks for a trial, and queued again with the same parameters
(``RetryFailedTrialCallback``). Every worker process creates its own :class:`LatencyConstraint`
from the table's path; the table is loaded once per process and per file version
(:func:`mmt_nas.predictor.load_table_cached`). :meth:`SearchLog.from_study` collects every
worker's trials from the shared storage.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import math
import os
import re
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mmt_nas.integrations import MissingExtraError, SearchError, require
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
    "make_storage",
    "create_study",
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


# -- storages shared by many workers -----------------------------------------------------------

#: The database dialects :func:`make_storage` accepts in a URL, with their default driver module.
_DIALECTS = {"sqlite": "sqlite3", "postgresql": "psycopg2", "mysql": "MySQLdb"}
#: Driver modules, and how to install each (an mmt_nas extra, or a pip package).
_DRIVERS = {
    "psycopg2": "pip install -c constraints.txt 'mmt-nas[postgres]' (psycopg2-binary)",
    "psycopg": "pip install 'psycopg[binary]'",
    "pg8000": "pip install pg8000",
    "MySQLdb": "pip install mysqlclient",
    "pymysql": "pip install pymysql",
}
_DRIVER_MODULES = {"mysqldb": "MySQLdb", "mysqlconnector": "mysql.connector"}
#: Attempts to open a database whose tables other workers are creating at the same moment.
_OPEN_ATTEMPTS = 5


def _redact(url: str) -> str:
    """``url`` with its password replaced by ``***`` (safe to print)."""
    return re.sub(r"^([^:/]+://[^:/@]+:)[^/]*@", r"\1***@", url)  # up to the last @ before the host


def _seconds(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SearchError(
            f"{name} must be a whole number of seconds >= 1 (or None), but got {name}={value!r}. "
            "Optuna's heartbeat counts in whole seconds."
        )
    return value


def make_storage(
    storage: str | optuna.storages.BaseStorage | None,
    *,
    heartbeat_interval: int | None = 60,
    grace_period: int | None = None,
    retries: int | None = 3,
    engine_kwargs: Mapping[str, Any] | None = None,
) -> optuna.storages.BaseStorage | None:
    """The storage of a study shared by many workers, with crash recovery.

    A database URL becomes an ``optuna.storages.RDBStorage`` whose running trials send a
    heartbeat every ``heartbeat_interval`` seconds. When a worker dies mid-trial (killed,
    preempted, out of memory), its trial's heartbeat stops; the next worker that asks for a
    trial after ``grace_period`` seconds marks it ``FAIL`` and, up to ``retries`` times, queues a
    copy with the same parameters (``RetryFailedTrialCallback``; the copy's
    ``system_attrs["failed_trial"]`` is the number of the trial it retries).

    Args:
        storage: ``None`` for Optuna's in-memory storage (one process; returned as ``None``),
            a database URL (``sqlite:///search.db``, ``postgresql://user@host:5432/db``,
            ``mysql://...``; a driver may be named, ``postgresql+psycopg2://``), or an Optuna
            storage object, returned unchanged.
        heartbeat_interval: Seconds between a running trial's heartbeats; ``None`` turns the
            heartbeat off (then a killed worker's trial stays ``RUNNING`` for ever).
        grace_period: Seconds without a heartbeat after which a running trial counts as dead;
            must be more than ``heartbeat_interval``. ``None``: twice ``heartbeat_interval``.
        retries: How many times a dead trial is queued again (``0``: only marked ``FAIL``;
            ``None``: no limit). Used only with a heartbeat.
        engine_kwargs: Passed to SQLAlchemy's ``create_engine``. SQLite gets a 60 s lock
            timeout unless given, so several local workers can share one file.

    Returns:
        The storage to give ``optuna.create_study`` / ``optuna.load_study``.

    Raises:
        SearchError: The URL is not one of the accepted forms, a value is out of range, or the
            database cannot be opened (the message says why and what to do).
        MissingExtraError: The URL's database driver is not installed (the message names the
            package or mmt_nas extra that installs it).
    """
    optuna_ = _optuna()
    if storage is None or isinstance(storage, optuna_.storages.BaseStorage):
        return storage
    if not isinstance(storage, str):
        raise SearchError(
            f"storage must be None (in memory), a database URL such as 'sqlite:///search.db' or "
            f"'postgresql://user@host/db', or an optuna storage, but got storage={storage!r}."
        )
    interval = _seconds("heartbeat_interval", heartbeat_interval)
    grace = _seconds("grace_period", grace_period)
    if interval is not None and grace is not None and grace <= interval:
        raise SearchError(
            f"grace_period must be more than heartbeat_interval (a live trial would be failed between two "
            f"heartbeats), but got grace_period={grace} and heartbeat_interval={interval}. Use at least "
            f"grace_period={2 * interval}, or None for twice the interval."
        )
    if retries is not None and (isinstance(retries, bool) or not isinstance(retries, int) or retries < 0):
        raise SearchError(f"retries must be an integer >= 0 or None (no limit), but got retries={retries!r}.")
    scheme, sep, _ = storage.partition("://")
    dialect, _, driver = scheme.lower().partition("+")
    if not sep or dialect not in _DIALECTS:
        hint = " Write 'postgresql://' (SQLAlchemy does not accept 'postgres://')." if dialect == "postgres" else ""
        raise SearchError(
            f"storage must be a database URL starting with sqlite://, postgresql:// or mysql:// (optionally "
            f"with a driver, postgresql+psycopg2://), but got storage={_redact(storage)!r}.{hint} Use None for an "
            "in-memory study."
        )
    if dialect == "postgresql" and not driver:
        # SQLAlchemy 2.0 defaults to psycopg2, 2.1 to psycopg (3): name the installed one, psycopg2 first.
        driver = next((m for m in ("psycopg2", "psycopg") if importlib.util.find_spec(m)), "psycopg2")
        storage = f"postgresql+{driver}://{storage.partition('://')[2]}"
    module = _DRIVER_MODULES.get(driver, driver) if driver else _DIALECTS[dialect]
    if importlib.util.find_spec(module.partition(".")[0]) is None:
        install = _DRIVERS.get(module, f"pip install the package that provides the {module!r} module")
        raise MissingExtraError(
            f"storage {_redact(storage)!r} needs the database driver {module!r}, which is not installed. "
            f"Install it with: {install}"
        )
    kwargs = dict(engine_kwargs or {})
    if dialect == "sqlite":
        kwargs.setdefault("connect_args", {"timeout": 60})
    else:
        kwargs.setdefault("pool_pre_ping", True)  # a worker outliving a server restart reconnects
    callback = None
    if interval is not None:
        storages = optuna_.storages
        retry = getattr(storages, "RetryHeartbeatStaleTrialCallback", None) or storages.RetryFailedTrialCallback
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna_.exceptions.ExperimentalWarning)
            callback = retry(max_retry=retries)
    import sqlalchemy.exc

    heartbeat: dict[str, Any] = {}
    if callback is not None:
        params = inspect.signature(optuna_.storages.RDBStorage.__init__).parameters
        key = "heartbeat_stale_trial_callback"
        key = key if key in params else "failed_trial_callback"  # its name before Optuna 4.9
        heartbeat = {"heartbeat_interval": interval, "grace_period": grace, key: callback}
    for attempt in range(_OPEN_ATTEMPTS):
        try:
            with warnings.catch_warnings():  # the heartbeat is "experimental" in Optuna since 2.8
                warnings.simplefilter("ignore", optuna_.exceptions.ExperimentalWarning)
                return optuna_.storages.RDBStorage(storage, engine_kwargs=kwargs, **heartbeat)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as exc:
            # Workers started together race to create optuna's tables; the loser sees "already exists".
            if attempt + 1 == _OPEN_ATTEMPTS:
                raise SearchError(
                    f"could not create optuna's tables in {_redact(storage)!r} ({exc.__class__.__name__}: "
                    f"{str(exc).splitlines()[0]}). Check that the user may create tables in this database."
                ) from exc
            time.sleep(0.2 * (attempt + 1))
        except ImportError as exc:  # the driver module exists but cannot load (e.g. a missing libpq)
            raise MissingExtraError(
                f"storage {_redact(storage)!r} needs the database driver {module!r}, which failed to import "
                f"({exc}). Reinstall it: {_DRIVERS.get(module, 'pip install --force-reinstall ' + module)}"
            ) from exc
        except sqlalchemy.exc.SQLAlchemyError as exc:
            raise SearchError(
                f"could not open the study storage {_redact(storage)!r}: {str(exc).splitlines()[0].rstrip('.')}. "
                "Check that the database server is running and reachable, that the database exists "
                "(PostgreSQL: createdb NAME) and that the user may connect to it."
            ) from exc
    raise AssertionError("unreachable")  # pragma: no cover


def create_study(
    storage: str | optuna.storages.BaseStorage | None = None,
    *,
    study_name: str | None = None,
    heartbeat_interval: int | None = 60,
    grace_period: int | None = None,
    retries: int | None = 3,
    engine_kwargs: Mapping[str, Any] | None = None,
    **create_study_kwargs: Any,
) -> optuna.Study:
    """Create a study, or join it if another worker already created it.

    With ``storage=None`` this is ``optuna.create_study`` (in memory, one process). With a
    database URL, every worker calls it with the same URL and ``study_name``: the first creates
    the study, the others load it (``load_if_exists=True``), in any order or all at once; the
    storage has a heartbeat and retries the trials of killed workers (see :func:`make_storage`).

    Args:
        storage: ``None``, a database URL or an Optuna storage (see :func:`make_storage`).
        study_name: The study's name; required with a storage, so that all workers join one study.
        heartbeat_interval: See :func:`make_storage`.
        grace_period: See :func:`make_storage`.
        retries: See :func:`make_storage`.
        engine_kwargs: See :func:`make_storage`.
        **create_study_kwargs: Passed to ``optuna.create_study`` (``direction``/``directions``,
            ``sampler``, ``pruner``, ``load_if_exists``; the last defaults to ``True``).

    Returns:
        The study.

    Raises:
        SearchError: A storage without ``study_name``; a study of that name exists with other
            directions; or :func:`make_storage` refused the storage.
        MissingExtraError: The database driver is not installed.
    """
    if storage is not None and not study_name:
        raise SearchError(
            f"study_name is required with a storage (every worker must join the same study), but got "
            f"study_name={study_name!r}. Give every worker the same name, e.g. study_name='search'."
        )
    if "storage" in create_study_kwargs:
        raise SearchError("give the storage as create_study's first argument, not in create_study_kwargs.")
    optuna_ = _optuna()
    rdb = make_storage(
        storage, heartbeat_interval=heartbeat_interval, grace_period=grace_period, retries=retries,
        engine_kwargs=engine_kwargs,
    )
    create_study_kwargs.setdefault("load_if_exists", True)
    import sqlalchemy.exc

    try:
        study = optuna_.create_study(storage=rdb, study_name=study_name, **create_study_kwargs)
    except ValueError as exc:  # e.g. a direction that is neither 'minimize' nor 'maximize'
        raise SearchError(f"optuna refused the study's arguments {sorted(create_study_kwargs)}: {exc}") from exc
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise SearchError(
            f"could not create or load study {study_name!r} in {_redact(str(storage))!r}: "
            f"{str(exc).splitlines()[0]}. Check that the database server is running and reachable."
        ) from exc
    wanted = create_study_kwargs.get("directions") or [create_study_kwargs.get("direction") or "minimize"]
    wanted = [d if isinstance(d, str) else d.name for d in wanted]
    have = [d.name.lower() for d in study.directions]
    if [w.lower() for w in wanted] != have:
        raise SearchError(
            f"study {study_name!r} in {_redact(str(storage))!r} exists with directions={have}, but this worker "
            f"asked for directions={[w.lower() for w in wanted]}. A study's directions are fixed when it is created: "
            "use the same directions in every worker, or another study_name."
        )
    return study
