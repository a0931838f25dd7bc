"""One way to import optional dependencies, in Optuna's ``try_import`` style.

Heavy optional dependencies (scikit-learn, Optuna, matplotlib, plotly, optuna-dashboard) are imported where they are
first needed, inside a :func:`try_import` block; when the import fails, :meth:`_DeferredImport.check`
raises :class:`~mmt_nas.exceptions.MissingExtraError` naming the mmt_nas extra that installs them
(``pip install -c constraints.txt 'mmt-nas[EXTRA]'``)::

    with try_import("fallback", "the regression fallback") as imported:
        from sklearn.ensemble import RandomForestRegressor
    imported.check()

:func:`require` is the one-call form for a whole module.
"""

from __future__ import annotations

import importlib
from types import ModuleType, TracebackType
from typing import Literal

from mmt_nas.exceptions import MissingExtraError

__all__ = ["Extra", "install_hint", "try_import", "require"]

#: The extras of the ``mmt-nas`` distribution (see ``setup.cfg``); ``"base"`` is a required dependency
#: (MNN, numpy, PyYAML, tqdm), which a broken install can still lack.
Extra = Literal["base", "torch", "fallback", "optuna", "dashboard", "plots", "postgres", "all"]

_BASE_PACKAGES = {"MNN": "MNN", "_tools": "MNN", "numpy": "numpy", "yaml": "PyYAML"}


def install_hint(extra: Extra, module: str = "") -> str:
    """The install command for ``extra``, e.g. ``pip install -c constraints.txt 'mmt-nas[fallback]'`` (the
    constraints file pins torch to a CPU build: an unpinned torch pulls a multi-GB CUDA build)."""
    if extra == "base":
        package = _BASE_PACKAGES.get(module.split(".")[0], "mmt-nas")
        return f"pip install {package}"
    return f"pip install -c constraints.txt 'mmt-nas[{extra}]'"


def _message(what: str, extra: Extra, exc: BaseException) -> str:
    missing = getattr(exc, "name", None) or ""
    return f"{what} needs {missing or 'a package'} that is not installed ({exc}). Install it with: " + install_hint(
        extra, missing
    )


class _DeferredImport:
    """Context manager that keeps an import failure until :meth:`check` is called."""

    def __init__(self, extra: Extra, what: str) -> None:
        self._extra: Extra = extra
        self._what = what
        self._error: ImportError | None = None

    def __enter__(self) -> _DeferredImport:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if isinstance(exc, ImportError):
            self._error = exc
            return True
        return False

    def is_successful(self) -> bool:
        """Whether every import in the block succeeded."""
        return self._error is None

    def check(self) -> None:
        """Raise :class:`MissingExtraError` if an import in the block failed."""
        if self._error is not None:
            raise MissingExtraError(_message(self._what, self._extra, self._error)) from self._error


def try_import(extra: Extra, what: str) -> _DeferredImport:
    """Import optional dependencies in a ``with`` block and fail later, at :meth:`~_DeferredImport.check`.

    Args:
        extra: The mmt_nas extra that installs them, e.g. ``"fallback"``.
        what: The part of mmt_nas that needs them, for the message, e.g. ``"the regression fallback"``.
    """
    return _DeferredImport(extra, what)


def require(module: str, extra: Extra, what: str = "") -> ModuleType:
    """Import ``module``, or fail with a message naming the mmt_nas extra that installs it.

    Raises:
        MissingExtraError: ``module`` cannot be imported.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{what or 'this part of mmt_nas'} needs {module!r}, which is not installed ({exc}). Install it with: "
            + install_hint(extra, module)
        ) from exc
