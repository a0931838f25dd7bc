"""Time whole ``.mnn`` models as a deployed app runs them, and several models in interleaved rounds.

This module needs only MNN, numpy and the standard library (like :mod:`mmt_nas.meter`), so it runs on a
deployment device without torch.

**What is timed** (:func:`time_inference`, the definition of a model's end-to-end latency): one whole
inference as an app runs it with MNN's module API, every run:

1. the input is copied in from a host numpy array (``Var.write``, into an ``MNN.expr.placeholder``),
2. the model runs (``Module.onForward``, what ``module.forward(x)`` calls),
3. every output is read back into a host numpy array (``Var.read``).

The module is loaded with ``MNN.nn.load_module_from_file`` on a runtime manager made with the given
backend, precision and threads. This is more than :func:`mmt_nas.device.timing.time_model` times (one
``Interpreter.runSession`` with the input already in place: the bare run, which op tables use);
``benchmarks/truth.py`` measures the difference.

Several models are measured in interleaved rounds (:func:`measure_interleaved`): A, B, C, then again in
another seeded order, so that a slow spell of the machine (a neighbour's burst of work, a frequency ramp)
hits every model a little instead of one model a lot, and each model's run-to-run spread is known.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from mmt_nas.device.rounds import round_order, round_times
from mmt_nas.device.timing import check_times, mnn_runtime, quiet_native_output, time_model, timed_runs
from mmt_nas.exceptions import MeteringError
from mmt_nas.table.table import LatencyStats, RuntimeSettings

__all__ = ["METHODS", "InterleavedResult", "Method", "measure_interleaved", "time_inference"]

#: How a whole model is timed: ``"inference"`` (input written, run, output read: :func:`time_inference`,
#: the deployed app's latency) or ``"session"`` (the bare ``Interpreter.runSession`` with the input
#: already in place: :func:`mmt_nas.device.timing.time_model`).
Method = Literal["inference", "session"]
METHODS: tuple[str, ...] = get_args(Method)


def _check_settings(settings: Any) -> RuntimeSettings:
    if settings is None:
        return RuntimeSettings()
    if not isinstance(settings, RuntimeSettings):
        raise MeteringError(
            f"`settings` must be a mmt_nas.table.table.RuntimeSettings or None, but got {settings!r}. "
            "Pass e.g. RuntimeSettings('CPU', 1, 'high')."
        )
    return settings


class _Inference:
    """A model loaded with MNN's module API, its inputs as placeholders and their host arrays."""

    def __init__(self, path: str | os.PathLike[str], settings: RuntimeSettings) -> None:
        mnn = mnn_runtime()
        import numpy as np

        path = str(path)
        if not os.path.isfile(path):
            raise MeteringError(
                f"MNN model file not found: {path!r}. Run generate (or the export) again to recreate it."
            )
        out: list[str] = []
        try:
            with quiet_native_output() as out:
                nn, expr = mnn.nn, mnn.expr
                # the inputs' shapes, formats and types, from the model's expression graph
                declared, _ = expr.get_inputs_and_outputs(expr.load_as_dict(path))
                rt = nn.create_runtime_manager(
                    ({"backend": settings.backend, "precision": settings.precision, "numThread": settings.threads},)
                )
                # empty name lists: the model's own inputs and outputs, in the model's order
                net = nn.load_module_from_file(path, [], [], runtime_manager=rt)
                if net is None:
                    raise RuntimeError("load_module_from_file returned nothing")
                names = list(net.get_info().get("inputNames") or declared)
                if not names:
                    raise RuntimeError("the model has no inputs")
                rng = np.random.default_rng(0)
                self.inputs: list[Any] = []
                self.arrays: list[Any] = []
                for name in names:
                    if name not in declared:
                        raise RuntimeError(f"input {name!r} is not in the model's graph")
                    var = declared[name]
                    shape = [int(d) for d in var.shape]
                    if any(d <= 0 for d in shape):
                        raise RuntimeError(f"input {name!r} has no fixed shape ({shape})")
                    fmt = var.data_format if var.data_format in (expr.NCHW, expr.NHWC) else expr.NCHW
                    if var.dtype == expr.float:
                        array = rng.random(shape, dtype=np.float32)
                    elif var.dtype == expr.int:
                        array = np.zeros(shape, dtype=np.int32)
                    else:
                        raise RuntimeError(f"input {name!r} has type {var.dtype}; only float and int inputs are fed")
                    self.inputs.append(expr.placeholder(shape, fmt, var.dtype))
                    self.arrays.append(array)
                self.net, self.runtime = net, rt
        except Exception as exc:
            detail = " ".join((out[0] if out else "").split())[-300:]
            raise MeteringError(
                f"MNN could not load or prepare {path!r} with its module API and {settings}: {exc}. {detail} "
                "Check that the file is an MNN model with fixed input shapes and that the backend is available "
                "on this device."
            ) from exc
        self.path = path
        self.settings = settings

    def run(self) -> None:
        """One inference: write every input from its host array, run, read every output to the host."""
        for var, array in zip(self.inputs, self.arrays):
            var.write(array)
        for y in self.net.onForward(self.inputs):
            y.read()


def time_inference(
    path: str | os.PathLike[str],
    times: int = 100,
    *,
    warmup: int | None = None,
    settings: RuntimeSettings | None = None,
) -> LatencyStats:
    """Time whole inferences of one ``.mnn`` model as a deployed app runs them (MNN's module API).

    Each timed run is one whole inference: every input copied in from a host numpy array
    (``Var.write``), the run (``Module.onForward``), and every output read back into a host numpy
    array (``Var.read``), timed with ``time.perf_counter_ns`` around all three, garbage collector
    paused. On the CPU backend ``read`` maps the output's memory to the host (a layout conversion
    where MNN keeps it in its packed format, no further copy).

    Args:
        path: The ``.mnn`` file (input shapes fixed in the file; float or int inputs).
        times: Number of timed runs, >= 1.
        warmup: Untimed runs first. ``None`` runs at least 5 and at least 20 ms' worth (at most 1000),
            as :func:`mmt_nas.device.timing.time_model` does.
        settings: Backend, threads and precision (default: CPU, 1 thread, high precision).

    Returns:
        The statistics of the ``times`` runs, in milliseconds.

    Raises:
        MeteringError: Bad arguments, or MNN cannot load or run the model.
    """
    check_times(times, warmup)
    model = _Inference(path, _check_settings(settings))
    try:
        return timed_runs(model.run, times, warmup)
    except Exception as exc:
        raise MeteringError(
            f"MNN failed running {model.path!r} with {model.settings}: {exc}. "
            "Check that the model runs on this backend (try backend='CPU')."
        ) from exc


@dataclass(frozen=True)
class InterleavedResult:
    """One model measured in interleaved rounds (:func:`measure_interleaved`).

    Attributes:
        latency: The rounds combined: median of the rounds' medians; mean, std, min and n of all runs pooled
            (:meth:`LatencyStats.combine`).
        rounds: Each round's statistics, in round order.
        rounds_ms: Each round's median, in round order.
        run_to_run: The spread of the rounds' medians, ``(max - min) / median``; ``None`` for one round.
        method: How each run was timed (:data:`Method`).
    """

    latency: LatencyStats
    rounds: tuple[LatencyStats, ...]
    rounds_ms: tuple[float, ...]
    run_to_run: float | None
    method: str = "inference"

    @classmethod
    def from_rounds(cls, rounds: Any, method: str = "inference") -> InterleavedResult:
        """Combine a model's rounds (in round order)."""
        parts = tuple(rounds)
        if not parts:
            raise MeteringError("cannot combine zero rounds of timings.")
        latency = parts[0] if len(parts) == 1 else LatencyStats.combine(parts)
        medians = tuple(p.median_ms for p in parts)
        mid = latency.median_ms
        spread = (max(medians) - min(medians)) / mid if len(medians) > 1 and mid > 0 else None
        return cls(latency, parts, medians, spread, method)

    @property
    def within_run_cv(self) -> float:
        """The mean of the rounds' coefficients of variation (std / mean of the runs within a round)."""
        return math.fsum(r.cv for r in self.rounds) / len(self.rounds)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "method": self.method,
            "latency_ms": self.latency.to_dict(),
            "rounds_ms": list(self.rounds_ms),
            "run_to_run": self.run_to_run,
            "within_run_cv": self.within_run_cv,
            "rounds": [r.to_dict() for r in self.rounds],
        }


def check_method(method: Any, what: str = "`method`") -> None:
    """Raise :class:`MeteringError` unless ``method`` is one of :data:`METHODS`."""
    if not isinstance(method, str) or method not in METHODS:
        raise MeteringError(
            f"{what} must be one of {list(METHODS)} ('inference': input written, run, output read, as a deployed "
            f"app runs it; 'session': the bare run, input in place), but got {method!r}."
        )


def check_plan(times: Any, rounds: Any, *, warmup: Any = None, seed: Any = 0) -> None:
    """Raise :class:`MeteringError` unless ``times`` runs can be split over ``rounds`` rounds (and ``warmup``
    and ``seed`` are valid), before anything slow happens."""
    check_times(times, warmup)
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise MeteringError(f"`rounds` must be an integer >= 1, but got rounds={rounds!r}.")
    if rounds > times:
        raise MeteringError(
            f"`rounds` must be at most `times` (each round times each model at least once), but got "
            f"rounds={rounds}, times={times}. Pass more times or fewer rounds."
        )
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise MeteringError(f"`seed` must be an integer, but got seed={seed!r}.")


def measure_interleaved(
    paths: Mapping[str, str | os.PathLike[str]],
    times: int = 100,
    *,
    rounds: int = 3,
    settings: RuntimeSettings | None = None,
    seed: int = 0,
    warmup: int | None = None,
    method: Method | Mapping[str, Method] = "inference",
    on_complete: Callable[[str, InterleavedResult], None] | None = None,
    on_error: Callable[[str, MeteringError], None] | None = None,
    on_step: Callable[[str, int], None] | None = None,
) -> dict[str, InterleavedResult]:
    """Measure several models end to end in interleaved rounds: A, B, C, then B, A, C, ...

    In each of the ``rounds`` rounds every model is timed once, in an order shuffled with ``seed`` and
    the round (:func:`mmt_nas.device.rounds.round_order`: the same seed gives the same orders on every run and
    machine), each time loaded afresh, warmed up and timed for its share of the ``times`` runs
    (``times // rounds``, one more in the first ``times % rounds`` rounds).

    Args:
        paths: Name -> ``.mnn`` file.
        times: Timed runs per model over all rounds, >= ``rounds``.
        rounds: Rounds, >= 1.
        settings: Backend, threads and precision (default: CPU, 1 thread, high precision).
        seed: Seed of the rounds' orders.
        warmup: Untimed runs before each round's timing (``None``: at least 5 and 20 ms).
        method: How each run is timed, for all models or per name: ``"inference"`` (:func:`time_inference`:
            input written, run, output read; the deployed app's latency) or ``"session"``
            (:func:`mmt_nas.device.timing.time_model`: the bare ``runSession``, input in place).
        on_complete: Called with ``(name, result)`` as soon as a model's last round is timed (e.g. to
            journal it); its exceptions propagate.
        on_error: Called with ``(name, error)`` when a model fails to load or run; that model is then left
            out of the later rounds and of the result. ``None``: the error is raised.
        on_step: Called with ``(name, round)`` after each model's turn in each round: timed, failed, or skipped
            because it failed in an earlier round (so ``len(paths) * rounds`` calls in all, e.g. to count progress).

    Returns:
        Name -> :class:`InterleavedResult`, in the order of ``paths``.

    Raises:
        MeteringError: Bad arguments, or (without ``on_error``) MNN cannot load or run a model.
    """
    if not isinstance(paths, Mapping) or not paths:
        raise MeteringError(f"`paths` must be a non-empty mapping of name -> .mnn file, but got {paths!r}.")
    for name in paths:
        if not isinstance(name, str):
            raise MeteringError(f"the names in `paths` must be strings, but got {name!r}.")
    check_plan(times, rounds, warmup=warmup, seed=seed)
    how = {name: method for name in paths} if isinstance(method, str) else dict(method)
    for name in paths:
        check_method(how.get(name), f"`method` of {name!r}")
    settings = _check_settings(settings)
    split = round_times(times, rounds)  # check_plan: 1 <= rounds <= times
    done: dict[str, list[LatencyStats]] = {name: [] for name in paths}
    failed: set[str] = set()
    results: dict[str, InterleavedResult] = {}
    for r, n in enumerate(split):
        for name in round_order(paths, seed, r):
            if name in failed:
                if on_step is not None:
                    on_step(name, r)  # its turn, skipped
                continue
            timer = time_inference if how[name] == "inference" else time_model
            try:
                stats = timer(paths[name], n, warmup=warmup, settings=settings)
            except MeteringError as exc:
                if on_error is None:
                    raise
                failed.add(name)
                on_error(name, exc)
                if on_step is not None:
                    on_step(name, r)
                continue
            if on_step is not None:
                on_step(name, r)
            done[name].append(stats)
            if r == len(split) - 1:
                results[name] = InterleavedResult.from_rounds(done[name], how[name])
                if on_complete is not None:
                    on_complete(name, results[name])
    return {name: results[name] for name in paths if name in results}
