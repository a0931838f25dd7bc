"""The device's own cache sizes, as a model's layers meet them: one op timed at growing reuse distances.

A layer of a model reads its weights once per inference, with every other layer's data read in between; whether
they are still in the caches depends on how much data that is and on the device's caches (2 MB of L2 per core and
a 105 MB L3 shared with other tenants on one of this project's VMs; 512 KB-1 MB of L2 and 2-8 MB of L3 on a
phone). The probe takes a weight-heavy op of the ops folder and times it (:func:`~mmt_nas.device.profile.
cold_core_ms`: copies of it cycled) with more and more other data between two runs of one copy, from half a
megabyte to 64 MB: its time over its hot time rises from 1 where the data stays cached to its cold ratio where
it does not. Where it rises is the device's ``cache_bytes`` (:func:`mmt_nas.predict.cache.cold_share`), stored in
the table (``timing["cache_probe"]``); ``LatencyPredictor(table, cache_bytes="table")`` uses it. Not by default:
on this project's Xeon VM the probe found (8.6, 49) MB, and 30 unseen models predicted with it came out -11.0% (mean
signed error) against -1.8% with the default (8, 20) MB, from a chain of convolutions: a model's layers meet other
data than copies of one op do, and what maps one onto the other is not known yet. The distances stop at
``COLD_MOST_COPIES`` copies: a curve still rising there gives its last distance as ``hi``.

Needs only MNN (the base install).
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmt_nas.device.profile import cold_copies, cold_core_ms, core_ms, profile_model
from mmt_nas.exceptions import TableError
from mmt_nas.table.records import OpRecord
from mmt_nas.table.table import RuntimeSettings
from mmt_nas.vocab import op_family

__all__ = ["PROBE_REUSE_BYTES", "CacheProbe", "choose_probe_op", "knee", "cache_probe"]

#: The reuse distances the probe asks for (bytes of other data between two runs of one copy of the op).
PROBE_REUSE_BYTES: tuple[int, ...] = tuple(int(mb * 2**20) for mb in (0.5, 1, 2, 4, 8, 16, 32, 64))
#: The probe op's weights: big enough that its time depends on where they come from, small enough for copies.
PROBE_WEIGHT_BYTES: tuple[int, int] = (256 << 10, 8 << 20)
#: A rise of the time over the hot time below this is no knee: the caches held all the probe reached, or the
#: op's time does not depend on where its weights come from.
MIN_RISE = 0.15


@dataclass(frozen=True)
class CacheProbe:
    """What the probe measured.

    Attributes:
        op: The key of the op it timed.
        op_bytes: The bytes one copy touches (weights and output).
        reuse_bytes: The reuse distances reached, ascending.
        ratios: The op's median time at each distance over its hot time, over the rounds.
        cache_bytes: ``(lo, hi)``: the reuse distance up to which the time stays near hot, and from which it is
            near cold (:func:`knee`); ``None`` when the curve shows no knee.
        rounds: The rounds each distance was timed in.
    """

    op: str
    op_bytes: int
    reuse_bytes: tuple[int, ...]
    ratios: tuple[float, ...]
    cache_bytes: tuple[int, int] | None
    rounds: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what the table keeps in ``timing["cache_probe"]``)."""
        return {
            "op": self.op,
            "op_bytes": self.op_bytes,
            "reuse_bytes": list(self.reuse_bytes),
            "ratios": list(self.ratios),
            "cache_bytes": None if self.cache_bytes is None else list(self.cache_bytes),
            "rounds": self.rounds,
        }

    @classmethod
    def from_dict(cls, d: Any) -> CacheProbe:
        """Inverse of :meth:`to_dict`.

        Raises:
            TableError: Not such a dict.
        """
        try:
            cache = d["cache_bytes"]
            probe = cls(
                str(d["op"]),
                int(d["op_bytes"]),
                tuple(int(x) for x in d["reuse_bytes"]),
                tuple(float(x) for x in d["ratios"]),
                None if cache is None else (int(cache[0]), int(cache[1])),
                int(d["rounds"]),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise TableError(f"a cache probe must be a dict as CacheProbe.to_dict() writes, but got {d!r}.") from exc
        if len(probe.reuse_bytes) != len(probe.ratios) or (
            probe.cache_bytes is not None and not 0 <= probe.cache_bytes[0] <= probe.cache_bytes[1]
        ):
            raise TableError(f"a cache probe's distances, ratios and cache_bytes do not agree: {d!r}.")
        return probe


def knee(
    reuse_bytes: Sequence[int], ratios: Sequence[float], *, low: float = 0.2, high: float = 0.8
) -> tuple[int, int] | None:
    """Where a time-over-hot curve rises: ``(lo, hi)``, the last distance (in a run from the first) still within
    ``low`` of the rise and the first distance past ``lo`` at ``high`` of it; ``None`` for a rise under
    :data:`MIN_RISE`.

    Args:
        reuse_bytes: Ascending reuse distances.
        ratios: The time over the hot time at each.
        low: The share of the rise up to which the data counts as cached.
        high: The share of the rise from which it counts as not.
    """
    if len(reuse_bytes) != len(ratios) or not ratios:
        return None
    top = max(ratios)
    rise = top - 1.0
    if rise < MIN_RISE:
        return None
    lo_index = -1
    for i, r in enumerate(ratios):
        if r > 1.0 + low * rise:
            break
        lo_index = i
    lo = reuse_bytes[lo_index] if lo_index >= 0 else 0
    hi = next(
        (b for b, r in zip(reuse_bytes[lo_index + 1 :], ratios[lo_index + 1 :]) if r >= 1.0 + high * rise),
        reuse_bytes[-1],
    )
    return (lo, max(lo, hi))


def choose_probe_op(records: Iterable[OpRecord]) -> OpRecord | None:
    """The op the probe times: a convolution or linear layer whose weights are most of its bytes, with weights in
    :data:`PROBE_WEIGHT_BYTES`, closest to 2 MB; ``None`` if the folder has none."""
    fit = [
        r
        for r in records
        if op_family(r.class_name, dict(r.args), r.key) in ("conv", "linear")
        and PROBE_WEIGHT_BYTES[0] <= r.weight_bytes <= PROBE_WEIGHT_BYTES[1]
        and r.weight_fraction >= 0.5
    ]
    return min(fit, key=lambda r: (abs(r.weight_bytes - (2 << 20)), r.key), default=None)


def cache_probe(
    ops_dir: str | os.PathLike[str],
    records: Iterable[OpRecord],
    settings: RuntimeSettings | None = None,
    *,
    rounds: int = 3,
    times: int = 20,
    reuse_bytes: Sequence[int] = PROBE_REUSE_BYTES,
) -> CacheProbe | None:
    """Time the folder's probe op (:func:`choose_probe_op`) hot and at each reuse distance, in ``rounds`` rounds
    (the distances in alternating order), and find the knee of its time over its hot time.

    Args:
        ops_dir: The ops folder.
        records: Its ops (``load_ops_meta``).
        settings: Backend, threads and precision.
        rounds: Rounds, >= 1.
        times: Profiled runs per timing.
        reuse_bytes: The distances to ask for (each reached as a whole number of copies of the op).

    Returns:
        The probe, or ``None`` when the folder has no op to probe with.
    """
    op = choose_probe_op(r for r in records if r.file)
    if op is None or op.file is None:
        return None
    path = Path(ops_dir) / op.file
    size = op.footprint_bytes
    reached = sorted({(cold_copies(size, r) - 1) * size for r in reuse_bytes})
    samples: Mapping[int, list[float]] = {b: [] for b in reached}
    for rnd in range(max(1, rounds)):
        hot = core_ms(profile_model(path, times, settings=settings))
        for b in reached if rnd % 2 == 0 else reached[::-1]:
            cold = cold_core_ms(path, size, times, settings=settings, reuse_bytes=b)
            if hot > 0:
                samples[b].append(cold / hot)
    ratios = [statistics.median(samples[b]) if samples[b] else 1.0 for b in reached]
    return CacheProbe(op.key, size, tuple(reached), tuple(ratios), knee(reached, ratios), max(1, rounds))
