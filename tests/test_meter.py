"""Metering: statistics, settings, no torch on the device, and kill-and-resume."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, write_space

from mmt_nas.device.meter import JOURNAL_SUFFIX, meter_ops
from mmt_nas.device.rounds import read_journal
from mmt_nas.device.timing import time_model
from mmt_nas.exceptions import MeteringError
from mmt_nas.table.records import load_ops_meta
from mmt_nas.table.table import LatencyTable, RuntimeSettings


def test_table_has_stats_device_and_runtime(tiny_ops: Path) -> None:
    table = LatencyTable.load(tiny_ops / "meta_latency.json")
    assert set(table.keys()) == {op.key for op in load_ops_meta(tiny_ops)}
    for entry in table:
        s = entry.latency
        assert s.n == 20
        assert 0 < s.min_ms <= s.median_ms <= s.p90_ms
        assert s.std_ms >= 0 and s.mean_ms >= s.min_ms
    assert table.settings == RuntimeSettings("CPU", 1, "high")
    for field in ("cpu_model", "cpu_count", "os", "mnn_version", "machine"):
        assert table.device[field], field
    assert table.timing["times"] == 20
    assert not (tiny_ops / ("meta_latency.json" + JOURNAL_SUFFIX)).exists()


def test_bigger_ops_take_longer(tiny_ops: Path) -> None:
    table = LatencyTable.load(tiny_ops)
    by_class = {e.op.class_name: e.latency_ms for e in table}
    # a 3x3 conv block on 8x16x16 does ~40x the arithmetic of a ReLU on the same tensor
    assert by_class["TinyBlock"] > by_class["ReLU"]


def test_bad_arguments(tiny_ops_copy: Path) -> None:
    with pytest.raises(MeteringError, match="times=0"):
        meter_ops(tiny_ops_copy, times=0)
    with pytest.raises(MeteringError, match="threads=0"):
        meter_ops(tiny_ops_copy, times=1, threads=0)
    with pytest.raises(MeteringError, match="generate_ops_list first"):
        meter_ops(tiny_ops_copy / "nowhere", times=1)
    with pytest.raises(MeteringError, match="not found"):
        time_model(tiny_ops_copy / "absent.mnn", 1)


def test_unreadable_model_is_a_metering_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mnn"
    bad.write_bytes(b"not a model" * 10)
    with pytest.raises(MeteringError, match="could not load"):
        time_model(bad, 1)


def test_existing_table_with_other_settings_is_refused(tiny_ops_copy: Path) -> None:
    with pytest.raises(MeteringError, match="Tables never mix settings"):
        meter_ops(tiny_ops_copy, times=3, threads=2)


def test_rerun_measures_only_new_ops(tiny_ops_copy: Path) -> None:
    before = LatencyTable.load(tiny_ops_copy)
    again = meter_ops(tiny_ops_copy, times=5)
    assert list(again) == list(before)  # nothing re-measured: n is still 20 everywhere


def test_meter_imports_and_runs_without_torch_or_sklearn(tiny_ops_copy: Path, tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in ("torch", "sklearn", "onnx", "optuna", "matplotlib"):
                    raise ImportError("blocked on this device: " + name)
        sys.meta_path.insert(0, Block())
        import mmt_nas
        from mmt_nas.meter import meter_ops
        table = meter_ops({str(tiny_ops_copy)!r}, times=3, output={str(tmp_path / "device.json")!r})
        assert len(table) == 8, len(table)
        assert not any(m.split(".")[0] in ("torch", "sklearn") for m in sys.modules)
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")
    assert len(LatencyTable.load(tmp_path / "device.json")) == 8


@contextlib.contextmanager
def _long_metering(tmp_path: Path, n_ops: int, lines: int) -> Iterator[tuple[Path, Path, subprocess.Popen]]:
    """A real process metering ``n_ops`` convolutions for minutes, once its journal has ``lines`` lines;
    SIGKILLed when the block exits."""
    from mmt_nas.build.generate import generate_ops_list

    shapes = ", ".join(f"[1, 16, {8 + i}, 32]" for i in range(n_ops))
    path = write_space(
        tmp_path,
        f"torch.nn:\n  Conv2d: {{in_channels: [16], out_channels: [16], kernel_size: [3], input_shape: [{shapes}]}}\n",
    )
    ops_dir = tmp_path / "ops"
    generate_ops_list(path, ops_dir)
    journal = ops_dir / ("meta_latency.json" + JOURNAL_SUFFIX)
    code = f"from mmt_nas.meter import meter_ops; meter_ops({str(ops_dir)!r}, times=20000)"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    try:
        deadline = time.monotonic() + 240
        while not (journal.exists() and journal.read_text().count("\n") >= lines):
            assert proc.poll() is None, "metering ended before it could be killed"
            assert time.monotonic() < deadline, "metering made no progress"
            time.sleep(0.05)
        yield ops_dir, journal, proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


def test_kill_and_resume_loses_nothing(tmp_path: Path) -> None:
    with _long_metering(tmp_path, 12, 3) as (ops_dir, journal, proc):
        pass
    assert proc.returncode == -signal.SIGKILL
    done = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]
    assert 3 <= len(done) < 12
    for name in os.listdir(ops_dir):
        assert not name.endswith(".tmp"), name

    assert all(d["round"] == 0 for d in done)  # the first of the two shuffled rounds
    table = meter_ops(ops_dir, times=5)
    assert len(table) == 12
    for d in done:  # timed before the kill: kept as they were (10000 runs of round 0), not timed again
        entry = table.get(d["key"])
        assert entry is not None and entry.rounds_ms is not None and len(entry.rounds_ms) == 2
        assert entry.rounds_ms[0] == d["latency_ms"]["median"] and entry.latency.n == 10000 + 2  # + round 1's
    assert sum(e.latency.n == 5 for e in table) == 12 - len(done)
    assert not journal.exists()
    assert LatencyTable.load(ops_dir) == table


def test_every_entry_records_the_device_it_was_measured_on(tiny_ops: Path) -> None:
    from mmt_nas.device.facts import device_info
    from mmt_nas.table.table import device_id

    table = LatencyTable.load(tiny_ops)
    here = device_id(device_info())
    assert set(table.devices) == {here}
    assert {e.device for e in table} == {here}
    assert table.device_of(table.keys()[0])["hostname"] == device_info()["hostname"]


def test_metering_into_a_table_of_another_kind_of_device_is_refused(tiny_ops_copy: Path) -> None:
    path = tiny_ops_copy / "meta_latency.json"
    doc = json.loads(path.read_text())
    other = {**doc["device"], "cpu_model": "Some Other CPU"}
    doc["device"] = other
    doc["devices"] = {"other-1": other}
    doc["entries"] = [{**e, "device": "other-1"} for e in doc["entries"][:2]]
    path.write_text(json.dumps(doc))
    with pytest.raises(MeteringError, match="Some Other CPU.*never mixed"):
        meter_ops(tiny_ops_copy, times=3)
    assert json.loads(path.read_text()) == doc  # left as it was


def test_shards_are_disjoint_cover_every_op_and_merge_into_the_whole_table(tiny_ops_copy: Path) -> None:
    from mmt_nas.device.meter import in_shard
    from mmt_nas.table.merge import merge_tables

    keys = {op.key for op in load_ops_meta(tiny_ops_copy)}
    (tiny_ops_copy / "meta_latency.json").unlink()
    parts = [meter_ops(tiny_ops_copy, times=3, shard=f"{i}/3", profile=False) for i in (1, 2, 3)]
    for i, part in enumerate(parts, 1):
        assert (tiny_ops_copy / f"meta_latency.shard-{i}-of-3.json").is_file()
        assert set(part.keys()) == {k for k in keys if in_shard(k, (i, 3))}
    assert sum(len(p) for p in parts) == len(keys)
    assert set().union(*(p.keys() for p in parts)) == keys
    assert not (tiny_ops_copy / "meta_latency.json").exists()
    merged, report = merge_tables(parts)
    assert set(merged.keys()) == keys and report.conflicts == [] and report.sources == [len(p) for p in parts]
    # the hash is the same whatever the order: an explicit (i, n) gives the same share
    assert set(meter_ops(tiny_ops_copy, times=3, shard=(2, 3), profile=False).keys()) == set(parts[1].keys())


@pytest.mark.parametrize("bad", ["0/3", "4/3", "2", "a/b", (1,), (2, 1), "1/0"])
def test_bad_shards_are_refused(tiny_ops_copy: Path, bad: object) -> None:
    with pytest.raises(MeteringError, match="shard"):
        meter_ops(tiny_ops_copy, times=1, shard=bad)  # type: ignore[arg-type]


def test_cli_shards_and_merge(tiny_ops_copy: Path) -> None:
    cli = [sys.executable, "-m", "mmt_nas.cli"]
    (tiny_ops_copy / "meta_latency.json").unlink()
    for i in (1, 2):
        out = subprocess.run(
            cli + ["meter", str(tiny_ops_copy), "--times", "3", "--shard", f"{i}/2"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr
        assert f"(shard {i}/2)" in out.stdout
    shards = [str(tiny_ops_copy / f"meta_latency.shard-{i}-of-2.json") for i in (1, 2)]
    merged = tiny_ops_copy / "meta_latency.json"
    out = subprocess.run(
        cli + ["merge", *shards, "-o", str(tiny_ops_copy), "--report", str(tiny_ops_copy / "m.json")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert len(LatencyTable.load(merged)) == len(load_ops_meta(tiny_ops_copy))
    assert json.loads((tiny_ops_copy / "m.json").read_text())["conflicts"] == []
    # merging again into an existing output that is not an input would replace it: refused
    again = subprocess.run(cli + ["merge", shards[0], "-o", str(merged)], capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "exists and is not among the tables to merge" in again.stderr
    # nor while a meter run writes that table: merge takes the same lock
    from mmt_nas._files import exclusive_lock, lock_path

    with exclusive_lock(lock_path(merged), "metering (the test)"):
        busy = subprocess.run(
            cli + ["merge", str(merged), shards[0], "-o", str(merged)], capture_output=True, text=True, timeout=300
        )
    assert busy.returncode == 2 and "is already writing" in busy.stderr and "merge into another file" in busy.stderr
    # a shard measured again with more runs wins over the merged entry, with a conflict per key
    out = subprocess.run(
        cli + ["meter", str(tiny_ops_copy), "--times", "7", "--shard", "1/2", "-o", str(tiny_ops_copy / "again.json")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    out = subprocess.run(
        cli + ["merge", str(merged), str(tiny_ops_copy / "again.json"), "-o", str(merged)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    table = LatencyTable.load(merged)
    again_keys = set(LatencyTable.load(tiny_ops_copy / "again.json").keys())
    assert {e.op.key for e in table if e.latency.n == 7} == again_keys
    assert f"{len(again_keys)} keys measured more than once" in out.stdout


def test_a_second_process_metering_into_the_same_table_is_refused(tmp_path: Path) -> None:
    from mmt_nas.exceptions import LockedError

    with _long_metering(tmp_path, 6, 1) as (ops_dir, journal, proc):
        before = journal.read_text()
        with pytest.raises(LockedError, match=rf"another process \(pid {proc.pid} on .*\) is already metering"):
            meter_ops(ops_dir, times=3)
        assert journal.read_text().startswith(before)  # the refused run wrote nothing
        # another output (e.g. a shard) is not blocked
        assert len(meter_ops(ops_dir, times=3, output=tmp_path / "mine.json", profile=False)) == 6
    # the lock died with its holder: a rerun continues
    table = meter_ops(ops_dir, times=3, profile=False)
    assert len(table) == 6 and any(e.latency.n == 10000 + 1 for e in table)  # its journaled round 0 kept


def test_a_rerun_removes_the_temporary_file_a_killed_save_left(tiny_ops_copy: Path) -> None:
    stale = tiny_ops_copy / ".meta_latency.json.k3j9x0q1.tmp"  # atomic_write_text's naming
    stale.write_text('{"half": ')
    os.utime(stale, (time.time() - 60, time.time() - 60))
    other = tiny_ops_copy / ".notes.txt.k3j9x0q1.tmp"  # not the table's: left alone
    other.write_text("x")
    os.utime(other, (time.time() - 60, time.time() - 60))
    meter_ops(tiny_ops_copy, times=3)
    assert not stale.exists() and other.exists()


def test_entries_after_a_torn_journal_line_stay_readable(tiny_ops_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mmt_nas.device.meter as meter

    table = tiny_ops_copy / "meta_latency.json"
    table.write_text(json.dumps({**json.loads(table.read_text()), "entries": []}))  # saved at start, nothing measured
    journal = tiny_ops_copy / ("meta_latency.json" + JOURNAL_SUFFIX)
    journal.write_text('{"key": "half a line, the write was kil')
    real, calls = meter.time_model, []

    def interrupted_after_two(*args: object, **kwargs: object) -> object:
        calls.append(args)
        if len(calls) > 2:
            raise KeyboardInterrupt  # killed again, before any checkpoint
        return real(*args, **kwargs)

    monkeypatch.setattr(meter, "time_model", interrupted_after_two)
    with pytest.raises(KeyboardInterrupt):
        meter_ops(tiny_ops_copy, times=3, profile=False)
    lines = journal.read_text().splitlines()
    assert lines[0].startswith('{"key": "half') and len(lines) == 3
    entries, timings = read_journal(journal)
    assert entries == [] and len(timings) == 2  # both new round timings survive the torn line before them


def test_a_journal_without_its_table_is_set_aside_not_mixed_in(tiny_ops_copy: Path) -> None:
    """Deleting a table to start over (say, with other threads) must not bring back its journaled entries."""
    old = LatencyTable.load(tiny_ops_copy)
    (tiny_ops_copy / "meta_latency.json").unlink()
    journal = tiny_ops_copy / ("meta_latency.json" + JOURNAL_SUFFIX)
    journal.write_text("".join(json.dumps(e.to_dict()) + "\n" for e in old))  # n=20 each, maybe other settings
    table = meter_ops(tiny_ops_copy, times=3, threads=2, profile=False)
    assert {e.latency.n for e in table} == {3} and {len(e.rounds_ms or ()) for e in table} == {2}
    aside = [p for p in tiny_ops_copy.iterdir() if p.name.startswith(journal.name + ".orphaned-")]
    assert len(aside) == 1 and len(aside[0].read_text().splitlines()) == len(old)  # kept, not lost


def test_shuffled_rounds_are_seeded_and_reproducible(tiny_ops_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mmt_nas.device.meter as meter

    keys = [op.key for op in load_ops_meta(tiny_ops_copy)]
    assert meter.round_order(keys, 7, 0) == meter.round_order(list(reversed(keys)), 7, 0)  # input order is moot
    assert sorted(meter.round_order(keys, 7, 1)) == sorted(keys)
    assert meter.round_order(keys, 7, 0) != meter.round_order(keys, 7, 1)  # each round its own order
    assert meter.round_order(keys, 7, 0) != meter.round_order(keys, 8, 0)
    file_of = {op.file: op.key for op in load_ops_meta(tiny_ops_copy)}
    real = meter.time_model

    def metered(seed: int, out: str) -> list[tuple[str, int]]:
        calls: list[tuple[str, int]] = []

        def recording(path: Path, times: int, **kwargs: object) -> object:
            calls.append((file_of[Path(path).name], times))
            return real(path, times, **kwargs)

        monkeypatch.setattr(meter, "time_model", recording)
        meter_ops(tiny_ops_copy, times=5, profile=False, seed=seed, output=tiny_ops_copy / out)
        return calls

    first, again, other = metered(7, "a.json"), metered(7, "b.json"), metered(8, "c.json")
    assert first == again != other
    n = len(keys)
    assert [k for k, _ in first[:n]] == meter.round_order(keys, 7, 0)
    assert [k for k, _ in first[n:]] == meter.round_order(keys, 7, 1)
    assert {t for _, t in first[:n]} == {3} and {t for _, t in first[n:]} == {2}  # 5 runs split over 2 rounds
    table = LatencyTable.load(tiny_ops_copy / "a.json")
    for e in table:
        assert e.latency.n == 5 and e.rounds_ms is not None and len(e.rounds_ms) == 2
        assert e.latency.median_ms == pytest.approx(sum(e.rounds_ms) / 2)  # the median of two rounds
    floor = table.noise_floor()
    assert floor is not None and floor.n_ops == n and 0 <= floor.median_pct <= floor.p90_pct
    assert table.timing["rounds"] == 2 and table.timing["seed"] == 7
    state = table.timing["device_state"]  # what else ran while it metered (mmt_nas.device.state)
    assert state["wall_s"] > 0 and state["cpu_count"] == os.cpu_count()


def test_one_round_is_the_old_protocol(tiny_ops_copy: Path) -> None:
    table = meter_ops(tiny_ops_copy, times=4, rounds=1, profile=False, output=tiny_ops_copy / "one.json")
    assert all(e.latency.n == 4 and e.rounds_ms is not None and len(e.rounds_ms) == 1 for e in table)
    assert table.noise_floor() is None
    with pytest.raises(MeteringError, match=r"`rounds` must be an integer >= 1, but got rounds=0"):
        meter_ops(tiny_ops_copy, times=4, rounds=0)


def test_a_sentinel_catches_a_neighbour_burst_and_the_timings_next_to_it_are_timed_again(tmp_path: Path) -> None:
    """A real second process shares the metering process's CPU for a second, mid-metering."""
    from mmt_nas.build.generate import generate_ops_list

    shapes = ", ".join(f"[1, 16, {12 + i}, {12 + i}]" for i in range(24))
    space = (
        f"torch.nn:\n  Conv2d: {{in_channels: [16], out_channels: [16], kernel_size: [3], input_shape: [{shapes}]}}\n"
    )
    ops_dir = tmp_path / "ops"
    generate_ops_list(write_space(tmp_path, space), ops_dir)
    journal = ops_dir / ("meta_latency.json" + JOURNAL_SUFFIX)
    code = (
        "import os; os.sched_setaffinity(0, {0})\n"
        f"from mmt_nas.meter import meter_ops; meter_ops({str(ops_dir)!r}, times=400, sentinel_every=4)"
    )
    meter = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    burner = None
    try:
        deadline = time.monotonic() + 240
        while not (journal.exists() and journal.read_text().count("\n") >= 16):  # a third of the way
            assert meter.poll() is None and time.monotonic() < deadline, "metering ended or made no progress"
            time.sleep(0.02)
        burner = subprocess.Popen([sys.executable, "-c", "import os; os.sched_setaffinity(0, {0})\nwhile True: pass"])
        time.sleep(1.5)
    finally:
        if burner is not None:
            burner.kill()
            burner.wait()
        assert meter.wait(timeout=240) == 0
    table = LatencyTable.load(ops_dir)
    guard = table.timing["sentinel"]
    assert len(table) == 24 and guard["key"] in table
    readings = [ms for _, _, ms in guard["series"]]
    assert max(readings) > 1.4 * guard["baseline_ms"], guard  # the burst, seen by the sentinel
    assert guard["remeasured"], guard  # and the timings next to it timed again
    for item in guard["remeasured"]:
        key, _, r = item.rpartition("#")
        assert table.get(key) is not None and len(table.get(key).rounds_ms) == 2 and int(r) in (0, 1)  # type: ignore[union-attr,arg-type]


def _conv_chain(path: Path, n: int = 8, channels: int = 64, size: int = 7) -> Path:
    """n bias-free 3x3 convolutions in a row: each shrinks its input's values about 2x (default init)."""
    import torch

    from mmt_nas.build.export import export_to_mnn

    torch.manual_seed(0)
    convs = [torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False) for _ in range(n)]
    export_to_mnn(torch.nn.Sequential(*convs).eval(), [1, channels, size, size], path)
    return path


def _input_values(session: object) -> list[float]:
    import numpy as np

    from mmt_nas.device.timing import mnn_runtime

    mnn = mnn_runtime()
    inp = session.interpreter.getSessionInput(session.session)  # type: ignore[attr-defined]
    shape = inp.getShape()
    host = mnn.Tensor(shape, mnn.Halide_Type_Float, np.zeros(shape, np.float32), mnn.Tensor_DimensionType_Caffe)
    inp.copyToHostTensor(host)
    return [float(x) for x in np.array(host.getData()).ravel()[:64]]


def test_every_timed_run_gets_its_input_written_again(tmp_path: Path) -> None:
    """MNN reuses a session's input buffer for the tensors computed from it. Run after run, a model fed its
    own shrinking results reaches denormal numbers, on which it runs many times slower; every timed run
    must start from the same input."""
    from mmt_nas.device.timing import _Session, timed_runs

    path = _conv_chain(tmp_path / "chain.mnn")
    session = _Session(path, RuntimeSettings())
    fresh = _input_values(session)
    session.run()
    assert _input_values(session) != fresh  # what MNN does: the run overwrote its input
    session.write_input()
    assert _input_values(session) == fresh
    timed_runs(session.run, 50, warmup=5, prepare=session.write_input)
    session.write_input()
    assert _input_values(session) == fresh


def test_long_timings_do_not_decay_into_denormal_numbers(tmp_path: Path) -> None:
    """Before every run wrote its input again, 300 runs of this chain took ~50x the first runs' time:
    after a few dozen runs its values were denormal."""
    path = _conv_chain(tmp_path / "chain.mnn")
    short = time_model(path, 5, warmup=1).median_ms
    long = time_model(path, 300, warmup=1)
    assert long.median_ms < 3 * short, (long.median_ms, short)
    assert long.p90_ms < 4 * short, (long.p90_ms, short)
