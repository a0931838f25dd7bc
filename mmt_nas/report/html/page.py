"""A prediction-error report as one self-contained, interactive HTML page that works offline.

:func:`render_html` turns a report's JSON-ready dict (:meth:`mmt_nas.report.document.Report.to_dict`) into a page: a
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

import html
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmt_nas._imports import try_import
from mmt_nas.report.html.cells import _e, _images, _num
from mmt_nas.report.html.drilldown import drilldowns
from mmt_nas.report.html.figures import plots
from mmt_nas.report.html.rows import UNATTRIBUTED, PageData
from mmt_nas.report.html.style import _CSS, _JS
from mmt_nas.report.html.tables import all_metrics, families_section, intervals_table, models_table

__all__ = ["render_html", "render_static_html"]

_TITLE = "mmt_nas prediction-error report"


def render_html(doc: Mapping[str, Any], *, images: Mapping[str, Path] | None = None, markdown: str = "") -> str:
    """The report as one interactive HTML page (plotly, embedded), or the static page without plotly.

    Args:
        doc: The report's dict (:meth:`mmt_nas.report.document.Report.to_dict`).
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
    return _page(PageData.of(doc, images or {}, go, pio), po.get_plotlyjs())


def render_static_html(images: Mapping[str, Path], markdown: str) -> str:
    """The page without plotly: the PNG plots over the Markdown report (escaped, in a ``<pre>``)."""
    body = html.escape(markdown)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{_TITLE}</title>"
        "<style>body{font-family:sans-serif;margin:2em}img{max-width:32%;margin:0.5%}"
        f"pre{{white-space:pre-wrap}}</style></head><body><h1>{_TITLE}</h1>"
        f"<div>{_images(images)}</div><pre>{body}</pre></body></html>\n"
    )


def _page(page: PageData, plotly_js: str) -> str:
    """The whole page, with ``plotly_js`` (plotly.js itself) inline in its head."""
    plotly_js = plotly_js.replace("</script", "<\\/script")  # (it holds none; a newer bundle must not break us)
    dev = page.doc.get("table", {}).get("device") or {}
    meta = (
        f"Device: {_e(dev.get('cpu_model', '?'))}, {_e(dev.get('cpu_count', '?'))} cores, MNN "
        f"{_e(dev.get('mnn_version', '?'))}. Created {_e(page.doc.get('created', '?'))}; "
        f"{_e(page.doc.get('table', {}).get('entries', '?'))} table entries."
    )
    sections = [
        summary(page),
        plots(page),
        models_table(page),
        families_section(page),
        drilldowns(page),
        intervals_table(page),
        all_metrics(page),
        static_plots(page),
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


def summary(page: PageData) -> str:
    m = page.metrics
    n = int(m.get("n") or 0)
    items: list[str] = []
    failed = int(m.get("n_failed") or 0)
    if n == 0:
        items.append(
            f"No model was both measured and predicted ({len(page.models)} in the report"
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
    items.append(error_sources(page))
    items.append(noise_sentence(page))
    check = page.doc.get("intervals")
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


def error_sources(page: PageData) -> str:
    fams = [f for f in page.families if f.contributions]
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
    share = page.metrics.get("fallback_share_pct")
    if share is not None:
        parts.append(
            f"{share:.0f}% of the predicted time comes from the fallback estimator, the rest from the table."
            if share > 0
            else "All predicted time comes from the latency table (no fallback)."
        )
    return " ".join(parts)


def noise_sentence(page: PageData) -> str:
    m = page.metrics
    perfect, within = m.get("perfect_predictor_mape_pct"), m.get("within_noise_pct")
    if page.floor_pct is None:
        table = m.get("table_noise_floor_median_pct")
        return "<b>Noise floor</b>: unknown " + (
            f"(the table's ops spread by {table:.1f}% between rounds; measure the models with --repeats 2 or "
            "more to know theirs)."
            if table is not None
            else "(measure the table in rounds and the models with --repeats 2 or more to know it)."
        )
    text = (
        f"<b>Noise floor</b>: the measurements themselves spread by {page.floor_pct:.1f}% (the median model's "
        "run-to-run spread combined with the table's), so a perfect predictor would still show a mean "
        f"absolute error of {_num(perfect, '.1f')}%."
    )
    if within is not None:
        text += f" {within:.0f}% of the models are within their noise (an error within twice their floor)."
    beyond = m.get("beyond_noise_pct")
    if beyond is not None:
        text += (
            f" <b>Beyond the noise</b>: the predictions' RMS log error is {_num(m.get('rms_log_error_pct'), '.1f')}%, "
            f"of which the measurements' own noise accounts for {_num(m.get('noise_rms_pct'), '.1f')}%: the model's "
            f"own error is {beyond:.1f}% RMS (90% bootstrap interval {_num(m.get('beyond_noise_low_pct'), '.1f')}–"
            f"{_num(m.get('beyond_noise_high_pct'), '.1f')}%, over {m.get('beyond_noise_n')} models)."
        )
    return text


def static_plots(page: PageData) -> str:
    imgs = _images(page.images)
    if not imgs:
        return ""
    return (
        "<details id='static-plots'><summary>The static plots (the PNGs next to report.md, for papers)"
        f"</summary><div class='pngs'>{imgs}</div></details>"
    )
