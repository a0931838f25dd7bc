"""Cold times: metered with copies cycled, kept in tables and journals, composed by a model's weight bytes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from mmt_nas.device.meter import meter_ops
from mmt_nas.device.profile import COLD_REUSE_BYTES, cold_copies, cold_core_ms, profile_model
from mmt_nas.device.rounds import RoundTiming
from mmt_nas.exceptions import OptionError, TableError
from mmt_nas.parser import parse_model
from mmt_nas.predict.cache import CACHE_BYTES, cold_share
from mmt_nas.predict.predictor import LatencyPredictor
from mmt_nas.table.records import OpRecord
from mmt_nas.table.table import LatencyStats, LatencyTable, RuntimeSettings, TableEntry

MB = 1 << 20


def test_cold_copies_reach_the_reuse_distance() -> None:
    assert cold_copies(2 * MB, 48 * MB) == 24  # 25 would reach it: capped
    assert cold_copies(8 * MB, 48 * MB) == 7  # 6 others pass between two runs of one copy: 48 MB
    assert cold_copies(100 * MB, 48 * MB) == 2  # never fewer than 2: else it is the hot time
    assert cold_copies(0) == 24


def test_cold_share_is_zero_below_the_caches_one_above_and_linear_between() -> None:
    lo, hi = CACHE_BYTES
    assert cold_share(0) == cold_share(lo) == 0.0
    assert cold_share(hi) == cold_share(10 * hi) == 1.0
    assert cold_share((lo + hi) / 2) == pytest.approx(0.5)


def _stats(ms: float) -> LatencyStats:
    return LatencyStats(ms, ms, 0.0, ms, ms, 1)


def test_cold_ms_round_trips_and_old_entries_have_none() -> None:
    op = OpRecord("Conv2d|c|1x3x8x8", "Conv2d", "torch.nn", {}, (1, 3, 8, 8), (1, 4, 8, 8), 100, 108)
    entry = TableEntry(op, _stats(1.0), core_ms=0.8, cold_ms=1.3)
    d = json.loads(json.dumps(entry.to_dict()))
    assert d["cold_ms"] == 1.3
    assert TableEntry.from_dict(d) == entry
    del d["cold_ms"]  # a table written before cold times
    assert TableEntry.from_dict(d).cold_ms is None
    with pytest.raises(TableError, match="cold_ms"):
        TableEntry(op, _stats(1.0), cold_ms=-1.0)
    line = RoundTiming("k", 0, _stats(1.0), 0.8, None, 1.3)
    assert RoundTiming.from_dict(json.loads(json.dumps(line.to_dict()))) == line
    old = RoundTiming("k", 1, _stats(1.0), None, None).to_dict()
    assert "cold_ms" not in old and RoundTiming.from_dict(old).cold_ms is None
    with pytest.raises(TableError, match="cold_ms"):
        RoundTiming.from_dict({**line.to_dict(), "cold_ms": "slow"})


def test_metering_stores_cold_times_unless_asked_not_to(tiny_ops_copy: Path, tmp_path: Path) -> None:
    table = meter_ops(tiny_ops_copy, 10, output=tmp_path / "cold.json", show_progress=False, sentinel_every=0)
    assert len(table) > 0
    assert all(e.cold_ms is not None and e.cold_ms > 0 for e in table)
    assert table.timing["cold"]["reuse_bytes"] == COLD_REUSE_BYTES
    again = LatencyTable.load(tmp_path / "cold.json")
    assert [e.cold_ms for e in again] == [e.cold_ms for e in table]
    hot_only = meter_ops(
        tiny_ops_copy, 10, output=tmp_path / "hot.json", show_progress=False, sentinel_every=0, cold=False
    )
    assert all(e.cold_ms is None for e in hot_only) and "cold" not in hot_only.timing


def test_copies_cycled_each_get_their_own_weights(tmp_path: Path) -> None:
    """A weight-bound conv (2.25 MB of weights) cycled through copies past the reuse distance is profiled from
    every copy: the profile has one entry per op (not per copy), and the cold time is a real positive time."""
    from mmt_nas.build.export import export_to_mnn

    conv = torch.nn.Conv2d(256, 256, 3, padding=1, bias=False).eval()
    path = tmp_path / "conv.mnn"
    export_to_mnn(conv, [1, 256, 7, 7], path)
    prof = profile_model(path, 6, copies=3)
    assert [p.type for p in prof].count("Convolution") == 1
    cold = cold_core_ms(path, 4 * (256 * 256 * 9 + 256 * 49), 4)
    assert math.isfinite(cold) and cold > 0
    with pytest.raises(Exception, match="copies"):
        profile_model(path, 2, copies=0)


def _linear_table(model: torch.nn.Module, shape: list[int], hot: float, cold: float) -> LatencyTable:
    entries = []
    for op in parse_model(model, shape):
        params = sum(p.numel() for p in op.module.parameters()) if op.module is not None else 0
        rec = OpRecord(op.key, op.class_name, "torch.nn", {}, op.input_shape, op.output_shape, 0, params)
        entries.append(TableEntry(rec, _stats(hot + 0.5), core_ms=hot, cold_ms=cold))
    return LatencyTable(RuntimeSettings(), {"cpu_model": "test"}, {}, entries)


@pytest.mark.parametrize(
    ("features", "share"),
    [(256, 0.0), (1200, None), (2048, 1.0)],  # 2 x 0.25 MB, 2 x 5.5 MB, 2 x 16 MB of weights
)
def test_a_model_is_composed_between_hot_and_cold_by_its_weight_bytes(features: int, share: float | None) -> None:
    """Two Linear layers, hot 1 ms and cold 3 ms each: the activations' part of each op's bytes is cold in any
    model, its weights' part as the model's size takes it (a small model keeps its weights in the caches, a
    large one does not, one in between is in between by cold_share); context='weights' moves the weights' part
    only, context='alone' is always hot."""
    model = torch.nn.Sequential(torch.nn.Linear(features, features), torch.nn.Linear(features, features)).eval()
    table = _linear_table(model, [1, features], hot=1.0, cold=3.0)
    weights = sum(4 * p.numel() for p in model.parameters())
    expected = cold_share(weights) if share is None else share
    assert 0 < cold_share(weights) < 1 if share is None else cold_share(weights) == share
    got = LatencyPredictor(table).predict(model, [1, features])
    w = 4 * (features * features + features)
    weights_part = w / (w + 4 * features)  # its input and output are the rest of its bytes
    part = expected * weights_part + (1 - weights_part)
    assert float(got) == pytest.approx(2 * (1.0 + 2.0 * part))
    assert all(c.ratio == pytest.approx(1 + 2 * part) for c in got.ops)
    weights_only = LatencyPredictor(table, context="weights").predict(model, [1, features])
    assert float(weights_only) == pytest.approx(2 * (1.0 + 2.0 * expected * weights_part))
    assert float(LatencyPredictor(table, context="alone").predict(model, [1, features])) == pytest.approx(2.0)


def test_tables_without_cold_times_predict_the_same_in_either_context() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2048, 2048), torch.nn.Linear(2048, 2048)).eval()
    table = _linear_table(model, [1, 2048], hot=1.0, cold=3.0)
    old = LatencyTable(table.settings, table.device, {}, [TableEntry(e.op, e.latency, e.core_ms) for e in table])
    assert float(LatencyPredictor(old).predict(model, [1, 2048])) == pytest.approx(2.0)
    for context in ("alone", "weights"):
        assert float(LatencyPredictor(old, context=context).predict(model, [1, 2048])) == pytest.approx(2.0)


def test_bad_context_options_are_option_errors() -> None:
    table = _linear_table(torch.nn.Linear(4, 4), [1, 4], 1.0, 2.0)
    with pytest.raises(OptionError, match="context"):
        LatencyPredictor(table, context="warm")  # type: ignore[arg-type]
    with pytest.raises(OptionError, match="cache_bytes"):
        LatencyPredictor(table, cache_bytes=(20, 10))


def test_tables_metered_before_the_input_was_written_each_run_are_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    table = _linear_table(torch.nn.Linear(4, 4), [1, 4], 1.0, 2.0)
    table.timing = {"times": 20, "method": "runSession"}
    with caplog.at_level("WARNING", logger="mmt_nas.predict.predictor"):
        LatencyPredictor(table)
    assert "denormal" in caplog.text and "Meter it again" in caplog.text
    caplog.clear()
    fresh = _linear_table(torch.nn.Linear(4, 4), [1, 4], 1.0, 2.0)
    fresh.timing = {"times": 20, "method": "runSession", "input": "written before every run"}
    with caplog.at_level("WARNING", logger="mmt_nas.predict.predictor"):
        LatencyPredictor(fresh)
    assert "denormal" not in caplog.text


def test_a_metered_table_says_its_input_was_written_before_every_run(tiny_ops: Path) -> None:
    table = LatencyTable.load(tiny_ops / "meta_latency.json")
    assert table.timing["input"] == "written before every run"


def test_a_weightless_op_takes_its_cold_time_in_any_model_and_its_hot_time_with_weights_only() -> None:
    """A weightless op (its input and output are all its bytes) takes its cold time inside a model: a model's
    buffers rotate through its memory pool, as the cold timing's do, whatever the model's size. With
    context='weights' it keeps its hot time (only weights move)."""
    model = torch.nn.Sequential(torch.nn.Linear(2048, 2048), torch.nn.ReLU(), torch.nn.Linear(2048, 2048)).eval()
    table = _linear_table(model, [1, 2048], hot=1.0, cold=3.0)
    got = LatencyPredictor(table, composition="modules").predict(model, [1, 2048])
    by_class = {c.class_name: c for c in got.ops}
    assert by_class["ReLU"].ratio == pytest.approx(3.0) and by_class["ReLU"].latency_ms == pytest.approx(3.0)
    assert by_class["Linear"].ratio == pytest.approx(3.0)  # 32 MB of weights: share 1, every part cold
    old = LatencyPredictor(table, composition="modules", context="weights").predict(model, [1, 2048])
    by_class = {c.class_name: c for c in old.ops}
    assert by_class["ReLU"].ratio == 1.0
    assert by_class["Linear"].ratio == pytest.approx(1 + 2 * (4 * 2048 * 2049) / (4 * 2048 * 2049 + 4 * 2048))


def _fallback_table(cold_over_hot: float | None) -> LatencyTable:
    """Linear ops of other widths than the model's, hot 1 ms, cold ``cold_over_hot`` ms (or never metered cold)."""
    entries = []
    for n in (64, 128, 256, 512, 768, 1024, 1536):
        rec = OpRecord(f"Linear|{n}", "Linear", "torch.nn", {}, [1, n], [1, n], 2 * n * n, n * n + n)
        cold = None if cold_over_hot is None else cold_over_hot
        entries.append(TableEntry(rec, _stats(1.5), core_ms=1.0, cold_ms=cold))
    return LatencyTable(RuntimeSettings(), {"cpu_model": "test"}, {}, entries)


def test_ops_the_fallback_estimates_move_toward_their_estimated_cold_time() -> None:
    """The fallback learns the cold-over-hot ratio of the table's ops (3 here) and applies it to the ops it
    estimates exactly as the table's ops are composed: in a model with 32 MB of weights (share 1), each op's
    time grows by the weights' part of its bytes times (3 - 1); alone, or from a table never metered cold,
    it does not."""
    from mmt_nas.predict.fallback import LatencyRegressor

    model = torch.nn.Sequential(torch.nn.Linear(2048, 2048), torch.nn.Linear(2048, 2048)).eval()
    table = _fallback_table(3.0)
    fallback = LatencyRegressor("forest").fit(table)
    assert fallback.cold_ratios([e.op for e in table]) == pytest.approx([3.0] * len(table))
    pred = LatencyPredictor(table, on_missing="fallback", fallback=fallback).predict(model, [1, 2048])
    assert {o.source for o in pred.ops} == {"fallback"}
    w = 4 * (2048 * 2048 + 2048)
    assert cold_share(2 * w) == 1.0
    for o in pred.ops:
        assert o.ratio == pytest.approx(3.0)  # share 1: its weights' part and its activations' part both cold
    weights_only = LatencyPredictor(table, on_missing="fallback", fallback=fallback, context="weights")
    for o in weights_only.predict(model, [1, 2048]).ops:
        assert o.ratio == pytest.approx(1 + 2.0 * w / (w + 4 * 2048))
    alone = LatencyPredictor(table, on_missing="fallback", fallback=fallback, context="alone").predict(model, [1, 2048])
    assert all(o.ratio == 1.0 for o in alone.ops)
    assert float(pred) == pytest.approx(float(alone) * pred.ops[0].ratio)
    hot_only = LatencyRegressor("forest").fit(_fallback_table(None))
    assert hot_only.cold_ratios([e.op for e in table]) is None
    plain = LatencyPredictor(table, on_missing="fallback", fallback=hot_only).predict(model, [1, 2048])
    assert all(o.ratio == 1.0 for o in plain.ops)


def test_a_block_the_table_holds_whole_moves_only_its_weights() -> None:
    """A block's activations inside it are made and used within it, alone and in a model alike (its cold timing
    cooled them all): only its weights move with the model's size; a leaf op's activations move too."""
    from tinymods import TinyBlock

    from mmt_nas.predict.cache import is_block

    block = TinyBlock(8)
    assert is_block("TinyBlock") and is_block("ResNetBasicBlock") and not is_block("Conv2d")
    assert not is_block("Hardswish") and not is_block("Functional", "Functional|torch.flatten(x, 1)|1x8")
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 1), block).eval()
    ops = parse_model(model, [1, 3, 8, 8], known=lambda key: key.startswith(("TinyBlock", "Conv2d|Conv2d(3")))
    assert [o.class_name for o in ops] == ["Conv2d", "TinyBlock"]
    entries = []
    for op in ops:
        params = sum(p.numel() for p in op.module.parameters())
        rec = OpRecord(op.key, op.class_name, "m", {}, op.input_shape, op.output_shape, 0, params)
        entries.append(TableEntry(rec, _stats(1.5), core_ms=1.0, cold_ms=3.0))
    table = LatencyTable(RuntimeSettings(), {"cpu_model": "test"}, {}, entries)
    by_class = {o.class_name: o for o in LatencyPredictor(table).predict_ops(ops).ops}
    leaf = entries[0].op.weight_fraction
    assert by_class["Conv2d"].ratio == pytest.approx(1 + 2 * (1 - leaf))  # a small model: its weights stay hot
    assert by_class["TinyBlock"].ratio == 1.0  # its weights hot, its activations inside it as when timed alone
