"""The search log: what a study learned about each trial, as a JSON file and a model list for the report.

:class:`SearchLog` is an ``study.optimize`` callback (or is read from a study's storage with
:meth:`SearchLog.from_study`) holding one :class:`TrialRecord` per finished trial. It writes them as
a JSON document (schema :data:`LOG_SCHEMA`), finds the feasible Pareto front and writes a model list
for ``mmt-nas report`` so the front's models can be measured and the predictions checked.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from mmt_nas._files import atomic_write_text
from mmt_nas.exceptions import SearchError
from mmt_nas.integrations.optuna.constraint import (
    BOUND_ATTR,
    BUDGET_ATTR,
    CONFIDENCE_ATTR,
    LOWER_ATTR,
    PREDICTED_ATTR,
    UPPER_ATTR,
)
from mmt_nas.vocab import check_choice

if TYPE_CHECKING:
    import optuna

__all__ = [
    "LOG_SCHEMA",
    "TrialSelection",
    "TRIAL_SELECTIONS",
    "check_trial_selection",
    "TrialRecord",
    "SearchLog",
]

#: The ``schema`` of the JSON document :meth:`SearchLog.write` writes (``schema_version`` 1).
LOG_SCHEMA = "mmt_nas/search-log"

#: Which complete trials :meth:`SearchLog.write_models` lists: the feasible Pareto front, every
#: feasible (or unconstrained) one, or all of them.
TrialSelection = Literal["pareto", "feasible", "all"]
TRIAL_SELECTIONS: tuple[TrialSelection, ...] = ("pareto", "feasible", "all")


def check_trial_selection(which: Any) -> TrialSelection:
    """Return ``which`` if it is ``"pareto"``, ``"feasible"`` or ``"all"``.

    Raises:
        SearchError: It is none of them.
    """
    return check_choice("which", which, TRIAL_SELECTIONS, error=SearchError)


@dataclass(frozen=True)
class TrialRecord:
    """What a search learned about one trial.

    Attributes:
        number: The trial's number.
        state: ``"COMPLETE"``, ``"PRUNED"``, ``"FAIL"``, ...
        params: Its sampled parameters.
        values: Its objective values (``None`` unless complete).
        predicted_latency_ms: The prediction stored by
            :class:`~mmt_nas.integrations.optuna.LatencyConstraint` (``None`` if none).
        budget_ms: The budget it was checked against (``None`` if none).
        constraints: Its constraint values (<= 0 is feasible).
        interval_ms: The prediction's 90% interval ``(lower, upper)`` (``None`` if not stored).
        bound_ms: The upper bound a chance constraint compared (``None`` for a point constraint).
        confidence: That constraint's confidence (``None`` for a point constraint).
    """

    number: int
    state: str
    params: Mapping[str, Any] = field(default_factory=dict)
    values: tuple[float, ...] | None = None
    predicted_latency_ms: float | None = None
    budget_ms: float | None = None
    constraints: Mapping[str, float] = field(default_factory=dict)
    interval_ms: tuple[float, float] | None = None
    bound_ms: float | None = None
    confidence: float | None = None

    @property
    def feasible(self) -> bool | None:
        """Whether every constraint is <= 0 (``None`` when the trial has no constraint)."""
        return all(v <= 0 for v in self.constraints.values()) if self.constraints else None

    @classmethod
    def from_trial(cls, trial: optuna.trial.FrozenTrial) -> TrialRecord:
        """Read a finished trial.

        Args:
            trial: The trial; on Optuna 4.x (no ``trial.constraints``) its constraint is computed
                from the user attributes the latency constraint stored.
        """
        latency = trial.user_attrs.get(PREDICTED_ATTR)
        budget = trial.user_attrs.get(BUDGET_ATTR)
        bound = trial.user_attrs.get(BOUND_ATTR)
        lower, upper = trial.user_attrs.get(LOWER_ATTR), trial.user_attrs.get(UPPER_ATTR)
        confidence = trial.user_attrs.get(CONFIDENCE_ATTR)
        constraints = dict(getattr(trial, "constraints", None) or {})
        if not constraints and latency is not None and budget is not None:  # Optuna 4.x
            constraints = {"latency_ms": float(bound if bound is not None else latency) - float(budget)}
        return cls(
            number=trial.number,
            state=trial.state.name,
            params=dict(trial.params),
            values=None if trial.values is None else tuple(float(v) for v in trial.values),
            predicted_latency_ms=None if latency is None else float(latency),
            budget_ms=None if budget is None else float(budget),
            constraints=constraints,
            interval_ms=None if lower is None or upper is None else (float(lower), float(upper)),
            bound_ms=None if bound is None else float(bound),
            confidence=None if confidence is None else float(confidence),
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
            "interval_ms": None if self.interval_ms is None else list(self.interval_ms),
            "bound_ms": self.bound_ms,
            "confidence": self.confidence,
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
        """Record ``trial`` (Optuna calls this after each trial of this process).

        Args:
            study: The study the trial belongs to (its directions are recorded).
            trial: The finished trial.
        """
        self.directions = [d.name.lower() for d in study.directions]
        self.records.append(TrialRecord.from_trial(trial))
        if self.path is not None:
            self.write(self.path)

    @classmethod
    def from_study(cls, study: optuna.Study) -> SearchLog:
        """A log of every finished trial in the study's storage, whichever process ran it.

        Args:
            study: The study, e.g. loaded from a storage that many workers share.
        """
        log = cls()
        log.directions = [d.name.lower() for d in study.directions]
        log.records = [TrialRecord.from_trial(t) for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
        return log

    def to_dict(self) -> dict[str, Any]:
        """The JSON document: schema, directions, and one entry per trial."""
        return {
            "schema": LOG_SCHEMA,
            "schema_version": 1,
            "directions": list(self.directions),
            "trials": [r.to_dict() for r in self.records],
        }

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the log as JSON, atomically.

        Args:
            path: The JSON file to write (replaced whole: readers never see half of it).

        Returns:
            The path written.
        """
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1, allow_nan=False, default=str) + "\n")
        return Path(path)

    def pareto_front(self) -> list[TrialRecord]:
        """Complete, feasible (or unconstrained) trials that no other such trial dominates, by number."""
        maximize = [d == "maximize" for d in self.directions]
        pool = [
            (r, r.values)
            for r in self.records
            if r.state == "COMPLETE" and r.values is not None and r.feasible is not False
        ]
        return [r for r, v in pool if not any(_dominates(ov, v, maximize) for o, ov in pool if o is not r)]

    def write_models(
        self,
        path: str | os.PathLike[str],
        to_model: Callable[[Mapping[str, Any]], tuple[str, Mapping[str, Any]]],
        input_shape: Sequence[int],
        *,
        which: TrialSelection = "pareto",
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

        Raises:
            SearchError: ``which`` is not one of the three, no trial is selected, or ``to_model``
                returned a malformed target.
        """
        which = check_trial_selection(which)
        if which == "pareto":
            chosen = self.pareto_front()
        else:
            chosen = [r for r in self.records if r.state == "COMPLETE" and (which == "all" or r.feasible is not False)]
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
