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

from mmt_nas._imports import require
from mmt_nas.exceptions import MissingExtraError, SearchError

__all__ = ["MissingExtraError", "SearchError", "require"]
