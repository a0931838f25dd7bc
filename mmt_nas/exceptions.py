"""Exceptions raised by mmt_nas.

Every error the package raises on purpose derives from :class:`MmtNasError`, and
each leaf also subclasses the matching built-in, so ``except ValueError`` keeps
working for callers who do not know this package.
"""

from __future__ import annotations

__all__ = [
    "MmtNasError",
    "OpSpaceError",
    "ExportError",
    "MeteringError",
    "TableError",
    "UnknownOpError",
    "LockedError",
    "MissingExtraError",
    "SearchError",
    "NotFittedError",
    "OptionError",
]


class MmtNasError(Exception):
    """Base class of every error raised by mmt_nas."""


class OpSpaceError(MmtNasError, ValueError):
    """The operator-space YAML (or a space built from a model) is invalid."""


class ExportError(MmtNasError, RuntimeError):
    """A module could not be exported to ONNX or converted to MNN."""


class MeteringError(MmtNasError, RuntimeError):
    """An MNN model could not be loaded or timed, or the ops folder is unusable."""


class TableError(MmtNasError, ValueError):
    """A latency table is missing, malformed, or measured under other settings."""


class UnknownOpError(MmtNasError, KeyError):
    """Ops of a model are not in the latency table and no fallback may estimate them.

    Attributes:
        missing: The keys of the ops that were not found.
    """

    def __init__(self, message: str, missing: list[str] | None = None) -> None:
        super().__init__(message)
        self.missing = list(missing or [])

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])


class LockedError(MmtNasError, RuntimeError):
    """Another process is writing the same output (e.g. metering into the same table).

    Attributes:
        path: The lock file.
        holder: What the lock file says about the process holding it (``""`` if unknown).
    """

    def __init__(self, message: str, path: str = "", holder: str = "") -> None:
        super().__init__(message)
        self.path = path
        self.holder = holder


class MissingExtraError(MmtNasError, ImportError):
    """An optional dependency is not installed; the message names the mmt_nas extra that installs it."""


class SearchError(MmtNasError, ValueError):
    """A search integration was given an invalid value (a budget, a weight, a shape, a storage URL, ...)."""


class NotFittedError(MmtNasError, ValueError, AttributeError):
    """An estimator was used before ``fit`` (as scikit-learn's ``NotFittedError``)."""


class OptionError(MmtNasError, ValueError):
    """A string option (``composition``, ``latency``, ``on_missing``, an estimator's kind, ...) or another
    constructor parameter is not one of its allowed values."""
