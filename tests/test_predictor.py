"""Prediction: exact arithmetic on hand-built tables, outer modules, missing ops, settings, explanations."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import TINY_SHAPE
from tinymods import NeedsItem, TinyBlock, TinyNet

from mmt_nas.exceptions import TableError, UnknownOpError
from mmt_nas.parser import parse_model, predict_latency, trace_calls
from mmt_nas.predictor import LatencyPredictor
from mmt_nas.table import LatencyStats, LatencyTable, OpRecord, RuntimeSettings, TableEntry


def _table(costs: dict[str, float], settings: RuntimeSettings | None = None) -> LatencyTable:
    entries = []
    for key, ms in costs.items():
        cls, _, shape = key.split("|")
        op = OpRecord(key, cls, "torch.nn", {}, tuple(int(d) for d in shape.split("x")))
        entries.append(TableEntry(op, LatencyStats(ms, ms, 0.0, ms, ms, 1)))
    return LatencyTable(settings or RuntimeSettings(), {"cpu_model": "test"}, {}, entries)


STEM = "Conv2d|Conv2d(3, 8, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))|1x3x16x16"
RELU = "ReLU|ReLU()|1x8x16x16"
BLOCK = "TinyBlock|TinyBlock-8-3|1x8x16x16"
BLOCK_CONV = "Conv2d|Conv2d(8, 8, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))|1x8x16x16"
POOL = "AdaptiveAvgPool2d|AdaptiveAvgPool2d(output_size=1)|1x8x16x16"
FC = "Linear|Linear(in_features=8, out_features=4, bias=True)|1x8"


def test_leaf_keys_of_a_model() -> None:
    keys = [op.key for op in parse_model(TinyNet(), TINY_SHAPE)]
    assert keys == [STEM, RELU, BLOCK_CONV, RELU, POOL, FC]


def test_prediction_is_the_exact_sum_of_table_entries() -> None:
    costs = {STEM: 0.5, RELU: 0.03125, BLOCK_CONV: 0.25, POOL: 0.0078125, FC: 0.015625}
    pred = LatencyPredictor(_table(costs)).predict(TinyNet(), TINY_SHAPE)
    assert float(pred) == 0.5 + 2 * 0.03125 + 0.25 + 0.0078125 + 0.015625
    relu = next(o for o in pred.ops if o.key == RELU)
    assert (relu.count, relu.total_ms, relu.source) == (2, 0.0625, "table")
    assert relu.names == ("relu", "block.relu")
    assert sum(o.share for o in pred.ops) == pytest.approx(1.0)
    assert pred.source_ms("table") == float(pred) and pred.source_ms("fallback") == 0


def test_outer_module_in_the_table_counts_once() -> None:
    costs = {STEM: 0.5, RELU: 0.25, BLOCK: 2.0, BLOCK_CONV: 100.0, POOL: 0.125, FC: 0.125}
    pred = LatencyPredictor(_table(costs)).predict(TinyNet(), TINY_SHAPE)
    assert float(pred) == 0.5 + 0.25 + 2.0 + 0.125 + 0.125  # the block's own conv and ReLU are not added
    assert BLOCK_CONV not in {o.key for o in pred.ops}


def test_missing_ops_are_all_listed_with_closest_keys() -> None:
    table = _table({STEM: 0.5, RELU: 0.25, "Linear|Linear(in_features=8, out_features=10, bias=True)|1x8": 0.1})
    with pytest.raises(UnknownOpError) as info:
        LatencyPredictor(table).predict(TinyNet(), TINY_SHAPE)
    err = info.value
    assert set(err.missing) == {BLOCK_CONV, POOL, FC}
    text = str(err)
    assert "never counts an unknown op as 0 ms" in text
    assert "closest in the table: Linear|Linear(in_features=8, out_features=10" in text
    assert isinstance(err, KeyError)


def test_table_measured_with_other_settings_is_refused(tmp_path: Path) -> None:
    table = _table({STEM: 1.0}, RuntimeSettings(threads=4))
    table.save(tmp_path / "t.json")
    with pytest.raises(TableError, match="threads=4"):
        predict_latency(TinyNet(), tmp_path / "t.json", TINY_SHAPE, threads=1)
    with pytest.raises(TableError, match="on_missing"):
        LatencyPredictor(table, on_missing="zero")


def test_fallback_seam_marks_sources() -> None:
    class Constant:
        def predict_op(self, op):  # noqa: ANN001, ANN202
            return 1.0

    table = _table({STEM: 0.5, RELU: 0.25})
    pred = LatencyPredictor(table, on_missing="fallback", fallback=Constant()).predict(TinyNet(), TINY_SHAPE)
    assert float(pred) == 0.5 + 0.5 + 3.0
    assert {o.key: o.source for o in pred.ops}[FC] == "fallback"
    assert pred.source_ms("fallback") == 3.0
    assert "fallback" in pred.explain()


def test_predict_latency_on_a_real_table(tiny_ops: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = LatencyTable.load(tiny_ops)
    pred = predict_latency(TinyNet(), tiny_ops, TINY_SHAPE, verbose=True)
    expected = sum(table.get(k).latency_ms for k in (STEM, RELU, BLOCK, POOL, FC))
    assert float(pred) == pytest.approx(expected, rel=1e-12)
    out = capsys.readouterr().out
    assert "TinyBlock-8-3" in out and "predicted latency" in out


def test_trace_leaves_the_model_untouched() -> None:
    model = TinyNet().train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    trace_calls(model, TINY_SHAPE)
    assert model.training and all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_models_that_need_real_values_are_traced_for_real() -> None:
    ops = parse_model(torch.nn.Sequential(NeedsItem(), TinyBlock(4)), [1, 4, 8, 8])
    assert [op.class_name for op in ops] == ["ReLU", "Conv2d", "ReLU"]


def test_bad_input_shape() -> None:
    from mmt_nas.exceptions import OpSpaceError

    with pytest.raises(OpSpaceError, match="input_shape"):
        parse_model(TinyNet(), [1, 3, "a"])
    with pytest.raises(OpSpaceError, match="failed to run"):
        parse_model(TinyNet(), [1, 5, 16, 16])
