"""Generate an ops folder: every op of a space exported to ``.mnn``, with its ``meta.json``."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmt_nas._files import exclusive_lock, lock_path, remove_stale_temp_files, replace_file
from mmt_nas._imports import require
from mmt_nas.device.endtoend import InterleavedResult, Method, check_method, check_plan, measure_interleaved, time_inference
from mmt_nas.exceptions import ExportError, MeteringError, OpSpaceError, TableError
from mmt_nas.device.timing import quiet_native_output, time_model
from mmt_nas.space.ops import SameInputs, required_inputs
from mmt_nas.space.opspace import OpSpec, load_space
from mmt_nas.progress import progress
from mmt_nas.table.records import OpRecord, load_ops_meta, save_ops_meta
from mmt_nas.table.table import LatencyStats, Precision, RuntimeSettings
from mmt_nas.space.trace import eval_mode, shape_of
from mmt_nas.vocab import check_shape, op_key

if TYPE_CHECKING:
    import torch
from mmt_nas.build.export import _OPSET, export_to_mnn

_logger = logging.getLogger(__name__)
_CHECKPOINT_SECONDS = 5.0
_GENERATED = ("meta.json", "*.mnn", "*.onnx")  # the files generate_ops_list writes (for its temporaries)


@dataclass(frozen=True)
class SkippedOp:
    """An op of the space that was not exported, and why."""

    where: str
    args: dict[str, Any]
    input_shape: tuple[int, ...]
    reason: str

    def __str__(self) -> str:
        return f"{self.where} args={self.args} input_shape={list(self.input_shape)}: {self.reason}"


@dataclass
class GenerateResult:
    """What :func:`generate_ops_list` did.

    Attributes:
        ops: Every op now in the folder's ``meta.json``.
        exported: Keys exported by this run.
        reused: Keys already in the folder, not exported again.
        skipped: Combinations that cannot be built or cannot run on their input shape.
        failed: Ops that could be built but failed to export or convert (key, reason).
    """

    ops: list[OpRecord] = field(default_factory=list)
    exported: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    skipped: list[SkippedOp] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        """One line per outcome."""
        return (
            f"{len(self.exported)} exported, {len(self.reused)} already present, "
            f"{len(self.skipped)} invalid combinations skipped, {len(self.failed)} failed to export; "
            f"{len(self.ops)} ops in meta.json"
        )


def _flops_and_output(module: torch.nn.Module, shape: tuple[int, ...]) -> tuple[int, tuple[int, ...] | None, bool]:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    gen = torch.Generator().manual_seed(0)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = module(torch.randn(shape, generator=gen))
    return int(counter.get_total_flops()), shape_of(out), isinstance(out, torch.Tensor)


def _onnx_op_types(module: Any, input_shape: Sequence[int]) -> list[str]:
    """The op types of the ONNX graph the export writes for ``module`` (the graph MNN converts)."""
    import onnx
    import torch

    with tempfile.TemporaryDirectory(prefix="mmt_nas_same_") as tmp:
        path = os.path.join(tmp, "op.onnx")
        with eval_mode(module), warnings.catch_warnings(), quiet_native_output():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (torch.randn(tuple(input_shape)),), path, dynamo=False, opset_version=_OPSET)
        return [node.op_type for node in onnx.load(path).graph.node]


def _same_computation(a: Any, b: Any, input_shape: Sequence[int]) -> bool:
    """Whether two modules of different classes with one key are the same op: one's class a subclass of the
    other's (a library's ``Linear`` that subclasses ``torch.nn.Linear``, say), the same parameters and buffers
    (names and shapes), the same outputs (every tensor) from a copy of the second given the first's weights, on
    inputs of three scales, and the same exported graph (its ONNX op types). Two argument sets of one class are
    never merged here: that is the ``__repr__`` contract's error."""
    import copy

    import torch

    if type(a) is type(b) or not (isinstance(a, type(b)) or isinstance(b, type(a))):
        return False
    weights = a.state_dict()
    if {k: tuple(v.shape) for k, v in weights.items()} != {k: tuple(v.shape) for k, v in b.state_dict().items()}:
        return False
    try:
        twin = copy.deepcopy(b)
        twin.load_state_dict(weights)
        generator = torch.Generator().manual_seed(0)
        for scale in (1.0, 0.01, 100.0):
            x = scale * torch.randn(tuple(input_shape), generator=generator)
            with torch.no_grad():
                ya, yb = _tensors(a.eval()(x)), _tensors(twin.eval()(x))
            if len(ya) != len(yb) or not ya or not all(
                p.shape == q.shape and p.dtype == q.dtype and bool(torch.allclose(p, q, 1e-5, 1e-6))
                for p, q in zip(ya, yb)
            ):
                return False
        return _onnx_op_types(a, input_shape) == _onnx_op_types(b, input_shape)
    except Exception:  # a module that cannot be copied, run or exported so is not known to be the same
        return False


def _tensors(obj: Any) -> list[Any]:
    """Every tensor of a module's output, in order (the output itself, or those in its tuples, lists, dicts)."""
    import torch

    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for item in obj for t in _tensors(item)]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _tensors(v)]
    return []


def prepare_ops(specs: Sequence[OpSpec], base_dir: Path) -> tuple[list[tuple[OpRecord, Any]], list[SkippedOp]]:
    """Build and dry-run every op of a space, without exporting anything.

    Args:
        specs: The ops (see :func:`mmt_nas.space.opspace.load_space`).
        base_dir: Folder searched first for the modules they name.

    Returns:
        The valid ops as (record with key, FLOPs, parameters and shapes; built module) pairs, and
        the combinations that cannot be built or run on their input shape.

    Raises:
        OpSpaceError: Two different argument sets of a class have the same ``repr()``.
    """
    ready: dict[str, tuple[OpRecord, Any, OpSpec]] = {}
    skipped: list[SkippedOp] = []
    for spec in specs:
        try:
            module = spec.build(base_dir)
        except OpSpaceError:
            raise
        except Exception as exc:  # a constructor may reject a combination in any way
            skipped.append(SkippedOp(spec.where, dict(spec.args), spec.input_shape, f"cannot be built: {exc}"))
            continue
        try:
            try:
                flops, out_shape, single = _flops_and_output(module, spec.input_shape)
            except TypeError:
                if required_inputs(module) < 2:
                    raise
                # e.g. self-attention: forward(query, key, value), all the same tensor
                runnable = SameInputs(module, required_inputs(module)).eval()
                flops, out_shape, _ = _flops_and_output(runnable, spec.input_shape)
                ready_module: Any = runnable
                single = False  # what the module itself returns is not known
            else:
                ready_module = module
        except Exception as exc:  # likewise any failure of the forward pass on this shape
            reason = " ".join(str(exc).split())[:300]
            skipped.append(
                SkippedOp(spec.where, dict(spec.args), spec.input_shape, f"cannot run on this input shape: {reason}")
            )
            continue
        key = op_key(getattr(module, "op_class_name", spec.class_name), repr(module), spec.input_shape)
        if key in ready:
            other = ready[key][2]
            if (dict(other.args) != dict(spec.args) or other.module != spec.module) and not _same_computation(
                ready[key][1], ready_module, spec.input_shape
            ):
                raise OpSpaceError(
                    f"{spec.where}: two different ops have the same key, so the table could not tell them apart: "
                    f"{other.module}.{other.class_name}(**{dict(other.args)}) and "
                    f"{spec.module}.{spec.class_name}(**{dict(spec.args)}) both have repr() {repr(module)!r} "
                    f"on input_shape={list(spec.input_shape)}. Override __repr__ of {spec.class_name} so that it "
                    "includes every argument that changes the op (the MMT contract)."
                )
            continue
        record = OpRecord(
            key=key,
            class_name=spec.class_name,
            module=spec.module,
            args=dict(spec.args),
            input_shape=spec.input_shape,
            output_shape=out_shape,
            flops=flops,
            params=sum(p.numel() for p in module.parameters()),
            single_output=single,
            file=f"{spec.class_name}-{hashlib.sha1(key.encode()).hexdigest()[:16]}.mnn",
        )
        ready[key] = (record, ready_module, spec)
    return [(r, m) for r, m, _ in ready.values()], skipped


def generate_ops_list(
    yaml_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    keep_onnx: bool = False,
    show_progress: bool | None = None,
) -> GenerateResult:
    """Export every op of an op space to ``.mnn`` files and write ``out_dir/meta.json`` (the MMT call).

    Incremental and safe to kill: ops already in ``meta.json`` whose file exists are not exported
    again, and neither is an op whose ``.mnn`` file an interrupted run wrote before it could record
    it in ``meta.json`` (the file is adopted if MNN loads it). Every file appears complete or not at
    all; temporaries that a killed run left are removed. Combinations that cannot be built or run are
    skipped and reported; an op that fails to export is reported and the others proceed.

    Args:
        yaml_path: The op-space YAML.
        out_dir: The ops folder (created if needed).
        keep_onnx: Keep each op's ONNX file next to its ``.mnn`` file.
        show_progress: Progress bar; ``None`` shows one on a terminal only.

    Returns:
        What was exported, reused, skipped and failed.

    Raises:
        OpSpaceError: The op space is invalid, yields no valid op, or has repr collisions.
        LockedError: Another process is generating into the same folder.
    """
    out = Path(out_dir)
    specs = load_space(yaml_path)
    ready, skipped = prepare_ops(specs, Path(yaml_path).parent)
    if not ready:
        first = "; ".join(str(s) for s in skipped[:3])
        raise OpSpaceError(
            f"the op space {str(yaml_path)!r} yields no valid op: all {len(skipped)} combinations were skipped "
            f"({first}). Check that each op's arguments fit its input shapes."
        )
    out.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(
        lock_path(out / "meta.json"), f"generating ops into {str(out)!r}", "generate into another folder"
    ):
        return _generate_locked(out, ready, skipped, keep_onnx, show_progress)


def _generate_locked(
    out: Path,
    ready: list[tuple[OpRecord, Any]],
    skipped: list[SkippedOp],
    keep_onnx: bool,
    show_progress: bool | None,
) -> GenerateResult:
    remove_stale_temp_files(out, _GENERATED)
    try:
        existing = {r.key: r for r in load_ops_meta(out)} if (out / "meta.json").exists() else {}
    except TableError as exc:
        raise OpSpaceError(f"cannot extend {str(out)!r}: {exc} Use an empty folder, or repair meta.json.") from None
    result = GenerateResult(skipped=skipped)
    records = dict(existing)
    last_save = time.monotonic()
    try:
        for record, module in progress(ready, len(ready), "export", show_progress):
            old = existing.get(record.key)
            if old is not None and old.file and (out / old.file).is_file():
                result.reused.append(record.key)
                continue
            mnn_file = out / str(record.file)
            onnx = mnn_file.with_suffix(".onnx") if keep_onnx else None
            if old is None and _adoptable(mnn_file, onnx):
                records[record.key] = record
                result.reused.append(record.key)
                continue
            # the ONNX file is staged too, so that it also appears complete or not at all
            staged_onnx = onnx.with_name(f".{onnx.name}.{os.getpid()}.tmp") if onnx is not None else None
            try:
                export_to_mnn(module, record.input_shape, mnn_file, onnx_path=staged_onnx)
                if onnx is not None and staged_onnx is not None:
                    replace_file(staged_onnx, onnx)
            except ExportError as exc:
                _logger.error("failed to export %s: %s", record.key, exc)
                result.failed.append((record.key, str(exc)))
                continue
            finally:
                if staged_onnx is not None:
                    staged_onnx.unlink(missing_ok=True)
            records[record.key] = record
            result.exported.append(record.key)
            if time.monotonic() - last_save > _CHECKPOINT_SECONDS:
                save_ops_meta(out, records.values())
                last_save = time.monotonic()
    finally:
        save_ops_meta(out, records.values())
    remove_stale_temp_files(out, _GENERATED)  # also those too recent to be sure of at the start
    for s in skipped:
        _logger.info("skipped %s", s)
    result.ops = list(records.values())
    _logger.info("generate %s: %s", out, result.summary())
    return result


def _adoptable(mnn_file: Path, onnx_file: Path | None) -> bool:
    """Whether an ``.mnn`` file missing from ``meta.json`` is complete output of an interrupted run.

    Files are renamed into place only when complete and are named by a hash of their op's key, so a
    file that MNN loads and runs is that op's; anything else is exported again (overwriting it).
    """
    if not mnn_file.is_file() or (onnx_file is not None and not onnx_file.is_file()):
        return False
    try:
        time_model(mnn_file, 1, warmup=0)
    except MeteringError as exc:
        _logger.warning("exporting %s again: the file there is not a usable MNN model (%s)", mnn_file.name, exc)
        return False
    _logger.info("adopted %s: exported by an interrupted run before meta.json recorded it", mnn_file.name)
    return True
