"""Small HTML pieces of the report page: escaping, number formatting, table cells."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


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


def _images(images: Mapping[str, Path]) -> str:
    return "".join(
        f'<img alt="{html.escape(name)}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
        for name, p in images.items()
        if p.suffix == ".png"
    )
