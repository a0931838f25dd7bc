"""Prediction-error reports: metrics against hand-computed values, the JSON schema, failures, plots."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import HERE, ROOT, TINY_SHAPE
from tinymods import NotExportable, TinyNet

from mmt_nas.exceptions import OpSpaceError
from mmt_nas.predict.predictor import LatencyPredictor
from mmt_nas.report.document import Report
from mmt_nas.report.evaluation import ModelSpec, evaluate, load_model_specs
from mmt_nas.report.metrics import compute_metrics, kendall_tau, spearman_rho
from mmt_nas.vocab import mnn_category, op_category


def test_metrics_against_hand_computed_values() -> None:
    m = compute_metrics([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 4.0, 3.0])
    assert m["n"] == 4
    assert m["mae_ms"] == pytest.approx(0.5)
    assert m["rmse_ms"] == pytest.approx(math.sqrt(0.5))
    assert m["mape_pct"] == pytest.approx(100 * (0.25 + 1 / 3) / 4)
    assert m["rmspe_pct"] == pytest.approx(100 * math.sqrt((0.25**2 + (1 / 3) ** 2) / 4))
    assert m["within_5_pct"] == 50 and m["within_10_pct"] == 50
    assert m["mean_signed_error_pct"] == pytest.approx(100 * (-0.25 + 1 / 3) / 4)
    assert m["kendall_tau"] == pytest.approx(4 / 6)  # 5 concordant pairs, 1 discordant
    assert m["spearman_rho"] == pytest.approx(1 - 6 * 2 / (4 * 15))


def test_rank_correlations_with_ties() -> None:
    assert kendall_tau([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(3 * 2))
    assert spearman_rho([1, 1, 2], [1, 2, 3]) == pytest.approx(0.8660254, rel=1e-6)
    assert math.isnan(kendall_tau([1], [1])) and math.isnan(spearman_rho([1, 1], [2, 3]))


def test_rank_correlations_match_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(3)
    for _ in range(20):
        xs = [rng.choice(range(8)) for _ in range(15)]
        ys = [x + rng.gauss(0, 3) for x in xs]
        assert kendall_tau(xs, ys) == pytest.approx(stats.kendalltau(xs, ys)[0])
        assert spearman_rho(xs, ys) == pytest.approx(stats.spearmanr(xs, ys)[0])


def test_metric_input_errors() -> None:
    with pytest.raises(ValueError, match="same length"):
        compute_metrics([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="> 0"):
        compute_metrics([1.0], [0.0])


def test_categories() -> None:
    assert [op_category(c) for c in ("Conv2d", "BatchNorm2d", "ReLU6", "MaxPool2d", "Flatten", "TinyBlock")] == [
        "conv",
        "norm",
        "activation",
        "pool",
        "layout",
        "block",
    ]
    assert [mnn_category(t) for t in ("Convolution", "ConvolutionDepthwise", "BinaryOp", "Raster", "Weird")] == [
        "conv",
        "conv",
        "elementwise",
        "layout",
        "other",
    ]


def test_report_with_a_failing_model(tiny_ops: Path, tmp_path: Path) -> None:
    import torch

    predictor = LatencyPredictor(tiny_ops)
    cases = [
        ("tiny", TinyNet(), TINY_SHAPE),
        (
            "tiny-from-spec",
            ModelSpec("tiny-from-spec", f"{HERE / 'tinymods.py'}:TinyNet", tuple(TINY_SHAPE)),
            TINY_SHAPE,
        ),
        ("not-in-table", TinyNet(width=16), TINY_SHAPE),
        ("not-exportable", torch.nn.Sequential(torch.nn.ReLU(), NotExportable()), [1, 4, 4]),
    ]
    seen = []
    results = evaluate(predictor, cases, times=5, repeats=2, profile_times=3, on_result=lambda r: seen.append(r.name))
    assert seen == [c[0] for c in cases]
    report = Report(results, predictor.table, {"times": 5, "repeats": 2})
    paths = report.write(tmp_path / "rep")
    doc = json.loads(paths["json"].read_text())
    assert doc["schema"] == "mmt_nas/report" and doc["schema_version"] == 1
    assert set(doc["metrics"]) >= {
        "n",
        "mae_ms",
        "rmse_ms",
        "mape_pct",
        "rmspe_pct",
        "within_5_pct",
        "within_10_pct",
        "kendall_tau",
        "spearman_rho",
        "mean_within_run_cv_pct",
        "mean_run_to_run_cv_pct",
        "table_share_pct",
        "fallback_share_pct",
        "n_failed",
    }
    models = {m["name"]: m for m in doc["models"]}
    assert [m["status"] for m in doc["models"]] == ["ok", "ok", "failed", "failed"]
    tiny = models["tiny"]
    assert tiny["measured_ms"] > 0 and len(tiny["run_medians_ms"]) == 2
    assert tiny["error_pct"] == pytest.approx(100 * (tiny["predicted_ms"] - tiny["measured_ms"]) / tiny["measured_ms"])
    assert {"conv", "block"} <= set(tiny["by_category"])
    assert sum(v["in_context_ms"] for v in tiny["by_category"].values()) > 0
    assert models["not-in-table"]["measured_ms"] > 0 and "not in the latency table" in models["not-in-table"]["error"]
    assert "ExportError" in models["not-exportable"]["error"]
    assert doc["metrics"]["n"] == 2 and doc["metrics"]["n_failed"] == 2
    assert doc["metrics"]["table_share_pct"] == 100
    for name in ("pred_vs_measured", "error_histogram", "error_by_op_type"):
        data = paths[name].read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert "data:image/png;base64," in paths["html"].read_text()
    md = paths["md"].read_text()
    assert "| not-exportable |" in md and "within_10_pct" in md
    # op by op: each profiled module op alone, cold, predicted and in context, with its bytes
    rows = {o["name"]: o for o in tiny["ops_in_context"]}
    stem = rows["stem"]
    entry = predictor.table.get(stem["key"])
    assert entry is not None
    assert stem["alone_ms"] == entry.core_ms and stem["cold_ms"] == entry.cold_ms
    assert stem["in_context_ms"] > 0 and stem["ratio"] == pytest.approx(stem["in_context_ms"] / stem["alone_ms"])
    assert stem["weight_bytes"] == 4 * entry.op.params > 0
    assert stem["input_bytes"] == 4 * 3 * 16 * 16 and stem["family"] == "conv"
    assert stem["predicted_ms"] == pytest.approx(
        next(c["latency_ms"] for c in tiny["prediction"]["ops"] if "stem" in c["names"])
    )
    assert "### tiny: the ops furthest from their prediction" in md and "| stem (Conv2d) | conv |" in md


def test_model_list_yaml(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(
        "models:\n  - name: a\n    model: ../tests_models/tinymods.py:TinyNet\n    input_shape: [1, 3, 16, 16]\n"
        "    kwargs: {width: 4}\n"
    )
    (tmp_path.parent / "tests_models").mkdir(exist_ok=True)
    (tmp_path.parent / "tests_models" / "tinymods.py").write_text((HERE / "tinymods.py").read_text())
    (spec,) = load_model_specs(tmp_path / "m.yaml")
    assert spec.kwargs == {"width": 4} and spec.input_shape == (1, 3, 16, 16)
    assert spec.build().fc.in_features == 4
    for bad, fragment in [
        ("models: []", "non-empty list"),
        ("models:\n  - {model: x}", "module:callable"),
        ("models:\n  - {model: 'a:b', input_shape: 3}", "input_shape"),
        ("[", "not valid YAML"),
    ]:
        (tmp_path / "bad.yaml").write_text(bad)
        with pytest.raises(OpSpaceError, match=fragment):
            load_model_specs(tmp_path / "bad.yaml")


@pytest.mark.slow
def test_accuracy_benchmark_quick_mode_runs(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "accuracy.py"),
            "--quick",
            "--times",
            "5",
            "--repeats",
            "1",
            "--work-dir",
            str(tmp_path / "work"),
            "--results",
            str(results),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    text = results.read_text()
    assert "<!-- accuracy-quick:start -->" in text and "In-table" in text and "Held-out" in text
    assert (tmp_path / "work" / "report-intable" / "report.json").is_file()


def test_cli_report(tiny_ops: Path, tmp_path: Path) -> None:
    (tmp_path / "models.yaml").write_text(
        f"models:\n  - {{name: tiny, model: '{HERE / 'tinymods.py'}:TinyNet', input_shape: {TINY_SHAPE}}}\n"
        f"  - {{name: wide, model: '{HERE / 'tinymods.py'}:TinyNet', kwargs: {{width: 16}}, "
        f"input_shape: {TINY_SHAPE}}}\n"
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mmt_nas.cli",
            "report",
            "--table",
            str(tiny_ops),
            "--models",
            "models.yaml",
            "--out",
            "rep",
            "--times",
            "3",
            "--repeats",
            "1",
            "--no-plots",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert [m["status"] for m in doc["models"]] == ["ok", "failed"]
    assert "2 models (1 failed)" in out.stdout


@pytest.mark.slow
def test_cli_fits_a_calibration_and_predicts_with_it_and_the_fallback(tiny_ops: Path, tmp_path: Path) -> None:
    from mmt_nas.predict.calibration import InContextCalibration

    (tmp_path / "models.yaml").write_text(
        "models:\n"
        + "".join(
            f"  - {{name: w{w}, model: '{HERE / 'tinymods.py'}:TinyNet', kwargs: {{width: {w}}}, "
            f"input_shape: {TINY_SHAPE}}}\n"
            for w in (8,)
        )
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mmt_nas.cli", *args], capture_output=True, text=True, timeout=600, cwd=tmp_path
        )

    out = run(
        "report",
        "--table",
        str(tiny_ops),
        "--models",
        "models.yaml",
        "--out",
        "rep",
        "--times",
        "3",
        "--repeats",
        "1",
        "--no-plots",
        "--fit-calibration",
        "cal.json",
    )
    # one tiny net has too few profiled ops to fit a calibration: the report is written, then a clear refusal
    assert out.returncode == 2 and "at least 10" in out.stderr and "Profile more models" in out.stderr
    assert (tmp_path / "rep" / "report.json").is_file() and not (tmp_path / "cal.json").exists()
    (tmp_path / "models.yaml").write_text(
        "models:\n"
        + "".join(
            f"  - {{name: copy{i}, model: '{HERE / 'tinymods.py'}:TinyNet', input_shape: {TINY_SHAPE}}}\n"
            for i in range(4)
        )
    )
    out = run(
        "report",
        "--table",
        str(tiny_ops),
        "--models",
        "models.yaml",
        "--out",
        "rep",
        "--times",
        "3",
        "--repeats",
        "1",
        "--no-plots",
        "--fit-calibration",
        "cal.json",
        "--fit-intervals",
        "iv.json",
    )
    assert out.returncode == 0, out.stderr
    assert InContextCalibration.load(tmp_path / "cal.json").models_ == ["copy0", "copy1", "copy2", "copy3"]
    from mmt_nas.predict.intervals import ConformalIntervals

    assert ConformalIntervals.load(tmp_path / "iv.json").models_ == ["copy0", "copy1", "copy2", "copy3"]
    doc = json.loads((tmp_path / "rep" / "report.json").read_text())
    check = doc["intervals"]
    assert check["n_models"] == 4 and check["conformal"] is not None
    assert not check["as_predicted"]["calibrated"] and set(check["prior"]["coverage"]) == {"0.8", "0.9", "0.95"}
    inside = sum(
        m["prediction"]["interval"]["lower_ms"] <= m["measured_ms"] <= m["prediction"]["interval"]["upper_ms"]
        for m in doc["models"]
    )
    assert check["as_predicted"]["coverage"]["0.9"] == inside / 4  # the report's coverage is the models' own
    assert "## How sure were the predictions?" in (tmp_path / "rep" / "report.md").read_text()
    model = f"{HERE / 'tinymods.py'}:TinyNet"
    shape = ",".join(map(str, TINY_SHAPE))
    refused = run("predict", model, "--kwargs", "{width: 16}", "--input-shape", shape, "--table", str(tiny_ops))
    assert refused.returncode == 2
    est = run(
        "predict",
        model,
        "--kwargs",
        "{width: 16}",
        "--input-shape",
        shape,
        "--table",
        str(tiny_ops),
        "--fallback",
        "--json",
    )
    assert est.returncode == 0, est.stderr
    assert {o["source"] for o in json.loads(est.stdout)["ops"]} >= {"fallback", "fused"}
    iv = run("predict", model, "--input-shape", shape, "--table", str(tiny_ops), "--intervals", "iv.json", "--json")
    assert iv.returncode == 0, iv.stderr
    assert json.loads(iv.stdout)["interval"]["calibrated"] is True
    cal = run("predict", model, "--input-shape", shape, "--table", str(tiny_ops), "--calibration", "cal.json", "--json")
    assert cal.returncode == 0, cal.stderr
    fitted = InContextCalibration.load(tmp_path / "cal.json")
    assert fitted.damping_scores_  # four models: the check whether the correction carries over ran
    ratios = [o["ratio"] for o in json.loads(cal.stdout)["ops"]]
    plain = run("predict", model, "--input-shape", shape, "--table", str(tiny_ops), "--json")
    composed = [o["ratio"] for o in json.loads(plain.stdout)["ops"]]  # the cache state's ratios alone
    if fitted.damping_ > 0:  # applied
        assert ratios != composed
    else:  # it stepped aside: held-out copies came out no better corrected than composed
        assert ratios == composed


# -- the measurement journal: an interrupted report continues --------------------------------------------------


def _journal_cases() -> list:
    return [("tiny", TinyNet(), TINY_SHAPE), ("wide", TinyNet(width=16), TINY_SHAPE)]


def test_journal_is_reused_by_a_rerun_with_the_same_settings(tiny_ops: Path, tmp_path: Path) -> None:
    from mmt_nas.report.evaluation import JOURNAL_FILENAME

    predictor = LatencyPredictor(tiny_ops)
    journal = tmp_path / JOURNAL_FILENAME
    first = evaluate(predictor, _journal_cases(), times=3, repeats=2, profile_times=2, journal=journal)
    assert [r.reused for r in first] == [False, False]
    assert len(journal.read_text().splitlines()) == 2
    again = evaluate(predictor, _journal_cases(), times=3, repeats=2, profile_times=2, journal=journal)
    assert [r.reused for r in again] == [True, True]
    for a, b in zip(first, again):
        assert (b.run_medians_ms, b.measured_ms, b.within_run_cv) == (a.run_medians_ms, a.measured_ms, a.within_run_cv)
        assert b.profile == a.profile and b.predicted_ms == a.predicted_ms and b.error == a.error
        assert b.to_dict()["measurement_reused"] is True
    # what is derived from the measurements is recomputed for the predicted model, as in the first run
    assert again[0].by_category == first[0].by_category and len(again[0].samples) == len(first[0].samples) > 0
    assert len(journal.read_text().splitlines()) == 2  # nothing measured, nothing appended


@pytest.mark.parametrize(
    "change",
    [{"times": 4}, {"repeats": 3}, {"profile_times": 3}, {"model": "width"}, {"model": "shape"}],
    ids=["times", "repeats", "profile_times", "architecture", "input_shape"],
)
def test_journal_entries_of_other_settings_or_models_are_not_reused(
    tiny_ops: Path, tmp_path: Path, change: dict
) -> None:
    predictor = LatencyPredictor(tiny_ops)
    journal = tmp_path / "j"
    base = {"times": 3, "repeats": 2, "profile_times": 2}
    evaluate(predictor, [("m", TinyNet(), TINY_SHAPE)], **base, journal=journal)
    model, shape = TinyNet(), TINY_SHAPE
    if change.get("model") == "width":
        model = TinyNet(width=16)  # same name, another architecture
    elif change.get("model") == "shape":
        shape = [1, 3, 20, 20]
    settings = {**base, **{k: v for k, v in change.items() if k != "model"}}
    (r,) = evaluate(predictor, [("m", model, shape)], **settings, journal=journal)
    assert r.reused is False and len(r.run_medians_ms) == settings["repeats"]
    assert len(journal.read_text().splitlines()) == 2
    (again,) = evaluate(predictor, [("m", model, shape)], **settings, journal=journal)
    assert again.reused is True and again.run_medians_ms == r.run_medians_ms  # the newer entry is the match


def test_journal_torn_or_unreadable_lines_are_ignored(tiny_ops: Path, tmp_path: Path, caplog) -> None:
    predictor = LatencyPredictor(tiny_ops)
    journal = tmp_path / "j"
    first = evaluate(predictor, _journal_cases(), times=3, repeats=1, profile_times=0, journal=journal)
    # lines in the order the models' last rounds ended (interleaved, shuffled): find each model's
    lines = {json.loads(line)["key"]["name"]: line for line in journal.read_text().splitlines()}
    # a garbage line in the middle, and the last line torn as a kill during the append leaves it
    journal.write_text(lines["tiny"] + "\n{not json\n" + lines["wide"][: len(lines["wide"]) // 2])
    again = evaluate(predictor, _journal_cases(), times=3, repeats=1, profile_times=0, journal=journal)
    assert [r.reused for r in again] == [True, False]
    assert again[0].run_medians_ms == first[0].run_medians_ms
    assert "ignored" in caplog.text
    # the new entry was written on a line of its own, not glued to the torn one: a third run reuses both
    third = evaluate(predictor, _journal_cases(), times=3, repeats=1, profile_times=0, journal=journal)
    assert [r.reused for r in third] == [True, True]
    assert third[1].run_medians_ms == again[1].run_medians_ms


def test_journal_that_cannot_be_used_is_a_metering_error(tiny_ops: Path, tmp_path: Path) -> None:
    from mmt_nas.exceptions import MeteringError

    (tmp_path / "j").mkdir()  # a folder where the journal should be
    with pytest.raises(MeteringError, match="measurement journal .* --fresh"):
        evaluate(LatencyPredictor(tiny_ops), _journal_cases(), times=3, repeats=1, journal=tmp_path / "j")


@pytest.mark.slow
def test_cli_report_continues_from_the_journal_unless_fresh(tiny_ops: Path, tmp_path: Path) -> None:
    from mmt_nas.report.evaluation import JOURNAL_FILENAME

    (tmp_path / "models.yaml").write_text(
        f"models:\n  - {{name: tiny, model: '{HERE / 'tinymods.py'}:TinyNet', input_shape: {TINY_SHAPE}}}\n"
    )
    journal = tmp_path / "rep" / JOURNAL_FILENAME
    specs = load_model_specs(tmp_path / "models.yaml")

    def journal_as_an_interrupted_run_leaves_it() -> None:
        evaluate(
            LatencyPredictor(tiny_ops),
            [(s.name, s, s.input_shape) for s in specs],
            times=3,
            repeats=1,
            profile_times=2,
            journal=journal,
        )
        line = json.loads(journal.read_text())
        line["run_medians_ms"] = [1234.5]  # no real measurement of this model gives that: tells reuse apart
        journal.write_text(json.dumps(line) + "\n")

    def report(*extra: str) -> tuple[subprocess.CompletedProcess[str], dict]:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "mmt_nas.cli",
                "report",
                "--table",
                str(tiny_ops),
                "--models",
                "models.yaml",
                "--out",
                "rep",
                "--times",
                "3",
                "--repeats",
                "1",
                "--profile-times",
                "2",
                "--no-plots",
                *extra,
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
        )
        assert out.returncode == 0, out.stderr
        return out, json.loads((tmp_path / "rep" / "report.json").read_text())["models"][0]

    journal_as_an_interrupted_run_leaves_it()
    out, model = report()
    assert "continuing an interrupted report" in out.stdout and "1 of 1 models' measurements reused" in out.stdout
    assert model["measurement_reused"] is True and model["run_medians_ms"] == [1234.5]
    assert not journal.exists()
    journal_as_an_interrupted_run_leaves_it()
    out, model = report("--fresh")
    assert "reused" not in out.stdout
    assert model["measurement_reused"] is False and model["measured_ms"] < 1000
    assert not journal.exists()
