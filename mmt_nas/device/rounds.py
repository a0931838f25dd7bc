"""The metering protocol's rounds: their seeded orders, how the runs split over them, and their journal lines.

Standard library only, like all of metering.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmt_nas.exceptions import TableError
from mmt_nas.table.records import OpRecord
from mmt_nas.table.table import LatencyStats, TableEntry

__all__ = ["RoundTiming", "read_journal", "round_order", "round_times", "entry_of"]

_logger = logging.getLogger("mmt_nas.device.meter")


@dataclass(frozen=True)
class RoundTiming:
    """One op timed in one round: a line of the metering journal.

    Attributes:
        key: The op's key.
        round: Which round (0-based).
        latency: The round's statistics.
        core_ms: The op's own time from MNN's profile (round 0 only; ``None`` otherwise or unprofiled).
        device: The id of the device it was timed on.
        cold_ms: Its own time with the caches filled with other data first (round 0 only; ``None``
            otherwise, or not timed cold): :attr:`mmt_nas.table.table.TableEntry.cold_ms`.
    """

    key: str
    round: int
    latency: LatencyStats
    core_ms: float | None
    device: str | None
    cold_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The journal line."""
        return {
            "key": self.key,
            "round": self.round,
            "latency_ms": self.latency.to_dict(),
            "core_ms": self.core_ms,
            "device": self.device,
            **({"cold_ms": self.cold_ms} if self.cold_ms is not None else {}),
        }

    @classmethod
    def from_dict(cls, d: Any) -> RoundTiming:
        """Read a journal line written by :meth:`to_dict`.

        Raises:
            TableError: It is not one.
        """
        if not isinstance(d, dict) or not isinstance(d.get("key"), str) or not isinstance(d.get("round"), int):
            raise TableError(f"not a round timing: {str(d)[:200]}")
        core, cold = d.get("core_ms"), d.get("cold_ms")
        for name, v in (("core_ms", core), ("cold_ms", cold)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):
                raise TableError(f"{name} of a round timing must be None or a number >= 0, but got {v!r}.")
        device = d.get("device")
        return cls(
            d["key"],
            d["round"],
            LatencyStats.from_dict(d.get("latency_ms")),
            core,
            device if isinstance(device, str) and device else None,
            cold,
        )


def read_journal(path: Path) -> tuple[list[TableEntry], list[RoundTiming]]:
    """What an interrupted run journaled: whole entries (from before rounds existed) and round timings.

    A torn or unreadable line (an interrupted write) is skipped with a warning.
    """
    entries: list[TableEntry] = []
    timings: list[RoundTiming] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return entries, timings
    for line in lines:
        try:
            d = json.loads(line)
            if isinstance(d, dict) and "round" in d:
                timings.append(RoundTiming.from_dict(d))
            else:
                entries.append(TableEntry.from_dict(d))
        except (ValueError, TableError):
            _logger.warning("ignoring an unreadable line in %s (an interrupted write)", path)
    return entries, timings


def round_order(keys: Iterable[str], seed: int, round_index: int) -> list[str]:
    """The order in which round ``round_index`` times ``keys``: a shuffle seeded by ``seed`` and the round,
    the same on every run and every machine (so a resumed run keeps its order)."""
    order = sorted(set(keys))
    random.Random(f"mmt_nas-rounds:{seed}:{round_index}").shuffle(order)
    return order


def round_times(times: int, rounds: int) -> list[int]:
    """How the ``times`` timed runs of an op are split over ``rounds`` rounds (they add up to ``times``)."""
    rounds = max(1, min(rounds, times))
    return [times // rounds + (1 if r < times % rounds else 0) for r in range(rounds)]


def entry_of(op: OpRecord, timings: Sequence[RoundTiming], device: str | None) -> TableEntry:
    """An op's table entry from its rounds (in round order)."""
    ordered = sorted(timings, key=lambda t: t.round)
    core = next((t.core_ms for t in ordered if t.core_ms is not None), None)
    cold = next((t.cold_ms for t in ordered if t.cold_ms is not None), None)
    stats = ordered[0].latency if len(ordered) == 1 else LatencyStats.combine(t.latency for t in ordered)
    medians = tuple(t.latency.median_ms for t in ordered)
    return TableEntry(op, stats, core, ordered[0].device or device, medians, cold)
