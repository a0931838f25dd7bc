"""Measure whole models end to end: exported here (:mod:`mmt_nas.build.export`), timed with MNN."""

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
from mmt_nas.build.export import export_to_mnn

_logger = logging.getLogger(__name__)


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
    (:func:`mmt_nas.device.endtoend.time_inference`). ``method="session"`` times the bare run instead: one
    ``Interpreter.runSession`` with the input already in place (:func:`mmt_nas.device.timing.time_model`, how
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
    :func:`mmt_nas.device.endtoend.measure_interleaved`: in each round every model once, in a seeded shuffled
    order, each getting its share of the ``times`` runs. A slow spell of the machine then hits every
    model a little instead of one a lot, and each model's run-to-run spread (``result.run_to_run``, the
    spread of its rounds' medians) is known.

    What is timed (``method="inference"``, the default): each run copies the input in from a host numpy
    array, runs the model and reads its output back into a host numpy array (the deployed app's latency;
    :func:`mmt_nas.device.endtoend.time_inference`). ``method="session"``: the bare ``Interpreter.runSession``,
    input in place (:func:`mmt_nas.device.timing.time_model`).

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
        Name -> :class:`~mmt_nas.device.endtoend.InterleavedResult` (``float(result.latency)`` is the median, ms).

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
