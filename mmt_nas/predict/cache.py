"""How a model's size sets its ops' cache state: the share of the way from an op's hot time to its cold time.

An op timed alone finds its weights in the caches run after run (its *hot* time, ``core_ms``); metering also
times it *cold* (``cold_ms``: copies cycled, so its weights come from memory,
:func:`mmt_nas.device.profile.cold_core_ms`).
Inside a model, a layer's weights are last touched one inference ago, with the whole model's weights read in
between: a small model keeps them in the caches, a large one does not. :func:`cold_share` is that, as the
simplest model the measurements support (``benchmarks/context.py``). Standard library only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from mmt_nas.exceptions import OptionError

if TYPE_CHECKING:
    from mmt_nas.table.table import TableEntry

__all__ = ["Context", "CONTEXTS", "CACHE_BYTES", "cold_share", "check_cache_bytes", "in_model_ms"]

#: Which cache state an op's time is counted in: as timed alone (``"alone"``: hot, its weights and input
#: kept in the caches run after run), or as a model of this size leaves it (``"model"``, see
#: :func:`cold_share`).
Context = Literal["alone", "model"]
CONTEXTS: tuple[Context, ...] = ("alone", "model")
#: A model's weights (bytes) below which its layers' weights stay in the caches between two inferences, and
#: above which they do not: measured on this project's 2-core VM (``benchmarks/context.py``: a chain of n
#: 256-channel 3x3 convolutions at 7x7 ran each conv as fast as alone up to 9 MB of weights, 1.5-2x slower
#: from 18 MB). Pass your device's to ``LatencyPredictor(cache_bytes=...)``.
CACHE_BYTES: tuple[int, int] = (8 << 20, 20 << 20)


def cold_share(model_weight_bytes: float, cache_bytes: tuple[int, int] = CACHE_BYTES) -> float:
    """How much of the way from an op's hot time to its cold time a model of this many weight bytes takes
    it: 0 up to ``cache_bytes[0]``, 1 from ``cache_bytes[1]``, linear between."""
    lo, hi = cache_bytes
    if model_weight_bytes <= lo:
        return 0.0
    if model_weight_bytes >= hi or hi <= lo:
        return 1.0
    return (model_weight_bytes - lo) / (hi - lo)


def check_cache_bytes(cache_bytes: Any) -> tuple[int, int]:
    """Return ``cache_bytes`` as a ``(lo, hi)`` tuple of byte counts (a list is accepted, as JSON gives it), else
    raise :class:`~mmt_nas.exceptions.OptionError`."""
    if isinstance(cache_bytes, list):
        cache_bytes = tuple(cache_bytes)
    if (
        not isinstance(cache_bytes, tuple)
        or len(cache_bytes) != 2
        or not all(isinstance(b, int) and not isinstance(b, bool) and b >= 0 for b in cache_bytes)
        or cache_bytes[0] > cache_bytes[1]
    ):
        raise OptionError(
            f"cache_bytes must be a tuple (lo, hi) of byte counts with 0 <= lo <= hi, but got {cache_bytes!r}."
        )
    return (cache_bytes[0], cache_bytes[1])


def in_model_ms(entry: TableEntry, ms: float, share: float) -> float:
    """An op's time ``ms`` (as the predictor counts it, e.g. its hot core time) moved toward its cold time by
    ``share`` (:func:`cold_share` of its model), times the weights' part of its bytes: inside a model only its
    weights are cold; its output goes to a buffer that the ops before it keep warm, while the cold timing found
    that buffer cold too. Entries without a cold (or core) time keep ``ms``."""
    if share <= 0 or entry.cold_ms is None or entry.core_ms is None or ms <= 0:
        return ms
    return ms + share * entry.op.weight_fraction * (entry.cold_ms - entry.core_ms)
