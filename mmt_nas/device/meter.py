"""Metering an ops folder into a latency table: shuffled rounds, a sentinel, a journal, shards.

Needs only MNN, numpy and the standard library (a deployment device's base install).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from mmt_nas._files import atomic_write_text, exclusive_lock, lock_path, open_journal, remove_stale_temp_files
from mmt_nas.device import state as device_state
from mmt_nas.device.facts import device_info
from mmt_nas.device.probe import cache_probe as probe_caches
from mmt_nas.device.profile import COLD_MOST_COPIES, COLD_REUSE_BYTES, cold_core_ms, core_ms, profile_model
from mmt_nas.device.rounds import RoundTiming, entry_of, read_journal, round_order, round_times
from mmt_nas.device.sentinel import SENTINEL_THRESHOLD, Sentinel, choose_sentinel
from mmt_nas.device.timing import _Session, check_times, time_model
from mmt_nas.exceptions import MeteringError, TableError
from mmt_nas.progress import progress
from mmt_nas.table.records import TABLE_FILENAME, load_ops_meta
from mmt_nas.table.table import LatencyTable, Precision, RuntimeSettings

_logger = logging.getLogger(__name__)
JOURNAL_SUFFIX = ".journal"
_CHECKPOINT_SECONDS = 5.0


def parse_shard(shard: Any) -> tuple[int, int]:
    """Validate a shard given as ``(i, n)`` or ``"i/n"`` (1 <= i <= n) and return ``(i, n)``.

    Raises:
        MeteringError: Not of that form.
    """
    if isinstance(shard, str):
        head, sep, tail = shard.partition("/")
        try:
            shard = (int(head), int(tail)) if sep else None
        except ValueError:
            shard = None
        if shard is None:
            raise MeteringError(
                f"a shard is written i/n, e.g. 2/4 for the second of four, but got {head + sep + tail!r}."
            )
    ok = (
        isinstance(shard, (tuple, list))
        and len(shard) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in shard)
        and 1 <= shard[0] <= shard[1]
    )
    if not ok:
        raise MeteringError(f"shard must be (i, n) with 1 <= i <= n, e.g. (2, 4), but got shard={shard!r}.")
    return int(shard[0]), int(shard[1])


def in_shard(key: str, shard: tuple[int, int]) -> bool:
    """Whether op ``key`` belongs to shard ``(i, n)``: by a hash of the key, the same on every machine.

    The n shards of a set of ops are disjoint and together cover it, whatever the order of the ops.
    """
    i, n = shard
    return int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:12], 16) % n == i - 1


def meter_ops(
    ops_dir: str | os.PathLike[str],
    times: int = 100,
    *,
    warmup: int | None = None,
    backend: str = "CPU",
    threads: int = 1,
    precision: Precision = "high",
    output: str | os.PathLike[str] | None = None,
    show_progress: bool | None = None,
    profile: bool = True,
    shard: tuple[int, int] | str | None = None,
    rounds: int = 2,
    seed: int = 0,
    sentinel_every: int = 16,
    cold: bool = True,
    cache_probe: bool = True,
) -> LatencyTable:
    """Time every op of an ops folder and save the latency table (``meta_latency.json``).

    Ops are timed in ``rounds`` passes over the folder, each in its own seeded random order, so that
    time-correlated noise (a neighbour's burst of work, a frequency ramp) spreads over many ops instead
    of hitting a contiguous run of them; each pass gets its share of the ``times`` runs. An entry's
    latency is the rounds combined (its median: the median of the rounds' medians), and it keeps each
    round's median (``rounds_ms``): its run-to-run spread, minutes apart, and the table's
    :meth:`~mmt_nas.table.table.LatencyTable.noise_floor`.

    The table is saved incrementally: every timed op is first appended to a journal
    next to the table and the table is rewritten atomically every few seconds, so
    an interrupted run loses nothing and a rerun continues where it stopped. Two
    processes never meter into the same table at once: the second one is refused
    (:class:`~mmt_nas.exceptions.LockedError`).

    Args:
        ops_dir: Folder written by :func:`mmt_nas.build.generate.generate_ops_list`.
        times: Timed runs per op.
        warmup: Untimed runs before timing (``None``: at least 5 runs and 20 ms).
        backend: MNN backend, e.g. ``"CPU"``.
        threads: MNN threads.
        precision: ``"high"``, ``"normal"`` or ``"low"``.
        output: Where to write the table (default ``ops_dir/meta_latency.json``, or
            ``ops_dir/meta_latency.shard-I-of-N.json`` for a shard).
        show_progress: Progress bar; ``None`` shows one on a terminal only.
        profile: Also profile each op with MNN's per-op callbacks (``min(times, 20)`` runs) and
            store its ``core_ms``: the op's own time without the layout conversions at the input
            and output of its one-op model, which a whole model does not repeat per op.
        shard: Meter only shard ``(i, n)`` (or ``"i/n"``, 1 <= i <= n) of the ops, chosen by a hash
            of each op's key (:func:`in_shard`), so n devices can share the work; join their
            tables with :func:`mmt_nas.table.merge.merge_tables` (``mmt-nas merge``).
        rounds: Passes over the ops (>= 1; at most ``times``). 1 is the protocol of tables from before
            rounds existed.
        seed: Seed of the rounds' orders (the same seed gives the same orders on every run).
        sentinel_every: Re-time a fixed reference op (:func:`choose_sentinel`) before every this many
            timings, and once at the end, as the mean time per run over a block of
            :data:`SENTINEL_BLOCK_S`; the timings next to a reading more than :data:`SENTINEL_THRESHOLD`
            off the sentinel's median are timed again at the end of the run. The readings, the drift and
            what was timed again are in ``table.timing["sentinel"]``. 0: no sentinel.
        cold: With ``profile``, also time each op cold (:func:`cold_core_ms`: copies of it cycled so that
            :data:`COLD_REUSE_BYTES` of other data pass between two runs of one, as in a large model) and
            store it as ``cold_ms``; the predictor's ``context="model"`` uses it for models whose weights do
            not stay in the caches.
        cache_probe: With ``cold``, also measure the device's cache sizes as a model's layers meet them
            (:func:`mmt_nas.device.probe.cache_probe`: a weight-heavy op of the folder timed at growing reuse
            distances, a few seconds) and keep them in ``table.timing["cache_probe"]``
            (``LatencyPredictor(table, cache_bytes="table")`` uses them; the default does not yet).

    Returns:
        The complete table.

    Raises:
        MeteringError: Bad arguments, unusable folder, or a table there measured with other
            settings or on another kind of device.
        LockedError: Another process is metering into the same table.
    """
    check_times(times, warmup)
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise MeteringError(f"`rounds` must be an integer >= 1, but got rounds={rounds!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise MeteringError(f"`seed` must be an integer, but got seed={seed!r}.")
    if isinstance(sentinel_every, bool) or not isinstance(sentinel_every, int) or sentinel_every < 0:
        raise MeteringError(f"`sentinel_every` must be an integer >= 0, but got sentinel_every={sentinel_every!r}.")
    part = None if shard is None else parse_shard(shard)
    try:
        settings = RuntimeSettings(backend, threads, precision)
    except TableError as exc:
        raise MeteringError(str(exc)) from None
    ops_dir = Path(ops_dir)
    try:
        ops = load_ops_meta(ops_dir)
    except TableError as exc:
        raise MeteringError(f"cannot meter {str(ops_dir)!r}: {exc} Run generate_ops_list first.") from None
    if part is not None:
        ops = [op for op in ops if in_shard(op.key, part)]
    if output is not None:
        out = Path(output)
    elif part is not None:
        out = ops_dir / f"{Path(TABLE_FILENAME).stem}.shard-{part[0]}-of-{part[1]}.json"
    else:
        out = ops_dir / TABLE_FILENAME
    with exclusive_lock(
        lock_path(out), f"metering into {str(out)!r}", "meter into another table (--shard i/n, or --output)"
    ):
        return _meter_locked(
            ops_dir,
            ops,
            out,
            times,
            warmup,
            settings,
            show_progress,
            profile,
            rounds,
            seed,
            sentinel_every,
            cold,
            cache_probe,
        )


def _meter_locked(
    ops_dir: Path,
    ops: list[Any],
    out: Path,
    times: int,
    warmup: int | None,
    settings: RuntimeSettings,
    show_progress: bool | None,
    profile: bool,
    rounds: int,
    seed: int,
    sentinel_every: int,
    cold: bool,
    cache_probe: bool = True,
) -> LatencyTable:
    journal = out.with_name(out.name + JOURNAL_SUFFIX)
    remove_stale_temp_files(out.parent, [out.name, journal.name])  # what a killed run's atomic writes left
    here = device_info()
    created = not out.exists()
    if out.exists():
        table = LatencyTable.load(out)
        if table.settings != settings:
            raise MeteringError(
                f"{str(out)!r} was measured with {table.settings}, but this run asks for {settings}. "
                "Tables never mix settings: pass another `output`, or delete that file to start over."
            )
    else:
        table = LatencyTable(settings, here, {})
        if journal.exists():  # a run saves its table before journaling, so this one belongs to a deleted table
            stale = journal.with_name(f"{journal.name}.orphaned-{time.strftime('%Y%m%d-%H%M%S')}")
            os.replace(journal, stale)
            _logger.warning(
                "%s has no table next to it (deleted?), so its entries may be of other settings: "
                "moved it to %s instead of using it",
                journal,
                stale,
            )
    try:
        this_device = table.add_device(here)
    except TableError as exc:
        raise MeteringError(
            f"cannot add to {str(out)!r}: {exc} Pass another `output` for this device's table."
        ) from None
    split = round_times(times, rounds)
    earlier_probe = table.timing.get("cache_probe")
    table.timing = {
        "times": times,
        "warmup": "auto" if warmup is None else warmup,
        "method": "runSession",
        "rounds": len(split),
        "seed": seed,
        "input": "written before every run",
    }
    if profile and cold:
        table.timing["cold"] = {"reuse_bytes": COLD_REUSE_BYTES, "most_copies": COLD_MOST_COPIES}
    table.save(out)  # the device is on disk before any journal line names it
    old_entries, journaled = read_journal(journal)
    for entry in old_entries:
        if entry.device is not None and entry.device not in table.devices:
            _logger.warning(
                "journal line for %s names an unknown device %r; attributing it to this device",
                entry.op.key,
                entry.device,
            )
            entry = dataclasses.replace(entry, device=this_device)
        table.add(entry)

    by_key = {op.key: op for op in ops if op.file}
    rounds_of: dict[str, dict[int, RoundTiming]] = {}  # key -> round -> timing, kept once the op is complete
    for t in journaled:
        if t.key in by_key and t.key not in table:
            device = t.device if t.device in table.devices else this_device
            rounds_of.setdefault(t.key, {})[t.round] = dataclasses.replace(t, device=device)
    failed: dict[str, str] = {}

    def complete(key: str) -> None:
        if key not in table and len(rounds_of.get(key, {})) >= len(split):
            table.add(entry_of(by_key[key], list(rounds_of[key].values()), this_device))

    for key in list(rounds_of):
        complete(key)
    todo = [op for op in ops if op.key not in table and op.file]
    _logger.info(
        "metering %d of %d ops (%d already in the table) in %d shuffled round(s)",
        len(todo), len(ops), len(ops) - len(todo), len(split),
    )  # fmt: skip
    last_save = time.monotonic()
    start_state = device_state.snapshot()
    reference = choose_sentinel(list(by_key.values())) if sentinel_every else None
    guard = None
    if reference is not None and todo:
        try:
            ref = _Session(ops_dir / str(reference.file), settings)

            def reference_run(ref: _Session = ref) -> None:
                ref.write_input()
                ref.run()

            guard = Sentinel(reference_run, reference, sentinel_every)
        except MeteringError as exc:
            _logger.warning("no sentinel: its op %s cannot be run (%s)", reference.key, exc)
    batch_of: dict[tuple[str, int], int] = {}  # (key, round) -> the sentinel batch it was timed in
    timed = 0

    def measure(r: int, key: str) -> RoundTiming | None:
        nonlocal timed
        op = by_key[key]
        if guard is not None and timed % guard.every == 0:
            guard.read(timed)
        try:
            stats = time_model(ops_dir / op.file, split[r], warmup=warmup, settings=settings)
            core = cold_ms = None
            if profile and r == 0:
                core = core_ms(profile_model(ops_dir / op.file, min(times, 20), settings=settings))
                if cold:
                    cold_ms = cold_core_ms(ops_dir / op.file, op.footprint_bytes, min(times, 20), settings=settings)
        except MeteringError as exc:
            _logger.error("skipping %s: %s", key, exc)
            failed[key] = str(exc)
            return None
        timed += 1
        if guard is not None:
            batch_of[key, r] = len(guard.readings)
        timing = RoundTiming(key, r, stats, core, this_device, cold_ms)
        rounds_of.setdefault(key, {})[r] = timing
        jf.write(json.dumps(timing.to_dict(), allow_nan=False) + "\n")
        jf.flush()
        os.fsync(jf.fileno())
        return timing

    remeasured: list[str] = []
    jf = open_journal(journal)
    try:
        work = [(r, key) for r in range(len(split)) for key in round_order((op.key for op in todo), seed, r)]
        work = [(r, key) for r, key in work if r not in rounds_of.get(key, {})]
        for r, key in progress(work, len(work), "meter", show_progress):
            if key in failed or key in table:
                continue
            if measure(r, key) is not None:
                complete(key)
            if time.monotonic() - last_save > _CHECKPOINT_SECONDS:
                table.save(out)
                # the journal keeps only what the table does not hold yet: the rounds of incomplete ops
                jf.close()
                atomic_write_text(
                    journal,
                    "".join(json.dumps(t.to_dict(), allow_nan=False) + "\n" for k, ts in rounds_of.items()
                            if k not in table and k not in failed for t in ts.values()),
                )  # fmt: skip
                jf = open_journal(journal)
                last_save = time.monotonic()
        if guard is not None and timed:
            guard.read(timed)  # the last batch's closing reading
            suspect = set(guard.suspects())
            again = sorted((k, r) for (k, r), b in batch_of.items() if b in suspect and k in table)
            if again:
                _logger.warning(
                    "the sentinel drifted beyond %.0f%% next to %d timing(s); timing them again",
                    100 * SENTINEL_THRESHOLD,
                    len(again),
                )
            for key, r in again:  # the device was off its usual speed around them: once more, now
                if measure(r, key) is not None:
                    remeasured.append(f"{key}#{r}")
                    table.add(entry_of(by_key[key], list(rounds_of[key].values()), this_device))
            guard.read(timed)
    finally:
        jf.close()
    if guard is not None:
        table.timing["sentinel"] = guard.report(remeasured)
    if profile and cold and cache_probe and (todo or earlier_probe is None):
        # the caches as the layers of a model meet them, probed with an op this run metered (not one that failed)
        try:
            found = probe_caches(ops_dir, [op for op in ops if op.key in table], settings, times=min(times, 20))
        except MeteringError as exc:  # a probe that fails costs the table nothing but the probe
            _logger.warning("the cache probe failed: %s", exc)
            table.timing["cache_probe"] = {"cache_bytes": None, "reason": f"failed: {str(exc)[:300]}"}
        else:
            table.timing["cache_probe"] = (
                found.to_dict() if found is not None else {"cache_bytes": None, "reason": "no op to probe with"}
            )
    elif earlier_probe is not None:  # a run that did not probe keeps what an earlier one measured
        table.timing["cache_probe"] = earlier_probe
    if todo:  # what else ran on the device while this run metered (absent if nothing was metered)
        state = device_state.activity(start_state, device_state.snapshot())
        table.timing["device_state"] = state.to_dict()
        for warning in state.warnings:
            _logger.warning("%s", warning)
    table.save(out)
    journal.unlink(missing_ok=True)
    if todo and len(table) == 0:  # every op failed and nothing was measured before: the settings are wrong
        if created:
            out.unlink(missing_ok=True)  # leave no empty table behind
        first = next(iter(failed.items()))
        raise MeteringError(
            f"none of the {len(todo)} ops could be metered with {settings}; the first error was: "
            f"{first[0]}: {first[1][:300]}. Check the backend, threads and precision (is "
            f"backend={settings.backend!r} available on this device?)."
        )
    missing = [op.key for op in ops if op.key not in table]
    if missing:
        _logger.warning("%d ops could not be metered; see the errors above", len(missing))
    return table
