"""The report page's sortable tables: models, op families (with their plot), intervals, metrics."""

from __future__ import annotations

import json

from mmt_nas.report.html.cells import (
    _contribution_cell,
    _e,
    _error_class,
    _fmt,
    _ncell,
    _note_cell,
    _pct,
    _table,
    _v,
)
from mmt_nas.report.html.figures import figure_html
from mmt_nas.report.html.rows import UNATTRIBUTED, PageData


def models_table(page: PageData) -> str:
    if not page.models:
        return "<section id='models'><h2>Models</h2><p>No models.</p></section>"
    head = [
        "model",
        "input",
        "measured ms",
        "run-to-run CV %",
        "predicted ms",
        "90% interval ms",
        "error %",
        "noise floor %",
        "within noise",
        "fallback share %",
        "failure",
    ]
    rows = []
    for i, m in enumerate(page.models):
        pred = m.get("prediction") or {}
        iv = pred.get("interval") or {}
        ops = pred.get("ops") or []
        total = sum(o["total_ms"] for o in ops)
        fb = 100 * sum(o["total_ms"] for o in ops if o["source"] == "fallback") / total if total else None
        cv = m.get("run_to_run_cv")
        within = m.get("within_noise")
        interval = f"{_fmt(iv['lower_ms'])} – {_fmt(iv['upper_ms'])}" if iv.get("lower_ms") is not None else "–"
        rows.append(
            "<tr>"
            f"<td><a href='#model-{i}'>{_e(m['name'])}</a></td>"
            f"<td>{_e('x'.join(map(str, m.get('input_shape') or [])))}</td>"
            + _ncell(m.get("measured_ms"))
            + _ncell(None if cv is None else 100 * cv)
            + _ncell(m.get("predicted_ms"))
            + f"<td data-v='{_v(iv.get('lower_ms'))}'>{interval}</td>"
            + _ncell(m.get("error_pct"), signed=True, cls=_error_class(m.get("error_pct")))
            + _ncell(m.get("noise_floor_pct"))
            + f"<td>{'' if within is None else ('yes' if within else 'no')}</td>"
            + _ncell(fb)
            + _note_cell(m.get("error"))
            + "</tr>"
        )
    return (
        "<section id='models'><h2>Models</h2><p class='hint'>Click a column to sort; a model's name opens its "
        "ops.</p>" + _table(head, rows, "models-table") + "</section>"
    )


def families_section(page: PageData) -> str:
    if not page.families:
        return ""
    go = page.go
    fams = page.families
    fig = go.Figure()
    names = [_e(f.family) for f in fams]
    fig.add_trace(
        go.Bar(
            x=names,
            y=[f.predicted_ms for f in fams],
            name="predicted (alone)",
            marker={"color": "#1f77b4"},
            hovertemplate="%{x}: predicted %{y:.3f} ms<extra></extra>",
        )
    )
    fig.add_trace(
        go.Bar(
            x=names,
            y=[f.in_context_ms if f.profiled else None for f in fams],
            name="in context",
            marker={"color": "#ff7f0e"},
            hovertemplate="%{x}: in context %{y:.3f} ms<extra></extra>",
        )
    )
    fig.update_layout(
        barmode="group",
        yaxis={"title": {"text": "ms, summed over the models"}},
        margin={"l": 60, "r": 20, "t": 30, "b": 50},
        template="plotly_white",
        legend={"orientation": "h", "y": 1.08},
    )
    head = [
        "op family",
        "ops",
        "runs",
        "predicted ms",
        "in context ms",
        "context / predicted",
        "table ms",
        "fallback ms",
        "fused runs",
        "mean error contribution pp",
    ]
    rows = []
    for f in fams:
        ratio = f.in_context_ms / f.profiled_predicted_ms if f.profiled_predicted_ms else None
        rows.append(
            f"<tr><td>{_e(f.family)}</td>"
            + _ncell(len(f.ops), digits=0)
            + _ncell(f.runs, digits=0)
            + _ncell(f.predicted_ms)
            + _ncell(f.in_context_ms if f.profiled else None)
            + _ncell(ratio)
            + _ncell(f.table_ms)
            + _ncell(f.fallback_ms)
            + _ncell(f.fused, digits=0)
            + _contribution_cell(f.mean_contribution_pct, max(abs(g.mean_contribution_pct) for g in fams))
            + "</tr>"
        )
    k = len(fams[0].contributions)
    return (
        "<section id='families'><h2>Where the error comes from, by op family</h2>"
        f"<p class='hint'>Summed over the {k} measured, predicted and profiled models. Predicted: each op timed "
        "alone (from the table or the fallback); in context: MNN's per-op profile of each whole model, scaled "
        "to its measured time. A contribution is predicted minus in context, in percentage points of the "
        f"model's measured time; “{_e(UNATTRIBUTED)}” is the time MNN spends outside the counted ops.</p>"
        + figure_html(page, fig, "plot-families")
        + _table(head, rows, "families-table")
        + "</section>"
    )


def intervals_table(page: PageData) -> str:
    check = page.doc.get("intervals")
    if not check:
        return ""
    own = check["as_predicted"]
    label = "as predicted (" + ("calibrated" if own["calibrated"] else "uncalibrated prior") + ")"
    items = [(label, own, None), ("prior", check["prior"], check["prior"].get("false_feasible"))]
    if check.get("conformal") is not None:
        items.append(("conformal, leave one out", check["conformal"], check["conformal"].get("false_feasible")))
    head = [
        "intervals",
        "coverage 80%",
        "coverage 90%",
        "coverage 95%",
        "median 90% width %",
        "over budget at p25/p50/p75: point vs chance",
    ]
    rows = []
    for name, d, ff in items:
        rates = (
            "–"
            if not ff
            else "; ".join(
                f"{_pct(v['point'])} ({v['n_point']}) vs {_pct(v['chance'])} ({v['n_chance']})" for v in ff.values()
            )
        )
        rows.append(
            f"<tr><td>{_e(name)}</td>"
            + "".join(_ncell(100 * d["coverage"][c], digits=0) for c in ("0.8", "0.9", "0.95"))
            + _ncell(100 * d["median_width"], digits=0)
            + f"<td>{_e(rates)}</td></tr>"
        )
    return (
        "<section id='intervals'><h2>How sure were the predictions?</h2><p class='hint'>Share of the "
        f"{check['n_models']} measured models inside their interval, the median 90% interval's width relative to "
        "the prediction, and the share measured over budget among the models a constraint keeps (models kept "
        "in brackets). Leave one out: each model's interval fitted on the others only.</p>"
        + _table(head, rows, "intervals-table")
        + "</section>"
    )


def all_metrics(page: PageData) -> str:
    rows = [
        f"<tr><td>{_e(k)}</td>{_ncell(v) if isinstance(v, (int, float)) else f'<td>{_e(v)}</td>'}</tr>"
        for k, v in page.metrics.items()
    ]
    settings = json.dumps(page.doc.get("settings") or {}, sort_keys=True, default=str)
    runtime = json.dumps((page.doc.get("table") or {}).get("runtime") or {}, sort_keys=True, default=str)
    return (
        "<section id='metrics'><h2>All metrics</h2>"
        + _table(["metric", "value"], rows, "metrics-table")
        + f"<p class='muted'>Settings: <code>{_e(settings)}</code>. Runtime: <code>{_e(runtime)}</code>.</p>"
        "</section>"
    )
