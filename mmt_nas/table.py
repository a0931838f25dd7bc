"""On-disk formats: op records (``meta.json``) and latency tables (``meta_latency.json``).

Both are versioned JSON, written atomically. This module imports only the
standard library, so a deployment device with MNN and numpy alone can load and
write tables.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmt_nas.exceptions import TableError

__all__ = [
    "SCHEMA_VERSION",
    "OpRecord",
    "LatencyStats",
    "RuntimeSettings",
    "TableEntry",
    "LatencyTable",
    "op_key",
    "atomic_write_text",
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


def _reject_constant(name: str) -> float:
    raise ValueError(f"non-finite number {name} is not allowed")


def _read_json(path: Path, what: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TableError(f"{what} not found: {str(path)!r}. Check the path, or create it first.") from None
    except OSError as exc:
        raise TableError(f"cannot read {what} {str(path)!r}: {exc}.") from exc
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise TableError(
            f"{what} {str(path)!r} is not valid JSON ({exc}). It may be truncated or edited by hand; "
            "regenerate it, or restore it from a copy."
        ) from exc


def _check_schema(doc: Any, schema: str, path: Path, what: str) -> None:
    if not isinstance(doc, dict) or doc.get("schema") != schema:
        got = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise TableError(f"{str(path)!r} is not a {what}: expected schema {schema!r}, but got {got!r}.")
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
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
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
        var = math.fsum((x - mean) ** 2 for x in xs) / n
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
    """

    op: OpRecord
    latency: LatencyStats
    core_ms: float | None = None

    def __post_init__(self) -> None:
        c = self.core_ms
        if c is not None and (isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c) or c < 0):
            raise TableError(f"core_ms of {self.op.key!r} must be None or a finite number >= 0, but got {c!r}.")

    @property
    def latency_ms(self) -> float:
        """The median latency in milliseconds."""
        return self.latency.median_ms

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict: the op's fields plus ``latency_ms``."""
        d = self.op.to_dict()
        d["latency_ms"] = self.latency.to_dict()
        if self.core_ms is not None:
            d["core_ms"] = self.core_ms
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str = "entry") -> TableEntry:
        """Inverse of :meth:`to_dict`."""
        op = OpRecord.from_dict(d, where)
        return cls(op, LatencyStats.from_dict(d.get("latency_ms"), f"{where}.latency_ms"), d.get("core_ms"))


class LatencyTable:
    """Measured op latencies with the device and runtime they were measured on.

    Args:
        settings: The runtime settings every entry was measured with.
        device: Facts about the device (CPU model, cores, OS, MNN version, ...).
        timing: How the entries were timed (repeats, warm-up, method).
        entries: Initial entries.
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
        """Add or replace the entry of ``entry.op.key``."""
        self._entries[entry.op.key] = entry

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
            "timing": self.timing,
            "entries": [e.to_dict() for e in self._entries.values()],
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the table as JSON, atomically."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")

    @classmethod
    def from_dict(cls, doc: Any, path: str = "<memory>") -> LatencyTable:
        """Build a table from :meth:`to_dict` output, validating it."""
        _check_schema(doc, _TABLE_SCHEMA, Path(path), "latency table")
        entries = doc.get("entries")
        if not isinstance(entries, list):
            raise TableError(f"latency table {path!r}: 'entries' must be a list, but got {type(entries).__name__}.")
        device, timing = doc.get("device", {}), doc.get("timing", {})
        if not isinstance(device, dict) or not isinstance(timing, dict):
            raise TableError(f"latency table {path!r}: 'device' and 'timing' must be objects.")
        table = cls(RuntimeSettings.from_dict(doc.get("runtime")), device, timing)
        for i, raw in enumerate(entries):
            entry = TableEntry.from_dict(raw, f"entries[{i}]")
            if entry.op.key in table:
                raise TableError(
                    f"latency table {path!r} holds the key {entry.op.key!r} twice (entries[{i}]). "
                    "Remove one of them, or merge the tables with mmt-nas."
                )
            table.add(entry)
        return table

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LatencyTable:
        """Load a table written by :meth:`save`.

        Args:
            path: The JSON file, or an ops folder holding ``meta_latency.json``.

        Raises:
            TableError: The file is missing, not JSON, of another schema or version, or malformed.
        """
        p = Path(path)
        if p.is_dir():
            p = p / TABLE_FILENAME
        return cls.from_dict(_read_json(p, "latency table"), str(p))


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
