"""A prediction-error report as one self-contained, interactive HTML page that works offline.

:func:`render_html` turns a report's JSON-ready dict (:meth:`mmt_nas.report.Report.to_dict`) into a page: a
summary in words (how many models are within ±5% and ±10%, the bias, where the error comes from, the noise
floor), interactive plots (predicted vs measured with the ±10% band, the noise floor and each prediction's
interval; the error distribution; predicted vs in-context time per op family), sortable tables, and per model a
drill-down of its ops: predicted alone vs in context, share, source (table, fallback, fused) and each op's
contribution to the model's error. The plots are plotly's (the ``plots`` extra), whose JavaScript is embedded
once, inline: the page loads nothing from the network. Without plotly, the page is the static one: the PNG
plots over the Markdown report.

Every string that comes from the user (model names, op keys, errors, settings) is HTML-escaped; the plots' data
is JSON in which ``<``, ``>`` and ``/`` are escaped (plotly's ``to_json``), so no name can end a ``<script>``.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmt_nas._imports import try_import
from mmt_nas.vocab import op_family

__all__ = ["UNATTRIBUTED", "OpRow", "FamilyRow", "render_html", "render_static_html", "op_rows", "family_rows"]

_TITLE = "mmt_nas prediction-error report"
#: The pseudo-family of the in-context time no counted op accounts for (MNN's layout conversions and the
#: ops it runs outside any module).
UNATTRIBUTED = "outside the ops"


# -- what the tables show: each op's share of a model's error ----------------------------------------------------


@dataclass(frozen=True)
class OpRow:
    """One distinct op of a model's prediction, next to its time inside the model.

    Attributes:
        key: The op's key (``""`` for the row of time outside the ops).
        class_name: Its class name.
        family: Its op family (:func:`mmt_nas.vocab.op_family`), or :data:`UNATTRIBUTED`.
        source: ``"table"``, ``"fallback"``, ``"fused"``, or ``""`` for the time outside the ops.
        names: The module names that run it.
        count: How many times the model runs it.
        predicted_ms: Its predicted total (``count`` runs, each timed alone, calibrated when ``ratio != 1``).
        in_context_ms: Its runs' time inside the model (MNN's profile, scaled to the measured time); ``None``
            when none of its runs was profiled by name (tensor functions, fused ops).
        share: Its share of the predicted total.
        ratio: The in-context calibration factor of the prediction (1: none).
        contribution_pct: ``(predicted_ms - in_context_ms) / measured``, in percentage points of the model's
            error (``None`` without a measurement or profile): the rows' contributions add up to the error.
    """

    key: str
    class_name: str
    family: str
    source: str
    names: tuple[str, ...]
    count: int
    predicted_ms: float
    in_context_ms: float | None
    share: float
    ratio: float = 1.0
    contribution_pct: float | None = None


def _profiled(model: Mapping[str, Any]) -> bool:
    """Whether MNN profiled the model op by op (the split of its measured time is known)."""
    return bool(model.get("ops_in_context")) or any(
        v.get("in_context_ms", 0) > 0 for v in (model.get("by_category") or {}).values()
    )


def op_rows(model: Mapping[str, Any]) -> list[OpRow]:
    """The rows of a model's drill-down, from one entry of a report dict's ``models``.

    One row per distinct op of the prediction, with its runs' in-context time summed; when the model was
    profiled and measured, a last row holds the measured time that none of the ops accounts for (family
    :data:`UNATTRIBUTED`), so that the contributions add up to the model's error exactly.
    """
    prediction = model.get("prediction") or {}
    measured = model.get("measured_ms")
    profiled = _profiled(model) and measured is not None and measured > 0
    ctx = {o["name"]: o for o in model.get("ops_in_context") or []}
    rows: list[OpRow] = []
    attributed = 0.0
    for o in prediction.get("ops") or []:
        names = tuple(o.get("names") or ())
        runs = [ctx[n] for n in names if n in ctx]
        in_ctx = sum(float(r["in_context_ms"]) for r in runs) if runs else None
        attributed += in_ctx or 0.0
        family = runs[0]["family"] if runs else op_family(o["class_name"], key=o["key"], extended=True)
        total = float(o["total_ms"])
        rows.append(
            OpRow(
                key=o["key"],
                class_name=o["class_name"],
                family=str(family),
                source=o["source"],
                names=names,
                count=int(o["count"]),
                predicted_ms=total,
                in_context_ms=in_ctx,
                share=float(o["share"]),
                ratio=float(o.get("ratio", 1.0)),
                contribution_pct=100 * (total - (in_ctx or 0.0)) / measured if profiled and measured else None,
            )
        )
    if profiled and measured and prediction:
        rest = float(measured) - attributed
        rows.append(OpRow("", "", UNATTRIBUTED, "", (), 0, 0.0, rest, 0.0, 1.0, -100 * rest / float(measured)))
    return rows


@dataclass
class FamilyRow:
    """One op family's rows, summed over the models that were measured, predicted and profiled.

    Attributes:
        family: The family.
        ops: Distinct ops (by key) of the family over the models.
        runs: Their runs, summed.
        predicted_ms: Predicted time, summed.
        in_context_ms: In-context time of its profiled runs, summed.
        profiled: Whether any of its runs was profiled by name (or it is :data:`UNATTRIBUTED`).
        profiled_predicted_ms: Predicted time of the ops with profiled runs (``in_context_ms`` is theirs).
        table_ms, fallback_ms: Predicted time from the table and from the fallback.
        fused: Runs that MNN fuses into another op.
        contributions: Each model's contribution of the family to its error (percentage points).
    """

    family: str
    ops: set[str] = field(default_factory=set)
    runs: int = 0
    predicted_ms: float = 0.0
    in_context_ms: float = 0.0
    profiled: bool = False
    profiled_predicted_ms: float = 0.0
    table_ms: float = 0.0
    fallback_ms: float = 0.0
    fused: int = 0
    contributions: list[float] = field(default_factory=list)

    @property
    def mean_contribution_pct(self) -> float:
        """The family's contribution to the error, averaged over the models (a model without it counts 0)."""
        return sum(self.contributions) / len(self.contributions) if self.contributions else 0.0


def family_rows(models: Iterable[Mapping[str, Any]]) -> list[FamilyRow]:
    """Per op family, the drill-down rows of the measured, predicted and profiled models summed, largest
    mean contribution to the error (in absolute value) first. The mean contributions add up to the mean
    signed error of those models."""
    fams: dict[str, FamilyRow] = {}
    used = [m for m in models if m.get("status") == "ok" and _profiled(m)]
    per_model: list[dict[str, float]] = []
    for m in used:
        mine: dict[str, float] = {}
        for r in op_rows(m):
            f = fams.setdefault(r.family, FamilyRow(r.family))
            if r.key:
                f.ops.add(r.key)
            f.runs += r.count
            f.predicted_ms += r.predicted_ms
            if r.in_context_ms is not None:
                f.in_context_ms += r.in_context_ms
                f.profiled = True
                f.profiled_predicted_ms += r.predicted_ms
            f.table_ms += r.predicted_ms if r.source == "table" else 0.0
            f.fallback_ms += r.predicted_ms if r.source == "fallback" else 0.0
            f.fused += r.count if r.source == "fused" else 0
            mine[r.family] = mine.get(r.family, 0.0) + (r.contribution_pct or 0.0)
        per_model.append(mine)
    for f in fams.values():
        f.contributions = [mine.get(f.family, 0.0) for mine in per_model]  # a model without the family: 0
    return sorted(fams.values(), key=lambda f: -abs(f.mean_contribution_pct))


# -- the page ---------------------------------------------------------------------------------------------------


def render_html(doc: Mapping[str, Any], *, images: Mapping[str, Path] | None = None, markdown: str = "") -> str:
    """The report as one interactive HTML page (plotly, embedded), or the static page without plotly.

    Args:
        doc: The report's dict (:meth:`mmt_nas.report.Report.to_dict`).
        images: PNG plots to embed too (by name; other files are ignored), for papers and for the static page.
        markdown: The Markdown report, the static page's text.

    Returns:
        The page, ending in ``</html>`` and a newline.
    """
    with try_import("plots", "the interactive HTML report") as imported:
        import plotly.graph_objects as go
        import plotly.io as pio
        import plotly.offline as po
    if not imported.is_successful():
        return render_static_html(images or {}, markdown)
    return _Page(doc, images or {}, go, pio).render(po.get_plotlyjs())


def render_static_html(images: Mapping[str, Path], markdown: str) -> str:
    """The page without plotly: the PNG plots over the Markdown report (escaped, in a ``<pre>``)."""
    body = html.escape(markdown)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{_TITLE}</title>"
        "<style>body{font-family:sans-serif;margin:2em}img{max-width:32%;margin:0.5%}"
        f"pre{{white-space:pre-wrap}}</style></head><body><h1>{_TITLE}</h1>"
        f"<div>{_images(images)}</div><pre>{body}</pre></body></html>\n"
    )


def _images(images: Mapping[str, Path]) -> str:
    return "".join(
        f'<img alt="{html.escape(name)}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
        for name, p in images.items()
        if p.suffix == ".png"
    )


class _Page:
    """The interactive page of one report dict."""

    def __init__(self, doc: Mapping[str, Any], images: Mapping[str, Path], go: Any, pio: Any) -> None:
        self.doc = doc
        self.images = images
        self.go = go
        self.pio = pio
        self.metrics: Mapping[str, Any] = doc.get("metrics") or {}
        self.models: list[Mapping[str, Any]] = list(doc.get("models") or [])
        self.ok = [m for m in self.models if m.get("status") == "ok"]
        self.families = family_rows(self.models)
        floors = sorted(f for m in self.ok if (f := m.get("noise_floor_pct")) is not None)
        self.floor_pct: float | None = floors[len(floors) // 2] if floors else None  # the median model's

    def render(self, plotly_js: str) -> str:
        """The whole page, with ``plotly_js`` (plotly.js itself) inline in its head."""
        plotly_js = plotly_js.replace("</script", "<\\/script")  # (it holds none; a newer bundle must not break us)
        dev = self.doc.get("table", {}).get("device") or {}
        meta = (
            f"Device: {_e(dev.get('cpu_model', '?'))}, {_e(dev.get('cpu_count', '?'))} cores, MNN "
            f"{_e(dev.get('mnn_version', '?'))}. Created {_e(self.doc.get('created', '?'))}; "
            f"{_e(self.doc.get('table', {}).get('entries', '?'))} table entries."
        )
        sections = [
            self._summary(),
            self._plots(),
            self._models_table(),
            self._families(),
            self._drilldowns(),
            self._intervals(),
            self._all_metrics(),
            self._static_plots(),
        ]
        return (
            "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{_TITLE}</title><style>{_CSS}</style>"
            "<script type='text/javascript'>window.PlotlyConfig = {MathJaxConfig: 'local'};</script>"
            f"<script type='text/javascript' charset='utf-8'>{plotly_js}</script></head><body>"
            f"<header><h1>Prediction-error report</h1><p class='meta'>{meta}</p>"
            "<nav><a href='#summary'>Summary</a> <a href='#plots'>Plots</a> <a href='#models'>Models</a> "
            "<a href='#families'>Op families</a> <a href='#drilldowns'>Op by op</a> <a href='#metrics'>Metrics</a>"
            "</nav></header><main>" + "".join(s for s in sections if s) + f"</main><script>{_JS}</script>"
            "</body></html>\n"
        )

    # -- the summary in words -------------------------------------------------------------------------------

    def _summary(self) -> str:
        m = self.metrics
        n = int(m.get("n") or 0)
        items: list[str] = []
        failed = int(m.get("n_failed") or 0)
        if n == 0:
            items.append(
                f"No model was both measured and predicted ({len(self.models)} in the report"
                + (f", {failed} failed" if failed else "")
                + ")."
            )
        else:
            w5, w10 = m.get("within_5_pct") or 0.0, m.get("within_10_pct") or 0.0
            items.append(
                f"<b>{round(w10 * n / 100)} of {n} models ({w10:.0f}%) are within ±10%</b> of their measured "
                f"latency, and {round(w5 * n / 100)} ({w5:.0f}%) within ±5%."
                + (f" {failed} more failed (see the models table)." if failed else "")
            )
            bias = m.get("mean_signed_error_pct")
            if bias is not None:
                side = "above" if bias > 0 else "below"
                items.append(
                    f"<b>Bias</b>: the predictions are on average {abs(bias):.1f}% {side} the measurements (mean "
                    f"signed error {bias:+.1f}%); the mean absolute error is {_num(m.get('mape_pct'), '.1f')}% "
                    f"(MAPE; RMSPE {_num(m.get('rmspe_pct'), '.1f')}%)."
                )
            tau = m.get("kendall_tau")
            if tau is not None and n >= 2:
                items.append(
                    f"Ranking: Kendall τ {tau:.2f}, Spearman ρ {_num(m.get('spearman_rho'), '.2f')} (1: the "
                    "predictions order the models as the measurements do)."
                )
        items.append(self._error_sources())
        items.append(self._noise_sentence())
        check = self.doc.get("intervals")
        if check:
            own = check["as_predicted"]
            kind = "calibrated" if own["calibrated"] else "the uncalibrated prior"
            items.append(
                f"<b>Intervals</b>: the predictions' 90% intervals ({kind}) hold "
                f"{100 * own['coverage']['0.9']:.0f}% of the {check['n_models']} measured models; their median "
                f"width is {100 * own['median_width']:.0f}% of the prediction."
            )
        lis = "".join(f"<li>{s}</li>" for s in items if s)
        return f"<section id='summary'><h2>Summary</h2><ul class='summary'>{lis}</ul></section>"

    def _error_sources(self) -> str:
        fams = [f for f in self.families if f.contributions]
        parts = []
        if fams:
            k = len(fams[0].contributions)
            top = ", ".join(
                f"{_e(f.family)} {f.mean_contribution_pct:+.1f} pp" for f in fams[:4] if abs(f.mean_contribution_pct)
            )
            parts.append(
                "<b>Where the error comes from</b>: each op family's predicted minus in-context time (MNN's "
                f"profile of the whole model), in percentage points of the measured time, averaged over the {k} "
                f"profiled models (they add up to the bias): {top or 'nothing'}. "
                f"“{_e(UNATTRIBUTED)}” is time MNN spends outside the counted ops (layout conversions, …)."
            )
        share = self.metrics.get("fallback_share_pct")
        if share is not None:
            parts.append(
                f"{share:.0f}% of the predicted time comes from the fallback estimator, the rest from the table."
                if share > 0
                else "All predicted time comes from the latency table (no fallback)."
            )
        return " ".join(parts)

    def _noise_sentence(self) -> str:
        m = self.metrics
        perfect, within = m.get("perfect_predictor_mape_pct"), m.get("within_noise_pct")
        if self.floor_pct is None:
            table = m.get("table_noise_floor_median_pct")
            return "<b>Noise floor</b>: unknown " + (
                f"(the table's ops spread by {table:.1f}% between rounds; measure the models with --repeats 2 or "
                "more to know theirs)."
                if table is not None
                else "(measure the table in rounds and the models with --repeats 2 or more to know it)."
            )
        text = (
            f"<b>Noise floor</b>: the measurements themselves spread by {self.floor_pct:.1f}% (the median model's "
            "run-to-run spread combined with the table's), so a perfect predictor would still show a mean "
            f"absolute error of {_num(perfect, '.1f')}%."
        )
        if within is not None:
            text += f" {within:.0f}% of the models are within their noise (an error within twice their floor)."
        return text

    # -- plots ---------------------------------------------------------------------------------------------------

    def _figure_html(self, fig: Any, div_id: str, post_script: str | None = None) -> str:
        return str(
            self.pio.to_html(
                fig,
                full_html=False,
                include_plotlyjs=False,
                div_id=div_id,
                config={"displaylogo": False, "responsive": True},
                post_script=post_script,
                default_height="480px",
            )
        )

    def _plots(self) -> str:
        pts = [m for m in self.ok if m.get("measured_ms") and m.get("predicted_ms")]
        if not pts:
            return ""
        scatter = self._figure_html(
            self._scatter(pts),
            "plot-pred-vs-measured",
            "var gd = document.getElementById('{plot_id}'); gd.on('plotly_click', function (ev) {"
            " var p = ev.points && ev.points[0]; if (p && p.customdata != null) { window.mmtOpenDrill(p.customdata); }"
            " });",
        )
        hist = self._figure_html(self._histogram(pts), "plot-error-distribution")
        return (
            "<section id='plots'><h2>Predicted vs measured</h2><p class='hint'>Hover a point for its numbers; click "
            "it to open its ops below. Error bars: the prediction's interval. Log axes.</p>"
            f"{scatter}<h2>Error distribution</h2>{hist}</section>"
        )

    def _scatter(self, pts: Sequence[Mapping[str, Any]]) -> Any:
        go = self.go
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
        if self.floor_pct is not None:
            band(
                min(0.95, 2 * self.floor_pct / 100),
                f"noise floor ×2 (±{2 * self.floor_pct:.1f}%)",
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
        index = {id(m): i for i, m in enumerate(self.models)}
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

    def _histogram(self, pts: Sequence[Mapping[str, Any]]) -> Any:
        go = self.go
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
        if self.floor_pct is not None:
            f2 = 2 * self.floor_pct
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

    # -- tables ----------------------------------------------------------------------------------------------

    def _models_table(self) -> str:
        if not self.models:
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
        for i, m in enumerate(self.models):
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

    def _families(self) -> str:
        if not self.families:
            return ""
        go = self.go
        fams = self.families
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
            + self._figure_html(fig, "plot-families")
            + _table(head, rows, "families-table")
            + "</section>"
        )

    def _drilldowns(self) -> str:
        if not self.models:
            return ""
        parts = [
            "<section id='drilldowns'><h2>Op by op, per model</h2><p class='hint'>Each model's ops: predicted "
            "alone vs in context, share of the prediction, source, and contribution to the model's error "
            "(percentage points; the rows add up to the error). <button type='button' data-drill='open'>Open "
            "all</button> <button type='button' data-drill='close'>Close all</button></p>"
        ]
        for i, m in enumerate(self.models):
            parts.append(self._drilldown(i, m))
        parts.append("</section>")
        return "".join(parts)

    def _drilldown(self, i: int, m: Mapping[str, Any]) -> str:
        err = m.get("error_pct")
        parts = [
            "not measured" if m.get("measured_ms") is None else f"measured {_fmt(m['measured_ms'])} ms",
            "not predicted" if m.get("predicted_ms") is None else f"predicted {_fmt(m['predicted_ms'])} ms",
        ]
        if err is not None:
            parts.append(f"error <span class='{_error_class(err)}'>{err:+.1f}%</span>")
        head_line = ", ".join(parts)
        out = [
            f"<details class='drilldown' id='model-{i}'><summary><span class='model-name'>{_e(m['name'])}</span> "
            f"<span class='muted'>{head_line}</span></summary><div class='drill-body'>"
        ]
        if m.get("error"):
            out.append(f"<p class='error-text'>{_e(m['error'])}</p>")
        rows = op_rows(m)
        if not rows:
            out.append("<p>No prediction to break down.</p></div></details>")
            return "".join(out)
        if rows[-1].family != UNATTRIBUTED:
            out.append("<p class='hint'>Not profiled in context (or not measured): predicted times only.</p>")
        biggest = max((abs(r.contribution_pct or 0.0) for r in rows), default=0.0)
        head = [
            "op",
            "family",
            "source",
            "runs",
            "predicted ms",
            "in context ms",
            "context / predicted",
            "share %",
            "error contribution pp",
        ]
        body = []
        for r in sorted(
            rows, key=lambda r: -abs(r.contribution_pct or 0.0) if r.contribution_pct is not None else -r.predicted_ms
        ):
            if r.family == UNATTRIBUTED:
                label = (
                    f"<td class='op'><i>{_e(UNATTRIBUTED)}</i> <span class='muted'>(layout conversions, …)</span></td>"
                )
            else:
                names = ", ".join(r.names)
                calibrated = "" if r.ratio == 1.0 else f"; calibrated ×{r.ratio:.3g}"
                label = (
                    f"<td class='op' title='{_e(r.key)}{_e(calibrated)}'><b>{_e(r.class_name)}</b> "
                    f"<span class='muted'>{_e(names[:120])}</span><br><code>{_e(_short(r.key))}</code></td>"
                )
            ratio = r.in_context_ms / r.predicted_ms if r.in_context_ms is not None and r.predicted_ms else None
            body.append(
                f"<tr>{label}<td>{_e(r.family)}</td>"
                f"<td>{f'<span class=src-{_e(r.source)}>{_e(r.source)}</span>' if r.source else '–'}</td>"
                + _ncell(r.count if r.source or r.key else None, digits=0)
                + _ncell(r.predicted_ms if r.key else None)
                + _ncell(r.in_context_ms)
                + _ncell(ratio)
                + _ncell(100 * r.share if r.key else None)
                + (_contribution_cell(r.contribution_pct, biggest) if r.contribution_pct is not None else "<td>–</td>")
                + "</tr>"
            )
        total_ctx = m.get("measured_ms") if rows[-1].family == UNATTRIBUTED else None
        foot = (
            "<tr><td>total</td><td></td><td></td><td></td>"
            f"<td>{_fmt(m.get('predicted_ms'))}</td><td>{_fmt(total_ctx)}</td><td></td><td>100</td>"
            f"<td>{'' if err is None or total_ctx is None else f'{err:+.2f}'}</td></tr>"
        )
        out.append(_table(head, body, f"ops-{i}", foot=foot))
        out.append("</div></details>")
        return "".join(out)

    def _intervals(self) -> str:
        check = self.doc.get("intervals")
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

    def _all_metrics(self) -> str:
        rows = [
            f"<tr><td>{_e(k)}</td>{_ncell(v) if isinstance(v, (int, float)) else f'<td>{_e(v)}</td>'}</tr>"
            for k, v in self.metrics.items()
        ]
        settings = json.dumps(self.doc.get("settings") or {}, sort_keys=True, default=str)
        runtime = json.dumps((self.doc.get("table") or {}).get("runtime") or {}, sort_keys=True, default=str)
        return (
            "<section id='metrics'><h2>All metrics</h2>"
            + _table(["metric", "value"], rows, "metrics-table")
            + f"<p class='muted'>Settings: <code>{_e(settings)}</code>. Runtime: <code>{_e(runtime)}</code>.</p>"
            "</section>"
        )

    def _static_plots(self) -> str:
        imgs = _images(self.images)
        if not imgs:
            return ""
        return (
            "<details id='static-plots'><summary>The static plots (the PNGs next to report.md, for papers)"
            f"</summary><div class='pngs'>{imgs}</div></details>"
        )


# -- small HTML pieces ------------------------------------------------------------------------------------------


def _e(value: Any) -> str:
    """``value`` as HTML text, safe in element content and in quoted attributes."""
    return html.escape(str(value), quote=True)


def _hover(m: Mapping[str, Any]) -> str:
    """A model's hover text (plotly renders a few tags, so the name is escaped like HTML)."""
    iv = (m.get("prediction") or {}).get("interval") or {}
    lines = [
        f"<b>{_e(m['name'])}</b>",
        f"measured {_fmt(m.get('measured_ms'))} ms",
        f"predicted {_fmt(m.get('predicted_ms'))} ms",
        f"error {_num(m.get('error_pct'), '+.1f')}%",
    ]
    if iv.get("lower_ms") is not None:
        lines.append(
            f"{100 * float(iv.get('confidence', 0.9)):.0f}% interval {_fmt(iv['lower_ms'])} – {_fmt(iv['upper_ms'])}"
            f" ms{'' if iv.get('calibrated') else ' (prior)'}"
        )
    if m.get("noise_floor_pct") is not None:
        lines.append(f"noise floor {m['noise_floor_pct']:.1f}%")
    return "<br>".join(lines)


def _table(head: Sequence[str], rows: Sequence[str], table_id: str, foot: str = "") -> str:
    ths = "".join(f"<th scope='col'>{_e(h)}</th>" for h in head)
    tfoot = f"<tfoot>{foot}</tfoot>" if foot else ""
    return (
        f"<div class='table-wrap'><table class='sortable' id='{_e(table_id)}'><thead><tr>{ths}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody>{tfoot}</table></div>"
    )


def _ncell(value: Any, *, signed: bool = False, digits: int | None = None, cls: str = "") -> str:
    """A numeric cell: shown formatted, sorted by its value (``data-v``; empty sorts last)."""
    klass = f" class='num {cls}'" if cls else " class='num'"
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return f"<td{klass} data-v=''>–</td>"
    if digits == 0:
        text = str(int(round(value)))
    elif signed:
        text = f"{value:+.1f}"
    else:
        text = _fmt(value)
    return f"<td{klass} data-v='{_v(value)}'>{text}</td>"


def _contribution_cell(value: float | None, biggest: float) -> str:
    """A contribution to the error, with a bar as long as its share of the biggest one in its table."""
    if value is None:
        return "<td class='num' data-v=''>–</td>"
    width = 0.0 if not biggest else 100 * abs(value) / biggest
    side = "over" if value > 0 else "under"
    return (
        f"<td class='num contrib' data-v='{_v(value)}'>{value:+.2f}<span class='track'>"
        f"<span class='bar {side}' style='width:{width:.0f}%'></span></span></td>"
    )


def _note_cell(error: str | None) -> str:
    """A failure, shortened (the whole message is its tooltip and in the model's drill-down)."""
    if not error:
        return "<td></td>"
    return f"<td class='note' title='{_e(error)}'>{_e(_short(error, 80))}</td>"


def _gap(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else float(a) - float(b)


def _v(value: Any) -> str:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return ""
    return repr(float(value))


def _error_class(err: float | None) -> str:
    if err is None:
        return ""
    return "good" if abs(err) <= 5 else "fair" if abs(err) <= 10 else "bad"


def _short(key: str, n: int = 90) -> str:
    return key if len(key) <= n else key[: n - 1] + "…"


def _num(v: Any, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.0f}%"


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.3g}" if abs(v) < 100 else f"{v:.1f}"
    return str(v)


_CSS = """
:root{--fg:#1d2330;--muted:#667085;--line:#e4e7ec;--bg:#fff;--alt:#f8f9fb;--good:#1a7f37;--fair:#9a6700;
--bad:#cf222e;--over:#e8590c;--under:#1971c2}
*{box-sizing:border-box}
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:var(--fg);
background:var(--bg);margin:0}
header{padding:1.2em 2em .6em;border-bottom:1px solid var(--line);background:var(--alt)}
header h1{margin:0 0 .2em;font-size:1.6em}
nav a{margin-right:1em;color:#0969da;text-decoration:none}
main{padding:0 2em 3em;max-width:1400px}
h2{margin:1.6em 0 .5em;font-size:1.25em;border-bottom:1px solid var(--line);padding-bottom:.2em}
.meta,.muted,.hint{color:var(--muted)}
.hint{font-size:.92em}
ul.summary{font-size:1.05em;padding-left:1.2em}
ul.summary li{margin:.35em 0}
.table-wrap{overflow-x:auto}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:.9em;min-width:40%}
th,td{border-bottom:1px solid var(--line);padding:.3em .5em;text-align:left;vertical-align:top}
th{background:var(--alt);cursor:pointer;user-select:none;vertical-align:bottom}
th::after{content:" \\2195";color:#b0b7c3;font-size:.85em}
th[aria-sort=ascending]::after{content:" \\25B2";color:var(--fg)}
th[aria-sort=descending]::after{content:" \\25BC";color:var(--fg)}
tbody tr:nth-child(even){background:var(--alt)}
tfoot td{font-weight:600;border-top:2px solid var(--line)}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.note{max-width:16em;color:var(--bad);font-size:.88em}
td.op{min-width:18em;max-width:34em}
code{font-size:.85em;color:#57606a;word-break:break-all}
.good{color:var(--good)}.fair{color:var(--fair)}.bad{color:var(--bad)}
td.contrib .track{display:inline-block;width:4.5em;height:.75em;margin-left:.4em;vertical-align:middle}
td.contrib .bar{display:block;height:100%;opacity:.55}
td.contrib .bar.over{background:var(--over)}td.contrib .bar.under{background:var(--under)}
#models-table td:first-child{max-width:18em;overflow-wrap:anywhere}
.src-table{color:var(--good)}.src-fallback{color:var(--over);font-weight:600}.src-fused{color:var(--muted)}
details.drilldown{border:1px solid var(--line);border-radius:6px;margin:.4em 0;padding:.3em .8em}
details.drilldown[open]{background:#fcfcfd}
details.drilldown summary{cursor:pointer}
.model-name{font-weight:600}
.error-text{color:var(--bad);white-space:pre-wrap}
#static-plots{margin:2em 0}
.pngs img{max-width:32%;margin:.5%}
"""

_JS = """
(function () {
  "use strict";
  function value(td) {
    if (!td) { return null; }
    var v = td.getAttribute("data-v");
    if (v === null) { return td.textContent.trim().toLowerCase(); }
    return v === "" ? null : parseFloat(v);
  }
  function sortTable(table, col, th) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
    Array.prototype.forEach.call(th.parentNode.cells, function (c) { c.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
    rows.sort(function (a, b) {
      var x = value(a.cells[col]), y = value(b.cells[col]);
      if (x === null || y === null) { return x === y ? 0 : (x === null ? 1 : -1); }  // empty cells last
      if (typeof x === "number" && typeof y === "number") { return dir * (x - y); }
      return dir * String(x).localeCompare(String(y));
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    if (!table.tHead) { return; }
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.tabIndex = 0;
      th.addEventListener("click", function () { sortTable(table, col, th); });
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortTable(table, col, th); }
      });
    });
  });
  window.mmtOpenDrill = function (i) {
    var d = document.getElementById("model-" + i);
    if (d) { d.open = true; d.scrollIntoView({behavior: "smooth", block: "start"}); }
  };
  function openFromHash() {
    var d = location.hash.length > 1 ? document.getElementById(location.hash.slice(1)) : null;
    if (d && d.tagName === "DETAILS") { d.open = true; }
  }
  window.addEventListener("hashchange", openFromHash);
  openFromHash();
  document.querySelectorAll("button[data-drill]").forEach(function (b) {
    b.addEventListener("click", function () {
      var open = b.getAttribute("data-drill") === "open";
      document.querySelectorAll("details.drilldown").forEach(function (d) { d.open = open; });
    });
  });
})();
"""
