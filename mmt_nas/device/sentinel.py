"""The sentinel: a fixed reference op re-timed between batches of a metering run, to see the device drift.

Standard library only, like all of metering.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from mmt_nas.table.records import OpRecord

__all__ = ["SENTINEL_BLOCK_S", "SENTINEL_THRESHOLD", "choose_sentinel", "Sentinel"]


#: A sentinel reading is the mean time per run over a block of at least this long (and 5 runs): a share of
#: the device taken by others shows in it, where a median of single runs can slip between their slices.
SENTINEL_BLOCK_S = 0.02
#: A reading this much (relative) above or below the sentinel's median marks the ops timed next to it.
SENTINEL_THRESHOLD = 0.25


def choose_sentinel(ops: Sequence[OpRecord]) -> OpRecord | None:
    """The reference op a metering run re-times between batches: of the folder's ops, the one with the
    median FLOPs (ties by key), so that it is neither trivial nor slow; ``None`` for an empty folder."""
    usable = sorted((op for op in ops if op.file), key=lambda op: (op.flops, op.key))
    return usable[len(usable) // 2] if usable else None


class Sentinel:
    """The reference op, loaded once, and its readings during one metering run."""

    def __init__(self, run: Callable[[], Any], op: OpRecord, every: int) -> None:
        """``run`` runs the loaded reference op once; ``every``: timings between readings."""
        self.op, self.every, self.run = op, every, run
        self.t0 = time.monotonic()
        self.readings: list[tuple[int, float, float]] = []  # (timings before it, seconds since start, ms per run)
        self.read(0)  # a first block warms the sentinel up: not kept
        self.readings.clear()

    def read(self, position: int) -> float:
        run, clock, n = self.run, time.perf_counter_ns, 0
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            start = clock()
            while n < 5 or clock() - start < SENTINEL_BLOCK_S * 1e9:
                run()
                n += 1
            ms = (clock() - start) / 1e6 / n
        finally:
            if gc_was_enabled:
                gc.enable()
        self.readings.append((position, time.monotonic() - self.t0, ms))
        return ms

    def suspects(self) -> list[int]:
        """Indices of the batches (between readings ``i - 1`` and ``i``) next to a reading off the median."""
        if len(self.readings) < 3:
            return []
        base = statistics.median(ms for _, _, ms in self.readings)
        off = [abs(ms / base - 1) > SENTINEL_THRESHOLD for _, _, ms in self.readings]
        return [i for i in range(1, len(off)) if off[i - 1] or off[i]]

    def report(self, remeasured: Sequence[str]) -> dict[str, Any]:
        base = statistics.median(ms for _, _, ms in self.readings) if self.readings else None
        drift = [100 * (ms / base - 1) for _, _, ms in self.readings] if base else []
        return {
            "key": self.op.key,
            "every": self.every,
            "block_s": SENTINEL_BLOCK_S,
            "threshold": SENTINEL_THRESHOLD,
            "baseline_ms": base,
            "series": [[pos, round(t, 3), ms] for pos, t, ms in self.readings],
            "max_drift_pct": max(drift, key=abs) if drift else None,
            "remeasured": list(remeasured),
        }
