"""Fast prediction: predict_keys and KeyBuilder against predict() on the same model; the prediction cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import TINY_SHAPE
from tinymods import TinyBlock
from torch import nn

from mmt_nas.exceptions import OpSpaceError, UnknownOpError
from mmt_nas.integrations.keys import KeyBuilder, OpDescription
from mmt_nas.parser import ParsedOp
from mmt_nas.predict.predictor import LatencyPredictor
from mmt_nas.vocab import op_key


def _net(kernel: int = 3) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), TinyBlock(8, kernel), TinyBlock(8, kernel), nn.AdaptiveAvgPool2d(1)
    ).eval()


class PerOpEstimator:
    """A real (if simple) fallback: 1 ms per input element of an op, from the op record alone."""

    def __init__(self) -> None:
        self.seen: list[ParsedOp] = []

    def predict_op(self, op: ParsedOp) -> float:
        self.seen.append(op)
        return float(torch.Size(op.input_shape).numel())


@pytest.fixture(scope="module")
def predictor(tiny_ops: Path) -> LatencyPredictor:
    return LatencyPredictor(tiny_ops)


def test_predict_keys_equals_predict_on_the_same_model(predictor: LatencyPredictor) -> None:
    pred = predictor.predict(_net(), TINY_SHAPE)
    keys = [o.key for o in pred.ops if o.source == "table" for _ in range(o.count)]
    by_keys = predictor.predict_keys(keys)
    assert float(by_keys) == pytest.approx(float(pred), rel=1e-12)
    assert {o.key: o.count for o in by_keys.ops} == {o.key: o.count for o in pred.ops if o.source == "table"}
    assert float(predictor.predict_keys(iter(keys))) == float(by_keys)  # any iterable


def test_key_builder_predicts_a_model_from_its_description(predictor: LatencyPredictor) -> None:
    model = nn.Sequential(TinyBlock(8), TinyBlock(8), nn.AdaptiveAvgPool2d(1))  # no fusable neighbours
    shape = (1, 8, 16, 16)
    ops = [
        OpDescription("tinymods", "TinyBlock", {"channels": 8}, shape),
        ("tinymods", "TinyBlock", {"channels": 8}, shape),
        ("torch.nn", "AdaptiveAvgPool2d", {"output_size": 1}, shape),
    ]
    builder = KeyBuilder(base_dir=Path(__file__).parent)
    assert builder.keys(ops) == [
        op_key("TinyBlock", "TinyBlock-8-3", shape),
        op_key("TinyBlock", "TinyBlock-8-3", shape),
        op_key("AdaptiveAvgPool2d", repr(nn.AdaptiveAvgPool2d(1)), shape),
    ]
    assert len(builder) == 2  # each distinct op built once
    assert float(builder.predict(predictor, ops)) == pytest.approx(
        float(predictor.predict(model, list(shape))), rel=1e-12
    )
    conv = builder.key(
        "torch.nn", "Conv2d", {"in_channels": 3, "out_channels": 8, "kernel_size": 3, "padding": 1}, TINY_SHAPE
    )
    assert conv == op_key("Conv2d", repr(nn.Conv2d(3, 8, 3, padding=1)), TINY_SHAPE) and conv in predictor.table


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("torch.nn", "NoSuchLayer", {}, [1, 8]), "does not exist"),
        (("torch.nn", "Conv2d", {"in_channels": 3}, [1, 3, 8, 8]), "cannot be built with"),
        (("torch.nn", "ReLU", {}, [1, 0]), "input_shape must be a non-empty list of positive integers"),
        (("torch.nn", "ReLU", {"inplace": object()}, [1, 8]), "JSON-like values"),
    ],
)
def test_key_builder_errors(args: tuple, match: str) -> None:
    with pytest.raises(OpSpaceError, match=match):
        KeyBuilder().key(*args)


def test_predict_keys_missing_and_malformed_keys(predictor: LatencyPredictor, tiny_ops: Path) -> None:
    missing = op_key("ReLU", "ReLU()", (1, 8, 32, 32))
    with pytest.raises(UnknownOpError) as info:
        predictor.predict_keys([missing])
    assert info.value.missing == [missing] and "closest in the table" in str(info.value)
    with pytest.raises(OpSpaceError, match="key #1 is 'ReLU'"):
        predictor.predict_keys([missing, "ReLU"])
    estimator = PerOpEstimator()
    fallback = LatencyPredictor(tiny_ops, on_missing="fallback", fallback=estimator)
    pred = fallback.predict_keys([missing, missing])
    assert float(pred) == 2 * 8 * 32 * 32 and pred.ops[0].source == "fallback" and pred.ops[0].names == ("#0", "#1")
    op = estimator.seen[0]
    assert (op.class_name, op.input_shape, op.module) == ("ReLU", (1, 8, 32, 32), None)


def test_key_builder_gives_the_fallback_the_missing_ops(tiny_ops: Path) -> None:
    from mmt_nas.predict.fallback import LatencyRegressor

    table = LatencyPredictor(tiny_ops).table
    predictor = LatencyPredictor(table, on_missing="fallback", fallback=LatencyRegressor("linear").fit(table))
    conv5 = (
        "torch.nn",
        "Conv2d",
        {"in_channels": 8, "out_channels": 8, "kernel_size": 5, "padding": 2},
        (1, 8, 16, 16),
    )
    block = ("tinymods", "TinyBlock", {"channels": 8}, (1, 8, 16, 16))
    pred = KeyBuilder().predict(predictor, [conv5, block])
    assert [o.source for o in pred.ops] == ["fallback", "table"] and pred.source_ms("fallback") > 0
    assert float(pred) == pytest.approx(
        pred.source_ms("fallback") + float(predictor.predict(TinyBlock(8), [1, 8, 16, 16])), rel=1e-12
    )


def test_predict_cached_is_keyed_by_the_architecture(predictor: LatencyPredictor, tiny_ops: Path) -> None:
    predictor.clear_cache()
    model = _net()
    first = predictor.predict_cached(model, TINY_SHAPE)
    assert float(first) == float(predictor.predict(model, TINY_SHAPE))
    assert predictor.predict_cached(model, TINY_SHAPE) is first
    assert predictor.predict_cached(_net(), TINY_SHAPE) is first  # another model object, same architecture
    model[2] = TinyBlock(8, 5)  # changed in place: its repr changes, so the cache misses
    with pytest.raises(UnknownOpError):  # TinyBlock-8-5 is not in the table, nor its 5x5 conv
        predictor.predict_cached(model, TINY_SHAPE)
    assert predictor.predict_cached(_net(), TINY_SHAPE, config=("depth", 2)) is not first  # keyed by config
    assert predictor.predict_cached(model, TINY_SHAPE, config=("depth", 2)) is predictor.predict_cached(
        _net(), TINY_SHAPE, config=("depth", 2)
    )  # config is the caller's promise
    fallback = LatencyPredictor(tiny_ops, on_missing="fallback", fallback=PerOpEstimator())
    a = fallback.predict_cached(model, TINY_SHAPE)
    assert a.source_ms("fallback") > 0 and fallback.predict_cached(model, TINY_SHAPE) is not a  # never cached
    small = LatencyPredictor(tiny_ops)
    small.predict_cache_size = 2
    for width in (1, 2, 3):
        small.predict_cached(nn.Sequential(*[TinyBlock(8) for _ in range(width)]), [1, 8, 16, 16])
    assert len(small.__dict__["_predict_cache"]) == 2
    predictor.clear_cache()
