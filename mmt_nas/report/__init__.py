"""Prediction-error reports: models measured end to end against their predictions.

- :mod:`~mmt_nas.report.evaluation`: the journaled measuring and predicting (:func:`evaluate`);
- :mod:`~mmt_nas.report.metrics`: the error metrics;
- :mod:`~mmt_nas.report.document`: :class:`Report` and its JSON, Markdown, plots and HTML files;
- :mod:`~mmt_nas.report.html`: the interactive HTML page.

The public names of these modules are importable from here (``from mmt_nas.report import evaluate``).
"""

from __future__ import annotations

from mmt_nas.report.document import REPORT_FILES, Report, report_lock
from mmt_nas.report.evaluation import JOURNAL_FILENAME, ModelResult, ModelSpec, evaluate, load_model_specs
from mmt_nas.report.metrics import compute_metrics, kendall_tau, spearman_rho

__all__ = [
    "JOURNAL_FILENAME",
    "REPORT_FILES",
    "ModelResult",
    "ModelSpec",
    "Report",
    "compute_metrics",
    "evaluate",
    "kendall_tau",
    "load_model_specs",
    "report_lock",
    "spearman_rho",
]
