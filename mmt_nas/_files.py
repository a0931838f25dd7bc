"""Crash-safe files: atomic writes, JSON-lines journals, locks, and the temporaries killed writers leave.

Every module that writes a file of mmt_nas's goes through here, so that a reader sees the old file or
the new one, never half of one, and a killed writer loses at most the line it was writing.
Standard library only.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import math
import os
import platform
import re
import stat
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from mmt_nas.exceptions import LockedError, TableError

_logger = logging.getLogger(__name__)

__all__ = [
    "atomic_write_text",
    "open_journal",
    "remove_stale_temp_files",
    "pid_alive",
    "lock_path",
    "exclusive_lock",
    "read_json",
]


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never half.

    Args:
        path: Destination file.
        text: Content to write (UTF-8).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def open_journal(path: str | os.PathLike[str]) -> TextIO:
    """Open a JSON-lines journal for appending (created if missing), ready for a whole new line.

    A killed writer can leave a torn last line; the next entry then starts on a line of its own
    instead of extending it, so readers that skip unreadable lines lose only the torn one.
    """
    fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 (the caller closes it)
    try:
        if fh.tell() > 0:
            with open(path, "rb") as tail:
                tail.seek(-1, os.SEEK_END)
                if tail.read(1) != b"\n":
                    fh.write("\n")
    except BaseException:
        fh.close()
        raise
    return fh


def remove_stale_temp_files(
    folder: str | os.PathLike[str],
    targets: Iterable[str] | None = None,
    *,
    min_age_seconds: float = 2.0,
) -> list[Path]:
    """Remove the temporary files that writers of this package left in ``folder`` when they were killed.

    mmt_nas writes a file ``NAME`` through a hidden temporary sibling, ``.NAME.XXXXXXXX.tmp``
    (:func:`atomic_write_text`) or ``.NAME.PID.tmp`` (``.mnn`` conversion), renamed over ``NAME`` when
    complete. A killed writer (SIGKILL, power loss) leaves that sibling behind; readers never mistake it
    for output, but it wastes space. Only files of that pattern directly in ``folder`` are candidates,
    and one is removed only when no live process can still be writing it: the PID in its name (if any)
    is not running, no process on this machine has it open (read from ``/proc``), and it is at least
    ``min_age_seconds`` old. Without ``/proc`` (not Linux) a file must be an hour old. Writers on other
    machines sharing the folder are not seen: do not run two commands on one folder from two machines.

    Args:
        folder: The folder to clean (not its subfolders); a missing folder is nothing to do.
        targets: Names or ``fnmatch`` patterns of the files whose temporaries may go, e.g.
            ``("meta.json", "*.mnn")``; ``None``: any.
        min_age_seconds: Keep temporaries modified more recently than this.

    Returns:
        The files removed. A file that cannot be removed is logged and kept.
    """
    pattern = re.compile(r"^\.(?P<target>.+)\.(?P<tag>\d+|[a-z0-9_]{8})\.tmp$")
    folder = Path(folder)
    patterns = None if targets is None else [str(t) for t in targets]
    try:
        names = os.listdir(folder)
    except OSError:  # missing, not a folder, or unreadable: nothing this can clean
        return []
    candidates = []
    for name in names:
        m = pattern.match(name)
        if m is None or (patterns is not None and not any(fnmatch.fnmatchcase(m["target"], p) for p in patterns)):
            continue
        path = folder / name
        if m["tag"].isdigit() and pid_alive(int(m["tag"])):
            continue
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        proc = Path("/proc/self/fd").is_dir()
        if time.time() - st.st_mtime < (min_age_seconds if proc else max(min_age_seconds, 3600.0)):
            continue
        candidates.append(path)
    if not candidates:
        return []
    open_files = _files_open_by_any_process()
    removed = []
    for path in candidates:
        if os.path.realpath(path) in open_files:
            continue
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            _logger.warning("cannot remove the stale temporary file %s: %s", path, exc)
            continue
        _logger.info("removed %s, left by an interrupted write", path)
        removed.append(path)
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID may be running (``True`` when it cannot be told)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # exists under another user, or cannot tell: keep its files
    return True


def _files_open_by_any_process() -> set[str]:
    """Every file path some process on this machine has open (Linux ``/proc``; empty elsewhere)."""
    found: set[str] = set()
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return found
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:  # exited, or another user's process
            continue
        for fd in fds:
            try:
                found.add(os.readlink(f"{fd_dir}/{fd}"))
            except OSError:
                continue
    return found


def lock_path(path: str | os.PathLike[str]) -> Path:
    """The lock file of an output file: a hidden sibling, ``.NAME.lock``."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike[str], what: str, hint: str = "") -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed) for the block, or refuse at once.

    The operating system releases the lock when the holder exits, however it exits, so a
    killed process never leaves a stale lock. On systems without ``fcntl`` the block runs unlocked.

    Args:
        path: The lock file.
        what: What the lock protects, for the message, e.g. ``"metering into ops/meta_latency.json"``.
        hint: Another way out for the message, e.g. ``"meter into another table (--output)"``.

    Raises:
        LockedError: Another process holds the lock.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no advisory locks
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
            raise LockedError(
                f"another process ({holder or 'unknown'}) is already {what}; two at once would overwrite each "
                f"other's results. Wait for it to finish{', or ' + hint if hint else ''}. The lock is "
                f"{str(path)!r} and is released when that process exits.",
                str(path),
                holder,
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {_hostname()}".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _hostname() -> str:
    return platform.node() or "this host"


def read_json(path: Path, what: str) -> Any:
    """Read a JSON document mmt_nas wrote, or raise :class:`TableError` saying what is wrong with the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TableError(f"{what} not found: {str(path)!r}. Check the path, or create it first.") from None
    except OSError as exc:
        raise TableError(f"cannot read {what} {str(path)!r}: {exc}.") from exc
    except UnicodeDecodeError as exc:
        raise TableError(
            f"{what} {str(path)!r} is not UTF-8 text (byte {exc.object[exc.start : exc.start + 1]!r} at offset "
            f"{exc.start}), so it is not a JSON file mmt_nas wrote. It may be corrupt or another kind of file; "
            "regenerate it, or restore it from a copy."
        ) from exc
    non_finite: list[float] = []

    def number(token: str) -> float:  # NaN, Infinity, 1e999: remembered, and found below with where they are
        value = float(token)
        if not math.isfinite(value):
            non_finite.append(value)
        return value

    try:
        doc = json.loads(text, parse_constant=number, parse_float=number)
    except RecursionError as exc:
        raise TableError(
            f"{what} {str(path)!r} nests JSON arrays or objects too deeply to be read (RecursionError); "
            "mmt_nas never writes such a file. Regenerate it, or restore it from a copy."
        ) from exc
    except ValueError as exc:
        pos = getattr(exc, "pos", None)
        if pos is not None and (pos >= len(text.rstrip()) or str(exc).startswith("Unterminated string")):
            raise TableError(
                f"{what} {str(path)!r} is truncated: it ends before its JSON is complete, so it is not valid JSON "
                f"({exc}), as a copy or a write that was cut short leaves it. Regenerate it, or restore it from a "
                "copy."
            ) from exc
        raise TableError(
            f"{what} {str(path)!r} is not valid JSON ({exc}). It may be truncated or edited by hand; "
            "regenerate it, or restore it from a copy."
        ) from exc
    # mmt_nas writes finite numbers only (NaN, Infinity and 1e999 are not latencies): name the first other one
    todo: list[tuple[Any, str]] = [(doc, "")] if non_finite else []
    while todo:
        value, where = todo.pop()
        if isinstance(value, float) and not math.isfinite(value):
            entry = ""
            with contextlib.suppress(LookupError, TypeError, ValueError):  # e.g. a key that only looks like one
                name, _, rest = where.partition("[")
                item = doc[name][int(rest.split("]", 1)[0])] if name in ("entries", "ops") else None
                if isinstance(item, dict) and isinstance(item.get("key"), str):
                    entry = f" (the entry of {item['key'][:200]!r})"
            raise TableError(
                f"{what} {str(path)!r} holds the non-finite number {value} at {where or 'its top level'}{entry}; "
                "latencies and every other number in it must be finite. It was edited by hand or corrupted: "
                "regenerate it (meter that op again), or restore it from a copy."
            )
        if isinstance(value, dict):
            todo.extend((v, f"{where}.{k}" if where else str(k)) for k, v in reversed(list(value.items())))
        elif isinstance(value, list):
            todo.extend((v, f"{where}[{i}]") for i, v in reversed(list(enumerate(value))))
    return doc
