"""Differentiable latency for gradient-based search (DARTS, ProxylessNAS, FBNet).

A supernet has layers that each choose among candidate ops. With architecture logits
``alpha`` of shape ``[layers, candidates]`` the expected latency is

    E[LAT] = fixed + sum_l sum_j p_lj * LAT_lj,    p_l = softmax(alpha_l)  (or Gumbel-softmax)

where ``LAT_lj`` is candidate ``j`` of layer ``l`` predicted from the table at that layer's
input shape, and ``fixed`` is the latency of the ops every architecture shares.
:class:`ExpectedLatency` computes it as one masked tensor expression (no loop over
candidates), differentiable in ``alpha``, on whatever device it is moved to::

    layers = supernet_layers(supernet, [1, 3, 32, 32], MixedOp)       # or your own lists
    expected = ExpectedLatency.from_candidates(predictor, layers, fixed_ms=2.0)
    ...
    result = proxyless_add_linear(ce, expected(alpha), target_ms=5.0, lam=0.2)
    result.loss.backward(); log(result.to_dict())

Candidates are resolved once each: by ``predictor.predict_cached``, keyed like table keys
(class, ``repr()``, input shape).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mmt_nas.integrations import SearchError, require

if TYPE_CHECKING:
    from mmt_nas.predictor import LatencyPredictor

require("torch", "torch")  # this module is torch-only: fail here, naming the extra, rather than below

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

__all__ = [
    "CandidateLatencies",
    "resolve_candidates",
    "supernet_layers",
    "ExpectedLatency",
    "LatencyLoss",
    "proxyless_add_linear",
    "proxyless_mul_log",
    "fbnet_loss",
    "hinge_loss",
]

LayerSpec = tuple[str, Sequence["nn.Module | float"], Sequence[int]]


@dataclass(frozen=True)
class CandidateLatencies:
    """Each layer's candidates, resolved to latencies.

    Attributes:
        names: Layer names.
        latencies_ms: ``latencies_ms[l][j]``: candidate ``j`` of layer ``l``, in ms.
        input_shapes: Each layer's input shape.
    """

    names: tuple[str, ...]
    latencies_ms: tuple[tuple[float, ...], ...]
    input_shapes: tuple[tuple[int, ...], ...]


def resolve_candidates(predictor: LatencyPredictor, layers: Iterable[LayerSpec]) -> CandidateLatencies:
    """Predict every candidate of every layer, each distinct one once.

    Args:
        predictor: The predictor (its table, and fallback if any).
        layers: ``(layer name, candidates, input shape)`` per layer. A candidate is an
            ``nn.Module`` (predicted as a model on the layer's input shape) or a number of
            milliseconds (e.g. ``0.0`` for a skip connection MNN does not run).

    Raises:
        SearchError: A layer has no candidate, or a candidate is neither a module nor a number.
        UnknownOpError: A candidate runs ops the table lacks and the predictor has no fallback.
    """
    names, lats, shapes = [], [], []
    for name, candidates, shape in layers:
        row = []
        for j, c in enumerate(candidates):
            if isinstance(c, nn.Module):
                row.append(float(predictor.predict_cached(c, shape)))
            elif isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c) and c >= 0:
                row.append(float(c))
            else:
                raise SearchError(
                    f"candidate {j} of layer {name!r} must be an nn.Module or a latency in ms (>= 0), but got {c!r}."
                )
        if not row:
            raise SearchError(f"layer {name!r} has no candidate; give every layer at least one.")
        names.append(str(name))
        lats.append(tuple(row))
        shapes.append(tuple(int(d) for d in shape))
    if not names:
        raise SearchError("no layers were given; pass (name, candidates, input_shape) for each searchable layer.")
    return CandidateLatencies(tuple(names), tuple(lats), tuple(shapes))


def supernet_layers(
    model: nn.Module,
    input_shape: Sequence[int],
    mixed: type | tuple[type, ...],
    candidates: str = "candidates",
) -> list[LayerSpec]:
    """Find a supernet's mixed ops and their candidates, with each one's input shape.

    The model is run once on meta tensors (see :func:`mmt_nas.parser.trace_calls`) to learn
    the shapes; a mixed op called several times takes its first call's shape.

    Args:
        model: The supernet.
        input_shape: Its input shape.
        mixed: The mixed-op class(es).
        candidates: The attribute of a mixed op holding its candidate modules (an ``nn.ModuleList``
            or any sequence of modules), in the order of its logits.

    Returns:
        ``(module name, candidates, input shape)`` per mixed op, in execution order; pass it
        to :meth:`ExpectedLatency.from_candidates`.

    Raises:
        SearchError: The model has no such module, or one lacks the ``candidates`` attribute.
    """
    from mmt_nas.trace import trace_calls

    out: list[LayerSpec] = []
    seen: set[int] = set()
    for call in trace_calls(model, input_shape):
        m = call.module
        if not isinstance(m, mixed) or id(m) in seen:
            continue
        seen.add(id(m))
        cands = getattr(m, candidates, None)
        if cands is None or call.input_shape is None:
            raise SearchError(
                f"mixed op {call.name!r} ({type(m).__name__}) has no attribute {candidates!r} holding its candidates "
                "(or was called without a tensor); pass candidates='<attribute name>'."
            )
        out.append((call.name, list(cands), call.input_shape))
    if not out:
        raise SearchError(
            f"the model runs no module of type {mixed!r} on input_shape={list(input_shape)}; pass the mixed-op class."
        )
    return out


class ExpectedLatency(nn.Module):
    """The expected latency of a supernet as a function of its architecture logits.

    Latencies are stored as a zero-padded ``[layers, max_candidates]`` buffer with a boolean
    mask of the real candidates, so the module moves with ``.to(device)`` and the forward
    pass is one masked softmax and one weighted sum.

    Args:
        latencies_ms: Per layer, its candidates' latencies (rows may differ in length).
        fixed_ms: Latency of the ops outside the searchable layers.
        names: Optional layer names (for messages and :meth:`describe`).
    """

    latency_ms: torch.Tensor
    mask: torch.Tensor
    fixed_ms: torch.Tensor

    def __init__(
        self,
        latencies_ms: Sequence[Sequence[float]],
        fixed_ms: float = 0.0,
        names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        rows = [list(map(float, r)) for r in latencies_ms]
        if not rows or any(not r for r in rows):
            raise SearchError(f"every layer needs at least one candidate latency, but got {latencies_ms!r}.")
        flat = [x for r in rows for x in r] + [float(fixed_ms)]
        if any(not math.isfinite(x) or x < 0 for x in flat):
            raise SearchError(f"latencies and fixed_ms must be finite numbers >= 0 (ms), but got {flat}.")
        width = max(len(r) for r in rows)
        lat = torch.zeros(len(rows), width, dtype=torch.float64)
        mask = torch.zeros(len(rows), width, dtype=torch.bool)
        for i, r in enumerate(rows):
            lat[i, : len(r)] = torch.tensor(r, dtype=torch.float64)
            mask[i, : len(r)] = True
        self.register_buffer("latency_ms", lat)
        self.register_buffer("mask", mask)
        self.register_buffer("fixed_ms", torch.tensor(float(fixed_ms), dtype=torch.float64))
        self.names = tuple(names) if names is not None else tuple(f"layer{i}" for i in range(len(rows)))
        if len(self.names) != len(rows):
            raise SearchError(f"names has {len(self.names)} entries but there are {len(rows)} layers.")

    @classmethod
    def from_candidates(
        cls, predictor: LatencyPredictor, layers: Iterable[LayerSpec], fixed_ms: float = 0.0
    ) -> ExpectedLatency:
        """Resolve each layer's candidates with ``predictor`` (see :func:`resolve_candidates`)."""
        resolved = resolve_candidates(predictor, layers)
        return cls(resolved.latencies_ms, fixed_ms, resolved.names)

    @property
    def shape(self) -> tuple[int, int]:
        """``(layers, max_candidates)``: the shape ``alpha`` must have."""
        return (int(self.mask.shape[0]), int(self.mask.shape[1]))

    def extra_repr(self) -> str:
        return f"layers={self.shape[0]}, max_candidates={self.shape[1]}, fixed_ms={float(self.fixed_ms):.4g}"

    def probabilities(self, alpha: torch.Tensor, tau: float | None = None, hard: bool = False) -> torch.Tensor:
        """The candidate probabilities ``p`` (zero at padded slots).

        Args:
            alpha: Logits, ``[layers, max_candidates]``; padded slots are ignored.
            tau: ``None`` for a softmax; a temperature > 0 for a Gumbel-softmax sample.
            hard: With ``tau``, one-hot samples with straight-through gradients.
        """
        if tuple(alpha.shape) != self.shape:
            raise SearchError(
                f"alpha must have shape [layers, max_candidates] = {list(self.shape)}, but got {list(alpha.shape)}."
            )
        logits = alpha.masked_fill(~self.mask, float("-inf"))
        if tau is None:
            if hard:
                raise SearchError("hard=True samples a Gumbel-softmax; give a temperature tau > 0 too.")
            return torch.softmax(logits, dim=-1)
        if not tau > 0:
            raise SearchError(f"tau must be > 0, but got tau={tau!r}.")
        return F.gumbel_softmax(logits, tau=tau, hard=hard, dim=-1)

    def per_layer(self, alpha: torch.Tensor, tau: float | None = None, hard: bool = False) -> torch.Tensor:
        """Each layer's expected latency, ``[layers]``, in ms."""
        p = self.probabilities(alpha, tau, hard)
        return (p * self.latency_ms.to(p.dtype)).sum(dim=-1)

    def forward(self, alpha: torch.Tensor, tau: float | None = None, hard: bool = False) -> torch.Tensor:
        """``E[LAT] = fixed + Σ_l Σ_j p_lj · LAT_lj`` in ms, a scalar differentiable in ``alpha``."""
        per_layer = self.per_layer(alpha, tau, hard)
        return self.fixed_ms.to(per_layer.dtype) + per_layer.sum()

    def latency_of(self, choices: Sequence[int]) -> float:
        """The table sum of one discrete architecture: ``fixed + Σ_l LAT[l, choices[l]]``."""
        if len(choices) != self.shape[0]:
            raise SearchError(f"choices must name one candidate per layer ({self.shape[0]}), but got {list(choices)}.")
        total = float(self.fixed_ms)
        for layer, j in enumerate(choices):
            if not (0 <= int(j) < self.shape[1] and bool(self.mask[layer, int(j)])):
                raise SearchError(f"layer {self.names[layer]!r} has no candidate {j}.")
            total += float(self.latency_ms[layer, int(j)])
        return total

    def fastest(self) -> list[int]:
        """The fastest candidate of each layer."""
        return self.latency_ms.masked_fill(~self.mask, math.inf).argmin(dim=-1).tolist()

    def describe(self, alpha: torch.Tensor) -> str:
        """A text table: per layer, the chosen candidate (argmax), its probability and latencies."""
        with torch.no_grad():
            p = self.probabilities(alpha)
            pick = p.argmax(dim=-1).tolist()
        lines = [f"{'layer':24} {'pick':>4} {'p':>6} {'ms':>9}  candidates ms"]
        for i, name in enumerate(self.names):
            cands = " ".join(f"{float(x):.4f}" for x, m in zip(self.latency_ms[i], self.mask[i]) if m)
            lines.append(
                f"{name[:24]:24} {pick[i]:4d} {float(p[i, pick[i]]):6.3f} {float(self.latency_ms[i, pick[i]]):9.4f}  {cands}"
            )
        return "\n".join(lines)


# -- latency losses ------------------------------------------------------------------------------


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
    form: str

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
    models pass ``unit_ms=0.001``). Raises :class:`~mmt_nas.integrations.SearchError` otherwise
    (this reads the expected latency's value, a device sync on a GPU).
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
    """
    target = _param("target_ms", target_ms, positive=True)
    term = _param("lam", lam) * torch.clamp(expected_ms / target - 1.0, min=0.0)
    return LatencyLoss(task_loss + term, task_loss, expected_ms, term, "hinge")
