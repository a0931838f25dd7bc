"""The report page's drill-down: per model, its ops predicted alone vs in context."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mmt_nas.report.html.cells import (
    _contribution_cell,
    _e,
    _error_class,
    _fmt,
    _ncell,
    _short,
    _table,
)
from mmt_nas.report.html.rows import UNATTRIBUTED, PageData, op_rows


def drilldowns(page: PageData) -> str:
    if not page.models:
        return ""
    parts = [
        "<section id='drilldowns'><h2>Op by op, per model</h2><p class='hint'>Each model's ops: predicted "
        "alone vs in context, share of the prediction, source, and contribution to the model's error "
        "(percentage points; the rows add up to the error). <button type='button' data-drill='open'>Open "
        "all</button> <button type='button' data-drill='close'>Close all</button></p>"
    ]
    for i, m in enumerate(page.models):
        parts.append(drilldown(page, i, m))
    parts.append("</section>")
    return "".join(parts)


def drilldown(page: PageData, i: int, m: Mapping[str, Any]) -> str:
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
            label = f"<td class='op'><i>{_e(UNATTRIBUTED)}</i> <span class='muted'>(layout conversions, …)</span></td>"
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
