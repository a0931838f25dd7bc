"""Latency tables: JSON round trips and the loader's errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmt_nas.exceptions import TableError
from mmt_nas.table.merge import merge_tables
from mmt_nas.table.records import OpRecord
from mmt_nas.table.table import LatencyStats, LatencyTable, RuntimeSettings, TableEntry, device_id
from mmt_nas.vocab import op_key

_finite = st.floats(min_value=0, max_value=1e4, allow_nan=False, allow_infinity=False)
_shape = st.lists(st.integers(1, 512), min_size=1, max_size=4).map(tuple)
_json_scalar = st.one_of(st.integers(-1000, 1000), st.booleans(), st.text(max_size=8), _finite)
_args = st.dictionaries(
    st.text(min_size=1, max_size=8), st.one_of(_json_scalar, st.lists(_json_scalar, max_size=3)), max_size=4
)


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
    entry = TableEntry(
        OpRecord(op_key("ReLU", "ReLU()", (1, 4)), "ReLU", "torch.nn", {}, (1, 4)),
        LatencyStats.from_samples([0.01, 0.02]),
    )
    doc = LatencyTable(entries=[entry]).to_dict()
    doc.update(changes)
    return doc


BAD_TABLES = {
    "truncated": (lambda d: json.dumps(d)[:-40], "not valid JSON"),
    "future schema": (lambda d: json.dumps({**d, "schema_version": 99}), "Upgrade mmt_nas"),
    "other schema": (lambda d: json.dumps({**d, "schema": "something"}), "expected schema"),
    "NaN latency": (lambda d: json.dumps(d).replace('"median": 0.015', '"median": NaN'), "non-finite"),
    "negative latency": (lambda d: json.dumps(d).replace('"median": 0.015', '"median": -1'), "median_ms"),
    "duplicate keys": (
        lambda d: json.dumps({**d, "entries": d["entries"] + [{**d["entries"][0], "core_ms": 1.0}]}),
        r"twice with different measurements \(entries\[0\] and entries\[1\]\)",
    ),
    "unknown device": (
        lambda d: json.dumps({**d, "entries": [{**d["entries"][0], "device": "ghost-1"}]}),
        "names device 'ghost-1'",
    ),
    "device of another class": (
        lambda d: json.dumps({**d, "device": {"cpu_model": "A"}, "devices": {"x": {"cpu_model": "B"}}}),
        "never mixed",
    ),
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


def test_a_key_listed_twice_with_the_same_measurement_is_used_once_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    doc = _doc()
    path = tmp_path / "t.json"
    path.write_text(json.dumps({**doc, "entries": doc["entries"] * 2}))
    with caplog.at_level("WARNING", logger="mmt_nas.table"):
        table = LatencyTable.load(path)
    assert len(table) == 1
    assert "twice (entries[0] and entries[1]) with the same measurement" in caplog.text


# -- devices and merging ------------------------------------------------------------------------

DEV_A = {"cpu_model": "Cortex-A76", "cpu_count": 4, "machine": "aarch64", "mnn_version": "3.6.1", "hostname": "a"}
DEV_B = {**DEV_A, "hostname": "b", "os": "Linux 6.2"}  # the same kind of device, another board
DEV_X = {**DEV_A, "cpu_model": "Cortex-A55"}


def _entry(name: str, samples: list[float], device: str | None = None) -> TableEntry:
    op = OpRecord(op_key("ReLU", f"ReLU({name})", (1, 4)), "ReLU", "torch.nn", {}, (1, 4))
    return TableEntry(op, LatencyStats.from_samples(samples), None, device)


def _table(
    device: dict, entries: list[tuple[str, list[float]]], settings_: RuntimeSettings | None = None
) -> LatencyTable:
    t = LatencyTable(settings_ or RuntimeSettings(), device, {"times": 10})
    did = t.add_device(device)
    for name, samples in entries:
        t.add(_entry(name, samples, did))
    return t


def test_device_ids_and_provenance_round_trip(tmp_path: Path) -> None:
    t = _table(DEV_A, [("x", [1.0, 1.1])])
    did = t.get(t.keys()[0]).device
    assert did == device_id(DEV_A) and did.startswith("a-") and device_id(DEV_B) != did
    assert t.device_of(t.keys()[0]) == DEV_A
    t.save(tmp_path / "t.json")
    assert LatencyTable.load(tmp_path / "t.json") == t
    with pytest.raises(TableError, match="never mixed"):
        t.add_device(DEV_X)
    with pytest.raises(TableError, match="not among the table's devices"):
        t.add(_entry("y", [1.0], "nowhere-1"))


def test_merge_joins_shards_keeps_more_samples_and_reports_disagreements() -> None:
    a = _table(
        DEV_A,
        [
            ("only-a", [1.0] * 5),
            ("both-same", [2.0, 2.01, 1.99] * 10),
            ("both-far", [1.0, 1.01] * 50),
            ("tie", [3.0, 3.01]),
        ],
    )
    b = _table(
        DEV_B,
        [("only-b", [4.0] * 5), ("both-same", [2.0, 2.02] * 50), ("both-far", [2.0, 2.01] * 10), ("tie", [5.0, 5.01])],
    )
    merged, report = merge_tables([a, b], rtol=0.1)
    keys = {k.split("|")[1] for k in merged.keys()}
    assert keys == {"ReLU(only-a)", "ReLU(only-b)", "ReLU(both-same)", "ReLU(both-far)", "ReLU(tie)"}
    by = {k.split("|")[1]: merged.get(k) for k in merged.keys()}
    # more timed runs win; on a tie the earlier table
    assert by["ReLU(both-same)"].latency.n == 100 and by["ReLU(both-same)"].device == device_id(DEV_B)
    assert by["ReLU(both-far)"].latency.n == 100 and by["ReLU(both-far)"].device == device_id(DEV_A)
    assert by["ReLU(tie)"].latency_ms == pytest.approx(3.005) and by["ReLU(tie)"].device == device_id(DEV_A)
    assert merged.device_of(next(k for k in merged.keys() if "only-b" in k))["hostname"] == "b"
    assert set(merged.devices) == {device_id(DEV_A), device_id(DEV_B)}
    assert report.sources == [3, 2] and sum(report.sources) == len(merged)
    conflicts = {c.key.split("|")[1]: c for c in report.conflicts}
    assert set(conflicts) == {"ReLU(both-same)", "ReLU(both-far)", "ReLU(tie)"}
    assert not conflicts["ReLU(both-same)"].beyond_noise  # 0.5% apart
    assert conflicts["ReLU(both-far)"].beyond_noise and conflicts["ReLU(both-far)"].rel_diff == pytest.approx(
        1.0, rel=0.01
    )
    assert [c.key for c in report.disagreements][0] == conflicts["ReLU(both-far)"].key
    assert LatencyTable.from_dict(json.loads(json.dumps(merged.to_dict()))) == merged


def test_merge_never_mixes_settings_or_kinds_of_device() -> None:
    a = _table(DEV_A, [("x", [1.0])])
    with pytest.raises(TableError, match="threads=2.*never merged|never merged"):
        merge_tables([a, _table(DEV_A, [("y", [1.0])], RuntimeSettings(threads=2))])
    with pytest.raises(TableError, match=r"table 1 cannot be merged.*Cortex-A55.*never mixed"):
        merge_tables([a, _table(DEV_X, [("y", [1.0])])])
    with pytest.raises(TableError, match="at least one table"):
        merge_tables([])
    with pytest.raises(TableError, match="rtol=-1"):
        merge_tables([a], rtol=-1)


def test_tables_from_before_device_ids_merge_with_their_table_device() -> None:
    old = LatencyTable(RuntimeSettings(), DEV_A, {}, [_entry("x", [1.0])])  # entries name no device
    merged, _ = merge_tables([old, _table(DEV_B, [("y", [2.0])])])
    assert {e.device for e in merged} == {device_id(DEV_A), device_id(DEV_B)}


@settings(max_examples=100, deadline=None)
@given(
    parts=st.lists(
        st.lists(st.tuples(st.sampled_from("abcdef"), st.lists(_finite, min_size=1, max_size=6)), max_size=6),
        min_size=1,
        max_size=4,
    )
)
def test_merge_properties(parts: list[list[tuple[str, list[float]]]]) -> None:
    tables = [_table({**DEV_A, "hostname": f"h{i}"}, list(dict(p).items())) for i, p in enumerate(parts)]
    merged, report = merge_tables(tables)
    assert set(merged.keys()) == {k for t in tables for k in t.keys()}
    for key in merged.keys():
        candidates = [t.get(key) for t in tables if key in t]
        best = max(e.latency.n for e in candidates)
        first_best = next(e for e in candidates if e.latency.n == best)
        assert merged.get(key).latency == first_best.latency and merged.get(key).device == first_best.device
    assert len(report.conflicts) == sum(len(t) for t in tables) - len(merged)
    assert sum(report.sources) == len(merged)


def test_check_device() -> None:
    t = _table(DEV_A, [("x", [1.0])])
    t.check_device({"cpu_model": "Cortex-A76"})
    t.check_device(DEV_B)  # another board of the same kind
    with pytest.raises(TableError, match="cpu_model: table 'Cortex-A76', asked 'Cortex-A55'"):
        t.check_device(DEV_X)
    with pytest.raises(TableError, match="names none of the fields"):
        t.check_device({"hostname": "a"})


def test_absurd_numbers_are_table_errors_not_crashes(tmp_path: Path) -> None:
    entry = TableEntry(
        OpRecord(op_key("ReLU", "ReLU()", (1, 4)), "ReLU", "torch.nn", {}, (1, 4)), LatencyStats.from_samples([0.01])
    )
    with pytest.raises(TableError, match="core_ms"):
        TableEntry(entry.op, entry.latency, 10**400)
    with pytest.raises(TableError, match="std_ms"):
        LatencyStats.from_samples([1e300, 0.0])  # the variance overflows to inf
    table = LatencyTable(device={"cpu_model": "x", "cpu_count": float("nan")}, entries=[entry])
    with pytest.raises(TableError, match="cannot save the latency table .*finite numbers"):
        table.save(tmp_path / "t.json")
    assert not (tmp_path / "t.json").exists()


def test_a_table_that_cannot_be_written_is_a_table_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(TableError, match="cannot save the latency table"):
        LatencyTable().save(tmp_path / "file" / "t.json")  # its folder is a file


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.floats(0.001, 100.0, allow_nan=False), min_size=1, max_size=30), min_size=1, max_size=5))
def test_combined_rounds_pool_mean_std_min_and_n_exactly(rounds: list[list[float]]) -> None:
    parts = [LatencyStats.from_samples(r) for r in rounds]
    pooled = LatencyStats.from_samples([x for r in rounds for x in r])
    got = LatencyStats.combine(parts)
    assert got.n == pooled.n and got.min_ms == pooled.min_ms
    assert got.mean_ms == pytest.approx(pooled.mean_ms, rel=1e-9)
    assert got.std_ms == pytest.approx(pooled.std_ms, rel=1e-6, abs=1e-9)
    medians = sorted(p.median_ms for p in parts)
    assert medians[0] <= got.median_ms <= medians[-1]


def test_a_table_from_before_rounds_loads_without_a_noise_floor_and_round_trips(tmp_path: Path) -> None:
    stats = LatencyStats.from_samples([1.0, 1.1, 0.9])
    op = OpRecord(op_key("ReLU", "ReLU()", (1, 4)), "ReLU", "torch.nn", {}, (1, 4))
    doc = LatencyTable(entries=[TableEntry(op, stats)]).to_dict()
    assert "rounds_ms" not in doc["entries"][0]  # the format tables had before rounds
    (tmp_path / "old.json").write_text(json.dumps(doc))
    table = LatencyTable.load(tmp_path / "old.json")
    assert table.get(op.key).rounds_ms is None and table.get(op.key).run_to_run is None  # type: ignore[union-attr]
    assert table.noise_floor() is None
    two = TableEntry(op, stats, rounds_ms=(1.0, 1.2))
    assert two.run_to_run == pytest.approx(0.2 / 1.1)
    assert TableEntry.from_dict(json.loads(json.dumps(two.to_dict()))) == two
    with pytest.raises(TableError, match="rounds_ms of 'ReLU"):
        TableEntry(op, stats, rounds_ms=(1.0, -1.0))
