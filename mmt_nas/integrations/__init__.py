"""Where mmt_nas meets a search loop.

- :mod:`mmt_nas.integrations.optuna`: a latency constraint for Optuna objectives, penalty
  forms for samplers without constraints, and a search log for the error report.
- :mod:`mmt_nas.integrations.torch`: the expected latency of a supernet as a differentiable
  function of its architecture logits, and the latency losses of ProxylessNAS and FBNet.
- :mod:`mmt_nas.integrations.keys`: op keys from op-space entries, so a candidate can be
  predicted without building its ``nn.Module``.

Nothing here is imported by the rest of the package; each submodule imports its optional
dependency when first used.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from mmt_nas.exceptions import MmtNasError

__all__ = ["MissingExtraError", "SearchError", "require"]


class MissingExtraError(MmtNasError, ImportError):
    """An optional dependency of an integration is not installed."""


class SearchError(MmtNasError, ValueError):
    """An integration was given an invalid value (a budget, a weight, a shape, ...)."""


def require(module: str, extra: str) -> ModuleType:
    """Import ``module``, or fail with a message naming the mmt_nas extra that installs it.

    Raises:
        MissingExtraError: ``module`` cannot be imported.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"this part of mmt_nas needs {module!r}, which is not installed ({exc}). "
            f"Install it with: pip install -c constraints.txt 'mmt-nas[{extra}]'"
        ) from exc
