"""Latency-aware losses for gradient-based search: ProxylessNAS, FBNet, and a hinge above a budget.

Each takes the task loss and the expected latency (a tensor, e.g. from
:class:`~mmt_nas.integrations.torch.ExpectedLatency`) and returns a :class:`LatencyLoss`: the
total to backpropagate, and its parts for logging.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from mmt_nas._imports import require
from mmt_nas.exceptions import SearchError

# This module is torch-only: fail here, naming the extra, rather than below.
require("torch", "torch", "the latency losses (mmt_nas.integrations.torch)")

import torch  # noqa: E402

__all__ = [
    "LatencyLoss",
    "LossForm",
    "proxyless_add_linear",
    "proxyless_mul_log",
    "fbnet_loss",
    "hinge_loss",
]

#: Which latency loss a :class:`LatencyLoss` is.
LossForm = Literal["add#linear", "mul#log", "fbnet", "hinge"]


@dataclass(frozen=True)
class LatencyLoss:
    """A latency-aware loss and its parts, for backpropagation and logging.

    Attributes:
        loss: The total, to call ``.backward()`` on.
        task_loss: The task loss it was built from (e.g. cross-entropy).
        expected_ms: The expected latency it was built from.
        latency_term: The latency's part: the added term (additive forms) or the factor that
            multiplies the task loss (multiplicative forms).
        form: Which loss: ``"add#linear"``, ``"mul#log"``, ``"fbnet"`` or ``"hinge"``.
    """

    loss: torch.Tensor
    task_loss: torch.Tensor
    expected_ms: torch.Tensor
    latency_term: torch.Tensor
    form: LossForm

    def to_dict(self) -> dict[str, Any]:
        """Plain floats for a logger."""
        return {
            "form": self.form,
            "loss": float(self.loss.detach()),
            "task_loss": float(self.task_loss.detach()),
            "expected_ms": float(self.expected_ms.detach()),
            "latency_term": float(self.latency_term.detach()),
        }


def _param(name: str, value: float, *, positive: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):
        raise SearchError(f"{name} must be a finite number {'>' if positive else '>='} 0, but got {name}={value!r}.")
    return float(value)


def _above_unit(name: str, value: torch.Tensor | float, unit_ms: float) -> None:
    v = float(value.detach().min()) if isinstance(value, torch.Tensor) else float(value)
    if not v > unit_ms:
        raise SearchError(
            f"the log forms need latencies above one unit (log > 0), but {name}={v:.6g} ms with unit_ms={unit_ms:g}. "
            f"Pass a smaller unit_ms (e.g. unit_ms=0.001 counts in microseconds)."
        )


def proxyless_add_linear(
    task_loss: torch.Tensor, expected_ms: torch.Tensor, target_ms: float, *, lam: float = 0.2
) -> LatencyLoss:
    """ProxylessNAS ``add#linear``: ``task_loss + λ·(E[LAT] − T)/T``.

    Cai, Zhu & Han, *ProxylessNAS: Direct Neural Architecture Search on Target Task and
    Hardware* (ICLR 2019), §3.3.1, as in the authors' search code (``lambda`` defaults to 0.2).
    The term is negative below the target, so it keeps rewarding speed.

    Args:
        task_loss: The task loss (e.g. cross-entropy).
        expected_ms: The expected latency (from :class:`ExpectedLatency`).
        target_ms: The target latency ``T`` (> 0).
        lam: The weight ``λ`` (>= 0).

    Raises:
        SearchError: ``target_ms`` or ``lam`` is out of range.
    """
    target = _param("target_ms", target_ms, positive=True)
    term = _param("lam", lam) * (expected_ms - target) / target
    return LatencyLoss(task_loss + term, task_loss, expected_ms, term, "add#linear")


def proxyless_mul_log(
    task_loss: torch.Tensor,
    expected_ms: torch.Tensor,
    target_ms: float,
    *,
    alpha: float = 1.0,
    beta: float = 0.6,
    unit_ms: float = 1.0,
) -> LatencyLoss:
    """ProxylessNAS ``mul#log``: ``α·task_loss·(log E[LAT] / log T)^β``.

    From the ProxylessNAS search code (defaults ``alpha=1``, ``beta=0.6``). The logarithms are
    taken of latencies counted in ``unit_ms`` and must be positive: both ``E[LAT]`` and ``T``
    must exceed one unit (the paper's mobile latencies are tens of ms; for sub-millisecond
    models pass ``unit_ms=0.001``). Raises :class:`~mmt_nas.exceptions.SearchError` otherwise
    (this reads the expected latency's value, a device sync on a GPU).

    Args:
        task_loss: The task loss (e.g. cross-entropy).
        expected_ms: The expected latency (from :class:`ExpectedLatency`).
        target_ms: The target latency ``T`` (> 0).
        alpha: The factor ``α`` (>= 0).
        beta: The exponent ``β`` (>= 0).
        unit_ms: The unit latencies are counted in for the logarithms (> 0).
    """
    unit = _param("unit_ms", unit_ms, positive=True)
    target = _param("target_ms", target_ms, positive=True)
    _above_unit("target_ms", target, unit)
    _above_unit("E[LAT]", expected_ms, unit)
    factor = (torch.log(expected_ms / unit) / math.log(target / unit)) ** _param("beta", beta)
    return LatencyLoss(_param("alpha", alpha) * task_loss * factor, task_loss, expected_ms, factor, "mul#log")


def fbnet_loss(
    task_loss: torch.Tensor, expected_ms: torch.Tensor, *, alpha: float = 0.2, beta: float = 0.6, unit_ms: float = 1.0
) -> LatencyLoss:
    """FBNet: ``α·task_loss·(log E[LAT])^β``.

    Wu et al., *FBNet: Hardware-Aware Efficient ConvNet Design via Differentiable Neural
    Architecture Search* (CVPR 2019), §3.2, written there ``CE(a, w_a)·α·log(LAT(a))^β``
    with ``α = 0.2, β = 0.6`` and latencies in ms. We read the exponent as applying to the
    logarithm, ``(log LAT)^β``; some reimplementations read ``log(LAT^β) = β·log LAT``, which
    makes ``β`` a second constant factor. ``E[LAT]/unit_ms`` must exceed 1 (see
    :func:`proxyless_mul_log`).

    Args:
        task_loss: The task loss (e.g. cross-entropy).
        expected_ms: The expected latency (from :class:`ExpectedLatency`).
        alpha: The factor ``α`` (>= 0).
        beta: The exponent ``β`` (>= 0).
        unit_ms: The unit latencies are counted in for the logarithm (> 0).

    Raises:
        SearchError: An argument is out of range, or ``E[LAT]`` is not above one unit.
    """
    unit = _param("unit_ms", unit_ms, positive=True)
    _above_unit("E[LAT]", expected_ms, unit)
    factor = torch.log(expected_ms / unit) ** _param("beta", beta)
    return LatencyLoss(_param("alpha", alpha) * task_loss * factor, task_loss, expected_ms, factor, "fbnet")


def hinge_loss(
    task_loss: torch.Tensor, expected_ms: torch.Tensor, target_ms: float, *, lam: float = 1.0
) -> LatencyLoss:
    """Hinge above a budget: ``task_loss + λ·max(0, E[LAT]/T − 1)``.

    No pressure within budget, linear pressure above it; the differentiable counterpart of
    :func:`mmt_nas.integrations.optuna.hinge_penalty`.

    Args:
        task_loss: The task loss (e.g. cross-entropy).
        expected_ms: The expected latency (from :class:`ExpectedLatency`).
        target_ms: The budget ``T`` (> 0).
        lam: The weight ``λ`` (>= 0), per 100% of excess.

    Raises:
        SearchError: ``target_ms`` or ``lam`` is out of range.
    """
    target = _param("target_ms", target_ms, positive=True)
    term = _param("lam", lam) * torch.clamp(expected_ms / target - 1.0, min=0.0)
    return LatencyLoss(task_loss + term, task_loss, expected_ms, term, "hinge")
