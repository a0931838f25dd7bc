"""The report as one self-contained, interactive HTML page that works offline (plotly, embedded).

:func:`render_html` assembles the page (:mod:`~mmt_nas.report.html.page`) from its figures
(:mod:`~mmt_nas.report.html.figures`), tables (:mod:`~mmt_nas.report.html.tables`) and per-model drill-downs
(:mod:`~mmt_nas.report.html.drilldown`); what they show, each op's share of a model's error, is
:mod:`~mmt_nas.report.html.rows`.
"""

from __future__ import annotations

from mmt_nas.report.html.page import render_html, render_static_html
from mmt_nas.report.html.rows import UNATTRIBUTED, FamilyRow, OpRow, family_rows, op_rows

__all__ = ["UNATTRIBUTED", "FamilyRow", "OpRow", "family_rows", "op_rows", "render_html", "render_static_html"]
