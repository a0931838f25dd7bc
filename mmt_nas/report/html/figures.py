"""The report page's interactive plots (plotly): predicted vs measured, the error distribution."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from mmt_nas.report.html.cells import (
    _gap,
    _hover,
)
from mmt_nas.report.html.rows import PageData


def figure_html(page: PageData, fig: Any, div_id: str, post_script: str | None = None) -> str:
    return str(
        page.pio.to_html(
            fig,
            full_html=False,
            include_plotlyjs=False,
            div_id=div_id,
            config={"displaylogo": False, "responsive": True},
            post_script=post_script,
            default_height="480px",
        )
    )


def plots(page: PageData) -> str:
    pts = [m for m in page.ok if m.get("measured_ms") and m.get("predicted_ms")]
    if not pts:
        return ""
    scatter_html = figure_html(
        page,
        scatter(page, pts),
        "plot-pred-vs-measured",
        "var gd = document.getElementById('{plot_id}'); gd.on('plotly_click', function (ev) {"
        " var p = ev.points && ev.points[0]; if (p && p.customdata != null) { window.mmtOpenDrill(p.customdata); }"
        " });",
    )
    hist = figure_html(page, histogram(page, pts), "plot-error-distribution")
    return (
        "<section id='plots'><h2>Predicted vs measured</h2><p class='hint'>Hover a point for its numbers; click "
        "it to open its ops below. Error bars: the prediction's interval. Log axes.</p>"
        f"{scatter_html}<h2>Error distribution</h2>{hist}</section>"
    )


def scatter(page: PageData, pts: Sequence[Mapping[str, Any]]) -> Any:
    go = page.go
    meas = [float(m["measured_ms"]) for m in pts]
    pred = [float(m["predicted_ms"]) for m in pts]
    lows: list[float | None] = []
    highs: list[float | None] = []
    for m in pts:
        iv = (m.get("prediction") or {}).get("interval") or {}
        lows.append(iv.get("lower_ms"))
        highs.append(iv.get("upper_ms"))
    # x: the measurements; y: the predictions and the measurements (the diagonal in view); the intervals'
    # bars may leave the plot (zoom out to see them)
    x_lo, x_hi = min(meas) / 1.25, max(meas) * 1.25
    y_lo, y_hi = min(meas + pred) / 1.25, max(meas + pred) * 1.25
    xs = [min(x_lo, y_lo) / 2, max(x_hi, y_hi) * 2]  # the bands and the diagonal span the view
    fig = go.Figure()

    def band(rel: float, name: str, color: str) -> None:
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=[x * (1 - rel) for x in xs],
                mode="lines",
                line={"width": 0},
                hoverinfo="skip",
                showlegend=False,
            )
        )
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=[x * (1 + rel) for x in xs],
                mode="lines",
                line={"width": 0},
                fill="tonexty",
                fillcolor=color,
                name=name,
                hoverinfo="skip",
            )
        )

    band(0.10, "±10%", "rgba(44,160,44,0.16)")
    if page.floor_pct is not None:
        band(
            min(0.95, 2 * page.floor_pct / 100),
            f"noise floor ×2 (±{2 * page.floor_pct:.1f}%)",
            "rgba(120,120,120,0.22)",
        )
    fig.add_trace(
        go.Scatter(
            x=xs,
            y=xs,
            mode="lines",
            line={"color": "gray", "width": 1, "dash": "dot"},
            name="predicted = measured",
            hoverinfo="skip",
        )
    )
    index = {id(m): i for i, m in enumerate(page.models)}
    for inside in (True, False):
        sel = [j for j, m in enumerate(pts) if (abs(m.get("error_pct") or 0.0) <= 10) == inside]
        if not sel:
            continue
        up = [_gap(highs[j], pred[j]) for j in sel]
        down = [_gap(pred[j], lows[j]) for j in sel]
        fig.add_trace(
            go.Scatter(
                x=[meas[j] for j in sel],
                y=[pred[j] for j in sel],
                mode="markers",
                name="within ±10%" if inside else "outside ±10%",
                marker={
                    "size": 9,
                    "color": "#1f77b4" if inside else "#d62728",
                    "line": {"width": 0.5, "color": "white"},
                },
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": up,
                    "arrayminus": down,
                    "thickness": 1,
                    "width": 0,
                    "color": "rgba(80,80,80,0.45)",
                },
                customdata=[index[id(pts[j])] for j in sel],
                hovertext=[_hover(pts[j]) for j in sel],
                hovertemplate="%{hovertext}<extra></extra>",
            )
        )
    fig.update_layout(
        xaxis={
            "type": "log",
            "title": {"text": "measured latency (ms)"},
            "range": [math.log10(x_lo), math.log10(x_hi)],
        },
        yaxis={
            "type": "log",
            "title": {"text": "predicted latency (ms)"},
            "range": [math.log10(y_lo), math.log10(y_hi)],
        },
        margin={"l": 60, "r": 20, "t": 30, "b": 50},
        legend={"x": 0.01, "y": 0.99, "bgcolor": "rgba(255,255,255,0.7)"},
        hovermode="closest",
        template="plotly_white",
    )
    return fig


def histogram(page: PageData, pts: Sequence[Mapping[str, Any]]) -> Any:
    go = page.go
    errs = [float(m["error_pct"]) for m in pts if m.get("error_pct") is not None]
    fig = go.Figure()
    fig.add_trace(
        go.Histogram(
            x=errs,
            nbinsx=max(5, min(40, len(errs))),
            name="models",
            marker={"color": "#1f77b4"},
            hovertemplate="%{x}%: %{y} models<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=errs,
            y=[0] * len(errs),
            mode="markers",
            name="each model",
            marker={"symbol": "line-ns-open", "size": 14, "color": "#333"},
            hovertext=[_hover(m) for m in pts if m.get("error_pct") is not None],
            hovertemplate="%{hovertext}<extra></extra>",
        )
    )
    if page.floor_pct is not None:
        f2 = 2 * page.floor_pct
        fig.add_vrect(
            x0=-f2,
            x1=f2,
            fillcolor="gray",
            opacity=0.18,
            line_width=0,
            annotation_text=f"noise ×2 (±{f2:.1f}%)",
            annotation_position="top left",
        )
    for v, dash in ((-10, "dash"), (10, "dash"), (-5, "dot"), (5, "dot")):
        fig.add_vline(x=v, line_color="#2ca02c", line_dash=dash, line_width=1)
    fig.add_vline(x=0, line_color="gray", line_width=1)
    fig.update_layout(
        xaxis={"title": {"text": "prediction error (%): (predicted - measured) / measured"}},
        yaxis={"title": {"text": "models"}},
        bargap=0.05,
        margin={"l": 60, "r": 20, "t": 30, "b": 50},
        template="plotly_white",
        showlegend=False,
    )
    return fig
