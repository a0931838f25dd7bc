"""Progress of the long steps (generate, meter, report, sample): a bar with its rate and ETA on a terminal.

A bar is shown only when asked for, or, by default (``enabled=None``), when standard error is a terminal:
piped into a log or run by CI, the steps stay quiet. The bar is tqdm's (elapsed, rate and remaining time,
``export:  40%|████      | 12/30 [00:03<00:04,  4.1op/s]``), drawn on standard error and removed when the
step ends. Without tqdm the step runs without a bar: progress is a nicety, never a reason to fail.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

__all__ = ["Bar", "bar", "progress"]

_T = TypeVar("_T")


class Bar:
    """One step's progress: :meth:`update` after each unit of work; a no-op when not shown.

    While a bar is shown, log records that would go to the console are written above it (tqdm's
    ``logging_redirect_tqdm``), not into it.
    """

    def __init__(self, tqdm_bar: Any | None) -> None:
        self._bar = tqdm_bar
        self._logging: Any | None = None
        if tqdm_bar is not None:
            from tqdm.contrib.logging import logging_redirect_tqdm

            self._logging = logging_redirect_tqdm(tqdm_class=type(tqdm_bar))
            self._logging.__enter__()

    @property
    def shown(self) -> bool:
        """Whether a bar is drawn."""
        return self._bar is not None

    def update(self, n: int = 1) -> None:
        """Count ``n`` more units done."""
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        """Remove the bar from the terminal."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._logging is not None:
            self._logging.__exit__(None, None, None)
            self._logging = None

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def bar(total: int, desc: str, *, unit: str = "op", enabled: bool | None = None) -> Bar:
    """A progress bar of ``total`` units.

    Args:
        total: Units of work in the step.
        desc: The step's name, shown before the bar (``"meter"``).
        unit: What a unit is (``"op"``, ``"model"``, ``"run"``), for the rate.
        enabled: ``True`` to show it, ``False`` never, ``None`` (default) only when standard error is a terminal.
    """
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled or total <= 0:
        return Bar(None)
    try:
        from tqdm import tqdm
    except ImportError:  # a broken install: go on without a bar
        return Bar(None)
    # a terminal that reports no size (a bare pseudo-terminal) would get no bar at all: tqdm draws none past the
    # screen's last row, and none of zero width
    sized = _has_size()
    return Bar(
        tqdm(
            total=total,
            desc=desc,
            unit=unit,
            leave=False,
            file=sys.stderr,
            dynamic_ncols=sized,
            ncols=None if sized else 80,
            nrows=None if sized else 24,
        )
    )


def _has_size() -> bool:
    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return size.columns > 0 and size.lines > 0


def progress(
    items: Iterable[_T], total: int, desc: str, enabled: bool | None = None, *, unit: str = "op"
) -> Iterator[_T]:
    """Yield ``items``, counting each on a :func:`bar` of ``total`` units."""
    with bar(total, desc, unit=unit, enabled=enabled) as b:
        for item in items:
            yield item
            b.update()
