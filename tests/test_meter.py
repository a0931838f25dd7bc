"""Metering: statistics, settings, no torch on the device, and kill-and-resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import ROOT, write_space

from mmt_nas.exceptions import MeteringError
from mmt_nas.meter import JOURNAL_SUFFIX, meter_ops, time_model
from mmt_nas.table import LatencyTable, RuntimeSettings, load_ops_meta


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
        table = meter_ops({str(tiny_ops_copy)!r}, times=3, output={str(tmp_path / 'device.json')!r})
        assert len(table) == 8, len(table)
        assert not any(m.split(".")[0] in ("torch", "sklearn") for m in sys.modules)
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")
    assert len(LatencyTable.load(tmp_path / "device.json")) == 8


def test_kill_and_resume_loses_nothing(tmp_path: Path) -> None:
    from mmt_nas.converter import generate_ops_list

    shapes = ", ".join(f"[1, 16, {8 + i}, 32]" for i in range(12))
    path = write_space(tmp_path, f"torch.nn:\n  Conv2d: {{in_channels: [16], out_channels: [16], kernel_size: [3], "
                                 f"input_shape: [{shapes}]}}\n")
    ops_dir = tmp_path / "ops"
    generate_ops_list(path, ops_dir)
    journal = ops_dir / ("meta_latency.json" + JOURNAL_SUFFIX)
    code = f"from mmt_nas.meter import meter_ops; meter_ops({str(ops_dir)!r}, times=20000)"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if journal.exists() and journal.read_text().count("\n") >= 3:
                break
            assert proc.poll() is None, "metering ended before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("metering made no progress")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]
    assert 3 <= len(done) < 12
    for name in os.listdir(ops_dir):
        assert not name.endswith(".tmp"), name

    table = meter_ops(ops_dir, times=5)
    assert len(table) == 12
    for d in done:  # measured before the kill: kept as they were, not measured again
        entry = table.get(d["key"])
        assert entry is not None and entry.latency.n == 20000
        assert entry.latency.median_ms == d["latency_ms"]["median"]
    assert sum(e.latency.n == 5 for e in table) == 12 - len(done)
    assert not journal.exists()
    assert LatencyTable.load(ops_dir) == table
