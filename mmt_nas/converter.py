"""Export ops and models: torch → ONNX → MNN, and the ops folder with its ``meta.json``.

ONNX → MNN goes through MNN's compiled converter extension (``_tools``) in
process. MNN's ``tools`` Python subpackage is never imported: importing it installs packages with pip
and sends telemetry.
"""

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
from mmt_nas.endtoend import InterleavedResult, Method, check_method, check_plan, measure_interleaved, time_inference
from mmt_nas.exceptions import ExportError, MeteringError, OpSpaceError, TableError
from mmt_nas.meter import quiet_native_output, time_model
from mmt_nas.ops import SameInputs, required_inputs
from mmt_nas.opspace import OpSpec, load_space
from mmt_nas.progress import progress
from mmt_nas.records import OpRecord, load_ops_meta, save_ops_meta
from mmt_nas.table import LatencyStats, Precision, RuntimeSettings
from mmt_nas.trace import eval_mode, shape_of
from mmt_nas.vocab import check_shape, op_key

if TYPE_CHECKING:
    import torch

__all__ = [
    "GenerateResult",
    "SkippedOp",
    "export_to_mnn",
    "generate_ops_list",
    "measure_latency",
    "measure_models",
    "prepare_ops",
]

_logger = logging.getLogger(__name__)
_OPSET = 17
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


def _onnx_to_mnn(onnx_path: Path, mnn_path: Path, what: str | None = None) -> None:
    """Convert with MNN's in-process converter, capturing its native output.

    ``what`` names the exported thing in messages (default: the ONNX file's name).
    """
    what = what or onnx_path.name
    with quiet_native_output() as out:  # importing the extension prints a banner from C++, too
        _tools = require("_tools", "base", "MNN's converter")  # the compiled converter, not its tools package
        ok = _tools.mnnconvert(
            [
                "mnnconvert",
                "-f",
                "ONNX",
                "--modelFile",
                str(onnx_path),
                "--MNNModel",
                str(mnn_path),
                "--bizCode",
                "mmt_nas",
            ]
        )
    if not ok or not mnn_path.is_file() or mnn_path.stat().st_size == 0:
        log = " ".join((out[0] if out else "").split())
        unsupported = re.search(r"These Op Not Support:\s*(.*?)\s*(?:Converted Failed!|$)", log)
        if unsupported:
            raise ExportError(
                f"MNN's converter does not support the ONNX op(s) {unsupported.group(1)[:300]} that {what} "
                "exports to. Leave this op out of the op space, or write it with operations MNN supports."
            )
        raise ExportError(f"MNN could not convert {what}: {log[-500:] or 'no output'}")


def export_to_mnn(
    module: torch.nn.Module,
    input_shape: Sequence[int],
    mnn_path: str | os.PathLike[str],
    *,
    onnx_path: str | os.PathLike[str] | None = None,
) -> None:
    """Export ``module`` on ``input_shape`` to an ``.mnn`` file (through ONNX, opset 17).

    The module is exported in eval mode (its flags are restored afterwards). The
    ``.mnn`` file appears complete or not at all.

    Args:
        module: What to export.
        input_shape: Static input shape.
        mnn_path: Destination ``.mnn`` file.
        onnx_path: Keep the intermediate ONNX file here (default: a temporary file, removed).

    Raises:
        ExportError: torch or MNN failed; the message says which and why.
        MissingExtraError: torch is not installed.
    """
    torch = require("torch", "torch", "exporting a model")

    shape = check_shape(list(input_shape))
    mnn_path = Path(mnn_path)
    mnn_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mmt_nas_") as tmp:
        onnx_file = Path(onnx_path) if onnx_path is not None else Path(tmp) / "op.onnx"
        try:
            # grad stays enabled: torch's fused inference paths (e.g. nn.MultiheadAttention's) have no ONNX export
            with eval_mode(module), warnings.catch_warnings(), quiet_native_output():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    module,
                    (torch.randn(shape),),
                    str(onnx_file),
                    dynamo=False,
                    opset_version=_OPSET,
                    input_names=["input"],
                    output_names=["output"],
                )
        except Exception as exc:
            raise ExportError(
                f"torch could not export {type(module).__name__} on input_shape={list(shape)} to ONNX: {exc}"
            ) from exc
        staged = mnn_path.with_name(f".{mnn_path.name}.{os.getpid()}.tmp")
        try:
            _onnx_to_mnn(onnx_file, staged, f"{type(module).__name__} on input_shape={list(shape)}")
            replace_file(staged, mnn_path)  # MNN made it with the umask's mode; a replaced file's is kept
        finally:
            staged.unlink(missing_ok=True)


def _flops_and_output(module: torch.nn.Module, shape: tuple[int, ...]) -> tuple[int, tuple[int, ...] | None, bool]:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    gen = torch.Generator().manual_seed(0)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = module(torch.randn(shape, generator=gen))
    return int(counter.get_total_flops()), shape_of(out), isinstance(out, torch.Tensor)


def prepare_ops(specs: Sequence[OpSpec], base_dir: Path) -> tuple[list[tuple[OpRecord, Any]], list[SkippedOp]]:
    """Build and dry-run every op of a space, without exporting anything.

    Args:
        specs: The ops (see :func:`mmt_nas.opspace.load_space`).
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
            if dict(other.args) != dict(spec.args) or other.module != spec.module:
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


def measure_latency(
    model: torch.nn.Module,
    input_shape: Sequence[int],
    times: int = 100,
    *,
    warmup: int | None = None,
    backend: str = "CPU",
    threads: int = 1,
    precision: Precision = "high",
    keep_mnn: str | os.PathLike[str] | None = None,
    method: Method = "inference",
    rounds: int = 1,
) -> LatencyStats:
    """Measure a whole model end to end: export it like an op and time it with MNN.

    This is the ground truth predictions are judged against. ``float(result)`` is
    the median in ms.

    What is timed (``method="inference"``, the default: the latency of a deployed app, which writes its
    input and reads its output on every inference): each run copies the input in from a host numpy
    array, runs the model and reads its output back into a host numpy array, with MNN's module API
    (:func:`mmt_nas.endtoend.time_inference`). ``method="session"`` times the bare run instead: one
    ``Interpreter.runSession`` with the input already in place (:func:`mmt_nas.meter.time_model`, how
    op tables are metered, and how this function measured before), which is a few percent less.

    Args:
        model: The model (exported in eval mode; its flags are restored).
        input_shape: Its input shape.
        times: Timed runs (over all rounds).
        warmup: Untimed runs first, in each round (``None``: at least 5 and 20 ms).
        backend: MNN backend.
        threads: MNN threads.
        precision: MNN precision.
        keep_mnn: Also keep the converted model at this path.
        method: ``"inference"`` (input in, run, output out) or ``"session"`` (the bare run).
        rounds: Split the runs into this many rounds, each loading the model afresh; the result is
            the rounds combined (median of the rounds' medians, :meth:`LatencyStats.combine`). 1: one
            measurement of ``times`` runs. Use :func:`measure_models` to interleave several models.

    Raises:
        ExportError: The model cannot be exported or converted.
        MeteringError: Bad arguments, or MNN cannot run it.
    """
    settings = _settings(backend, threads, precision)
    check_method(method)
    check_plan(times, rounds, warmup=warmup)  # before the (slow) export
    with tempfile.TemporaryDirectory(prefix="mmt_nas_") as tmp:
        path = Path(keep_mnn) if keep_mnn is not None else Path(tmp) / "model.mnn"
        export_to_mnn(model, input_shape, path)
        if rounds == 1:
            timer = time_inference if method == "inference" else time_model
            return timer(path, times, warmup=warmup, settings=settings)
        result = measure_interleaved(
            {"model": path}, times, rounds=rounds, settings=settings, warmup=warmup, method=method
        )
        return result["model"].latency


def measure_models(
    models: Mapping[str, tuple[torch.nn.Module, Sequence[int]]],
    times: int = 100,
    *,
    rounds: int = 3,
    warmup: int | None = None,
    backend: str = "CPU",
    threads: int = 1,
    precision: Precision = "high",
    method: Method = "inference",
    seed: int = 0,
    keep_mnn: str | os.PathLike[str] | None = None,
) -> dict[str, InterleavedResult]:
    """Measure several whole models end to end, in interleaved rounds (A, B, C, then another order, ...).

    Each model is exported once (like :func:`measure_latency`), then all are timed with
    :func:`mmt_nas.endtoend.measure_interleaved`: in each round every model once, in a seeded shuffled
    order, each getting its share of the ``times`` runs. A slow spell of the machine then hits every
    model a little instead of one a lot, and each model's run-to-run spread (``result.run_to_run``, the
    spread of its rounds' medians) is known.

    What is timed (``method="inference"``, the default): each run copies the input in from a host numpy
    array, runs the model and reads its output back into a host numpy array (the deployed app's latency;
    :func:`mmt_nas.endtoend.time_inference`). ``method="session"``: the bare ``Interpreter.runSession``,
    input in place (:func:`mmt_nas.meter.time_model`).

    Args:
        models: Name -> ``(model, input_shape)``.
        times: Timed runs per model, over all rounds (>= ``rounds``).
        rounds: Rounds.
        warmup: Untimed runs before each round's timing (``None``: at least 5 and 20 ms).
        backend: MNN backend.
        threads: MNN threads.
        precision: MNN precision.
        method: ``"inference"`` or ``"session"``.
        seed: Seed of the rounds' orders (the same seed gives the same orders).
        keep_mnn: Keep the converted models in this folder (``model-<i>.mnn``, ``i`` the model's position).

    Returns:
        Name -> :class:`~mmt_nas.endtoend.InterleavedResult` (``float(result.latency)`` is the median, ms).

    Raises:
        ExportError: A model cannot be exported or converted.
        MeteringError: Bad arguments, or MNN cannot run a model.
    """
    settings = _settings(backend, threads, precision)
    check_method(method)
    check_plan(times, rounds, warmup=warmup, seed=seed)
    if not isinstance(models, Mapping) or not models:
        raise MeteringError(
            f"`models` must be a non-empty mapping of name -> (model, input_shape), but got {models!r}."
        )
    for name, case in models.items():
        if not isinstance(case, (tuple, list)) or len(case) != 2:
            raise MeteringError(f"`models[{name!r}]` must be a pair (model, input_shape), but got {case!r}.")
    with tempfile.TemporaryDirectory(prefix="mmt_nas_") as tmp:
        folder = Path(keep_mnn) if keep_mnn is not None else Path(tmp)
        paths: dict[str, Path] = {}
        for i, (name, (module, shape)) in enumerate(models.items()):
            paths[name] = folder / f"model-{i}.mnn"
            export_to_mnn(module, shape, paths[name])
        return measure_interleaved(
            paths, times, rounds=rounds, settings=settings, warmup=warmup, method=method, seed=seed
        )


def _settings(backend: str, threads: int, precision: Precision) -> RuntimeSettings:
    try:
        return RuntimeSettings(backend, threads, precision)
    except TableError as exc:
        raise MeteringError(str(exc)) from None
