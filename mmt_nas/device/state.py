"""Device state during metering: CPU frequency and governor, temperatures, load, and the CPU others took.

Take a :func:`snapshot` before metering and one after; :func:`activity` turns the pair into a
:class:`DeviceActivity`: how much of all CPUs' time this process used, how much other processes and the
hypervisor (steal) took, the frequencies, governors and temperatures seen, and ``warnings`` in plain
sentences when the device was busy or drifting, so timings that may be inflated say so. Tables store its
:meth:`DeviceActivity.to_dict`.

Linux sources: ``/proc/stat`` (the kernel's CPU accounting, aggregate ``cpu`` line), ``/proc/loadavg``
(or :func:`os.getloadavg`), ``/sys/devices/system/cpu/cpu*/cpufreq/scaling_{cur_freq,max_freq,governor}``
and ``/sys/class/thermal/thermal_zone*/{type,temp}``; this process's CPU time is :func:`os.times`
(its waited-for children included). What cannot be read (another OS, no permission, a VM without
cpufreq or thermal zones) is recorded as unknown (``None``, or left out), never raised.
Standard library only.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmt_nas.exceptions import TableError

__all__ = [
    "OTHERS_SHARE_WARN",
    "STEAL_SHARE_WARN",
    "FREQ_CHANGE_WARN",
    "TEMP_WARN_C",
    "STABLE_GOVERNORS",
    "CPU_FIELDS",
    "DeviceSnapshot",
    "snapshot",
    "DeviceActivity",
    "activity",
]

#: Warn when other processes used more than this share of all CPUs' time during metering.
OTHERS_SHARE_WARN = 0.10
#: Warn when the hypervisor took (stole) more than this share of all CPUs' time.
STEAL_SHARE_WARN = 0.02
#: Warn when a CPU's current frequency changed by more than this fraction between the two snapshots.
FREQ_CHANGE_WARN = 0.10
#: Warn when a thermal zone reached this temperature (°C) or more: the CPU may be throttling.
TEMP_WARN_C = 80.0
#: CPU frequency governors that hold the frequency still; any other one is warned about.
STABLE_GOVERNORS: tuple[str, ...] = ("performance",)

#: The fields of ``/proc/stat``'s ``cpu`` lines, in order (kernels before 2.6.11 report fewer). ``guest`` and
#: ``guest_nice`` are already counted in ``user`` and ``nice``, so totals leave them out.
CPU_FIELDS: tuple[str, ...] = (
    "user",
    "nice",
    "system",
    "idle",
    "iowait",
    "irq",
    "softirq",
    "steal",
    "guest",
    "guest_nice",
)
_TOTAL_FIELDS = CPU_FIELDS[:8]
_IDLE_FIELDS = ("idle", "iowait")
_BUSY_FIELDS = ("user", "nice", "system", "irq", "softirq")

_CPU_DIR = re.compile(r"cpu(\d+)")
_ZONE_DIR = re.compile(r"thermal_zone(\d+)")
# Readings outside this range (°C) are a sensor's error codes, not temperatures.
_TEMP_RANGE_C = (-60.0, 200.0)


# -- snapshots ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceSnapshot:
    """The device's state at one moment. ``None`` means the source could not be read.

    Attributes:
        wall_s: :func:`time.monotonic` when it was taken.
        cpu_jiffies: ``/proc/stat``'s aggregate ``cpu`` line: clock ticks per field of :data:`CPU_FIELDS`
            (only the fields the kernel reports).
        cpu_count: The CPUs ``/proc/stat`` lists (the online ones), else :func:`os.cpu_count`.
        own_cpu_s: This process's CPU time (user + system, waited-for children included), in seconds.
        load_avg: The 1, 5 and 15 minute load averages.
        freq_mhz: Each CPU's current frequency (``scaling_cur_freq``) in MHz, by CPU number.
        max_freq_mhz: Each CPU's highest allowed frequency (``scaling_max_freq``) in MHz, by CPU number.
        governors: Each CPU's frequency governor (``scaling_governor``), by CPU number.
        temps_c: Each thermal zone's temperature in °C, by the zone's type (e.g. ``"x86_pkg_temp"``).
    """

    wall_s: float
    cpu_jiffies: dict[str, int] | None = None
    cpu_count: int | None = None
    own_cpu_s: float = 0.0
    load_avg: tuple[float, float, float] | None = None
    freq_mhz: dict[int, float] | None = None
    max_freq_mhz: dict[int, float] | None = None
    governors: dict[int, str] | None = None
    temps_c: dict[str, float] | None = None


def snapshot(root: str | os.PathLike[str] = "/") -> DeviceSnapshot:
    """Read the device's state now; whatever cannot be read is ``None``, nothing raises.

    Args:
        root: The file system root the ``proc`` and ``sys`` trees are read under (tests point it at a fake
            tree). :func:`os.getloadavg` stands in for ``proc/loadavg`` only under the real root.
    """
    root = Path(root)
    wall = time.monotonic()
    jiffies, stat_cpus = _read_proc_stat(root)
    freq, max_freq, governors = _read_cpufreq(root)
    return DeviceSnapshot(
        wall_s=wall,
        cpu_jiffies=jiffies,
        cpu_count=stat_cpus or os.cpu_count(),
        own_cpu_s=_own_cpu_s(),
        load_avg=_read_load_avg(root),
        freq_mhz=freq,
        max_freq_mhz=max_freq,
        governors=governors,
        temps_c=_read_thermal(root),
    )


def _read_text(path: Path) -> str | None:
    """The file's text stripped, or ``None`` if it cannot be read (missing, no permission, an I/O error)."""
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except (OSError, ValueError):
        return None


def _numbered_dirs(parent: Path, pattern: re.Pattern[str]) -> list[tuple[int, Path]]:
    """The subfolders of ``parent`` whose names match ``pattern`` (one number group), by that number."""
    try:
        found = [(m, p) for p in parent.iterdir() if (m := pattern.fullmatch(p.name))]
    except OSError:
        return []
    return sorted((int(m.group(1)), p) for m, p in found)


def _read_proc_stat(root: Path) -> tuple[dict[str, int] | None, int | None]:
    """``/proc/stat``'s aggregate ``cpu`` line as ticks per field, and how many ``cpuN`` lines it has."""
    text = _read_text(root / "proc" / "stat")
    if text is None:
        return None, None
    jiffies: dict[str, int] | None = None
    cpus = 0
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "cpu":
            try:
                values = [int(v) for v in parts[1:]]
            except ValueError:
                continue
            if len(values) >= 4:  # user nice system idle, at the least
                jiffies = dict(zip(CPU_FIELDS, values))
        elif _CPU_DIR.fullmatch(parts[0]):
            cpus += 1
    return jiffies, cpus or None


def _read_cpufreq(root: Path) -> tuple[dict[int, float] | None, dict[int, float] | None, dict[int, str] | None]:
    """Each CPU's current and highest allowed frequency (MHz) and its governor, from cpufreq's files."""
    cur: dict[int, float] = {}
    top: dict[int, float] = {}
    governors: dict[int, str] = {}
    for n, cpu in _numbered_dirs(root / "sys" / "devices" / "system" / "cpu", _CPU_DIR):
        d = cpu / "cpufreq"
        for name, into in (("scaling_cur_freq", cur), ("scaling_max_freq", top)):
            khz = _to_float(_read_text(d / name))
            if khz is not None and khz > 0:
                into[n] = khz / 1000.0
        governor = _read_text(d / "scaling_governor")
        if governor:
            governors[n] = governor
    return cur or None, top or None, governors or None


def _read_thermal(root: Path) -> dict[str, float] | None:
    """Each thermal zone's temperature in °C by its type (a repeated type gets the zone's folder name added)."""
    temps: dict[str, float] = {}
    for _, zone in _numbered_dirs(root / "sys" / "class" / "thermal", _ZONE_DIR):
        milli = _to_float(_read_text(zone / "temp"))
        if milli is None:
            continue
        c = milli / 1000.0
        if not _TEMP_RANGE_C[0] <= c <= _TEMP_RANGE_C[1]:
            continue
        name = _read_text(zone / "type") or zone.name
        if name in temps:
            name = f"{name} ({zone.name})"
        temps[name] = c
    return temps or None


def _read_load_avg(root: Path) -> tuple[float, float, float] | None:
    """The 1, 5 and 15 minute load averages from ``proc/loadavg`` (or :func:`os.getloadavg` under ``/``)."""
    text = _read_text(root / "proc" / "loadavg")
    if text is not None:
        values = [v for v in map(_to_float, text.split()[:3]) if v is not None and v >= 0]
        if len(values) == 3:
            return values[0], values[1], values[2]
    if root == Path("/"):
        try:
            one, five, fifteen = os.getloadavg()
        except (OSError, AttributeError):  # AttributeError: Windows has no getloadavg
            return None
        return float(one), float(five), float(fifteen)
    return None


def _own_cpu_s() -> float:
    """This process's CPU seconds: user and system, its waited-for children's included."""
    t = os.times()
    return float(t.user + t.system + t.children_user + t.children_system)


def _to_float(text: str | None) -> float | None:
    """``text`` as a finite float, or ``None``."""
    if text is None:
        return None
    try:
        v = float(text)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


# -- the interval between two snapshots -----------------------------------------------------


@dataclass(frozen=True)
class DeviceActivity:
    """What the device did between two snapshots (see :func:`activity`). ``None`` means unknown.

    Shares are fractions of all CPUs' time over the interval (1.0: every CPU busy all the time).

    Attributes:
        wall_s: The interval's length in seconds.
        cpu_count: The CPUs the shares are fractions of.
        busy_share: The share of all CPUs' time that was busy, per ``/proc/stat``: user, nice, system, irq
            and softirq; not idle, iowait or steal (which is ``steal_share``).
        own_share: This process's CPU time (children it waited for included) / (``wall_s`` x ``cpu_count``).
        others_share: ``busy_share`` minus ``own_share``, at least 0: what other processes took.
        steal_share: The share the hypervisor gave to other guests (steal), if the kernel reports it.
        load_avg: The 1, 5 and 15 minute load averages at the end.
        freq_mhz_start: Min, median and max current frequency over the CPUs at the start, in MHz.
        freq_mhz_end: The same at the end.
        freq_change: The largest relative change of one CPU's frequency from start to end.
        max_freq_mhz: The highest frequency any CPU was allowed (``scaling_max_freq``) at the end, in MHz.
        governors: The distinct frequency governors seen, sorted.
        temps_c: Each thermal zone's highest temperature over both snapshots, in °C.
        warnings: Sentences saying why timings of this interval may be inflated or unstable.
    """

    wall_s: float | None = None
    cpu_count: int | None = None
    busy_share: float | None = None
    own_share: float | None = None
    others_share: float | None = None
    steal_share: float | None = None
    load_avg: tuple[float, float, float] | None = None
    freq_mhz_start: tuple[float, float, float] | None = None
    freq_mhz_end: tuple[float, float, float] | None = None
    freq_change: float | None = None
    max_freq_mhz: float | None = None
    governors: tuple[str, ...] = ()
    temps_c: dict[str, float] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict: every field, ``None`` where unknown; tuples become lists."""
        return {
            "wall_s": self.wall_s,
            "cpu_count": self.cpu_count,
            "busy_share": self.busy_share,
            "own_share": self.own_share,
            "others_share": self.others_share,
            "steal_share": self.steal_share,
            "load_avg": None if self.load_avg is None else list(self.load_avg),
            "freq_mhz_start": None if self.freq_mhz_start is None else list(self.freq_mhz_start),
            "freq_mhz_end": None if self.freq_mhz_end is None else list(self.freq_mhz_end),
            "freq_change": self.freq_change,
            "max_freq_mhz": self.max_freq_mhz,
            "governors": list(self.governors),
            "temps_c": dict(self.temps_c),
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_dict(cls, d: Any) -> DeviceActivity:
        """Inverse of :meth:`to_dict`. Missing keys (older tables), unknown keys and malformed values read as
        unknown; ``None`` is an activity with nothing known.

        Raises:
            TableError: ``d`` is neither a mapping nor ``None``.
        """
        if d is None:
            return cls()
        if not isinstance(d, Mapping):
            raise TableError(f"device_state must be an object, but got {d!r}.")
        count = d.get("cpu_count")
        temps = d.get("temps_c")
        return cls(
            wall_s=_number(d.get("wall_s")),
            cpu_count=count if isinstance(count, int) and not isinstance(count, bool) and count >= 1 else None,
            busy_share=_number(d.get("busy_share")),
            own_share=_number(d.get("own_share")),
            others_share=_number(d.get("others_share")),
            steal_share=_number(d.get("steal_share")),
            load_avg=_triple(d.get("load_avg")),
            freq_mhz_start=_triple(d.get("freq_mhz_start")),
            freq_mhz_end=_triple(d.get("freq_mhz_end")),
            freq_change=_number(d.get("freq_change")),
            max_freq_mhz=_number(d.get("max_freq_mhz")),
            governors=_strings(d.get("governors")),
            temps_c=(
                {k: v for k, t in temps.items() if isinstance(k, str) and (v := _number(t)) is not None}
                if isinstance(temps, Mapping)
                else {}
            ),
            warnings=_strings(d.get("warnings")),
        )

    def summary(self) -> str:
        """One line for people, leaving out what is unknown, e.g. ``"device: others 3% of CPU, steal 0%, load
        0.4, 2 CPUs at 2.4 GHz (governor performance), max 54 °C"``."""
        parts: list[str] = []
        if self.others_share is not None:
            parts.append(f"others {self.others_share:.0%} of CPU")
        if self.steal_share is not None:
            parts.append(f"steal {self.steal_share:.0%}")
        if self.load_avg is not None:
            parts.append(f"load {self.load_avg[0]:.1f}")
        cpus = "" if self.cpu_count is None else f"{self.cpu_count} CPU{'s' if self.cpu_count != 1 else ''}"
        spreads = [s for s in (self.freq_mhz_start, self.freq_mhz_end) if s is not None]
        if spreads:
            lo = f"{min(s[0] for s in spreads) / 1000:.1f}"
            hi = f"{max(s[2] for s in spreads) / 1000:.1f}"
            cpus = f"{cpus} at {lo if lo == hi else f'{lo}-{hi}'} GHz".strip()
        if self.governors:
            plural = "s" if len(self.governors) > 1 else ""
            cpus = f"{cpus} (governor{plural} {', '.join(self.governors)})".strip()
        if cpus:
            parts.append(cpus)
        if self.temps_c:
            parts.append(f"max {max(self.temps_c.values()):.0f} °C")
        return "device: " + (", ".join(parts) if parts else "nothing known")


def activity(start: DeviceSnapshot, end: DeviceSnapshot) -> DeviceActivity:
    """What the device did from ``start`` to ``end`` (two :func:`snapshot` s), with warnings if it was busy.

    Raises:
        ValueError: ``end`` was taken before ``start``.
    """
    wall = end.wall_s - start.wall_s
    if wall < 0:
        raise ValueError(f"the end snapshot was taken {-wall:.3f} s before the start one; pass (start, end).")
    cpus = end.cpu_count or start.cpu_count or os.cpu_count() or 1
    own = max(0.0, end.own_cpu_s - start.own_cpu_s) / (wall * cpus) if wall > 0 else None

    busy = steal = None
    if start.cpu_jiffies is not None and end.cpu_jiffies is not None:
        delta = {k: max(0, end.cpu_jiffies[k] - v) for k, v in start.cpu_jiffies.items() if k in end.cpu_jiffies}
        total = sum(delta.get(k, 0) for k in _TOTAL_FIELDS)
        if total > 0:
            busy = sum(delta.get(k, 0) for k in _BUSY_FIELDS) / total
            if "steal" in delta:
                steal = delta["steal"] / total
    others = max(0.0, busy - own) if busy is not None and own is not None else None

    change = None
    if start.freq_mhz and end.freq_mhz:
        changes = [abs(end.freq_mhz[n] - f) / f for n, f in start.freq_mhz.items() if n in end.freq_mhz]
        change = max(changes) if changes else None
    governors = sorted({*(start.governors or {}).values(), *(end.governors or {}).values()})
    temps: dict[str, float] = {}
    for snap in (start, end):
        for zone, c in (snap.temps_c or {}).items():
            temps[zone] = max(c, temps.get(zone, c))
    max_freq = end.max_freq_mhz or start.max_freq_mhz

    result = DeviceActivity(
        wall_s=wall,
        cpu_count=cpus,
        busy_share=busy,
        own_share=own,
        others_share=others,
        steal_share=steal,
        load_avg=end.load_avg,
        freq_mhz_start=_spread(start.freq_mhz),
        freq_mhz_end=_spread(end.freq_mhz),
        freq_change=change,
        max_freq_mhz=max(max_freq.values()) if max_freq else None,
        governors=tuple(governors),
        temps_c=temps,
    )
    return dataclasses.replace(result, warnings=_warnings(result))


def _warnings(a: DeviceActivity) -> tuple[str, ...]:
    """Sentences for each sign that ``a``'s interval was busy or drifting (see the thresholds above)."""
    out: list[str] = []
    if a.others_share is not None and a.others_share > OTHERS_SHARE_WARN:
        out.append(
            f"other processes used {a.others_share:.0%} of the CPU during metering; timings may be inflated: "
            "meter on an idle device"
        )
    if a.steal_share is not None and a.steal_share > STEAL_SHARE_WARN:
        out.append(
            f"the hypervisor took (stole) {a.steal_share:.0%} of the CPU during metering; timings may be "
            "inflated: meter on a dedicated machine or an idle host"
        )
    unstable = [g for g in a.governors if g not in STABLE_GOVERNORS]
    if unstable:
        names = "/".join(repr(g) for g in unstable)
        out.append(
            f"the CPU governor is {names}: frequency may ramp during metering; pin it to 'performance' "
            "for stable timings"
        )
    if a.freq_change is not None and a.freq_change > FREQ_CHANGE_WARN:
        out.append(
            f"a CPU's frequency changed by {a.freq_change:.0%} during metering; timings may drift: pin the "
            "governor to 'performance' and let the device cool"
        )
    hot = {z: c for z, c in a.temps_c.items() if c >= TEMP_WARN_C}
    if hot:
        zone = max(hot, key=lambda z: hot[z])
        out.append(
            f"the device reached {hot[zone]:.0f} °C ({zone}) during metering; the CPU may be throttling: "
            "let it cool before metering"
        )
    return tuple(out)


def _spread(freq: Mapping[int, float] | None) -> tuple[float, float, float] | None:
    """Min, median and max of per-CPU frequencies."""
    if not freq:
        return None
    values = list(freq.values())
    return min(values), float(statistics.median(values)), max(values)


def _number(v: Any) -> float | None:
    """``v`` as a float if it is a finite real number (not a bool), else ``None``."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def _triple(v: Any) -> tuple[float, float, float] | None:
    """``v`` as three finite floats, else ``None``."""
    if not isinstance(v, (list, tuple)) or len(v) != 3:
        return None
    a, b, c = (_number(x) for x in v)
    return None if a is None or b is None or c is None else (a, b, c)


def _strings(v: Any) -> tuple[str, ...]:
    """The strings in the list ``v`` (anything else is dropped)."""
    return tuple(s for s in v if isinstance(s, str)) if isinstance(v, (list, tuple)) else ()
