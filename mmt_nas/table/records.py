"""Generated ops: :class:`OpRecord` and an ops folder's ``meta.json``.

Versioned JSON, written atomically. Standard library only.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmt_nas._files import atomic_write_text, read_json
from mmt_nas.exceptions import TableError
from mmt_nas.vocab import check_shape

__all__ = [
    "SCHEMA_VERSION",
    "META_FILENAME",
    "TABLE_FILENAME",
    "OpRecord",
    "check_schema",
    "load_ops_meta",
    "save_ops_meta",
]

SCHEMA_VERSION = 1
TABLE_SCHEMA = "mmt_nas/latency-table"
META_SCHEMA = "mmt_nas/ops-meta"
META_FILENAME = "meta.json"
TABLE_FILENAME = "meta_latency.json"


def check_schema(doc: Any, schema: str, path: Path, what: str) -> None:
    """Raise :class:`TableError` unless ``doc`` is a ``schema`` document of a version this mmt_nas reads."""
    if not isinstance(doc, dict) or doc.get("schema") != schema:
        got = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        hint = (
            {
                META_SCHEMA: " It is an ops folder's meta.json (the list of generated ops), not its latency table "
                "(meta_latency.json, written by `mmt-nas meter`).",
                TABLE_SCHEMA: " It is a latency table (meta_latency.json), not an ops folder's meta.json.",
            }.get(got, "")
            if isinstance(got, str)
            else ""
        )
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


def _optional_bool(value: Any, where: str) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise TableError(f"{where} must be true, false or null, but got {value!r}.")
    return value


@dataclass(frozen=True)
class OpRecord:
    """One generated op: what it is, its shapes and its cost features.

    Attributes:
        key: The lookup key (see :func:`mmt_nas.vocab.op_key`).
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

    @property
    def weight_bytes(self) -> int:
        """Bytes of its parameters (float32)."""
        return 4 * self.params

    @property
    def footprint_bytes(self) -> int:
        """Bytes one run touches besides its input: its parameters and its output (float32)."""
        return 4 * (self.params + math.prod(self.output_shape or self.input_shape))

    @property
    def weight_fraction(self) -> float:
        """The share of :attr:`footprint_bytes` that is weights (0 for an op without a footprint)."""
        footprint = self.footprint_bytes
        return self.weight_bytes / footprint if footprint > 0 else 0.0

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
            input_shape=check_shape(d.get("input_shape"), f"{where}.input_shape", error=TableError, allow_empty=True),
            output_shape=None
            if out is None
            else check_shape(out, f"{where}.output_shape", error=TableError, allow_empty=True),
            flops=d.get("flops", 0),
            params=d.get("params", 0),
            file=file,
            single_output=_optional_bool(d.get("single_output"), f"{where}.single_output"),
        )


def load_ops_meta(ops_dir: str | os.PathLike[str]) -> list[OpRecord]:
    """Read the op records of an ops folder (``meta.json``).

    Raises:
        TableError: The file is missing or malformed.
    """
    path = Path(ops_dir) / META_FILENAME
    doc = read_json(path, "ops metadata")
    check_schema(doc, META_SCHEMA, path, "ops metadata file")
    ops = doc.get("ops")
    if not isinstance(ops, list):
        raise TableError(f"ops metadata {str(path)!r}: 'ops' must be a list.")
    return [OpRecord.from_dict(o, f"ops[{i}]") for i, o in enumerate(ops)]


def save_ops_meta(ops_dir: str | os.PathLike[str], ops: Iterable[OpRecord]) -> None:
    """Write the op records of an ops folder (``meta.json``), atomically."""
    doc = {"schema": META_SCHEMA, "schema_version": SCHEMA_VERSION, "ops": [o.to_dict() for o in ops]}
    atomic_write_text(Path(ops_dir) / META_FILENAME, json.dumps(doc, indent=1, allow_nan=False) + "\n")
