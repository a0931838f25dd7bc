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
from mmt_nas.vocab import op_family

if TYPE_CHECKING:
    from mmt_nas.table.table import TableEntry

__all__ = [
    "Context",
    "CONTEXTS",
    "CACHE_BYTES",
    "cold_share",
    "check_cache_bytes",
    "cold_part",
    "in_model_ms",
    "is_block",
]

#: Which cache state an op's time is counted in: as timed alone (``"alone"``: hot, its weights, input and output
#: kept in the caches run after run); as a model leaves it (``"model"``, the default): its activations (input and
#: output) in the state of its cold timing, and its weights as the model's size leaves them (:func:`cold_share`);
#: or ``"weights"``: only its weights moved by the model's size, its activations hot (mmt_nas's default before
#: 2026-12-03, kept to compare: see :func:`in_model_ms`).
Context = Literal["alone", "weights", "model"]
CONTEXTS: tuple[Context, ...] = ("alone", "weights", "model")
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


def cold_part(weight_fraction: float, share: float, *, activations: bool = True) -> float:
    """How much of the way from an op's hot to its cold time it moves inside a model (:func:`in_model_ms`): its
    weights' part of its bytes by ``share``, and, with ``activations``, the rest of its bytes all the way."""
    return max(0.0, share) * weight_fraction + ((1.0 - weight_fraction) if activations else 0.0)


def in_model_ms(entry: TableEntry, ms: float, share: float, *, activations: bool = True) -> float:
    """An op's time ``ms`` (as the predictor counts it, e.g. its hot core time) moved toward its cold time, part by
    part of its bytes (its entry's ``weight_fraction`` of them are weights, the rest its input and output).

    Its weights move by ``share`` (:func:`cold_share` of its model: a small model keeps them in the caches between
    two inferences, a large one does not). Its activations, with ``activations`` (the default), move all the way:
    inside a model an op writes its output into a buffer of the model's memory pool that other layers used last,
    and reads an input the op before it just wrote, which is the state its cold timing leaves them in
    (:func:`mmt_nas.device.profile.cold_core_ms`: copies cycled, its input just written), not the state of its hot
    timing (the same buffers run after run). Measured here, interleaved within one minute so that the host's drift
    cannot pass for it: a MobileNetV3-small's ops took 1.16-1.22 times their hot time inside the model, pointwise
    convolutions 1.20, depthwise 1.07. Without ``activations``, only the weights move (mmt_nas's composition before
    2026-12-03, and still the rule for a block the table holds whole: :func:`is_block`). Entries without a cold (or
    core) time keep ``ms``.
    """
    if entry.cold_ms is None or entry.core_ms is None or ms <= 0:
        return ms
    part = cold_part(entry.op.weight_fraction, share, activations=activations)
    if part <= 0:
        return ms
    return ms + part * (entry.cold_ms - entry.core_ms)


def is_block(class_name: str, key: str = "") -> bool:
    """Whether an op is a block of other modules (a residual block the table holds whole, say), from its class name
    alone, as :func:`mmt_nas.vocab.op_family` names families (any class it does not know is a block): so that a
    prediction from keys (``predict_keys``) and one from the model agree. A block's activations inside it are made
    and used within it, alone and in a model alike, and its cold timing cooled them all; so only its weights move
    with the model's size (:func:`in_model_ms` with ``activations=False``)."""
    return class_name != "Functional" and op_family(class_name, key=key, extended=True) == "block"
