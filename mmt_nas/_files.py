"""Crash-safe files: atomic writes, JSON-lines journals, locks, and the temporaries killed writers leave.

Every module that writes a file of mmt_nas's goes through here, so that a reader sees the old file or
the new one, never half of one, a killed writer loses at most the line it was writing, and new files get
the user's umask (see :func:`atomic_writer`).
Standard library only.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import json
import logging
import math
import os
import platform
import re
import secrets
import stat
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from mmt_nas.exceptions import LockedError, TableError

_logger = logging.getLogger(__name__)

__all__ = [
    "atomic_write_text",
    "atomic_writer",
    "replace_file",
    "open_journal",
    "remove_stale_temp_files",
    "pid_alive",
    "lock_path",
    "exclusive_lock",
    "read_json",
]


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never half.

    The file gets the permissions :func:`atomic_writer` gives: the umask's for a new file, the old
    file's when it replaces one.

    Args:
        path: Destination file.
        text: Content to write (UTF-8, newlines as given).
    """
    with atomic_writer(path) as fh:
        fh.write(text.encode("utf-8"))


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open a hidden temporary sibling of ``path`` for writing; on success it is fsynced and renamed over ``path``.

    Readers see the old file or the new one, never half; if the block raises, the temporary is removed
    and ``path`` is untouched. The temporary is ``.NAME.XXXXXXXX.tmp``, the pattern
    :func:`remove_stale_temp_files` knows.

    Permissions: a new file gets the user's umask, as any program's ``open(path, "w")`` gives it
    (``0o666 & ~umask``: 0o644 under umask 022, 0o600 under 077), so tables and reports can be shared as the
    user's other files are; ``tempfile.mkstemp``'s 0o600 would make them unreadable to anyone else. The
    umask is not read: reading it means setting it (``os.umask``), which races with files other threads
    create meanwhile, and ``/proc/self/status`` is Linux only. Instead the temporary is created with mode
    0o666 and the kernel applies the umask (or the folder's default ACL) as it does for every file. When
    ``path`` already exists, the new file keeps its permission bits (as editors do: a table made
    group-readable, or private, stays so); set-user-ID, set-group-ID and sticky bits are not carried over,
    and the owner and group are the writer's (a rename makes a new file). Change a file's mode once with
    ``chmod``; rewrites keep it.

    Args:
        path: Destination file; its folder is created if needed.

    Yields:
        The temporary file, open for binary writing. Do not close it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def replace_file(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Rename the complete file ``src`` over ``dst`` (atomically), keeping ``dst``'s permission bits if it exists.

    For files another writer made (MNN's converter, ``torch.onnx.export``): created with ``open``, they already
    have the umask's mode; this keeps an existing ``dst``'s mode instead, as :func:`atomic_writer` does.
    """
    keep = _existing_mode(Path(dst))
    if keep is not None:
        os.chmod(src, keep)
    os.replace(src, dst)


def _existing_mode(path: Path) -> int | None:
    """The permission bits (no set-ID or sticky bits) of the file at ``path``, or ``None`` if there is none."""
    try:
        st = os.stat(path)
    except OSError:  # missing (or unreadable: then the new file gets the umask's mode)
        return None
    return stat.S_IMODE(st.st_mode) & 0o777 if stat.S_ISREG(st.st_mode) else None


def _create_temp(path: Path) -> tuple[int, str]:
    """Create ``.NAME.XXXXXXXX.tmp`` next to ``path`` (exclusively, not following links); return its fd and path.

    Its mode is ``0o666`` less the umask, or the existing ``path``'s mode (set before anything is written).
    """
    keep = _existing_mode(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"  # 8 of [0-9a-f]: the temporaries' pattern
        try:
            fd = os.open(tmp, flags, 0o600 if keep is not None else 0o666)
        except FileExistsError:
            continue
        break
    else:  # as tempfile.mkstemp: 100 names taken is something else going on
        raise FileExistsError(errno.EEXIST, f"no unused temporary name for {str(path)!r} after 100 tries")
    if keep is not None:
        try:
            os.chmod(tmp, keep)  # (os.fchmod is not on every platform); the file is still empty
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
    return fd, str(tmp)


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
