"""Device state: parsing a fake /proc and /sys, the shares and warnings of an interval, the real machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmt_nas.device.state import OTHERS_SHARE_WARN, DeviceActivity, DeviceSnapshot, activity, snapshot
from mmt_nas.exceptions import TableError

ROOT = Path(__file__).resolve().parents[1]

STAT = (
    "cpu  1000 10 200 8000 100 0 50 40 30 0\n"
    "cpu0 500 5 100 4000 50 0 25 20 15 0\n"
    "cpu1 500 5 100 4000 50 0 25 20 15 0\n"
    "intr 123 4 5\n"
    "ctxt 99\n"
    "btime 1700000000\n"
)


def _tree(root: Path, files: dict[str, str]) -> Path:
    """Write ``files`` (path under ``root``: text) and return ``root``."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def _cpufreq(n: int, cur_khz: str, max_khz: str, governor: str) -> dict[str, str]:
    d = f"sys/devices/system/cpu/cpu{n}/cpufreq"
    return {
        f"{d}/scaling_cur_freq": cur_khz + "\n",
        f"{d}/scaling_max_freq": max_khz + "\n",
        f"{d}/scaling_governor": governor + "\n",
    }


def _zone(n: int, kind: str, milli: str) -> dict[str, str]:
    return {
        f"sys/class/thermal/thermal_zone{n}/type": kind + "\n",
        f"sys/class/thermal/thermal_zone{n}/temp": milli + "\n",
    }


# -- parsing a fake tree --------------------------------------------------------------------


def test_snapshot_parses_a_fake_tree_exactly(tmp_path: Path) -> None:
    files = {"proc/stat": STAT, "proc/loadavg": "0.40 0.25 0.10 1/79 20379\n"}
    files |= _cpufreq(0, "1200000", "2400000", "powersave")
    files |= _cpufreq(1, "2400000", "2400000", "performance")
    files |= _cpufreq(10, "800000", "1800000", "schedutil")  # sorted by number: after cpu1, not before cpu2
    files |= {"sys/devices/system/cpu/cpu2/online": "0\n"}  # a CPU without cpufreq: left out
    files |= {"sys/devices/system/cpu/cpufreq/policy0/scaling_cur_freq": "5\n"}  # not a cpuN folder
    files |= {"sys/devices/system/cpu/cpuidle/current_driver": "none\n"}
    files |= _zone(0, "x86_pkg_temp", "54000") | _zone(1, "acpitz", "27800") | _zone(2, "acpitz", "30500")
    files |= _zone(3, "broken", "-274000")  # an error code, not a temperature
    files |= {"sys/class/thermal/cooling_device0/type": "Processor\n"}
    root = _tree(tmp_path, files)
    (root / "sys/class/thermal/thermal_zone4").mkdir()
    (root / "sys/class/thermal/thermal_zone4/temp").mkdir()  # reading it fails (as EINVAL/EIO would)

    s = snapshot(root)
    assert s.cpu_jiffies == {
        "user": 1000,
        "nice": 10,
        "system": 200,
        "idle": 8000,
        "iowait": 100,
        "irq": 0,
        "softirq": 50,
        "steal": 40,
        "guest": 30,
        "guest_nice": 0,
    }
    assert s.cpu_count == 2
    assert s.load_avg == (0.40, 0.25, 0.10)
    assert s.freq_mhz == {0: 1200.0, 1: 2400.0, 10: 800.0}
    assert list(s.freq_mhz) == [0, 1, 10]
    assert s.max_freq_mhz == {0: 2400.0, 1: 2400.0, 10: 1800.0}
    assert s.governors == {0: "powersave", 1: "performance", 10: "schedutil"}
    assert s.temps_c == {"x86_pkg_temp": 54.0, "acpitz": 27.8, "acpitz (thermal_zone2)": 30.5}
    assert s.own_cpu_s >= 0 and s.wall_s > 0


def test_missing_and_malformed_sources_are_none_never_raised(tmp_path: Path) -> None:
    s = snapshot(tmp_path / "nothing-here")
    assert (s.cpu_jiffies, s.load_avg, s.freq_mhz, s.max_freq_mhz, s.governors, s.temps_c) == (None,) * 6
    assert s.cpu_count == os.cpu_count()  # the fallback when /proc/stat has no cpuN lines

    files = {"proc/stat": "cpu  a b c d\ncpu 1 2\n", "proc/loadavg": "high 0.1\n"}
    files |= _cpufreq(0, "n/a", "", "") | _zone(0, "acpitz", "hot")
    root = _tree(tmp_path / "junk", files)
    (root / "sys/devices/system/cpu/cpu1/cpufreq/scaling_cur_freq").mkdir(parents=True)
    s = snapshot(root)
    assert (s.cpu_jiffies, s.load_avg, s.freq_mhz, s.max_freq_mhz, s.governors, s.temps_c) == (None,) * 6

    a = activity(s, snapshot(root))
    assert (a.busy_share, a.others_share, a.steal_share, a.freq_mhz_start, a.freq_change) == (None,) * 5
    assert a.governors == () and a.temps_c == {} and a.warnings == ()
    assert a.own_share is not None and a.own_share >= 0


def test_an_old_kernel_without_steal_reports_busy_but_no_steal(tmp_path: Path) -> None:
    start = snapshot(_tree(tmp_path / "a", {"proc/stat": "cpu  100 0 100 800\ncpu0 100 0 100 800\n"}))
    end = snapshot(_tree(tmp_path / "b", {"proc/stat": "cpu  150 0 150 900\ncpu0 150 0 150 900\n"}))
    assert start.cpu_jiffies == {"user": 100, "nice": 0, "system": 100, "idle": 800}
    a = activity(start, end)
    assert a.busy_share == pytest.approx(100 / 200)
    assert a.steal_share is None
    assert a.cpu_count == 1


# -- the interval's shares and warnings -----------------------------------------------------

_JIFFIES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal", "guest", "guest_nice")


def _snap(wall: float, jiffies: tuple[int, ...], own: float, **kw: object) -> DeviceSnapshot:
    return DeviceSnapshot(wall_s=wall, cpu_jiffies=dict(zip(_JIFFIES, jiffies)), cpu_count=2, own_cpu_s=own, **kw)


def test_shares_of_a_busy_drifting_interval_match_the_hand_computation() -> None:
    start = _snap(
        100.0,
        (1000, 0, 200, 8000, 100, 0, 50, 50, 30, 0),
        5.0,
        load_avg=(0.5, 0.4, 0.3),
        freq_mhz={0: 1200.0, 1: 2400.0},
        max_freq_mhz={0: 2400.0, 1: 2400.0},
        governors={0: "powersave", 1: "powersave"},
        temps_c={"soc": 70.0, "battery": 50.0},
    )
    end = _snap(
        110.0,
        (1600, 0, 300, 9100, 200, 0, 100, 100, 330, 0),
        7.1,
        load_avg=(1.5, 0.6, 0.35),
        freq_mhz={0: 2400.0, 1: 2400.0},
        max_freq_mhz={0: 2400.0, 1: 3000.0},
        governors={0: "schedutil", 1: "powersave"},
        temps_c={"soc": 85.0},
    )
    a = activity(start, end)
    # deltas: user 600, system 100, idle 1100, iowait 100, softirq 50, steal 50 -> total 2000 jiffies
    # (guest +300 is inside user already); busy = user + system + softirq = 750
    assert a.wall_s == 10.0 and a.cpu_count == 2
    assert a.busy_share == pytest.approx(750 / 2000)
    assert a.steal_share == pytest.approx(50 / 2000)
    assert a.own_share == pytest.approx(2.1 / (10.0 * 2))
    assert a.others_share == pytest.approx(0.375 - 0.105)
    assert a.load_avg == (1.5, 0.6, 0.35)
    assert a.freq_mhz_start == (1200.0, 1800.0, 2400.0)
    assert a.freq_mhz_end == (2400.0, 2400.0, 2400.0)
    assert a.freq_change == pytest.approx(1.0)
    assert a.max_freq_mhz == 3000.0
    assert a.governors == ("powersave", "schedutil")
    assert a.temps_c == {"soc": 85.0, "battery": 50.0}

    text = "\n".join(a.warnings)
    assert len(a.warnings) == 5, text
    assert (
        "other processes used 27% of the CPU during metering; timings may be inflated: meter on an idle device" in text
    )
    assert "stole) 2% of the CPU" in text
    assert "the CPU governor is 'powersave'/'schedutil': frequency may ramp during metering; pin it to" in text
    assert "frequency changed by 100%" in text
    assert "85 °C (soc)" in text


def test_an_idle_interval_on_a_performance_governor_warns_of_nothing() -> None:
    kw = {"freq_mhz": {0: 2400.0, 1: 2390.0}, "governors": {0: "performance", 1: "performance"}}
    start = _snap(0.0, (1000, 0, 200, 8000, 100, 0, 50, 0, 0, 0), 1.0, temps_c={"soc": 50.0}, **kw)
    end = _snap(10.0, (1020, 0, 210, 9960, 100, 0, 60, 0, 0, 0), 1.1, temps_c={"soc": 79.9}, **kw)
    a = activity(start, end)
    assert a.busy_share == pytest.approx(40 / 2000)
    assert a.own_share == pytest.approx(0.1 / 20)
    assert a.others_share == pytest.approx(0.02 - 0.005)
    assert a.steal_share == 0.0
    assert a.freq_change == 0.0
    assert a.warnings == ()


@pytest.mark.parametrize(("others_jiffies", "warns"), [(190, False), (230, True)])
def test_the_others_warning_fires_above_its_threshold_only(others_jiffies: int, warns: bool) -> None:
    start = _snap(0.0, (0, 0, 0, 0, 0, 0, 0, 0, 0, 0), 0.0)
    end = _snap(10.0, (others_jiffies, 0, 0, 2000 - others_jiffies, 0, 0, 0, 0, 0, 0), 0.0)
    a = activity(start, end)
    assert (a.others_share is not None and a.others_share > OTHERS_SHARE_WARN) is warns
    assert any("other processes used" in w for w in a.warnings) is warns


def test_own_time_above_busy_leaves_others_at_zero_and_reversed_snapshots_raise() -> None:
    start = _snap(0.0, (0, 0, 0, 0, 0, 0, 0, 0, 0, 0), 0.0)
    end = _snap(1.0, (100, 0, 0, 100, 0, 0, 0, 0, 0, 0), 1.5)  # busy 0.5, own 0.75 (tick rounding)
    assert activity(start, end).others_share == 0.0
    assert activity(start, start).own_share is None  # an empty interval: no share to speak of
    with pytest.raises(ValueError, match="before the start"):
        activity(end, start)


# -- serialisation and the summary ----------------------------------------------------------

_f = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)
_triple = st.none() | st.tuples(_f, _f, _f)
activities = st.builds(
    DeviceActivity,
    wall_s=st.none() | _f,
    cpu_count=st.none() | st.integers(1, 512),
    busy_share=st.none() | _f,
    own_share=st.none() | _f,
    others_share=st.none() | _f,
    steal_share=st.none() | _f,
    load_avg=_triple,
    freq_mhz_start=_triple,
    freq_mhz_end=_triple,
    freq_change=st.none() | _f,
    max_freq_mhz=st.none() | _f,
    governors=st.lists(st.text(max_size=12), max_size=3).map(tuple),
    temps_c=st.dictionaries(st.text(max_size=16), st.floats(-60, 200), max_size=4),
    warnings=st.lists(st.text(max_size=40), max_size=3).map(tuple),
)


@settings(max_examples=80, deadline=None)
@given(a=activities)
def test_to_dict_from_dict_round_trip(a: DeviceActivity) -> None:
    doc = json.loads(json.dumps(a.to_dict(), allow_nan=False))
    assert DeviceActivity.from_dict(doc) == a
    assert a.summary().startswith("device: ")


def test_from_dict_tolerates_missing_keys_and_malformed_values() -> None:
    assert DeviceActivity.from_dict({}) == DeviceActivity()
    assert DeviceActivity.from_dict(None) == DeviceActivity()
    assert DeviceActivity().summary() == "device: nothing known"
    junk = {
        "busy_share": "high",
        "others_share": float("nan"),
        "cpu_count": True,
        "load_avg": [1, 2],
        "freq_mhz_end": [1, "2", 3],
        "governors": [1, "powersave"],
        "temps_c": {"soc": "hot", "cpu": 50},
        "warnings": "not a list",
        "from_the_future": 1,
    }
    a = DeviceActivity.from_dict(junk)
    assert (a.busy_share, a.others_share, a.cpu_count, a.load_avg, a.freq_mhz_end) == (None,) * 5
    assert (a.governors, a.temps_c, a.warnings) == (("powersave",), {"cpu": 50.0}, ())
    with pytest.raises(TableError, match="device_state must be an object"):
        DeviceActivity.from_dict(["not", "a", "mapping"])


def test_summary_leaves_out_what_is_unknown() -> None:
    a = DeviceActivity(
        others_share=0.031,
        steal_share=0.0,
        load_avg=(0.42, 0.3, 0.2),
        cpu_count=2,
        freq_mhz_start=(2400.0, 2400.0, 2400.0),
        freq_mhz_end=(2400.0, 2400.0, 2400.0),
        governors=("performance",),
        temps_c={"x86_pkg_temp": 54.2, "acpitz": 30.0},
    )
    assert (
        a.summary()
        == "device: others 3% of CPU, steal 0%, load 0.4, 2 CPUs at 2.4 GHz (governor performance), max 54 °C"
    )
    b = DeviceActivity(
        cpu_count=4,
        freq_mhz_start=(1200.0, 1800.0, 2400.0),
        freq_mhz_end=(600.0, 900.0, 2000.0),
        governors=("powersave", "schedutil"),
    )
    assert b.summary() == "device: 4 CPUs at 0.6-2.4 GHz (governors powersave, schedutil)"
    assert DeviceActivity(cpu_count=1, load_avg=(2.0, 1.0, 0.5)).summary() == "device: load 2.0, 1 CPU"


# -- the real machine -----------------------------------------------------------------------


def _needs_proc_stat() -> None:
    if snapshot().cpu_jiffies is None:
        pytest.skip("/proc/stat is unreadable here (not Linux, or no permission): no CPU accounting to test")


def _interval(seconds: float, *, burner: bool) -> DeviceActivity:
    """Measure ``seconds`` of this process sleeping, with or without a second process burning one CPU."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if burner else None
    try:
        if proc is not None:
            time.sleep(0.3)  # past the interpreter's start-up, into the loop
        start = snapshot()
        time.sleep(seconds)
        end = snapshot()  # before the burner is waited for, so its time is not this process's children's
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
    return activity(start, end)


def test_a_second_process_burning_cpu_shows_as_others_on_the_real_machine() -> None:
    _needs_proc_stat()
    tried = []
    for _ in range(3):  # a background job can load the idle interval: retry, and fail only if it never separates
        idle = _interval(1.5, burner=False)
        busy = _interval(1.5, burner=True)
        assert idle.others_share is not None and busy.others_share is not None
        assert idle.own_share is not None and idle.own_share < 0.1  # we were asleep
        tried.append((round(idle.others_share, 3), round(busy.others_share, 3)))
        if busy.others_share > idle.others_share + 0.2:
            break
    else:
        pytest.fail(f"a process burning one CPU did not raise others_share by 0.2 (idle, busy): {tried}")
    assert busy.busy_share is not None and busy.busy_share >= busy.others_share
    assert busy.steal_share is None or 0 <= busy.steal_share <= 1
    assert busy.wall_s is not None and 1.4 < busy.wall_s < 3
    doc = json.loads(json.dumps(busy.to_dict(), allow_nan=False))
    assert DeviceActivity.from_dict(doc) == busy


def test_own_cpu_time_counts_this_process_and_the_children_it_waited_for() -> None:
    _needs_proc_stat()
    cpus = snapshot().cpu_count or 1
    start = snapshot()
    t = time.process_time()
    while time.process_time() - t < 0.5:
        pass
    own = activity(start, snapshot())
    assert own.own_share is not None and own.own_share > 0.6 / cpus  # one of cpus CPUs busy: 1 / cpus

    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.5: pass"
    start = snapshot()
    subprocess.run([sys.executable, "-c", burn], check=True)
    child = activity(start, snapshot())
    assert child.own_share is not None and child.wall_s is not None
    assert child.own_share * child.wall_s * cpus >= 0.45  # the child's 0.5 s of CPU counted as ours


def test_the_real_snapshot_reads_what_linux_offers() -> None:
    s = snapshot()
    if not sys.platform.startswith("linux"):
        pytest.skip("the real sources are Linux's")
    assert s.cpu_jiffies is not None and {"user", "nice", "system", "idle"} <= set(s.cpu_jiffies)
    assert all(isinstance(v, int) and v >= 0 for v in s.cpu_jiffies.values())
    assert s.cpu_count is not None and 1 <= s.cpu_count <= (os.cpu_count() or 1)
    assert s.load_avg is not None and s.load_avg == pytest.approx(os.getloadavg(), abs=1.0)
    for freq in (s.freq_mhz or {}).values():
        assert 10 < freq < 10_000
    assert all(-60 <= c <= 200 for c in (s.temps_c or {}).values())


def test_importing_device_state_pulls_in_no_torch_numpy_or_sklearn() -> None:
    code = (
        "import sys, mmt_nas.device.state; "
        "print(sorted(m for m in ('torch', 'numpy', 'sklearn', 'MNN', 'yaml') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
