"""The device's cache sizes: the probe's knee, its record in the table, and the predictor using it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import write_space
from test_context import _linear_table

from mmt_nas.build.generate import generate_ops_list
from mmt_nas.device.meter import meter_ops
from mmt_nas.device.probe import CacheProbe, cache_probe, choose_probe_op, knee
from mmt_nas.exceptions import OptionError, TableError
from mmt_nas.predict.cache import CACHE_BYTES
from mmt_nas.predict.predictor import LatencyPredictor
from mmt_nas.table.records import load_ops_meta
from mmt_nas.table.table import LatencyTable

MB = 2**20


def test_the_knee_is_where_the_time_rises_and_none_where_it_does_not() -> None:
    reuse = [MB // 2, MB, 2 * MB, 4 * MB, 8 * MB, 16 * MB, 32 * MB, 64 * MB]
    # cached up to 2 MB, half way at 4 MB, cold from 8 MB: a 2x rise
    assert knee(reuse, [1.0, 1.02, 1.05, 1.5, 1.95, 2.0, 2.0, 1.98]) == (2 * MB, 8 * MB)
    assert knee(reuse, [1.0, 1.01, 0.99, 1.02, 1.05, 1.04, 1.06, 1.03]) is None  # no rise: no knee
    assert knee(reuse, [1.6, 1.9, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0]) == (0, MB)  # cold from the start
    assert knee(reuse, [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.1, 1.4]) == (16 * MB, 64 * MB)  # still rising at the end
    assert knee([], []) is None and knee([MB], [1.0, 2.0]) is None


def test_a_probe_round_trips_and_a_bad_one_is_refused() -> None:
    probe = CacheProbe("Conv2d|x|1x128x7x7", 600_000, (MB, 4 * MB), (1.0, 1.6), (MB, 4 * MB), 3)
    assert CacheProbe.from_dict(json.loads(json.dumps(probe.to_dict()))) == probe
    assert CacheProbe.from_dict({**probe.to_dict(), "cache_bytes": None}).cache_bytes is None
    with pytest.raises(TableError, match="cache probe"):
        CacheProbe.from_dict({"op": "x"})
    with pytest.raises(TableError, match="do not agree"):
        CacheProbe.from_dict({**probe.to_dict(), "ratios": [1.0]})


def _conv_space(tmp_path: Path) -> Path:
    space = write_space(
        tmp_path,
        "torch.nn:\n"
        "  Conv2d:\n"
        "    - {in_channels: [128], out_channels: [128], kernel_size: [3], padding: [1],\n"
        "       input_shape: [[1, 128, 7, 7]]}\n"
        "    - {in_channels: [8], out_channels: [8], kernel_size: [1], input_shape: [[1, 8, 7, 7]]}\n"
        "  ReLU: {no_params: true, input_shape: [[1, 128, 7, 7]]}\n",
    )
    generate_ops_list(space, tmp_path / "ops", show_progress=False)
    return tmp_path / "ops"


def test_the_probe_times_the_weight_heavy_op_on_the_real_runtime_and_metering_keeps_it(tmp_path: Path) -> None:
    ops = _conv_space(tmp_path)
    records = load_ops_meta(ops)
    chosen = choose_probe_op(records)
    assert chosen is not None and chosen.input_shape == (1, 128, 7, 7) and chosen.class_name == "Conv2d"
    assert choose_probe_op([r for r in records if r.class_name == "ReLU" or r.input_shape[1] == 8]) is None
    probe = cache_probe(ops, records, rounds=1, times=3, reuse_bytes=(MB // 2, 8 * MB, 48 * MB))
    assert probe is not None and probe.op == chosen.key and probe.op_bytes == chosen.footprint_bytes
    assert list(probe.reuse_bytes) == sorted(probe.reuse_bytes) and probe.reuse_bytes[0] >= chosen.footprint_bytes
    assert len(probe.ratios) == len(probe.reuse_bytes) and all(0.2 < r < 20 for r in probe.ratios)
    assert probe.cache_bytes == knee(probe.reuse_bytes, probe.ratios)
    table = meter_ops(ops, times=3, rounds=1, show_progress=False)
    stored = CacheProbe.from_dict(LatencyTable.load(ops).timing["cache_probe"])
    assert stored.op == chosen.key and LatencyTable.load(ops).cache_bytes == stored.cache_bytes == table.cache_bytes
    skipped = meter_ops(ops, times=3, rounds=1, show_progress=False, output=tmp_path / "t.json", cache_probe=False)
    assert "cache_probe" not in skipped.timing and skipped.cache_bytes is None


def test_the_predictor_uses_the_tables_cache_sizes_when_asked() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.Linear(256, 256)).eval()  # 0.5 MB of weights
    old = _linear_table(model, [1, 256], hot=1.0, cold=3.0)  # a table from before the probe
    assert old.cache_bytes is None
    default = LatencyPredictor(old)
    assert default.cache_bytes == CACHE_BYTES and default.cache_bytes_source == "default"
    with pytest.raises(OptionError, match="cache_bytes='table' needs a table whose metering probed"):
        LatencyPredictor(old, cache_bytes="table")
    probed = _linear_table(model, [1, 256], hot=1.0, cold=3.0)
    probed.timing["cache_probe"] = {**CacheProbe("k", 1, (MB,), (2.0,), (0, 128 << 10), 1).to_dict()}
    assert LatencyPredictor(probed).cache_bytes == CACHE_BYTES  # not by default
    own = LatencyPredictor(probed, cache_bytes="table")
    assert own.cache_bytes == (0, 128 << 10) and own.cache_bytes_source == "table"
    # a small-cache device: 0.5 MB of weights no longer stay cached, so the model is predicted colder
    assert float(own.predict(model, [1, 256])) > float(default.predict(model, [1, 256]))
    assert float(own.predict(model, [1, 256])) == pytest.approx(
        float(LatencyPredictor(old, cache_bytes=(0, 128 << 10)).predict(model, [1, 256]))
    )
    assert LatencyPredictor(probed, cache_bytes=CACHE_BYTES).cache_bytes_source == "given"
    probed.timing["cache_probe"] = {"cache_bytes": None, "reason": "no op to probe with"}
    assert probed.cache_bytes is None


def test_a_failed_probe_costs_the_table_nothing_and_a_run_without_one_keeps_the_earlier(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mmt_nas.device.meter as meter
    from mmt_nas.exceptions import MeteringError
    from mmt_nas.table.merge import merge_tables

    ops = _conv_space(tmp_path)

    def broken(*args: object, **kwargs: object) -> None:
        raise MeteringError("MNN could not load the probe op")

    with monkeypatch.context() as m:
        m.setattr(meter, "probe_caches", broken)
        table = meter_ops(ops, times=3, rounds=1, show_progress=False)
    assert len(table) == len(load_ops_meta(ops)) and table.timing["cache_probe"]["cache_bytes"] is None
    assert "could not load the probe op" in table.timing["cache_probe"]["reason"]
    probed = meter_ops(ops, times=3, rounds=1, show_progress=False, output=tmp_path / "a.json")
    earlier = probed.timing["cache_probe"]
    assert earlier["op"] == choose_probe_op(load_ops_meta(ops)).key  # type: ignore[union-attr]
    again = meter_ops(ops, times=3, rounds=1, show_progress=False, output=tmp_path / "a.json", cache_probe=False)
    assert again.timing["cache_probe"] == earlier  # nothing to meter and no probe asked: the earlier one stays
    other = meter_ops(ops, times=3, rounds=2, show_progress=False, output=tmp_path / "b.json", cache_probe=False)
    merged, _ = merge_tables([other, probed])
    assert merged.timing["cache_probe"] == earlier  # the shards' timings differ; the probe survives the merge
