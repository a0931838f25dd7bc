"""What optuna-dashboard shows of a latency-constrained search.

optuna-dashboard lists each trial's user attributes (numeric ones sort and filter in its trial
table), a Markdown note per study, the objectives' names, and plotly figures saved to the study.
:class:`~mmt_nas.integrations.optuna.LatencyConstraint` already stores the prediction, the budget,
the 90% interval and, for a chance constraint, the bound it compared, plus
:data:`~mmt_nas.integrations.optuna.constraint.OVER_BUDGET_ATTR` and
:data:`~mmt_nas.integrations.optuna.constraint.FEASIBLE_ATTR`. Those two say in the trial table
what the constraint decided: optuna-dashboard 0.21 reads only Optuna 4's list of constraint values,
and so shows no constraint for trials of Optuna 5's ``trial.set_constraint``.

:func:`prepare_dashboard` names the objectives and writes the study's note: the budget, the
confidence, the table's device and runtime, its noise floor, and what each attribute means.
:func:`save_latency_plot` adds a figure: each trial's objective against its predicted latency, with
the 90% interval as error bars, the budget, and the infeasible trials in grey. Then::

    optuna-dashboard sqlite:///search.db
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

from mmt_nas._imports import require
from mmt_nas.exceptions import SearchError
from mmt_nas.integrations.optuna._deps import import_optuna
from mmt_nas.integrations.optuna.constraint import (
    BOUND_ATTR,
    BUDGET_ATTR,
    CONFIDENCE_ATTR,
    FEASIBLE_ATTR,
    LOWER_ATTR,
    OVER_BUDGET_ATTR,
    PREDICTED_ATTR,
    UPPER_ATTR,
    LatencyConstraint,
)
from mmt_nas.integrations.optuna.log import TrialRecord

if TYPE_CHECKING:
    import optuna
    import plotly.graph_objects as go

__all__ = ["ATTRIBUTES", "GRAPH_ID", "dashboard_note", "prepare_dashboard", "latency_figure", "save_latency_plot"]

#: What each trial attribute the constraint stores means, as the study's note lists them.
ATTRIBUTES: dict[str, str] = {
    PREDICTED_ATTR: "the predicted latency (ms), before training",
    BUDGET_ATTR: "the latency budget (ms) the trial was checked against",
    LOWER_ATTR: "the lower end of the prediction's two-sided 90% interval (its 5% quantile, ms)",
    UPPER_ATTR: "the upper end of the prediction's two-sided 90% interval (its 95% quantile, ms)",
    BOUND_ATTR: "a chance constraint's bound (ms): the one-sided upper bound at its confidence, compared to the budget",
    CONFIDENCE_ATTR: "a chance constraint's confidence, P[latency <= budget]",
    OVER_BUDGET_ATTR: "the constraint's value (ms), bound (or prediction) minus budget: <= 0 is feasible",
    FEASIBLE_ATTR: "whether the latency constraint holds (True/False)",
}
#: The attributes only a chance constraint stores.
_CHANCE_ONLY = (BOUND_ATTR, CONFIDENCE_ATTR)
#: The id of the figure :func:`save_latency_plot` saves (saving again replaces it).
GRAPH_ID = "mmt-nas-latency"


def dashboard_note(constraint: LatencyConstraint, *, title: str | None = None) -> str:
    """The study's note: what was constrained, on which table, and what each trial attribute means.

    Args:
        constraint: The search's latency constraint.
        title: The note's heading (default: "Latency constraint").

    Returns:
        Markdown.
    """
    predictor = constraint.predictor
    table = predictor.table
    device = table.device or {}
    chance = constraint.confidence is not None
    rule = (
        f"feasible when P[latency <= budget] >= {constraint.confidence:g}, i.e. when `{BOUND_ATTR}` (the "
        f"prediction's one-sided upper bound at {constraint.confidence:g}) is within budget"
        if chance
        else "feasible when the predicted latency is within budget (a point constraint)"
    )
    floor = table.noise_floor()
    attributes = {k: v for k, v in ATTRIBUTES.items() if chance or k not in _CHANCE_ONLY}
    lines = [
        f"## {title or 'Latency constraint'}",
        "",
        f"- **Budget:** {constraint.budget_ms:.4g} ms; {rule}.",
        f"- **Intervals:** {predictor.intervals.describe()}.",
        f"- **Table:** {len(table)} ops metered on {device.get('cpu_model', 'an unnamed CPU')} "
        f"({device.get('cpu_count', '?')} cores, {device.get('machine', '?')}), MNN {device.get('mnn_version', '?')}, "
        f"{table.settings.backend}, {table.settings.threads} thread(s), precision {table.settings.precision}.",
        f"- **Noise floor:** {floor}." if floor is not None else "- **Noise floor:** unknown (one round).",
        f"- **Pruned before training:** above {constraint.prune_factor:g} x the budget."
        if constraint.prune_factor is not None
        else "- **Pruned before training:** never.",
        "",
        "Trial attributes (the numeric ones sort in the trials table; sort on "
        f"`{OVER_BUDGET_ATTR}` to put the feasible trials first):",
        "",
        "| attribute | meaning |",
        "| --- | --- |",
        *(f"| `{k}` | {v} |" for k, v in attributes.items()),
        "",
        f"The figure `{GRAPH_ID}` plots each completed trial's objective against its predicted latency, with the "
        "two-sided 90% interval as error bars (a snapshot: it is redrawn when the search saves it again).",
    ]
    return "\n".join(lines) + "\n"


def prepare_dashboard(
    study: optuna.Study,
    constraint: LatencyConstraint,
    *,
    objective_names: Sequence[str] | None = None,
    note: bool | None = None,
    overwrite: bool = False,
) -> str:
    """Name ``study``'s objectives and write its note for optuna-dashboard (see :func:`dashboard_note`).

    Safe to call from every worker of a shared study: the names are set to the same values, and a note that
    is already there (the first worker's, or one a person wrote in the dashboard) is kept unless
    ``overwrite``.

    Args:
        study: The study.
        constraint: Its latency constraint.
        objective_names: One name per objective (``study.set_metric_names``), e.g.
            ``["accuracy", "latency_ms"]``; ``None`` leaves them as they are.
        note: Save the note: ``None`` when optuna-dashboard is installed, ``True`` always (it is required),
            ``False`` never.
        overwrite: Replace a note the study already has.

    Returns:
        The note (Markdown), saved or not.

    Raises:
        SearchError: ``objective_names`` does not give one name per objective.
        MissingExtraError: ``note=True`` and optuna-dashboard is not installed.
    """
    if objective_names is not None:
        names = list(objective_names)
        if len(names) != len(study.directions) or not all(isinstance(n, str) and n for n in names):
            raise SearchError(
                f"objective_names must give one non-empty name per objective ({len(study.directions)} for this study), "
                f"but got objective_names={objective_names!r}."
            )
        with warnings.catch_warnings():  # "experimental" since Optuna 3.2, and what the dashboard reads
            warnings.simplefilter("ignore", category=import_optuna().exceptions.ExperimentalWarning)
            study.set_metric_names(names)
    text = dashboard_note(constraint, title=f"Latency constraint of {study.study_name}")
    if note is None:
        note = _dashboard_installed()
    if note:
        dashboard = require("optuna_dashboard", "dashboard", "the study's note for optuna-dashboard")
        if overwrite or not dashboard.get_note(study):
            dashboard.save_note(study, text)
    return text


def latency_figure(study: optuna.Study, *, objective: int | str = 0) -> go.Figure:
    """A plotly figure of ``study``'s completed trials: ``objective`` against the predicted latency.

    Each point carries its two-sided 90% interval as horizontal error bars (when stored), and its trial number,
    parameters and latency constraint on hover; the budget is a vertical line; trials infeasible by the latency
    constraint (:data:`FEASIBLE_ATTR`) are grey. Pruned trials have no objective value and are not drawn.

    Args:
        study: A study whose trials :class:`~mmt_nas.integrations.optuna.LatencyConstraint` predicted.
        objective: The objective on the y axis: its index, or its name (``study.metric_names``).

    Raises:
        SearchError: ``objective`` names no objective of the study, or no completed trial has a prediction.
        MissingExtraError: plotly is not installed (the ``plots`` extra).
    """
    names = list(study.metric_names or [f"objective {i}" for i in range(len(study.directions))])
    index = names.index(objective) if isinstance(objective, str) and objective in names else objective
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(names):
        raise SearchError(
            f"objective must be an objective's index (0..{len(names) - 1}) or name ({', '.join(map(repr, names))}), "
            f"but got objective={objective!r}."
        )
    points = [
        (TrialRecord.from_trial(t), _over_budget(t))
        for t in study.get_trials(deepcopy=False)
        if t.values is not None and PREDICTED_ATTR in t.user_attrs
    ]
    if not points:
        raise SearchError(
            f"study {study.study_name!r} has no completed trial with a predicted latency "
            f"(user attribute {PREDICTED_ATTR!r}): run trials through LatencyConstraint first."
        )
    go_ = require("plotly.graph_objects", "plots", "the dashboard's latency figure")
    fig = go_.Figure()
    for feasible, colour, label in ((True, "#1f77b4", "feasible"), (False, "#b0b0b0", "infeasible")):
        group = [(r, over) for r, over in points if (over is None or over <= 0) == feasible]
        if not group:
            continue
        lat = [float(r.predicted_latency_ms or 0.0) for r, _ in group]
        plus = [(r.interval_ms[1] - x) if r.interval_ms else 0.0 for (r, _), x in zip(group, lat)]
        minus = [(x - r.interval_ms[0]) if r.interval_ms else 0.0 for (r, _), x in zip(group, lat)]
        fig.add_trace(
            go_.Scatter(
                x=lat,
                y=[r.values[index] for r, _ in group if r.values is not None],
                mode="markers",
                name=label,
                marker={"color": colour, "size": 8},
                error_x={"type": "data", "symmetric": False, "array": plus, "arrayminus": minus, "thickness": 1},
                text=[_hover(r, over) for r, over in group],
                hovertemplate="%{text}<extra></extra>",
            )
        )
    for budget in sorted({r.budget_ms for r, _ in points if r.budget_ms is not None}):
        fig.add_vline(x=budget, line_dash="dash", line_color="#d62728", annotation_text=f"budget {budget:.4g} ms")
    fig.update_layout(
        title=f"{names[index]} vs predicted latency (two-sided 90% interval as error bars)",
        xaxis_title="predicted latency (ms)",
        yaxis_title=names[index],
        hovermode="closest",
    )
    return fig


def save_latency_plot(study: optuna.Study, *, objective: int | str = 0) -> str:
    """Save :func:`latency_figure` to ``study`` for optuna-dashboard, replacing an earlier one.

    The figure is a snapshot of the trials completed so far: call it again (e.g. from a callback every few
    trials) to bring it up to date.

    Returns:
        The figure's id (:data:`GRAPH_ID`).

    Raises:
        SearchError, MissingExtraError: As :func:`latency_figure`; also when optuna-dashboard is not installed.
    """
    fig = latency_figure(study, objective=objective)
    dashboard = require("optuna_dashboard", "dashboard", "saving a figure for optuna-dashboard")
    return str(dashboard.save_plotly_graph_object(study, fig, graph_object_id=GRAPH_ID))


def _dashboard_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("optuna_dashboard") is not None


def _over_budget(trial: optuna.trial.FrozenTrial) -> float | None:
    """The latency constraint's value of ``trial`` (<= 0 feasible), whatever other constraints it has; computed
    from the prediction for trials stored before :data:`OVER_BUDGET_ATTR` existed."""
    attrs = trial.user_attrs
    if OVER_BUDGET_ATTR in attrs:
        return float(attrs[OVER_BUDGET_ATTR])
    latency, budget = attrs.get(BOUND_ATTR, attrs.get(PREDICTED_ATTR)), attrs.get(BUDGET_ATTR)
    return None if latency is None or budget is None else float(latency) - float(budget)


def _hover(r: TrialRecord, over: float | None) -> str:
    interval = (
        f"<br>90% interval {r.interval_ms[0]:.4g} to {r.interval_ms[1]:.4g} ms" if r.interval_ms is not None else ""
    )
    verdict = "" if over is None else f"<br>{'within' if over <= 0 else 'over'} budget by {abs(over):.4g} ms"
    params = "<br>".join(f"{k} = {v}" for k, v in sorted(r.params.items()))
    return f"trial {r.number}<br>predicted {r.predicted_latency_ms:.4g} ms{interval}{verdict}<br>{params}"
