"""Prediction-error reports: predicted vs measured end-to-end latency, with metrics and plots.

:class:`Report` renders the results of :func:`~mmt_nas.report.evaluation.evaluate` as JSON, Markdown, a
self-contained HTML page (interactive: :mod:`mmt_nas.report.html`) and PNG plots. The measuring lives in
:mod:`mmt_nas.report.evaluation`, the error metrics in :mod:`mmt_nas.report.metrics` and the op categories in
:mod:`mmt_nas.vocab`; their public names are re-exported here, where they were first found
(``from mmt_nas.report import evaluate`` works).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmt_nas._files import atomic_write_text, atomic_writer, exclusive_lock, lock_path, remove_stale_temp_files
from mmt_nas._imports import try_import
from mmt_nas.predict.intervals import ConformalIntervals, check_intervals
from mmt_nas.predict.predictor import Prediction
from mmt_nas.report.evaluation import (
    JOURNAL_FILENAME,
    ModelResult,
    ModelSpec,
    evaluate,
    load_model_specs,
)
from mmt_nas.report.html import render_html
from mmt_nas.report.html.cells import _fmt, _pct  # the same number formatting in both
from mmt_nas.report.metrics import (
    BeyondNoise,
    beyond_noise_of,
    compute_metrics,
    kendall_tau,
    noise_variance,
    spearman_rho,
)
from mmt_nas.table.table import LatencyTable
from mmt_nas.vocab import mnn_category, op_category

__all__ = [
    "JOURNAL_FILENAME",
    "REPORT_FILES",
    "ModelSpec",
    "ModelResult",
    "Report",
    "report_lock",
    "load_model_specs",
    "evaluate",
    "compute_metrics",
    "kendall_tau",
    "spearman_rho",
    "op_category",
    "mnn_category",
]

_SCHEMA = "mmt_nas/report"
_SCHEMA_VERSION = 1
#: The files :meth:`Report.write` writes (names or patterns).
REPORT_FILES = ("report.json", "report.md", "report.html", "*.png")


class Report:
    """Results over a set of models, with metrics, and writers for JSON, Markdown, HTML and plots.

    Args:
        results: Per-model results from :func:`evaluate`.
        table: The table the predictions came from.
        settings: How the report was made (times, repeats, scenario, ...), recorded as given.
    """

    def __init__(self, results: Sequence[ModelResult], table: LatencyTable, settings: Mapping[str, Any]) -> None:
        self.results = list(results)
        self.table = table
        self.settings = dict(settings)

    def noise_floor_pct(self, result: ModelResult) -> float | None:
        """The error a perfect predictor would show for this model, in %: the spread the measurements
        themselves carry. It combines the model's own run-to-run spread (its repeated end-to-end medians,
        std / mean) with the table's (half its ops' median spread between rounds: the deviation of a
        two-round mean; ``noise_floor`` of the table), as independent errors:
        ``100 * sqrt(run_to_run_cv**2 + (table_median_spread / 2)**2)``. ``None`` when neither is known.
        An error within twice this (about a 95% band) is within the noise: no predictor could do better.
        """
        truth = result.run_to_run_cv
        floor = self.table.noise_floor()
        table_part = None if floor is None else floor.median_pct / 200
        if truth is None and table_part is None:
            return None
        return 100 * math.hypot(truth or 0.0, table_part or 0.0)

    @staticmethod
    def noise_variance(result: ModelResult) -> float | None:
        """The noise variance (log units squared) of the model's log error: its rounds' and its prediction's
        table entries' (:func:`~mmt_nas.report.metrics.noise_variance`); ``None`` with fewer than two rounds."""
        return noise_variance(result.run_medians_ms, (result.prediction or {}).get("ops") or [])

    def beyond_noise(self) -> BeyondNoise | None:
        """The models' error beyond the measurement noise (:func:`~mmt_nas.report.metrics.error_beyond_noise`),
        over the measured and predicted models whose noise is known (two rounds or more); ``None`` if none is."""
        ok = [r for r in self.results if r.ok and r.predicted_ms is not None and r.measured_ms is not None]
        return beyond_noise_of(
            [r.predicted_ms or 0.0 for r in ok],
            [r.measured_ms or 0.0 for r in ok],
            [self.noise_variance(r) for r in ok],
        )

    def within_noise(self, result: ModelResult) -> bool | None:
        """Whether the model's error is within twice its :meth:`noise_floor_pct` (``None``: unknown)."""
        floor = self.noise_floor_pct(result)
        if floor is None or result.error_pct is None:
            return None
        return abs(result.error_pct) <= 2 * floor

    @property
    def metrics(self) -> dict[str, Any]:
        """Metrics over the models that were both measured and predicted."""
        ok = [r for r in self.results if r.ok]
        predicted = [r.predicted_ms for r in ok if r.predicted_ms is not None]  # all of them: ok means both are set
        measured = [r.measured_ms for r in ok if r.measured_ms is not None]
        m: dict[str, Any] = compute_metrics(predicted, measured)
        m["n_models"] = len(self.results)
        m["n_failed"] = len(self.results) - len(ok)
        cvs = [r.within_run_cv for r in self.results if r.within_run_cv is not None]
        m["mean_within_run_cv_pct"] = 100 * sum(cvs) / len(cvs) if cvs else None
        rr = [r.run_to_run_cv for r in self.results if r.run_to_run_cv is not None]
        m["mean_run_to_run_cv_pct"] = 100 * sum(rr) / len(rr) if rr else None
        total = table_ms = 0.0
        for r in ok:
            for op in (r.prediction or {}).get("ops", []):
                total += op["total_ms"]
                table_ms += op["total_ms"] if op["source"] == "table" else 0.0
        m["table_share_pct"] = 100 * (table_ms / total) if total else None  # x / x is exactly 1; 100 * x / x is not
        m["fallback_share_pct"] = 100 - m["table_share_pct"] if total else None
        floors = [f for r in ok if (f := self.noise_floor_pct(r)) is not None]
        # a perfect predictor's mean |error| when the truth carries N(0, floor) noise: floor * sqrt(2 / pi)
        m["perfect_predictor_mape_pct"] = math.sqrt(2 / math.pi) * sum(floors) / len(floors) if floors else None
        marks = [w for r in ok if (w := self.within_noise(r)) is not None]
        m["within_noise_pct"] = 100 * sum(marks) / len(marks) if marks else None
        beyond = self.beyond_noise()
        m["rms_log_error_pct"] = None if beyond is None else beyond.rms_pct
        m["noise_rms_pct"] = None if beyond is None else beyond.noise_pct
        m["beyond_noise_pct"] = None if beyond is None else beyond.beyond_pct
        m["beyond_noise_low_pct"] = None if beyond is None else beyond.low_pct
        m["beyond_noise_high_pct"] = None if beyond is None else beyond.high_pct
        m["beyond_noise_n"] = 0 if beyond is None else beyond.n
        table_floor = self.table.noise_floor()
        m["table_noise_floor_median_pct"] = None if table_floor is None else table_floor.median_pct
        m["table_noise_floor_p90_pct"] = None if table_floor is None else table_floor.p90_pct
        return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in m.items()}

    def interval_check(self) -> dict[str, Any] | None:
        """How honest the predictions' intervals were on these models (``None`` for fewer than 3 measured).

        ``as_predicted``: the intervals the predictions came with (the predictor's: the uncalibrated prior, or
        the conformal intervals it was given, which must not have been fitted on these models);
        ``conformal`` and ``prior``: :func:`~mmt_nas.predict.intervals.check_intervals`, each model's conformal
        interval fitted on the *other* models (leave one out, or one architecture out when names carry
        ``@resolution``). Each holds coverage at 80/90/95%, the median 90% width (relative) and the
        false-feasible rates at the 25th/50th/75th percentile budgets: point prediction vs chance constraint
        at 0.9.
        """
        ok = [r for r in self.results if r.ok and r.prediction is not None and r.measured_ms is not None]
        if len(ok) < 3:
            return None
        preds = [Prediction.from_dict(r.prediction) for r in ok if r.prediction is not None]
        measured = [float(r.measured_ms) for r in ok if r.measured_ms is not None]
        groups = [r.name.split("@", 1)[0] for r in ok]
        out = check_intervals([float(p) for p in preds], [p.sigma for p in preds], measured, groups)
        levels = (0.8, 0.9, 0.95)
        own = {str(c): sum(lo <= m <= hi for p, m in zip(preds, measured) for lo, hi in [p.interval(c)]) / len(ok)
               for c in levels}  # fmt: skip
        widths = sorted((hi - lo) / float(p) for p in preds for lo, hi in [p.interval(0.9)])
        out["as_predicted"] = {
            "coverage": own,
            "median_width": widths[len(widths) // 2],
            "calibrated": all(p.calibrated for p in preds),
            "basis": preds[0].intervals.describe(),
        }
        return out

    def fit_intervals(self) -> ConformalIntervals:
        """:class:`~mmt_nas.predict.intervals.ConformalIntervals` fitted on these measured models (for *other* models:
        ``mmt-nas predict --intervals``).

        Raises:
            OptionError: Fewer than 2 models were both measured and predicted.
        """
        ok = [r for r in self.results if r.ok and r.prediction is not None]
        preds = [Prediction.from_dict(r.prediction) for r in ok if r.prediction is not None]
        return ConformalIntervals().fit(
            [float(p) for p in preds], [p.sigma for p in preds], [float(r.measured_ms or 0.0) for r in ok],
            [r.name for r in ok],
        )  # fmt: skip

    def category_totals(self) -> dict[str, dict[str, float]]:
        """Predicted vs in-context ms per op category, summed over the models."""
        out: dict[str, dict[str, float]] = {}
        for r in self.results:
            for cat, v in r.by_category.items():
                d = out.setdefault(cat, {"predicted_ms": 0.0, "in_context_ms": 0.0})
                d["predicted_ms"] += v["predicted_ms"]
                d["in_context_ms"] += v["in_context_ms"]
        return out

    def to_dict(self) -> dict[str, Any]:
        """The whole report as a JSON-ready dict."""
        return {
            "schema": _SCHEMA,
            "schema_version": _SCHEMA_VERSION,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "settings": self.settings,
            "table": {
                "entries": len(self.table),
                "runtime": self.table.settings.to_dict(),
                "device": self.table.device,
            },
            "metrics": self.metrics,
            "intervals": self.interval_check(),
            "by_category": self.category_totals(),
            "models": [
                {**r.to_dict(), "noise_floor_pct": self.noise_floor_pct(r), "within_noise": self.within_noise(r)}
                for r in self.results
            ],
        }

    def markdown(self) -> str:
        """A Markdown summary: metrics, error by op category, and one row per model."""
        m = self.metrics
        dev = self.table.device
        lines = [
            "# Prediction-error report",
            "",
            f"Device: {dev.get('cpu_model', '?')}, {dev.get('cpu_count', '?')} cores, "
            f"MNN {dev.get('mnn_version', '?')}; "
            f"{self.table.settings}. Settings: {json.dumps(self.settings)}.",
            "",
            "| metric | value |",
            "| --- | --- |",
        ]
        for key in (
            "n_models",
            "n_failed",
            "within_10_pct",
            "within_5_pct",
            "within_noise_pct",
            "mape_pct",
            "perfect_predictor_mape_pct",
            "beyond_noise_pct",
            "beyond_noise_low_pct",
            "beyond_noise_high_pct",
            "rms_log_error_pct",
            "noise_rms_pct",
            "rmspe_pct",
            "mae_ms",
            "rmse_ms",
            "mean_signed_error_pct",
            "kendall_tau",
            "spearman_rho",
            "mean_within_run_cv_pct",
            "mean_run_to_run_cv_pct",
            "table_noise_floor_median_pct",
            "table_noise_floor_p90_pct",
            "table_share_pct",
            "fallback_share_pct",
        ):
            lines.append(f"| {key} | {_fmt(m.get(key))} |")
        cats = self.category_totals()
        if cats:
            lines += [
                "",
                "Where the time goes, summed over the models: predicted (ops timed alone) vs in context "
                "(MNN's per-op profile of each whole model). `block`: composite modules counted whole.",
                "",
                "| op category | predicted ms | in-context ms | difference ms |",
                "| --- | --- | --- | --- |",
            ]
            for cat, v in sorted(cats.items(), key=lambda kv: -abs(kv[1]["predicted_ms"] - kv[1]["in_context_ms"])):
                lines.append(
                    f"| {cat} | {v['predicted_ms']:.2f} | {v['in_context_ms']:.2f} | "
                    f"{v['predicted_ms'] - v['in_context_ms']:+.2f} |"
                )
        lines += [
            "",
            "A perfect predictor would still show the noise floor: the spread of the measurements themselves "
            "(the model's run-to-run spread with the table's). `within noise`: the error is within twice it.",
            "",
            "| model | input | measured ms | run-to-run CV | predicted ms | error | noise floor | within noise "
            "| note |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in self.results:
            note = (r.error or "").replace("|", "/").replace("\n", " ")[:160]
            within = self.within_noise(r)
            lines.append(
                f"| {r.name} | {'x'.join(map(str, r.input_shape))} | {_fmt(r.measured_ms)} | "
                f"{_fmt(None if r.run_to_run_cv is None else 100 * r.run_to_run_cv)}% | {_fmt(r.predicted_ms)} | "
                f"{'' if r.error_pct is None else f'{r.error_pct:+.1f}%'} | {_fmt(self.noise_floor_pct(r))}% | "
                f"{'' if within is None else ('yes' if within else 'no')} | {note} |"
            )
        lines += self._intervals_markdown()
        lines += self._ops_in_context_markdown()
        return "\n".join(lines) + "\n"

    def _intervals_markdown(self) -> list[str]:
        """The intervals' coverage, width and false-feasible rates (see :meth:`interval_check`)."""
        check = self.interval_check()
        if check is None:
            return []
        out = [
            "",
            "## How sure were the predictions?",
            "",
            f"Share of the {check['n_models']} measured models inside their interval (coverage), the median 90% "
            "interval's width relative to the prediction, and at budgets set at the 25th/50th/75th percentile of the "
            "measured latencies the share measured over budget among the models a constraint keeps: point "
            "prediction vs chance constraint at 0.9 (models kept in brackets). Leave-one-out: each model's "
            "interval fitted on the others only.",
            "",
            "| intervals | coverage 80 / 90 / 95% | median 90% width | over budget, point vs chance (p25; p50; p75) |",
            "| --- | --- | --- | --- |",
        ]
        own = check["as_predicted"]
        label = "as predicted (" + ("calibrated" if own["calibrated"] else "uncalibrated prior") + ")"
        rows = [(label, own, None), ("prior", check["prior"], check["prior"]["false_feasible"])]
        if check["conformal"] is not None:
            rows.append(("conformal, leave one out", check["conformal"], check["conformal"]["false_feasible"]))
        for name, d, ff in rows:
            cov = " / ".join(f"{100 * d['coverage'][c]:.0f}%" for c in ("0.8", "0.9", "0.95"))
            rates = "–" if ff is None else "; ".join(
                f"{_pct(v['point'])} ({v['n_point']}) vs {_pct(v['chance'])} ({v['n_chance']})" for v in ff.values()
            )  # fmt: skip
            out.append(f"| {name} | {cov} | {100 * d['median_width']:.0f}% | {rates} |")
        return out

    def _ops_in_context_markdown(self, top: int = 8) -> list[str]:
        """Per model, the ops whose in-context time is furthest from their prediction."""
        out: list[str] = []
        for r in self.results:
            rows = [o for o in r.ops_in_context if o.get("predicted_ms") is not None]
            if not rows:
                continue
            rows.sort(key=lambda o: -abs(o["in_context_ms"] - o["predicted_ms"]))
            out += [
                "",
                f"### {r.name}: the ops furthest from their prediction ({min(top, len(rows))} of {len(rows)} profiled)",
                "",
                "Alone: timed alone (hot); cold: with copies cycled (a large model's cache state); in context: "
                "MNN's profile of the whole model, scaled to its measured time. Bytes in KB.",
                "",
                "| op | family | alone ms | cold ms | predicted ms | in context ms | in context / alone | weights | "
                "input | output | after |",
                "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
            ]
            for o in rows[:top]:
                kb = [
                    None if o.get(k) is None else o[k] / 1024 for k in ("weight_bytes", "input_bytes", "output_bytes")
                ]
                out.append(
                    f"| {o['name']} ({o['class_name']}) | {o['family']} | {_fmt(o['alone_ms'])} | "
                    f"{_fmt(o['cold_ms'])} | {_fmt(o['predicted_ms'])} | {_fmt(o['in_context_ms'])} | "
                    f"{_fmt(o['ratio'])} | "
                    f"{_fmt(kb[0])} | {_fmt(kb[1])} | {_fmt(kb[2])} | {o['before'] or '-'} |"
                )
        return out

    def write(self, folder: str | os.PathLike[str], *, plots: bool = True, lock: bool = True) -> dict[str, Path]:
        """Write ``report.json``, ``report.md``, the PNG plots and ``report.html`` into ``folder``.

        Each file is written atomically (the old one or the new one, never half); temporaries that a
        killed writer left there are removed. The files are written under :func:`report_lock`, so that
        two reports into one folder never mix their files.

        Args:
            folder: The report's folder (created if needed).
            plots: Also write the PNG plots (needs matplotlib) and the HTML page (interactive with plotly; both in
                the ``plots`` extra).
            lock: Take :func:`report_lock` on ``folder`` for the write. Pass ``False`` only when the caller
                already holds it (as ``mmt-nas report`` does, from before it measures).

        Returns:
            The paths written, by name.

        Raises:
            LockedError: Another process is writing a report into ``folder``.
        """
        out = Path(folder)
        if lock:
            with report_lock(out):
                return self._write(out, plots)
        return self._write(out, plots)

    def _write(self, out: Path, plots: bool) -> dict[str, Path]:
        out.mkdir(parents=True, exist_ok=True)
        paths = {"json": out / "report.json", "md": out / "report.md"}
        doc, md = self.to_dict(), self.markdown()
        atomic_write_text(paths["json"], json.dumps(doc, indent=1, allow_nan=False) + "\n")
        atomic_write_text(paths["md"], md)
        if plots:
            paths.update(self._plots(out))
            paths["html"] = out / "report.html"
            atomic_write_text(paths["html"], self._html(paths, doc, md))
        remove_stale_temp_files(out, REPORT_FILES)
        return paths

    def _plots(self, out: Path) -> dict[str, Path]:
        with try_import("plots", "plotting a report (skip it with plots=False, or --no-plots)") as imported:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        imported.check()
        ok = [r for r in self.results if r.ok]
        meas = [r.measured_ms for r in ok if r.measured_ms is not None]
        pred = [r.predicted_ms for r in ok if r.predicted_ms is not None]
        paths = {}

        fig, ax = plt.subplots(figsize=(5.5, 5))
        if ok:
            lo, hi = min(meas + pred) * 0.8, max(meas + pred) * 1.25
            xs = [lo, hi]
            ax.fill_between(
                xs, [x * 0.9 for x in xs], [x * 1.1 for x in xs], color="tab:green", alpha=0.15, label="±10%"
            )
            ax.plot(xs, xs, color="gray", lw=1, label="predicted = measured")
            ax.scatter(meas, pred, s=18, color="tab:blue", zorder=3)
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_xlabel("measured latency (ms)")
        ax.set_ylabel("predicted latency (ms)")
        ax.set_title(f"{len(ok)} models, ±10%: {_fmt(self.metrics.get('within_10_pct'))}%")
        ax.legend(loc="upper left")
        paths["pred_vs_measured"] = _save(fig, out / "pred_vs_measured.png", plt)

        fig, ax = plt.subplots(figsize=(6, 4))
        errs = [r.error_pct for r in ok if r.error_pct is not None]
        ax.hist(errs, bins=max(5, min(30, len(errs))), color="tab:blue")
        ax.axvline(0, color="gray", lw=1)
        for v in (-10, 10):
            ax.axvline(v, color="tab:green", lw=1, ls="--")
        ax.set_xlabel("prediction error (%)")
        ax.set_ylabel("models")
        paths["error_histogram"] = _save(fig, out / "error_histogram.png", plt)

        cats = self.category_totals()
        fig, ax = plt.subplots(figsize=(7, 4))
        names = sorted(cats, key=lambda c: -abs(cats[c]["predicted_ms"] - cats[c]["in_context_ms"]))
        if names:
            idx = range(len(names))
            ax.bar([i - 0.2 for i in idx], [cats[c]["predicted_ms"] for c in names], 0.4, label="predicted (alone)")
            ax.bar([i + 0.2 for i in idx], [cats[c]["in_context_ms"] for c in names], 0.4, label="in context")
            ax.set_xticks(list(idx))
            ax.set_xticklabels(names)
            ax.legend()
        ax.set_ylabel("ms, summed over models")
        ax.set_title("Error by op type: predicted vs in-context time")
        paths["error_by_op_type"] = _save(fig, out / "error_by_op_type.png", plt)
        return paths

    def _html(self, paths: Mapping[str, Path], doc: Mapping[str, Any] | None = None, md: str | None = None) -> str:
        """The page ``report.html``: interactive with plotly (:func:`mmt_nas.report.html.render_html`), else the
        PNG plots over the Markdown report. ``doc`` and ``md``: :meth:`to_dict` and :meth:`markdown`, if already
        made."""
        return render_html(
            self.to_dict() if doc is None else doc, images=paths, markdown=self.markdown() if md is None else md
        )


def report_lock(folder: str | os.PathLike[str]) -> contextlib.AbstractContextManager[None]:
    """An exclusive lock on a report's folder for the whole of writing a report there; refused if another holds it.

    A report's journal and files are written over a long time (``mmt-nas report`` holds this from before it
    measures until its files are written and its journal removed); two reports into one folder would
    interleave them. The lock is the file ``.report.json.lock`` in ``folder``, released when its holder
    exits, however it exits (see :func:`mmt_nas._files.exclusive_lock`).

    Raises:
        LockedError: Another process holds it; the message names that process.
    """
    out = Path(folder)
    return exclusive_lock(
        lock_path(out / "report.json"),
        f"writing a report into {str(out)!r}",
        "write this report into another folder (--out)",
    )


def _save(fig: Any, path: Path, plt: Any) -> Path:
    try:
        with atomic_writer(path) as fh:  # held open while written, so no cleanup takes it for a leftover
            fig.savefig(fh, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path
