"""The report states the noise floor next to each accuracy figure and marks the models whose error is within it."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from mmt_nas.report.document import Report
from mmt_nas.report.evaluation import ModelResult
from mmt_nas.table.records import OpRecord
from mmt_nas.table.table import LatencyStats, LatencyTable, TableEntry
from mmt_nas.vocab import op_key


def _table(round_pairs: list[tuple[float, float]]) -> LatencyTable:
    table = LatencyTable()
    for i, rounds in enumerate(round_pairs):
        op = OpRecord(op_key("ReLU", f"ReLU({i})", (1, 4)), "ReLU", "torch.nn", {}, (1, 4))
        stats = LatencyStats.combine([LatencyStats.from_samples([r]) for r in rounds])
        table.add(TableEntry(op, stats, rounds_ms=rounds))
    return table


def _model(name: str, runs: list[float], predicted: float) -> ModelResult:
    return ModelResult(name, (1, 3, 8, 8), measured_ms=sorted(runs)[len(runs) // 2], run_medians_ms=runs,
                       within_run_cv=0.01, predicted_ms=predicted)  # fmt: skip


def test_noise_floor_per_model_and_in_the_metrics(tmp_path: Path) -> None:
    table = _table([(1.0, 1.1), (2.0, 2.0), (1.0, 1.04)])  # spreads 0.1/1.05, 0, 0.04/1.02: median 3.92%
    quiet = _model("quiet", [10.0, 10.0, 10.0], 10.5)  # truth spread 0: floor = half the table's median spread
    noisy = _model("noisy", [9.0, 10.0, 11.0], 11.5)  # truth cv 0.1: floor = hypot(10%, 1.96%)
    report = Report([quiet, noisy], table, {"times": 3})
    table_half = 100 * (0.04 / 1.02) / 2
    assert report.noise_floor_pct(quiet) == pytest.approx(table_half)
    assert report.noise_floor_pct(noisy) == pytest.approx(math.hypot(10.0, table_half))
    assert report.within_noise(quiet) is False  # +5% against a 1.96% floor: beyond twice it
    assert report.within_noise(noisy) is True  # +15% against a 10.2% floor
    m = report.metrics
    assert m["within_noise_pct"] == 50.0
    expected = math.sqrt(2 / math.pi) * (table_half + math.hypot(10.0, table_half)) / 2
    assert m["perfect_predictor_mape_pct"] == pytest.approx(expected)
    assert m["table_noise_floor_median_pct"] == pytest.approx(100 * 0.04 / 1.02)
    report.write(tmp_path, plots=False)
    doc = json.loads((tmp_path / "report.json").read_text())
    assert [d["within_noise"] for d in doc["models"]] == [False, True]
    md = (tmp_path / "report.md").read_text()
    assert "| perfect_predictor_mape_pct |" in md and "| within_noise_pct | 50" in md
    assert "| noisy | 1x3x8x8 |" in md and "| yes |" in md and "| no |" in md


def test_no_noise_floor_without_rounds_or_repeats() -> None:
    table = LatencyTable()
    op = OpRecord(op_key("ReLU", "ReLU()", (1, 4)), "ReLU", "torch.nn", {}, (1, 4))
    table.add(TableEntry(op, LatencyStats.from_samples([1.0])))  # a table from before rounds
    once = _model("once", [10.0], 10.5)
    report = Report([once], table, {})
    assert report.noise_floor_pct(once) is None and report.within_noise(once) is None
    assert report.metrics["perfect_predictor_mape_pct"] is None and report.metrics["within_noise_pct"] is None


def _predicted(ms: float, sigma: float, source: str = "table") -> dict[str, object]:
    op = {"key": "k", "class_name": "ReLU", "count": 1, "latency_ms": ms, "total_ms": ms, "share": 1.0}
    return {"latency_ms": ms, "ops": [{**op, "source": source, "names": ["r"], "ratio": 1.0, "sigma": sigma}]}


def test_the_error_beyond_noise_takes_out_the_truths_and_the_tables_noise(tmp_path: Path) -> None:
    from mmt_nas.report.metrics import error_beyond_noise, log_sd, median_variance

    table = _table([(1.0, 1.1), (1.0, 1.04)])
    models = []
    for i, (runs, predicted, sigma) in enumerate(
        [([9.0, 10.0, 11.0], 10.5, 0.02), ([20.0, 21.0, 19.0, 20.5], 18.0, 0.05), ([5.0, 5.2, 4.9], 5.5, 0.0)]
    ):
        m = _model(f"m{i}", runs, predicted)
        models.append(dataclasses.replace(m, prediction=_predicted(predicted, sigma)))
    fallback = _model("fallback", [10.0, 10.2, 9.9], 12.0)
    models.append(dataclasses.replace(fallback, prediction=_predicted(12.0, 0.4, "fallback")))
    once = _model("once", [10.0], 30.0)  # one round: its noise is unknown, so it is left out
    report = Report([*models, once], table, {})
    assert report.noise_variance(once) is None
    # the fallback's spread is an error of the estimate, not measurement noise: only the truth's counts
    sd = log_sd([10.0, 10.2, 9.9])
    assert sd is not None and report.noise_variance(models[3]) == pytest.approx(median_variance(sd, 3))
    variances = []
    for m, sigma in zip(models, (0.02, 0.05, 0.0, 0.0)):
        runs_sd = log_sd(m.run_medians_ms)
        assert runs_sd is not None
        variances.append(median_variance(runs_sd, len(m.run_medians_ms)) + sigma**2)
    assert [report.noise_variance(m) for m in models] == pytest.approx(variances)
    errors = [math.log(m.predicted_ms / m.measured_ms) for m in models]  # type: ignore[operator]
    expected = error_beyond_noise(errors, variances)
    assert expected is not None
    metrics = report.metrics
    assert metrics["beyond_noise_n"] == 4
    assert metrics["beyond_noise_pct"] == pytest.approx(expected.beyond_pct)
    assert metrics["noise_rms_pct"] == pytest.approx(expected.noise_pct)
    assert metrics["beyond_noise_low_pct"] <= metrics["beyond_noise_pct"] <= metrics["beyond_noise_high_pct"]
    assert metrics["beyond_noise_pct"] < metrics["rms_log_error_pct"]
    report.write(tmp_path, plots=False)
    md = (tmp_path / "report.md").read_text()
    assert f"| beyond_noise_pct | {metrics['beyond_noise_pct']:.3g} |" in md
