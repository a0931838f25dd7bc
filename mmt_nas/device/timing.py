"""Timing an ``.mnn`` model with the MNN runtime: one session, its input, and the one timing loop.

This module needs only MNN, numpy and the standard library, so it runs on a deployment device without torch or
scikit-learn.

Timing method: each run is one call of MNN's ``Interpreter.runSession`` (a single Python-to-C++ call with the
input already in place), timed with ``time.perf_counter_ns`` around it, with the garbage collector paused. The
call path costs about 0.2 µs here (see ``benchmarks/RESULTS.md``), so even a 10 µs op is timed within a few
percent; MNN's ``nn`` module API costs about 1 µs a call.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

from mmt_nas._imports import require
from mmt_nas.exceptions import MeteringError
from mmt_nas.table.table import LatencyStats, RuntimeSettings

_logger = logging.getLogger(__name__)


@contextlib.contextmanager
def quiet_native_output() -> Iterator[list[str]]:
    """Capture what native code writes to file descriptors 1 and 2 inside the block.

    MNN prints progress from C++, which ``sys.stdout`` redirection cannot catch.
    The captured text is appended to the yielded list when the block exits.
    """
    captured: list[str] = []
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    try:
        saved = [os.dup(1), os.dup(2)]
    except OSError:  # no real file descriptors (e.g. embedded interpreters)
        yield captured
        return
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            sink.seek(0)
            captured.append(sink.read().decode("utf-8", "replace"))


def mnn_runtime() -> Any:
    """Import the MNN runtime (not its ``tools`` subpackage), hiding its start-up banner."""
    if "MNN" not in sys.modules:
        with quiet_native_output():
            require("MNN", "base", "metering with the MNN runtime")
    return sys.modules["MNN"]


class _Session:
    """An MNN interpreter session and its random input.

    MNN reuses a session's input buffer for the tensors computed from it, so a run leaves its input
    overwritten: run after run without writing it again, a model is fed its own results, whose values
    shrink (or grow) geometrically until they are denormal numbers, on which x86 arithmetic runs up to
    100 times slower (measured: a 256-channel 3x3 convolution at 7x7 went from 0.47 ms to 54 ms per run
    after about 200 runs). So every timed run is preceded by :attr:`write_input` (untimed).
    """

    def __init__(self, path: str | os.PathLike[str], settings: RuntimeSettings) -> None:
        mnn = mnn_runtime()
        import numpy as np

        path = str(path)
        if not os.path.isfile(path):
            raise MeteringError(f"MNN model file not found: {path!r}. Run generate again to recreate it.")
        out: list[str] = []
        try:
            with quiet_native_output() as out:
                self.interpreter = mnn.Interpreter(path)
                self.session = self.interpreter.createSession(
                    {"backend": settings.backend, "precision": settings.precision, "numThread": settings.threads}
                )
                inp = self.interpreter.getSessionInput(self.session)
                shape = list(inp.getShape())
                data = np.random.default_rng(0).random(shape, dtype=np.float32)
                host = mnn.Tensor(shape, mnn.Halide_Type_Float, data, mnn.Tensor_DimensionType_Caffe)
                inp.copyFrom(host)
                self.write_input = lambda: inp.copyFrom(host)
        except Exception as exc:
            detail = " ".join((out[0] if out else "").split())[-300:]
            raise MeteringError(
                f"MNN could not load or prepare {path!r} with {settings}: {exc}. {detail} "
                "Check that the file is an MNN model and the backend is available on this device."
            ) from exc
        self.run = lambda: self.interpreter.runSession(self.session)


def time_model(
    path: str | os.PathLike[str],
    times: int = 100,
    *,
    warmup: int | None = None,
    settings: RuntimeSettings | None = None,
) -> LatencyStats:
    """Time one ``.mnn`` model end to end.

    Args:
        path: The ``.mnn`` file (single input, shape fixed in the file).
        times: Number of timed runs, >= 1.
        warmup: Untimed runs first. ``None`` runs at least 5 and at least 20 ms' worth.
        settings: Backend, threads and precision (default: CPU, 1 thread, high precision).

    Returns:
        The statistics of the ``times`` runs, in milliseconds.

    Raises:
        MeteringError: Bad arguments, or MNN cannot load or run the model.
    """
    check_times(times, warmup)
    settings = settings or RuntimeSettings()
    session = _Session(path, settings)
    return timed_runs(session.run, times, warmup, prepare=session.write_input)


def timed_runs(
    run: Callable[[], Any], times: int, warmup: int | None = None, *, prepare: Callable[[], Any] | None = None
) -> LatencyStats:
    """Warm ``run`` up, then time ``times`` calls of it, garbage collector paused: the one timing loop of
    metering (:func:`time_model`) and of end-to-end measurement (:func:`mmt_nas.device.endtoend.time_inference`).

    Args:
        run: One inference, ready to call.
        times: Timed calls, >= 1.
        warmup: Untimed calls first. ``None``: at least 5 and at least 20 ms' worth (at most 1000).
        prepare: Called before every call of ``run`` (warm-up included), outside the timing: e.g. writing
            the input that the previous run overwrote.

    Returns:
        The statistics of the ``times`` calls, in milliseconds.
    """
    clock = time.perf_counter_ns
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start, done = clock(), 0
        while (done < warmup) if warmup is not None else (done < 5 or (clock() - start < 20e6 and done < 1000)):
            if prepare is not None:
                prepare()
            run()
            done += 1
        samples = []
        if prepare is None:
            for _ in range(times):
                t0 = clock()
                run()
                samples.append(clock() - t0)
        else:
            for _ in range(times):
                prepare()
                t0 = clock()
                run()
                samples.append(clock() - t0)
    finally:
        if gc_was_enabled:
            gc.enable()
    return LatencyStats.from_samples(x / 1e6 for x in samples)


def check_times(times: Any, warmup: Any) -> None:
    """Raise :class:`MeteringError` unless ``times`` is an integer >= 1 and ``warmup`` ``None`` or >= 0."""
    if isinstance(times, bool) or not isinstance(times, int) or times < 1:
        raise MeteringError(f"`times` must be an integer >= 1, but got times={times!r}.")
    if warmup is not None and (isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0):
        raise MeteringError(f"`warmup` must be None or an integer >= 0, but got warmup={warmup!r}.")
