"""Latency tables: JSON round trips and the loader's errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmt_nas.exceptions import TableError
from mmt_nas.table import LatencyStats, LatencyTable, OpRecord, RuntimeSettings, TableEntry, op_key

_finite = st.floats(min_value=0, max_value=1e4, allow_nan=False, allow_infinity=False)
_shape = st.lists(st.integers(1, 512), min_size=1, max_size=4).map(tuple)
_json_scalar = st.one_of(st.integers(-1000, 1000), st.booleans(), st.text(max_size=8), _finite)
_args = st.dictionaries(st.text(min_size=1, max_size=8), st.one_of(_json_scalar, st.lists(_json_scalar, max_size=3)),
                        max_size=4)


@st.composite
def entries(draw: st.DrawFn) -> TableEntry:
    cls = draw(st.sampled_from(["Conv2d", "ReLU", "Block", "Linear"]))
    shape = draw(_shape)
    rep = draw(st.text(min_size=1, max_size=30))
    op = OpRecord(
        key=op_key(cls, rep, shape),
        class_name=cls,
        module=draw(st.sampled_from(["torch.nn", "my.mods"])),
        args=draw(_args),
        input_shape=shape,
        output_shape=draw(st.none() | _shape),
        flops=draw(st.integers(0, 10**12)),
        params=draw(st.integers(0, 10**9)),
        file=draw(st.none() | st.from_regex(r"[A-Za-z0-9_-]{1,12}\.mnn", fullmatch=True)),
    )
    return TableEntry(op, LatencyStats.from_samples(draw(st.lists(_finite, min_size=1, max_size=20))))


@st.composite
def tables(draw: st.DrawFn) -> LatencyTable:
    settings_ = RuntimeSettings(
        draw(st.sampled_from(["CPU", "OPENCL"])), draw(st.integers(1, 8)), draw(st.sampled_from(["high", "low"]))
    )
    device = {"cpu_model": draw(st.text(max_size=20)), "cpu_count": draw(st.integers(1, 64))}
    return LatencyTable(settings_, device, {"times": draw(st.integers(1, 1000))}, draw(st.lists(entries(), max_size=8)))


@settings(max_examples=60, deadline=None)
@given(table=tables())
def test_json_round_trip(table: LatencyTable, tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tmp_path_factory.mktemp("rt") / "t.json"
    table.save(path)
    assert LatencyTable.load(path) == table
    assert LatencyTable.from_dict(json.loads(json.dumps(table.to_dict()))) == table


def test_stats_from_samples_match_numpy() -> None:
    import numpy as np

    xs = [5.0, 1.0, 3.0, 2.0, 4.0, 10.0, 2.5]
    s = LatencyStats.from_samples(xs)
    assert s.median_ms == pytest.approx(np.median(xs))
    assert s.mean_ms == pytest.approx(np.mean(xs))
    assert s.std_ms == pytest.approx(np.std(xs))
    assert s.p90_ms == pytest.approx(np.percentile(xs, 90))
    assert (s.min_ms, s.n, float(s)) == (1.0, 7, s.median_ms)


def _doc(**changes: object) -> dict:
    entry = TableEntry(OpRecord(op_key("ReLU", "ReLU()", (1, 4)), "ReLU", "torch.nn", {}, (1, 4)),
                       LatencyStats.from_samples([0.01, 0.02]))
    doc = LatencyTable(entries=[entry]).to_dict()
    doc.update(changes)
    return doc


BAD_TABLES = {
    "truncated": (lambda d: json.dumps(d)[:-40], "not valid JSON"),
    "future schema": (lambda d: json.dumps({**d, "schema_version": 99}), "Upgrade mmt_nas"),
    "other schema": (lambda d: json.dumps({**d, "schema": "something"}), "expected schema"),
    "NaN latency": (lambda d: json.dumps(d).replace('"median": 0.015', '"median": NaN'), "non-finite"),
    "negative latency": (lambda d: json.dumps(d).replace('"median": 0.015', '"median": -1'), "median_ms"),
    "duplicate keys": (lambda d: json.dumps({**d, "entries": d["entries"] * 2}), "twice"),
    "missing field": (lambda d: json.dumps(d).replace('"p90"', '"p91"'), "p90"),
    "path in file name": (lambda d: json.dumps(d).replace('"file": null', '"file": "../x.mnn"'), "plain file name"),
}


@pytest.mark.parametrize("mangle,fragment", list(BAD_TABLES.values()), ids=list(BAD_TABLES))
def test_bad_tables_raise_clear_errors(tmp_path: Path, mangle, fragment: str) -> None:  # noqa: ANN001
    path = tmp_path / "meta_latency.json"
    path.write_text(mangle(_doc()))
    with pytest.raises(TableError, match=fragment):
        LatencyTable.load(path)


def test_missing_table_and_folder_lookup(tmp_path: Path) -> None:
    with pytest.raises(TableError, match="not found"):
        LatencyTable.load(tmp_path)
    (tmp_path / "meta_latency.json").write_text(json.dumps(_doc()))
    assert len(LatencyTable.load(tmp_path)) == 1


def test_settings_are_validated() -> None:
    with pytest.raises(TableError, match="threads=0"):
        RuntimeSettings(threads=0)
    with pytest.raises(TableError, match="precision='max'"):
        RuntimeSettings(precision="max")
