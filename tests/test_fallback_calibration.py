"""The regression fallback and the in-context calibration: contracts, persistence, honesty."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TINY_SHAPE
from tinymods import TinyNet

from mmt_nas.exceptions import NotFittedError, OptionError, TableError
from mmt_nas.predict.calibration import (
    CalibrationSample,
    InContextCalibration,
    cross_fitted,
    profile_scope,
    samples_from_profile,
)
from mmt_nas.predict.fallback import FEATURE_NAMES, LatencyRegressor, compare_regressors, op_features
from mmt_nas.predict.predictor import LatencyPredictor
from mmt_nas.table.table import LatencyTable
from mmt_nas.vocab import op_family


def test_features_and_families(tiny_ops: Path) -> None:
    table = LatencyTable.load(tiny_ops)
    for entry in table:
        assert len(op_features(entry)) == len(FEATURE_NAMES)
    assert op_family("Conv2d", {"in_channels": 8, "groups": 8}) == "dwconv"
    assert op_family("Conv2d", {"in_channels": 8, "groups": 1}) == "conv"
    assert op_family("Functional", key="Functional|Tensor.add(x, T[1x4])|1x4") == "elementwise"
    assert op_family("Functional", key="Functional|torch.flatten(x, 1)|1x4x1x1") == "layout"
    assert op_family("TinyBlock") == "block"


@pytest.mark.parametrize("kind", ["forest", "boosting", "linear"])
def test_regressor_contract_and_json_round_trip(tiny_ops: Path, kind: str) -> None:
    table = LatencyTable.load(tiny_ops)
    reg = LatencyRegressor(kind)
    with pytest.raises(NotFittedError, match="not fitted"):
        reg.predict(list(table))
    assert reg.fit(table) is reg and reg.n_samples_ == len(table)
    preds = reg.predict(list(table))
    assert len(preds) == len(table) and all(p > 0 for p in preds)
    doc = json.loads(json.dumps(reg.to_dict()))
    again = LatencyRegressor.from_table(table, doc)
    assert again.get_params() == reg.get_params()
    assert again.predict(list(table)) == pytest.approx(preds)


def test_regressor_rejects_bad_input(tiny_ops: Path) -> None:
    table = LatencyTable.load(tiny_ops)
    with pytest.raises(OptionError, match="model must be 'forest', 'boosting' or 'linear', but got model='svm'"):
        LatencyRegressor("svm").fit(table)
    with pytest.raises(TableError, match="at least 5"):
        LatencyRegressor().fit(list(table)[:3])
    with pytest.raises(OptionError, match="no parameter"):
        LatencyRegressor().set_params(depth=3)


def test_forest_learns_a_size_trend(tiny_ops: Path, tmp_path: Path) -> None:
    """On a table of convolutions of growing size, a bigger unseen conv is predicted slower."""
    from conftest import write_space

    from mmt_nas.build.generate import generate_ops_list
    from mmt_nas.device.meter import meter_ops

    sizes = ", ".join(f"[1, 16, {s}, {s}]" for s in (8, 12, 16, 20, 24, 32, 40, 48))
    path = write_space(
        tmp_path,
        f"torch.nn:\n  Conv2d: {{in_channels: [16], out_channels: [16, 32], kernel_size: [3], "
        f"padding: [1], input_shape: [{sizes}]}}\n",
    )
    generate_ops_list(path, tmp_path / "ops")
    table = meter_ops(tmp_path / "ops", times=20)
    reg = LatencyRegressor("forest").fit(table)
    small = next(e for e in table if e.op.input_shape == (1, 16, 8, 8) and e.op.args["out_channels"] == 16)
    big = next(e for e in table if e.op.input_shape == (1, 16, 48, 48) and e.op.args["out_channels"] == 32)
    assert reg.predict([big])[0] > 3 * reg.predict([small])[0]
    scores = compare_regressors(table, folds=4)
    assert set(scores) == {"forest", "boosting", "linear"}
    assert all(0 <= v["within_10_pct"] <= 100 and v["mape_pct"] >= 0 for v in scores.values())


def test_predictor_uses_table_then_fallback(tiny_ops: Path) -> None:
    table = LatencyTable.load(tiny_ops)
    fallback = LatencyRegressor("forest").fit(table)
    wide = TinyNet(width=16)  # none of its convs, block, pool or fc are in the table
    with pytest.raises(KeyError):
        LatencyPredictor(table).predict(wide, TINY_SHAPE)
    pred = LatencyPredictor(table, on_missing="fallback", fallback=fallback).predict(wide, TINY_SHAPE)
    sources = {o.key.split("|")[0]: o.source for o in pred.ops}
    assert sources["Conv2d"] == "fallback" and sources["ReLU"] == "fused"
    assert pred.source_ms("fallback") > 0 and float(pred) == pytest.approx(sum(o.total_ms for o in pred.ops))
    assert "fallback" in pred.explain()


def test_profile_scope() -> None:
    assert profile_scope("/layers/layers.0/conv1/Conv_output_0") == "layers.0.conv1"
    assert profile_scope("/stem/stem.0/stem.0.0/Conv_output_0") == "stem.0.0"
    assert profile_scope("/stem/stem.0/stem.0.0/Conv_output_0_raster_0") == "stem.0.0"
    assert profile_scope("/Add_output_0") == ""
    assert profile_scope("output__matmul_converted") is None
    # items of containers inside containers: each part is the container's part with the index appended
    assert profile_scope("/features/features.1/body/body.0/body.0.0/Conv_output_0") == "features.1.body.0.0"
    assert profile_scope("/features/features.2/se/fc1/Conv_output_0") == "features.2.se.fc1"


def test_every_profiled_op_of_a_nested_model_is_scoped_to_one_of_its_modules(tmp_path: Path) -> None:
    """Exported with mmt_nas and profiled by MNN, a model of blocks holding containers of containers: every op
    with a scope names a module of the model, the convolution it runs (or the block, for its joins)."""
    import torch

    from mmt_nas.build.export import export_to_mnn
    from mmt_nas.device.profile import profile_model

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = torch.nn.Sequential(
                torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU()),
                torch.nn.Sequential(torch.nn.Conv2d(8, 8, 1)),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.body(x)

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), Block(), Block()).eval()
    path = tmp_path / "nested.mnn"
    export_to_mnn(model, [1, 3, 16, 16], path)
    names = {n for n, _ in model.named_modules()}
    scopes = {profile_scope(p.name) for p in profile_model(path, 2)}
    scoped = {s for s in scopes if s}
    assert {"1.body.0.0", "1.body.1.0", "2.body.0.0", "2.body.1.0"} <= scoped
    assert scoped <= names, scoped - names


def test_samples_from_a_real_profile(tiny_ops: Path, tmp_path: Path) -> None:
    from mmt_nas.build.export import export_to_mnn
    from mmt_nas.device.profile import profile_model
    from mmt_nas.parser import parse_model

    table = LatencyTable.load(tiny_ops)
    model = TinyNet()
    export_to_mnn(model, TINY_SHAPE, tmp_path / "m.mnn")
    ops = parse_model(model, TINY_SHAPE, known=table.__contains__)
    samples = samples_from_profile("tiny", ops, profile_model(tmp_path / "m.mnn", 3), table)
    names = {s.key.split("|")[0] for s in samples}
    assert "Conv2d" in names  # the stem conv, with its fused ReLU, found by its module path
    for s in samples:
        assert s.model == "tiny" and s.alone_ms > 0 and s.in_context_ms > 0


def _samples(models: list[str], n: int = 12) -> list[CalibrationSample]:
    out = []
    for m in models:
        for i in range(n):
            alone = 0.01 * (i + 1)
            feats = tuple(float(i % 3) for _ in FEATURE_NAMES)
            out.append(CalibrationSample(m, f"k{i}", feats, alone, alone * (2.0 if i % 3 == 2 else 1.0)))
    return out


def test_calibration_contract_and_round_trip(tiny_ops: Path, tmp_path: Path) -> None:
    table = LatencyTable.load(tiny_ops)
    with pytest.raises(TableError, match="at least 10"):
        InContextCalibration().fit(_samples(["a"], n=3))
    cal = InContextCalibration(model="forest")
    with pytest.raises(NotFittedError, match="not fitted"):
        cal.ratio(next(iter(table)), 0.1)
    cal.fit(_samples(["a", "b"]))
    entries = list(table)
    ratios = cal.ratios([(e, 0.05) for e in entries])
    assert all(1 / 20 <= r <= 20 for r in ratios)
    cal.save(tmp_path / "cal.json")
    again = InContextCalibration.load(tmp_path / "cal.json")
    assert again.ratios([(e, 0.05) for e in entries]) == pytest.approx(ratios)
    assert again.models_ == ["a", "b"]
    with pytest.raises(TableError, match="not an mmt_nas calibration"):
        (tmp_path / "x.json").write_text("{}")
        InContextCalibration.load(tmp_path / "x.json")


def test_calibration_is_never_fitted_on_the_models_it_scores() -> None:
    names = [f"net{i}@224" for i in range(6)] + [f"net{i}@160" for i in range(6)]
    cals = cross_fitted(_samples(names), folds=3, group=lambda n: n.split("@")[0], model="forest")
    assert set(cals) == set(names)
    for name, cal in cals.items():
        arch = name.split("@")[0]
        assert all(m.split("@")[0] != arch for m in cal.models_), (name, cal.models_)
        assert len(cal.models_) == 8  # the other two folds: 4 architectures at 2 resolutions


def test_calibrated_prediction_multiplies_module_ops(tiny_ops: Path) -> None:
    table = LatencyTable.load(tiny_ops)
    cal = InContextCalibration(model="forest").fit(_samples(["a", "b"]))
    plain = LatencyPredictor(table).predict(TinyNet(), TINY_SHAPE)
    calibrated = LatencyPredictor(table, calibration=cal).predict(TinyNet(), TINY_SHAPE)
    by_key = {o.key: o for o in plain.ops}
    for o in calibrated.ops:
        if o.source == "table":
            composed = by_key[o.key]  # its time in the model's cache state (its ratio), before any calibration
            assert o.latency_ms == pytest.approx(composed.latency_ms * o.ratio / composed.ratio)
            if o.class_name == "Functional":  # tensor functions are not calibrated
                assert o.ratio == pytest.approx(composed.ratio)
            assert o.ratio > 0
    assert float(calibrated) == pytest.approx(sum(o.total_ms for o in calibrated.ops))


def test_adaptive_sampling_proposes_unmeasured_uncertain_ops(tiny_ops: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    from conftest import ROOT, write_space

    from mmt_nas.build.generate import prepare_ops
    from mmt_nas.predict.fallback import propose_samples
    from mmt_nas.space.opspace import load_space

    table = LatencyTable.load(tiny_ops)
    path = write_space(
        tmp_path,
        "torch.nn:\n  Conv2d: {in_channels: [8], out_channels: [8, 16, 64], kernel_size: [1, 3], "
        "padding: [1], input_shape: [[1, 8, 16, 16], [1, 8, 64, 64]]}\n"
        "  ReLU: {no_params: true, input_shape: [[1, 8, 16, 16], [1, 64, 64, 64]]}\n",
    )
    ready, _ = prepare_ops(load_space(path), tmp_path)
    chosen = propose_samples(table, [r for r, _ in ready], 4)
    assert len(chosen) == 4 and not any(c.key in table for c in chosen)
    assert len({c.key for c in chosen}) == 4
    with pytest.raises(TableError, match="budget"):
        propose_samples(table, [r for r, _ in ready], 0)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mmt_nas.cli",
            "sample",
            str(path),
            "--table",
            str(tiny_ops),
            "--budget",
            "3",
            "-o",
            str(tmp_path / "next.yaml"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert len(load_space(tmp_path / "next.yaml")) == 3


def test_a_calibration_is_refused_by_a_predictor_of_another_composition(tiny_ops: Path, tmp_path: Path) -> None:
    """A calibration learned what its samples' composition missed; applied on top of another composition it would
    count that again. A file saved before the activations' cold part existed loads as context='weights'."""
    table = LatencyTable.load(tiny_ops)
    cal = InContextCalibration(model="forest").fit(_samples(["a", "b"]))
    assert cal.context == "model" and LatencyPredictor(table, calibration=cal).calibration is cal
    with pytest.raises(OptionError, match="fitted on times composed with context='model'"):
        LatencyPredictor(table, calibration=cal, context="weights")
    cal.save(tmp_path / "cal.json")
    doc = json.loads((tmp_path / "cal.json").read_text())
    assert doc["params"]["context"] == "model"
    del doc["params"]["context"]  # as a file saved before it
    (tmp_path / "old.json").write_text(json.dumps(doc))
    old = InContextCalibration.load(tmp_path / "old.json")
    assert old.context == "weights"
    with pytest.raises(OptionError, match="Refit it"):
        LatencyPredictor(table, calibration=old)
    assert LatencyPredictor(table, calibration=old, context="weights").calibration is old
