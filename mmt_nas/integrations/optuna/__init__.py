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
(:func:`mmt_nas.predict.predictor.load_table_cached`). :meth:`SearchLog.from_study` collects every
worker's trials from the shared storage.

One module per concept, each importing only the ones listed before it; every name is
re-exported here, and none of them imports Optuna before it is used:

- :mod:`~mmt_nas.integrations.optuna.constraint`: :class:`LatencyConstraint`, the penalties, and
  the trial attributes the constraint stores (:data:`PREDICTED_ATTR`, :data:`BUDGET_ATTR`).
- :mod:`~mmt_nas.integrations.optuna.log`: :class:`TrialRecord`, :class:`SearchLog` and its JSON
  file (it reads those attributes).
- :mod:`~mmt_nas.integrations.optuna.dashboard`: what optuna-dashboard shows of the search
  (:func:`prepare_dashboard`: the objectives' names and the study's note; :func:`save_latency_plot`).
- :mod:`~mmt_nas.integrations.optuna.storage`: :func:`make_storage` and :func:`create_study`
  (database URLs, drivers, the heartbeat, passwords kept out of messages).
"""

from __future__ import annotations

from mmt_nas.integrations.optuna.constraint import (
    BOUND_ATTR,
    BUDGET_ATTR,
    CONFIDENCE_ATTR,
    DIRECTIONS,
    FEASIBLE_ATTR,
    LOWER_ATTR,
    OVER_BUDGET_ATTR,
    PREDICTED_ATTR,
    UPPER_ATTR,
    Direction,
    LatencyConstraint,
    check_direction,
    hinge_penalty,
    linear_penalty,
    mnasnet_penalty,
)
from mmt_nas.integrations.optuna.dashboard import (
    ATTRIBUTES,
    GRAPH_ID,
    dashboard_note,
    latency_figure,
    prepare_dashboard,
    save_latency_plot,
)
from mmt_nas.integrations.optuna.log import (
    LOG_SCHEMA,
    TRIAL_SELECTIONS,
    SearchLog,
    TrialRecord,
    TrialSelection,
    check_trial_selection,
)
from mmt_nas.integrations.optuna.storage import _redact, create_study, make_storage  # noqa: F401 (_redact: tests)

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
    "LOG_SCHEMA",
    "TrialSelection",
    "TRIAL_SELECTIONS",
    "check_trial_selection",
    "TrialRecord",
    "SearchLog",
    "make_storage",
    "create_study",
    "ATTRIBUTES",
    "GRAPH_ID",
    "dashboard_note",
    "prepare_dashboard",
    "latency_figure",
    "save_latency_plot",
]
