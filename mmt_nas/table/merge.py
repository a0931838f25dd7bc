"""Join latency tables measured on the same kind of device with the same settings (e.g. metering shards)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from mmt_nas.exceptions import TableError
from mmt_nas.table.table import LatencyStats, LatencyTable

__all__ = ["MergeConflict", "MergeReport", "merge_tables"]


@dataclass(frozen=True)
class MergeConflict:
    """A key measured in more than one of the merged tables.

    Attributes:
        key: The op's key.
        kept_ms: Median latency of the entry kept.
        other_ms: Median latency of the entry dropped.
        kept_n: Timed runs behind the kept entry.
        other_n: Timed runs behind the dropped entry.
        kept_device: Device id of the kept entry.
        other_device: Device id of the dropped entry.
        beyond_noise: Whether the two medians differ by more than both ``rtol`` and three standard
            errors of their difference: a disagreement their own spread does not explain.
    """

    key: str
    kept_ms: float
    other_ms: float
    kept_n: int
    other_n: int
    kept_device: str | None
    other_device: str | None
    beyond_noise: bool

    @property
    def rel_diff(self) -> float:
        """``|kept - other| / min(kept, other)``; 0 when both are 0."""
        low = min(self.kept_ms, self.other_ms)
        return (
            abs(self.kept_ms - self.other_ms) / low if low > 0 else (0.0 if self.kept_ms == self.other_ms else math.inf)
        )


@dataclass
class MergeReport:
    """What :func:`merge_tables` did.

    Attributes:
        sources: Entries taken from each input table, in input order.
        conflicts: Every key found in more than one table, with the rule's choice.
    """

    sources: list[int] = field(default_factory=list)
    conflicts: list[MergeConflict] = field(default_factory=list)

    @property
    def disagreements(self) -> list[MergeConflict]:
        """The conflicts whose measurements disagree beyond their noise, largest first."""
        return sorted((c for c in self.conflicts if c.beyond_noise), key=lambda c: -c.rel_diff)

    def summary(self) -> str:
        """One line."""
        return (
            f"{sum(self.sources)} entries from {len(self.sources)} tables; {len(self.conflicts)} keys measured more "
            f"than once ({len(self.disagreements)} disagree beyond noise)"
        )


def _median_se(stats: LatencyStats) -> float:
    """Standard error of a median of ``n`` runs (1.2533 σ/√n, the normal approximation)."""
    return 1.2533 * stats.std_ms / math.sqrt(stats.n)


def merge_tables(tables: Iterable[LatencyTable], *, rtol: float = 0.1) -> tuple[LatencyTable, MergeReport]:
    """Join tables measured on the same kind of device with the same settings, e.g. metering shards.

    Conflict rule: a key measured in several tables keeps the entry with the most timed runs
    (``latency.n``); on a tie, the one from the earlier table. Every conflict is reported, and
    flagged ``beyond_noise`` when the medians differ by more than ``rtol`` (relative) and by more
    than three standard errors of the difference, which run-to-run noise rarely explains.

    Each entry keeps the id of the device it was measured on; the result's ``devices`` lists them all.

    Args:
        tables: The tables, in priority order for ties.
        rtol: Relative difference below which two measurements of a key are never flagged.

    Returns:
        The merged table (``device`` and ``timing`` of the first table) and the report.

    Raises:
        TableError: No tables; tables measured with other runtime settings; or on another class of
            device (CPU model, core count, architecture, MNN version): those are never mixed.
    """
    tables = list(tables)
    if not tables:
        raise TableError("merge_tables needs at least one table, but got none.")
    if isinstance(rtol, bool) or not isinstance(rtol, (int, float)) or not math.isfinite(rtol) or rtol < 0:
        raise TableError(f"rtol must be a finite number >= 0, but got rtol={rtol!r}.")
    base = tables[0]
    for i, t in enumerate(tables[1:], 1):
        if t.settings != base.settings:
            raise TableError(
                f"table {i} was measured with {t.settings}, but table 0 with {base.settings}. Tables of different "
                "runtime settings are never merged: meter them again with the same settings."
            )
    merged = LatencyTable(base.settings, base.device, base.timing)
    report = MergeReport()
    origin: dict[str, int] = {}
    for i, t in enumerate(tables):
        try:
            ids = {did: merged.add_device(info) for did, info in t.devices.items()}
            own = merged.add_device(t.device) if t.device else None
        except TableError as exc:
            raise TableError(f"table {i} cannot be merged with table 0: {exc}") from None
        for e in t:
            e = dataclasses.replace(e, device=ids[e.device] if e.device is not None else own)
            old = merged.get(e.op.key)
            if old is not None:
                keep, drop = (e, old) if e.latency.n > old.latency.n else (old, e)
                diff = abs(keep.latency_ms - drop.latency_ms)
                noise = 3 * math.hypot(_median_se(keep.latency), _median_se(drop.latency))
                beyond = diff > noise and diff > rtol * min(keep.latency_ms, drop.latency_ms)
                report.conflicts.append(
                    MergeConflict(
                        e.op.key,
                        keep.latency_ms,
                        drop.latency_ms,
                        keep.latency.n,
                        drop.latency.n,
                        keep.device,
                        drop.device,
                        beyond,
                    )
                )
                if keep is old:
                    continue
            merged.add(e)
            origin[e.op.key] = i
    report.sources = [sum(1 for j in origin.values() if j == i) for i in range(len(tables))]
    timings = [t.timing for t in tables]
    if any(t != timings[0] for t in timings):
        merged.timing = {"merged": [dict(t) for t in timings]}
        # the device's cache sizes, probed by each shard on its own device class: the first shard's that found them
        probes: list[dict[str, Any]] = [t["cache_probe"] for t in timings if isinstance(t.get("cache_probe"), dict)]
        found = [pr for pr in probes if pr.get("cache_bytes") is not None]
        if found or probes:
            merged.timing["cache_probe"] = (found or probes)[0]
    return merged, report
