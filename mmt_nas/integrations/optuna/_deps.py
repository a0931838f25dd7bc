"""The optional dependencies of the Optuna integration, imported when first used.

Importing :mod:`mmt_nas.integrations.optuna` never imports Optuna: each function here imports its
module on call, through :func:`mmt_nas._imports.require`, so a missing one is a
:class:`~mmt_nas.exceptions.MissingExtraError` naming the ``optuna`` extra.
"""

from __future__ import annotations

from types import ModuleType

from mmt_nas._imports import require

__all__ = ["import_optuna", "import_sqlalchemy_exc"]

_WHAT = "the Optuna integration (mmt_nas.integrations.optuna)"


def import_optuna() -> ModuleType:
    """The ``optuna`` module.

    Raises:
        MissingExtraError: Optuna is not installed.
    """
    return require("optuna", "optuna", _WHAT)


def import_sqlalchemy_exc() -> ModuleType:
    """The ``sqlalchemy.exc`` module (SQLAlchemy is installed with Optuna).

    Raises:
        MissingExtraError: SQLAlchemy is not installed.
    """
    return require("sqlalchemy.exc", "optuna", _WHAT)
