"""On-disk formats: op records (``meta.json``) and latency tables (``meta_latency.json``).

Both are versioned JSON, written atomically. This module imports only the
standard library, so a deployment device with MNN and numpy alone can load and
write tables.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import hashlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from mmt_nas.exceptions import TableError

_logger = logging.getLogger(__name__)

__all__ = [
    "SCHEMA_VERSION",
    "OpRecord",
    "LatencyStats",
    "RuntimeSettings",
    "TableEntry",
    "LatencyTable",
    "op_key",
    "DEVICE_CLASS_FIELDS",
    "device_class",
    "device_id",
    "MergeConflict",
    "MergeReport",
    "merge_tables",
    "exclusive_lock",
    "lock_path",
    "atomic_write_text",
    "open_journal",
    "load_ops_meta",
    "save_ops_meta",
]

SCHEMA_VERSION = 1
_TABLE_SCHEMA = "mmt_nas/latency-table"
_META_SCHEMA = "mmt_nas/ops-meta"
META_FILENAME = "meta.json"
TABLE_FILENAME = "meta_latency.json"


def op_key(class_name: str, repr_str: str, input_shape: Iterable[int]) -> str:
    """Return the lookup key of an op: its class, its ``repr()`` and its input shape.

    Args:
        class_name: The op's class name, e.g. ``"Conv2d"``.
        repr_str: ``repr(module)``.
        input_shape: The shape of the op's (first) input tensor.

    Returns:
        A string such as ``"ReLU|ReLU()|1x64x56x56"``.
    """
    return f"{class_name}|{repr_str}|{'x'.join(str(int(d)) for d in input_shape)}"


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never half.

    Args:
        path: Destination file.
        text: Content to write (UTF-8).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def open_journal(path: str | os.PathLike[str]) -> TextIO:
    """Open a JSON-lines journal for appending (created if missing), ready for a whole new line.

    A killed writer can leave a torn last line; the next entry then starts on a line of its own
    instead of extending it, so readers that skip unreadable lines lose only the torn one.
    """
    fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 (the caller closes it)
    try:
        if fh.tell() > 0:
            with open(path, "rb") as tail:
                tail.seek(-1, os.SEEK_END)
                if tail.read(1) != b"\n":
                    fh.write("\n")
    except BaseException:
        fh.close()
        raise
    return fh


def remove_stale_temp_files(
    folder: str | os.PathLike[str],
    targets: Iterable[str] | None = None,
    *,
    min_age_seconds: float = 2.0,
) -> list[Path]:
    """Remove the temporary files that writers of this package left in ``folder`` when they were killed.

    mmt_nas writes a file ``NAME`` through a hidden temporary sibling, ``.NAME.XXXXXXXX.tmp``
    (:func:`atomic_write_text`) or ``.NAME.PID.tmp`` (``.mnn`` conversion), renamed over ``NAME`` when
    complete. A killed writer (SIGKILL, power loss) leaves that sibling behind; readers never mistake it
    for output, but it wastes space. Only files of that pattern directly in ``folder`` are candidates,
    and one is removed only when no live process can still be writing it: the PID in its name (if any)
    is not running, no process on this machine has it open (read from ``/proc``), and it is at least
    ``min_age_seconds`` old. Without ``/proc`` (not Linux) a file must be an hour old. Writers on other
    machines sharing the folder are not seen: do not run two commands on one folder from two machines.

    Args:
        folder: The folder to clean (not its subfolders); a missing folder is nothing to do.
        targets: Names or ``fnmatch`` patterns of the files whose temporaries may go, e.g.
            ``("meta.json", "*.mnn")``; ``None``: any.
        min_age_seconds: Keep temporaries modified more recently than this.

    Returns:
        The files removed. A file that cannot be removed is logged and kept.
    """
    import fnmatch
    import logging
    import re
    import stat
    import time

    logger = logging.getLogger(__name__)
    pattern = re.compile(r"^\.(?P<target>.+)\.(?P<tag>\d+|[a-z0-9_]{8})\.tmp$")
    folder = Path(folder)
    patterns = None if targets is None else [str(t) for t in targets]
    try:
        names = os.listdir(folder)
    except OSError:  # missing, not a folder, or unreadable: nothing this can clean
        return []
    candidates = []
    for name in names:
        m = pattern.match(name)
        if m is None or (patterns is not None and not any(fnmatch.fnmatchcase(m["target"], p) for p in patterns)):
            continue
        path = folder / name
        if m["tag"].isdigit() and _pid_alive(int(m["tag"])):
            continue
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        proc = Path("/proc/self/fd").is_dir()
        if time.time() - st.st_mtime < (min_age_seconds if proc else max(min_age_seconds, 3600.0)):
            continue
        candidates.append(path)
    if not candidates:
        return []
    open_files = _files_open_by_any_process()
    removed = []
    for path in candidates:
        if os.path.realpath(path) in open_files:
            continue
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            logger.warning("cannot remove the stale temporary file %s: %s", path, exc)
            continue
        logger.info("removed %s, left by an interrupted write", path)
        removed.append(path)
    return removed


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # exists under another user, or cannot tell: keep its files
    return True


def _files_open_by_any_process() -> set[str]:
    """Every file path some process on this machine has open (Linux ``/proc``; empty elsewhere)."""
    found: set[str] = set()
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return found
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:  # exited, or another user's process
            continue
        for fd in fds:
            try:
                found.add(os.readlink(f"{fd_dir}/{fd}"))
            except OSError:
                continue
    return found


def _read_json(path: Path, what: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TableError(f"{what} not found: {str(path)!r}. Check the path, or create it first.") from None
    except OSError as exc:
        raise TableError(f"cannot read {what} {str(path)!r}: {exc}.") from exc
    except UnicodeDecodeError as exc:
        raise TableError(
            f"{what} {str(path)!r} is not UTF-8 text (byte {exc.object[exc.start:exc.start + 1]!r} at offset "
            f"{exc.start}), so it is not a JSON file mmt_nas wrote. It may be corrupt or another kind of file; "
            "regenerate it, or restore it from a copy."
        ) from exc
    non_finite: list[float] = []

    def number(token: str) -> float:  # NaN, Infinity, 1e999: remembered, and found below with where they are
        value = float(token)
        if not math.isfinite(value):
            non_finite.append(value)
        return value

    try:
        doc = json.loads(text, parse_constant=number, parse_float=number)
    except RecursionError as exc:
        raise TableError(
            f"{what} {str(path)!r} nests JSON arrays or objects too deeply to be read (RecursionError); "
            "mmt_nas never writes such a file. Regenerate it, or restore it from a copy."
        ) from exc
    except ValueError as exc:
        pos = getattr(exc, "pos", None)
        if pos is not None and (pos >= len(text.rstrip()) or str(exc).startswith("Unterminated string")):
            raise TableError(
                f"{what} {str(path)!r} is truncated: it ends before its JSON is complete, so it is not valid JSON "
                f"({exc}), as a copy or a write that was cut short leaves it. Regenerate it, or restore it from a "
                "copy."
            ) from exc
        raise TableError(
            f"{what} {str(path)!r} is not valid JSON ({exc}). It may be truncated or edited by hand; "
            "regenerate it, or restore it from a copy."
        ) from exc
    # mmt_nas writes finite numbers only (NaN, Infinity and 1e999 are not latencies): name the first other one
    todo: list[tuple[Any, str]] = [(doc, "")] if non_finite else []
    while todo:
        value, where = todo.pop()
        if isinstance(value, float) and not math.isfinite(value):
            entry = ""
            with contextlib.suppress(LookupError, TypeError, ValueError):  # e.g. a key that only looks like one
                name, _, rest = where.partition("[")
                item = doc[name][int(rest.split("]", 1)[0])] if name in ("entries", "ops") else None
                if isinstance(item, dict) and isinstance(item.get("key"), str):
                    entry = f" (the entry of {item['key'][:200]!r})"
            raise TableError(
                f"{what} {str(path)!r} holds the non-finite number {value} at {where or 'its top level'}{entry}; "
                "latencies and every other number in it must be finite. It was edited by hand or corrupted: "
                "regenerate it (meter that op again), or restore it from a copy."
            )
        if isinstance(value, dict):
            todo.extend((v, f"{where}.{k}" if where else str(k)) for k, v in reversed(list(value.items())))
        elif isinstance(value, list):
            todo.extend((v, f"{where}[{i}]") for i, v in reversed(list(enumerate(value))))
    return doc


def _check_schema(doc: Any, schema: str, path: Path, what: str) -> None:
    if not isinstance(doc, dict) or doc.get("schema") != schema:
        got = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        hint = {
            _META_SCHEMA: " It is an ops folder's meta.json (the list of generated ops), not its latency table "
                          "(meta_latency.json, written by `mmt-nas meter`).",
            _TABLE_SCHEMA: " It is a latency table (meta_latency.json), not an ops folder's meta.json.",
        }.get(got, "") if isinstance(got, str) else ""
        raise TableError(
            f"{str(path)!r} is not a {what}: expected schema {schema!r}, but got {str(got)[:100]!r}.{hint}"
        )
    version = doc.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise TableError(f"{what} {str(path)!r} has no integer schema_version, but got {version!r}.")
    if version > SCHEMA_VERSION:
        raise TableError(
            f"{what} {str(path)!r} has schema_version={version}, newer than this mmt_nas understands "
            f"({SCHEMA_VERSION}). Upgrade mmt_nas."
        )


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in value
    ):
        raise TableError(f"{where} must be a list of positive integers, but got {value!r}.")
    return tuple(value)


def _optional_bool(value: Any, where: str) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise TableError(f"{where} must be true, false or null, but got {value!r}.")
    return value


@dataclass(frozen=True)
class OpRecord:
    """One generated op: what it is, its shapes and its cost features.

    Attributes:
        key: The lookup key (see :func:`op_key`).
        class_name: The class name, e.g. ``"Conv2d"``.
        module: The module the class was imported from, as written in the op space.
        args: Constructor arguments (JSON values).
        input_shape: Input tensor shape.
        output_shape: Output tensor shape, or ``None`` if unknown.
        flops: Floating-point operations of one forward pass (multiply and add counted apart).
        params: Number of parameters.
        file: File name of the ``.mnn`` model inside the ops folder, or ``None``.
        single_output: Whether the op returns one tensor (``None``: unknown). Only such ops may be
            skipped during tracing by returning a tensor of ``output_shape``.
    """

    key: str
    class_name: str
    module: str
    args: Mapping[str, Any] = field(default_factory=dict)
    input_shape: tuple[int, ...] = ()
    output_shape: tuple[int, ...] | None = None
    flops: int = 0
    params: int = 0
    file: str | None = None
    single_output: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        d = dataclasses.asdict(self)
        d["args"] = dict(self.args)
        d["input_shape"] = list(self.input_shape)
        d["output_shape"] = None if self.output_shape is None else list(self.output_shape)
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str = "op") -> OpRecord:
        """Build a record from :meth:`to_dict` output, validating every field."""
        if not isinstance(d, dict):
            raise TableError(f"{where} must be an object, but got {type(d).__name__}.")
        for name in ("key", "class_name", "module"):
            if not isinstance(d.get(name), str) or not d.get(name):
                raise TableError(f"{where}.{name} must be a non-empty string, but got {d.get(name)!r}.")
        args = d.get("args", {})
        if not isinstance(args, dict):
            raise TableError(f"{where}.args must be an object, but got {args!r}.")
        out = d.get("output_shape")
        for name in ("flops", "params"):
            v = d.get(name, 0)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise TableError(f"{where}.{name} must be a non-negative integer, but got {v!r}.")
        file = d.get("file")
        if file is not None and (not isinstance(file, str) or "/" in file or "\\" in file or file in (".", "..")):
            raise TableError(f"{where}.file must be a plain file name, but got {file!r}.")
        return cls(
            key=d["key"],
            class_name=d["class_name"],
            module=d["module"],
            args=args,
            input_shape=_shape(d.get("input_shape"), f"{where}.input_shape"),
            output_shape=None if out is None else _shape(out, f"{where}.output_shape"),
            flops=d.get("flops", 0),
            params=d.get("params", 0),
            file=file,
            single_output=_optional_bool(d.get("single_output"), f"{where}.single_output"),
        )


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
    precision: str = "high"

    def __post_init__(self) -> None:
        if not isinstance(self.backend, str) or not self.backend:
            raise TableError(f"backend must be a non-empty string such as 'CPU', but got {self.backend!r}.")
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1:
            raise TableError(f"threads must be an integer >= 1, but got threads={self.threads!r}.")
        if self.precision not in ("high", "normal", "low"):
            raise TableError(
                f"precision must be one of 'high', 'normal', 'low', but got precision={self.precision!r}."
            )

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
    """

    op: OpRecord
    latency: LatencyStats
    core_ms: float | None = None
    device: str | None = None

    def __post_init__(self) -> None:
        c = self.core_ms
        if c is not None and not _finite_nonnegative(c):
            raise TableError(f"core_ms of {self.op.key!r} must be None or a finite number >= 0, but got {c!r}.")
        if self.device is not None and (not isinstance(self.device, str) or not self.device):
            raise TableError(
                f"the device of {self.op.key!r} must be None or a device id (a non-empty string), "
                f"but got {self.device!r}."
            )

    @property
    def latency_ms(self) -> float:
        """The median latency in milliseconds."""
        return self.latency.median_ms

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict: the op's fields plus ``latency_ms`` (and ``core_ms``, ``device``)."""
        d = self.op.to_dict()
        d["latency_ms"] = self.latency.to_dict()
        if self.core_ms is not None:
            d["core_ms"] = self.core_ms
        if self.device is not None:
            d["device"] = self.device
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str = "entry") -> TableEntry:
        """Inverse of :meth:`to_dict`."""
        op = OpRecord.from_dict(d, where)
        try:
            return cls(op, LatencyStats.from_dict(d.get("latency_ms"), f"{where}.latency_ms"), d.get("core_ms"),
                       d.get("device"))
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
                :func:`mmt_nas.meter.device_info` of this machine; only the fields of
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
            "schema": _TABLE_SCHEMA,
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
        _check_schema(doc, _TABLE_SCHEMA, Path(path), "latency table")
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
                    "measurement; using it once", path, entry.op.key, first[entry.op.key], i,
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
        table = cls.from_dict(_read_json(p, "latency table"), str(p))
        if device is not None:
            table.check_device(device)
        return table


@dataclass(frozen=True)
class MergeConflict:
    """A key measured in more than one of the merged tables.

    Attributes:
        key: The op's key.
        kept_ms: Median latency of the entry kept.
        other_ms: Median latency of the entry dropped.
        kept_n: Timed runs behind the kept entry.
        other_n: Timed runs behind the dropped entry.
        kept_device: Device id of the kept entry.
        other_device: Device id of the dropped entry.
        beyond_noise: Whether the two medians differ by more than both ``rtol`` and three standard
            errors of their difference: a disagreement their own spread does not explain.
    """

    key: str
    kept_ms: float
    other_ms: float
    kept_n: int
    other_n: int
    kept_device: str | None
    other_device: str | None
    beyond_noise: bool

    @property
    def rel_diff(self) -> float:
        """``|kept - other| / min(kept, other)``; 0 when both are 0."""
        low = min(self.kept_ms, self.other_ms)
        return abs(self.kept_ms - self.other_ms) / low if low > 0 else (0.0 if self.kept_ms == self.other_ms else math.inf)


@dataclass
class MergeReport:
    """What :func:`merge_tables` did.

    Attributes:
        sources: Entries taken from each input table, in input order.
        conflicts: Every key found in more than one table, with the rule's choice.
    """

    sources: list[int] = field(default_factory=list)
    conflicts: list[MergeConflict] = field(default_factory=list)

    @property
    def disagreements(self) -> list[MergeConflict]:
        """The conflicts whose measurements disagree beyond their noise, largest first."""
        return sorted((c for c in self.conflicts if c.beyond_noise), key=lambda c: -c.rel_diff)

    def summary(self) -> str:
        """One line."""
        return (
            f"{sum(self.sources)} entries from {len(self.sources)} tables; {len(self.conflicts)} keys measured more "
            f"than once ({len(self.disagreements)} disagree beyond noise)"
        )


def _median_se(stats: LatencyStats) -> float:
    """Standard error of a median of ``n`` runs (1.2533 σ/√n, the normal approximation)."""
    return 1.2533 * stats.std_ms / math.sqrt(stats.n)


def merge_tables(tables: Iterable[LatencyTable], *, rtol: float = 0.1) -> tuple[LatencyTable, MergeReport]:
    """Join tables measured on the same kind of device with the same settings, e.g. metering shards.

    Conflict rule: a key measured in several tables keeps the entry with the most timed runs
    (``latency.n``); on a tie, the one from the earlier table. Every conflict is reported, and
    flagged ``beyond_noise`` when the medians differ by more than ``rtol`` (relative) and by more
    than three standard errors of the difference, which run-to-run noise rarely explains.

    Each entry keeps the id of the device it was measured on; the result's ``devices`` lists them all.

    Args:
        tables: The tables, in priority order for ties.
        rtol: Relative difference below which two measurements of a key are never flagged.

    Returns:
        The merged table (``device`` and ``timing`` of the first table) and the report.

    Raises:
        TableError: No tables; tables measured with other runtime settings; or on another class of
            device (CPU model, core count, architecture, MNN version): those are never mixed.
    """
    tables = list(tables)
    if not tables:
        raise TableError("merge_tables needs at least one table, but got none.")
    if isinstance(rtol, bool) or not isinstance(rtol, (int, float)) or not math.isfinite(rtol) or rtol < 0:
        raise TableError(f"rtol must be a finite number >= 0, but got rtol={rtol!r}.")
    base = tables[0]
    for i, t in enumerate(tables[1:], 1):
        if t.settings != base.settings:
            raise TableError(
                f"table {i} was measured with {t.settings}, but table 0 with {base.settings}. Tables of different "
                "runtime settings are never merged: meter them again with the same settings."
            )
    merged = LatencyTable(base.settings, base.device, base.timing)
    report = MergeReport()
    origin: dict[str, int] = {}
    for i, t in enumerate(tables):
        try:
            ids = {did: merged.add_device(info) for did, info in t.devices.items()}
            own = merged.add_device(t.device) if t.device else None
        except TableError as exc:
            raise TableError(f"table {i} cannot be merged with table 0: {exc}") from None
        for e in t:
            e = dataclasses.replace(e, device=ids[e.device] if e.device is not None else own)
            old = merged.get(e.op.key)
            if old is not None:
                keep, drop = (e, old) if e.latency.n > old.latency.n else (old, e)
                diff = abs(keep.latency_ms - drop.latency_ms)
                noise = 3 * math.hypot(_median_se(keep.latency), _median_se(drop.latency))
                beyond = diff > noise and diff > rtol * min(keep.latency_ms, drop.latency_ms)
                report.conflicts.append(MergeConflict(
                    e.op.key, keep.latency_ms, drop.latency_ms, keep.latency.n, drop.latency.n, keep.device,
                    drop.device, beyond,
                ))
                if keep is old:
                    continue
            merged.add(e)
            origin[e.op.key] = i
    report.sources = [sum(1 for j in origin.values() if j == i) for i in range(len(tables))]
    timings = [t.timing for t in tables]
    if any(t != timings[0] for t in timings):
        merged.timing = {"merged": [dict(t) for t in timings]}
    return merged, report


def lock_path(path: str | os.PathLike[str]) -> Path:
    """The lock file of an output file: a hidden sibling, ``.NAME.lock``."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike[str], what: str, hint: str = "") -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed) for the block, or refuse at once.

    The operating system releases the lock when the holder exits, however it exits, so a
    killed process never leaves a stale lock. On systems without ``fcntl`` the block runs unlocked.

    Args:
        path: The lock file.
        what: What the lock protects, for the message, e.g. ``"metering into ops/meta_latency.json"``.
        hint: Another way out for the message, e.g. ``"meter into another table (--output)"``.

    Raises:
        LockedError: Another process holds the lock.
    """
    from mmt_nas.exceptions import LockedError

    try:
        import fcntl
    except ImportError:  # not POSIX: no advisory locks
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
            raise LockedError(
                f"another process ({holder or 'unknown'}) is already {what}; two at once would overwrite each "
                f"other's results. Wait for it to finish{', or ' + hint if hint else ''}. The lock is "
                f"{str(path)!r} and is released when that process exits.",
                str(path), holder,
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {_hostname()}".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _hostname() -> str:
    import platform

    return platform.node() or "this host"


def load_ops_meta(ops_dir: str | os.PathLike[str]) -> list[OpRecord]:
    """Read the op records of an ops folder (``meta.json``).

    Raises:
        TableError: The file is missing or malformed.
    """
    path = Path(ops_dir) / META_FILENAME
    doc = _read_json(path, "ops metadata")
    _check_schema(doc, _META_SCHEMA, path, "ops metadata file")
    ops = doc.get("ops")
    if not isinstance(ops, list):
        raise TableError(f"ops metadata {str(path)!r}: 'ops' must be a list.")
    return [OpRecord.from_dict(o, f"ops[{i}]") for i, o in enumerate(ops)]


def save_ops_meta(ops_dir: str | os.PathLike[str], ops: Iterable[OpRecord]) -> None:
    """Write the op records of an ops folder (``meta.json``), atomically."""
    doc = {"schema": _META_SCHEMA, "schema_version": SCHEMA_VERSION, "ops": [o.to_dict() for o in ops]}
    atomic_write_text(Path(ops_dir) / META_FILENAME, json.dumps(doc, indent=1, allow_nan=False) + "\n")
