"""Latency tables (``meta_latency.json``): measured op latencies with the device and runtime they were
measured on.

Versioned JSON, written atomically. This module imports only the standard library, so a deployment
device with MNN and numpy alone can load and write tables. Joining tables is :mod:`mmt_nas.table.merge`;
the generated ops' records are :mod:`mmt_nas.table.records`.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import logging
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mmt_nas._files import (  # noqa: F401 (re-exported: mmt_nas.table named them before mmt_nas._files)
    atomic_write_text,
    exclusive_lock,
    lock_path,
    open_journal,
    read_json,
    remove_stale_temp_files,
)
from mmt_nas.exceptions import TableError
from mmt_nas.table.records import (
    SCHEMA_VERSION,
    TABLE_FILENAME,
    TABLE_SCHEMA,
    OpRecord,
    check_schema,
    load_ops_meta,
    save_ops_meta,
)
from mmt_nas.vocab import (
    check_choice,
    op_key,  # noqa: F401 (re-exported)
)

_logger = logging.getLogger(__name__)

__all__ = [
    "SCHEMA_VERSION",
    "TABLE_FILENAME",
    "Latency",
    "LATENCIES",
    "check_latency",
    "Precision",
    "PRECISIONS",
    "OpRecord",
    "LatencyStats",
    "RuntimeSettings",
    "TableEntry",
    "LatencyTable",
    "NoiseFloor",
    "op_key",
    "DEVICE_CLASS_FIELDS",
    "device_class",
    "device_id",
    "load_ops_meta",
    "save_ops_meta",
]

#: Which time of an entry a prediction counts: ``"core"``, the op's own time inside its timed model
#: (MNN's per-op profile, without the layout conversions at the model's input and output), where the
#: table has it; ``"wall"``, its end-to-end median.
Latency = Literal["core", "wall"]
LATENCIES: tuple[Latency, ...] = ("core", "wall")
#: MNN's precision modes.
Precision = Literal["high", "normal", "low"]
PRECISIONS: tuple[Precision, ...] = ("high", "normal", "low")


def check_latency(latency: Any) -> Latency:
    """Return ``latency`` if it is ``"core"`` or ``"wall"``, else raise :class:`OptionError`."""
    return check_choice("latency", latency, LATENCIES)


def _finite_nonnegative(v: Any) -> bool:
    """Whether ``v`` is a real number (not a bool), finite and >= 0; an int beyond any float is not."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(v) and v >= 0
    except OverflowError:  # an integer beyond any float, e.g. 10**400 in a hand-edited file
        return False


@dataclass(frozen=True)
class LatencyStats:
    """Statistics of repeated timings, all in milliseconds.

    ``float(stats)`` is the median, the value predictions use.
    """

    median_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    p90_ms: float
    n: int

    def __post_init__(self) -> None:
        for name in ("median_ms", "mean_ms", "std_ms", "min_ms", "p90_ms"):
            v = getattr(self, name)
            if not _finite_nonnegative(v):
                raise TableError(f"latency {name} must be a finite number >= 0, but got {v!r}.")
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise TableError(f"latency n must be an integer >= 1, but got {self.n!r}.")

    def __float__(self) -> float:
        return float(self.median_ms)

    @property
    def cv(self) -> float:
        """Coefficient of variation (std / mean); 0 when the mean is 0."""
        return self.std_ms / self.mean_ms if self.mean_ms > 0 else 0.0

    @classmethod
    def from_samples(cls, samples_ms: Iterable[float]) -> LatencyStats:
        """Summarise raw timings given in milliseconds."""
        xs = sorted(float(x) for x in samples_ms)
        if not xs:
            raise TableError("cannot summarise zero timings; times must be >= 1.")
        n = len(xs)
        mean = math.fsum(xs) / n
        var = math.fsum((x - mean) * (x - mean) for x in xs) / n  # inf, not OverflowError, for absurd timings
        return cls(
            median_ms=_quantile(xs, 0.5),
            mean_ms=mean,
            std_ms=math.sqrt(var),
            min_ms=xs[0],
            p90_ms=_quantile(xs, 0.9),
            n=n,
        )

    @classmethod
    def combine(cls, parts: Iterable[LatencyStats]) -> LatencyStats:
        """One summary of several rounds of timings of the same op (see :func:`mmt_nas.device.meter.meter_ops`).

        The median is the median of the rounds' medians: robust to one round hit by a neighbour's burst
        of work. Mean, standard deviation, minimum and ``n`` are those of all the runs pooled (exact); the
        p90 is the runs-weighted mean of the rounds' p90s (an approximation: the raw runs are not kept).
        """
        ps = list(parts)
        if not ps:
            raise TableError("cannot combine zero rounds of timings.")
        n = sum(p.n for p in ps)
        mean = math.fsum(p.mean_ms * p.n for p in ps) / n
        var = math.fsum(p.n * (p.std_ms**2 + (p.mean_ms - mean) ** 2) for p in ps) / n
        medians = sorted(p.median_ms for p in ps)
        return cls(
            median_ms=_quantile(medians, 0.5),
            mean_ms=mean,
            std_ms=math.sqrt(var),
            min_ms=min(p.min_ms for p in ps),
            p90_ms=math.fsum(p.p90_ms * p.n for p in ps) / n,
            n=n,
        )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (keys without the ``_ms`` suffix; the unit is in the parent key)."""
        return {
            "median": self.median_ms,
            "mean": self.mean_ms,
            "std": self.std_ms,
            "min": self.min_ms,
            "p90": self.p90_ms,
            "n": self.n,
        }

    @classmethod
    def from_dict(cls, d: Any, where: str = "latency_ms") -> LatencyStats:
        """Inverse of :meth:`to_dict`."""
        if not isinstance(d, dict):
            raise TableError(f"{where} must be an object, but got {d!r}.")
        try:
            return cls(d["median"], d["mean"], d["std"], d["min"], d["p90"], d["n"])
        except KeyError as exc:
            raise TableError(f"{where} lacks the field {exc.args[0]!r}; got {sorted(d)}.") from None
        except TableError as exc:
            raise TableError(f"{where}: {exc}") from None


def _quantile(sorted_xs: list[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default) of an already sorted list."""
    pos = (len(sorted_xs) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


@dataclass(frozen=True)
class RuntimeSettings:
    """How ops are run: the settings a table's latencies depend on.

    Attributes:
        backend: MNN backend name (``"CPU"``).
        threads: Number of threads MNN uses.
        precision: MNN precision mode: ``"high"``, ``"normal"`` or ``"low"``.
    """

    backend: str = "CPU"
    threads: int = 1
    precision: Precision = "high"

    def __post_init__(self) -> None:
        if not isinstance(self.backend, str) or not self.backend:
            raise TableError(f"backend must be a non-empty string such as 'CPU', but got {self.backend!r}.")
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1:
            raise TableError(f"threads must be an integer >= 1, but got threads={self.threads!r}.")
        check_choice("precision", self.precision, PRECISIONS, error=TableError)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> RuntimeSettings:
        """Inverse of :meth:`to_dict`; unknown keys are ignored."""
        if not isinstance(d, dict):
            raise TableError(f"runtime must be an object, but got {d!r}.")
        return cls(d.get("backend", "CPU"), d.get("threads", 1), d.get("precision", "high"))


@dataclass(frozen=True)
class TableEntry:
    """An op with its measured latency.

    Attributes:
        op: The op.
        latency: Statistics of its end-to-end runs.
        core_ms: Its own time inside its timed model, from MNN's per-op profile, without
            the layout conversions at the model's input and output (``None`` if not profiled).
        device: The id of the device it was measured on, a key of its table's ``devices``
            (``None``: the table's own ``device``, as in tables written before ids existed).
        rounds_ms: The median of each round it was timed in, in the order of the rounds (``None``: one
            round, as in tables written before rounds existed). Their spread is the entry's run-to-run
            noise, minutes apart; ``latency`` is the rounds combined (:meth:`LatencyStats.combine`).
        cold_ms: Its own time (like ``core_ms``) in the cache state a whole model leaves it: the caches
            filled with other data before each run, then its input written, so that its weights come from
            memory and its input from the op before (:func:`mmt_nas.device.profile.cold_core_ms`;
            ``None``: not timed so, as in tables written before it existed).
    """

    op: OpRecord
    latency: LatencyStats
    core_ms: float | None = None
    device: str | None = None
    rounds_ms: tuple[float, ...] | None = None
    cold_ms: float | None = None

    def __post_init__(self) -> None:
        for name in ("core_ms", "cold_ms"):
            c = getattr(self, name)
            if c is not None and not _finite_nonnegative(c):
                raise TableError(f"{name} of {self.op.key!r} must be None or a finite number >= 0, but got {c!r}.")
        if self.device is not None and (not isinstance(self.device, str) or not self.device):
            raise TableError(
                f"the device of {self.op.key!r} must be None or a device id (a non-empty string), "
                f"but got {self.device!r}."
            )
        r = self.rounds_ms
        if r is not None and (not isinstance(r, tuple) or not r or not all(_finite_nonnegative(x) for x in r)):
            raise TableError(
                f"rounds_ms of {self.op.key!r} must be None or a non-empty list of finite numbers >= 0, but got {r!r}."
            )

    @property
    def run_to_run(self) -> float | None:
        """The spread of the rounds' medians relative to their median, ``(max - min) / median``; ``None``
        with fewer than two rounds (or a zero median)."""
        r = self.rounds_ms
        if r is None or len(r) < 2:
            return None
        mid = _quantile(sorted(r), 0.5)
        return (max(r) - min(r)) / mid if mid > 0 else None

    @property
    def latency_ms(self) -> float:
        """The median latency in milliseconds."""
        return self.latency.median_ms

    def time_ms(self, latency: Latency = "core") -> float:
        """The entry's time as a prediction counts it: its core time (``"core"``, where profiled; else its
        median) or its end-to-end median (``"wall"``)."""
        if latency == "core" and self.core_ms is not None:
            return self.core_ms
        return self.latency.median_ms

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict: the op's fields plus ``latency_ms`` (and ``core_ms``, ``device``)."""
        d = self.op.to_dict()
        d["latency_ms"] = self.latency.to_dict()
        if self.core_ms is not None:
            d["core_ms"] = self.core_ms
        if self.device is not None:
            d["device"] = self.device
        if self.rounds_ms is not None:
            d["rounds_ms"] = list(self.rounds_ms)
        if self.cold_ms is not None:
            d["cold_ms"] = self.cold_ms
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str = "entry") -> TableEntry:
        """Inverse of :meth:`to_dict`."""
        op = OpRecord.from_dict(d, where)
        rounds = d.get("rounds_ms")
        try:
            return cls(
                op,
                LatencyStats.from_dict(d.get("latency_ms"), f"{where}.latency_ms"),
                d.get("core_ms"),
                d.get("device"),
                tuple(rounds) if isinstance(rounds, list) else rounds,
                d.get("cold_ms"),
            )
        except TableError as exc:
            msg = str(exc)
            raise TableError(msg if msg.startswith(where) else f"{where}: {msg}") from None


#: The device facts that must agree for two tables' latencies to be comparable: entries measured on
#: devices that differ only in others (host name, OS release, Python version) may share a table.
DEVICE_CLASS_FIELDS = ("cpu_model", "cpu_count", "machine", "mnn_version")


def device_class(device: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of ``device`` that decide whether latencies measured on it compare (see ``DEVICE_CLASS_FIELDS``)."""
    return {k: device.get(k) for k in DEVICE_CLASS_FIELDS}


def device_id(device: Mapping[str, Any]) -> str:
    """A short stable id of one device: its host name and a hash of all its facts, e.g. ``"edge-3-1a2b3c4d"``."""
    digest = hashlib.sha1(json.dumps(dict(device), sort_keys=True, default=str).encode()).hexdigest()[:8]
    host = "".join(c if c.isalnum() or c in "-_." else "-" for c in str(device.get("hostname") or "device"))[:40]
    return f"{host}-{digest}"


def _describe_class(device: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in device_class(device).items())


@dataclass(frozen=True)
class NoiseFloor:
    """How much a table's measurements of one op differ between rounds, minutes apart.

    Attributes:
        n_ops: Entries timed in two rounds or more.
        median_pct: Median over those entries of ``(max - min) / median`` of their round medians, in %.
        p90_pct: Its 90th percentile, in %.
    """

    n_ops: int
    median_pct: float
    p90_pct: float

    def __str__(self) -> str:
        return f"run-to-run spread of {self.n_ops} ops: median {self.median_pct:.1f}%, p90 {self.p90_pct:.1f}%"


class LatencyTable:
    """Measured op latencies with the device and runtime they were measured on.

    Args:
        settings: The runtime settings every entry was measured with.
        device: Facts about the device (CPU model, cores, OS, MNN version, ...).
        timing: How the entries were timed (repeats, warm-up, method).
        entries: Initial entries (devices they name must be registered first: :meth:`add_device`).
    """

    def __init__(
        self,
        settings: RuntimeSettings | None = None,
        device: Mapping[str, Any] | None = None,
        timing: Mapping[str, Any] | None = None,
        entries: Iterable[TableEntry] = (),
    ) -> None:
        self.settings = settings or RuntimeSettings()
        self.device: dict[str, Any] = dict(device or {})
        self.timing: dict[str, Any] = dict(timing or {})
        #: Every device an entry names, by id (see :func:`device_id`), all of ``device``'s class.
        self.devices: dict[str, dict[str, Any]] = {}
        self._entries: dict[str, TableEntry] = {}
        for e in entries:
            self.add(e)

    # -- mapping-like access ------------------------------------------------
    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[TableEntry]:
        return iter(self._entries.values())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LatencyTable):
            return NotImplemented
        return (
            self.settings == other.settings
            and self.device == other.device
            and self.timing == other.timing
            and self.devices == other.devices
            and self._entries == other._entries
        )

    def __repr__(self) -> str:
        return f"LatencyTable({len(self)} entries, {self.settings})"

    def get(self, key: str) -> TableEntry | None:
        """Return the entry for ``key``, or ``None``."""
        return self._entries.get(key)

    def keys(self) -> list[str]:
        """All keys, in insertion order."""
        return list(self._entries)

    def add(self, entry: TableEntry) -> None:
        """Add or replace the entry of ``entry.op.key``.

        Raises:
            TableError: The entry names a device this table does not know (add it with :meth:`add_device`).
        """
        if entry.device is not None and entry.device not in self.devices:
            raise TableError(
                f"the entry {entry.op.key!r} names device {entry.device!r}, which is not among the table's devices "
                f"{sorted(self.devices)}. Register it first with add_device()."
            )
        self._entries[entry.op.key] = entry

    # -- devices ------------------------------------------------------------
    def add_device(self, info: Mapping[str, Any]) -> str:
        """Register a device entries were measured on and return its id.

        Raises:
            TableError: ``info`` is not a device of this table's class (another CPU model, core count,
                architecture or MNN version): latencies of different devices are never mixed.
        """
        if not isinstance(info, Mapping):
            raise TableError(f"a device must be an object of facts such as cpu_model, but got {info!r}.")
        if self.device and device_class(info) != device_class(self.device):
            raise TableError(
                f"device {device_id(info)!r} ({_describe_class(info)}) is not the table's device "
                f"({_describe_class(self.device)}). Latencies from different devices are never mixed in one "
                "table: keep a table per device."
            )
        if not self.device:
            self.device = dict(info)
        did = device_id(info)
        self.devices[did] = dict(info)
        return did

    def device_of(self, key: str) -> dict[str, Any]:
        """The facts of the device the entry ``key`` was measured on.

        Raises:
            KeyError: ``key`` is not in the table.
        """
        entry = self._entries[key]
        return dict(self.devices[entry.device]) if entry.device is not None else dict(self.device)

    def check_device(self, expected: Mapping[str, Any]) -> None:
        """Raise :class:`TableError` unless the table was measured on a device matching ``expected``.

        Args:
            expected: Device facts to match, e.g. ``{"cpu_model": "AMD EPYC 7B13"}`` or
                :func:`mmt_nas.device.facts.device_info` of this machine; only the fields of
                :data:`DEVICE_CLASS_FIELDS` that ``expected`` gives are compared.
        """
        if not isinstance(expected, Mapping):
            raise TableError(f"the expected device must be a mapping of device facts, but got {expected!r}.")
        fields = [k for k in DEVICE_CLASS_FIELDS if k in expected]
        if not fields:
            raise TableError(
                f"the expected device names none of the fields that identify a device {DEVICE_CLASS_FIELDS}, "
                f"but got the fields {sorted(expected)}."
            )
        wrong = [k for k in fields if str(expected[k]) != str(self.device.get(k))]
        if wrong:
            diff = "; ".join(f"{k}: table {self.device.get(k)!r}, asked {expected[k]!r}" for k in wrong)
            raise TableError(
                f"the latency table was measured on another device than asked for ({diff}). Latencies do not "
                "carry over between devices: meter the ops on the target device (mmt-nas meter), or use that "
                "device's table."
            )

    @property
    def cache_bytes(self) -> tuple[int, int] | None:
        """The device's ``(lo, hi)`` cache sizes as a model's layers meet them, measured when the table was metered
        (``timing["cache_probe"]``, :func:`mmt_nas.device.probe.cache_probe`), or ``None`` (a table from before
        the probe, or a probe that found no knee)."""
        probe = self.timing.get("cache_probe")
        found = probe.get("cache_bytes") if isinstance(probe, dict) else None
        if (
            isinstance(found, list)
            and len(found) == 2
            and all(isinstance(b, int) and not isinstance(b, bool) and b >= 0 for b in found)
            and found[0] <= found[1]
        ):
            return (found[0], found[1])
        return None

    def noise_floor(self) -> NoiseFloor | None:
        """The table's run-to-run noise: the spread of each entry's round medians (:attr:`TableEntry.run_to_run`),
        over the entries timed in two rounds or more; ``None`` when none was (tables metered in one round)."""
        spreads = sorted(x for e in self._entries.values() if (x := e.run_to_run) is not None)
        if not spreads:
            return None
        return NoiseFloor(len(spreads), 100 * _quantile(spreads, 0.5), 100 * _quantile(spreads, 0.9))

    def closest_keys(self, key: str, class_name: str | None = None, n: int = 3) -> list[str]:
        """Return up to ``n`` existing keys most similar to ``key``, preferring the same class."""
        cls = class_name if class_name is not None else key.split("|", 1)[0]
        pool = [k for k, e in self._entries.items() if e.op.class_name == cls] or list(self._entries)
        return sorted(pool, key=lambda k: -difflib.SequenceMatcher(None, k, key).ratio())[:n]

    def check_settings(self, settings: RuntimeSettings) -> None:
        """Raise :class:`TableError` unless this table was measured with ``settings``."""
        if settings != self.settings:
            raise TableError(
                f"the latency table was measured with {self.settings}, but predictions were asked for "
                f"{settings}. Latencies do not carry over between settings: meter the ops again with "
                "those settings, or ask for the table's."
            )

    # -- persistence --------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Return the versioned JSON document."""
        return {
            "schema": TABLE_SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "runtime": {"engine": "MNN", **self.settings.to_dict()},
            "device": self.device,
            "devices": self.devices,
            "timing": self.timing,
            "entries": [e.to_dict() for e in self._entries.values()],
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the table as JSON, atomically.

        Raises:
            TableError: Something in it cannot be written as JSON (a NaN or infinity in ``device`` or
                ``timing``, or a value that is not JSON); the file is left as it was.
        """
        try:
            text = json.dumps(self.to_dict(), indent=1, allow_nan=False)
        except (ValueError, TypeError) as exc:
            raise TableError(
                f"cannot save the latency table to {str(path)!r}: {exc}. Its device and timing facts must be "
                "plain JSON values (finite numbers, strings, lists, objects); fix them before saving."
            ) from None
        try:
            atomic_write_text(path, text + "\n")
        except OSError as exc:
            raise TableError(
                f"cannot save the latency table to {str(path)!r}: {exc.strerror or exc}. Check that the folder "
                "exists, is writable and has space; the file there was left as it was."
            ) from exc

    @classmethod
    def from_dict(cls, doc: Any, path: str = "<memory>") -> LatencyTable:
        """Build a table from :meth:`to_dict` output, validating it.

        A key listed twice with the same measurement is kept once, with a warning; twice with
        different measurements is an error (merge such tables with :func:`merge_tables`).
        """
        check_schema(doc, TABLE_SCHEMA, Path(path), "latency table")
        entries = doc.get("entries")
        if not isinstance(entries, list):
            raise TableError(f"latency table {path!r}: 'entries' must be a list, but got {type(entries).__name__}.")
        device, timing, devices = doc.get("device", {}), doc.get("timing", {}), doc.get("devices", {})
        if not isinstance(device, dict) or not isinstance(timing, dict) or not isinstance(devices, dict):
            raise TableError(
                f"latency table {path!r}: 'device', 'devices' and 'timing' must be objects, but got "
                f"{type(device).__name__}, {type(devices).__name__} and {type(timing).__name__}."
            )
        table = cls(RuntimeSettings.from_dict(doc.get("runtime")), device, timing)
        for did, info in devices.items():
            try:
                got = table.add_device(info)
            except TableError as exc:
                raise TableError(f"latency table {path!r}: devices[{did!r}]: {exc}") from None
            if got != did:
                table.devices[did] = table.devices.pop(got)  # keep the file's id (facts edited by hand)
        first: dict[str, int] = {}
        for i, raw in enumerate(entries):
            entry = TableEntry.from_dict(raw, f"entries[{i}]")
            if entry.device is not None and entry.device not in table.devices:
                raise TableError(
                    f"latency table {path!r}: entries[{i}] ({entry.op.key!r}) names device {entry.device!r}, "
                    f"which is not among its devices {sorted(table.devices)}. Restore the table from its source."
                )
            old = table.get(entry.op.key)
            if old is not None:
                if old != entry:
                    raise TableError(
                        f"latency table {path!r} holds the key {entry.op.key!r} twice with different measurements "
                        f"(entries[{first[entry.op.key]}] and entries[{i}]). Keep one of them, or put them in two "
                        "tables and join them with `mmt-nas merge`, which picks one by a documented rule."
                    )
                _logger.warning(
                    "latency table %r lists the key %r twice (entries[%d] and entries[%d]) with the same "
                    "measurement; using it once",
                    path,
                    entry.op.key,
                    first[entry.op.key],
                    i,
                )
                continue
            first[entry.op.key] = i
            table.add(entry)
        return table

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, device: Mapping[str, Any] | None = None) -> LatencyTable:
        """Load a table written by :meth:`save`.

        Args:
            path: The JSON file, or an ops folder holding ``meta_latency.json``.
            device: If given, refuse a table measured on another device (see :meth:`check_device`).

        Raises:
            TableError: The file is missing, not JSON, of another schema or version, malformed, or
                measured on another device than ``device``.
        """
        p = Path(path)
        if p.is_dir():
            p = p / TABLE_FILENAME
        table = cls.from_dict(read_json(p, "latency table"), str(p))
        if device is not None:
            table.check_device(device)
        return table
