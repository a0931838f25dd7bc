"""Per-op times in context: MNN's per-op callbacks around a whole model, hot and cold."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from mmt_nas.device.timing import _Session, check_times
from mmt_nas.exceptions import MeteringError
from mmt_nas.table.table import LatencyStats, RuntimeSettings

_logger = logging.getLogger(__name__)
#: The reuse distance (bytes of other data between two runs of one op) of a cold timing: past the ~10-16 MB
#: of weights at which this project's 2-core VM's layers turned slower (``benchmarks/context.py``).
COLD_REUSE_BYTES = 48 << 20
#: At most this many copies of an op are cycled for a cold timing (small ops need many to reach the
#: distance, and are the least affected).
COLD_MOST_COPIES = 24


@dataclass(frozen=True)
class OpProfile:
    """In-context time of one op of a converted model, as MNN runs it.

    Attributes:
        name: MNN's op name; for models exported by mmt_nas it starts with the torch
            module path, e.g. ``/layers/layers.0/conv1/Conv_output_0``.
        type: MNN's op type, e.g. ``Convolution``, ``BinaryOp``, ``Raster``.
        latency_ms: Median time per run over the profiled runs.
    """

    name: str
    type: str
    latency_ms: float


def profile_model(
    path: str | os.PathLike[str],
    times: int = 20,
    *,
    settings: RuntimeSettings | None = None,
    copies: int = 1,
) -> list[OpProfile]:
    """Time every op of a whole model in context, with MNN's per-op callbacks.

    The callbacks add about a microsecond per op, so use :func:`time_model` for
    the model's total; this gives the split between its ops.

    Args:
        path: The ``.mnn`` file.
        times: Profiled runs, >= 1 (after 3 warm-up runs of each copy).
        settings: Backend, threads and precision.
        copies: Load the model this many times (each with its own weights and buffers) and run the copies
            in turn: each run then finds its weights as a whole model leaves a layer's weights, last
            touched ``copies - 1`` other models' worth of data ago, and its input just written (the
            *cold* time, :func:`cold_core_ms`). 1: the same copy every run (hot).

    Returns:
        The ops in execution order, each with its median time in ms.
    """
    check_times(times, None)
    if isinstance(copies, bool) or not isinstance(copies, int) or copies < 1:
        raise MeteringError(f"`copies` must be an integer >= 1, but got copies={copies!r}.")
    settings = settings or RuntimeSettings()
    sessions = [_Session(path, settings) for _ in range(copies)]
    clock = time.perf_counter_ns
    order: list[tuple[str, str]] = []
    samples: dict[tuple[str, str], list[int]] = {}
    started = [0]

    def before(tensors: Any, info: Any) -> bool:
        started[0] = clock()
        return True

    def after(tensors: Any, info: Any) -> bool:
        elapsed = clock() - started[0]
        key = (info.getName(), info.getType())
        if key not in samples:
            samples[key] = []
            order.append(key)
        samples[key].append(elapsed)
        return True

    for s in sessions:
        for _ in range(3):
            s.write_input()
            s.run()
    for k in range(times):
        s = sessions[k % copies]
        s.write_input()  # the last run overwrote it (see _Session)
        s.interpreter.runSessionWithCallBackInfo(s.session, before, after)
    return [OpProfile(n, t, LatencyStats.from_samples(x / 1e6 for x in samples[(n, t)]).median_ms) for n, t in order]


def cold_copies(op_bytes: int, reuse_bytes: int = COLD_REUSE_BYTES, most: int = COLD_MOST_COPIES) -> int:
    """How many copies of an op :func:`cold_core_ms` cycles: enough that ``reuse_bytes`` of other copies'
    weights and outputs pass between two runs of one copy (at least 2, at most ``most``)."""
    if op_bytes <= 0:
        return most
    return max(2, min(most, -(-reuse_bytes // op_bytes) + 1))


def cold_core_ms(
    path: str | os.PathLike[str],
    op_bytes: int,
    times: int = 20,
    *,
    settings: RuntimeSettings | None = None,
    reuse_bytes: int = COLD_REUSE_BYTES,
) -> float:
    """An op's own time (as :func:`core_ms`) in the cache state of a layer of a large model: copies of it
    cycled (:func:`profile_model` with ``copies``) so that ``reuse_bytes`` of other data pass between two
    runs of one copy, as a whole model's other layers pass between two runs of one layer.

    Args:
        path: The op's ``.mnn`` file.
        op_bytes: The bytes one copy touches besides its input: weights and output (see
            :func:`mmt_nas.table.records.OpRecord.weight_bytes`).
        times: Profiled runs, over all copies (at least 2 per copy are run).
        settings: Backend, threads and precision.
        reuse_bytes: The reuse distance to reach, in bytes.
    """
    copies = cold_copies(op_bytes, reuse_bytes)
    return core_ms(profile_model(path, max(times, 2 * copies), settings=settings, copies=copies))


_BOUNDARY_TYPES = ("Raster", "ConvertTensor")


def core_ms(profile: list[OpProfile]) -> float:
    """An op's own time from the profile of its one-op model.

    Timed alone, an op's model converts its input into MNN's internal layout and its output back
    (``Raster`` ops around the op); inside a whole model that happens once, not per op. Those
    conversions are left out when something else remains; a model that is nothing but layout
    ops (a reshape, a channel shuffle) keeps them: they are the op.
    """
    ops = list(profile)
    while len(ops) > 1 and ops[0].type in _BOUNDARY_TYPES and any(o.type not in _BOUNDARY_TYPES for o in ops[1:]):
        ops.pop(0)
    while len(ops) > 1 and ops[-1].type in _BOUNDARY_TYPES and any(o.type not in _BOUNDARY_TYPES for o in ops[:-1]):
        ops.pop()
    return sum(o.latency_ms for o in ops)
