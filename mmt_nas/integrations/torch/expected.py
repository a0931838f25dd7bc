"""The expected latency of a supernet, differentiable in its architecture logits.

A supernet has layers that each choose among candidate ops. With architecture logits
``alpha`` of shape ``[layers, candidates]`` the expected latency is

    E[LAT] = fixed + sum_l sum_j p_lj * LAT_lj,    p_l = softmax(alpha_l)  (or Gumbel-softmax)

where ``LAT_lj`` is candidate ``j`` of layer ``l`` predicted from the table at that layer's
input shape (:func:`resolve_candidates`; :func:`supernet_layers` finds a supernet's layers), and
``fixed`` is the latency of the ops every architecture shares. :class:`ExpectedLatency` computes
it as one masked tensor expression (no loop over candidates), on whatever device it is moved to.

With each candidate's standard deviation ``S_lj`` (its prediction's source spread, in ms) and the
predictor's model-level spread ``m`` (relative), :meth:`ExpectedLatency.variance` is

    Var[LAT] = sum_l (sum_j p_lj (S_lj^2 + LAT_lj^2) - (sum_j p_lj LAT_lj)^2) + (m E[LAT])^2

(the architecture drawn layer by layer from ``p``, each candidate's own uncertainty, and the
composition's error, common to the whole model), so a loss can penalize ``E + z sqrt(Var)``
(:meth:`ExpectedLatency.upper`) instead of the mean.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mmt_nas._imports import require
from mmt_nas.exceptions import SearchError

if TYPE_CHECKING:
    from mmt_nas.predict.predictor import LatencyPredictor

# This module is torch-only: fail here, naming the extra, rather than below.
require("torch", "torch", "the differentiable latency (mmt_nas.integrations.torch)")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from mmt_nas.predict.intervals import log_sd  # noqa: E402
from mmt_nas.space.trace import trace_calls  # noqa: E402 (imports torch: after the check above)

__all__ = ["LayerSpec", "CandidateLatencies", "resolve_candidates", "supernet_layers", "ExpectedLatency"]

#: One searchable layer: its name, its candidates (modules, or latencies in ms) and its input shape.
LayerSpec = tuple[str, Sequence["nn.Module | float"], Sequence[int]]


@dataclass(frozen=True)
class CandidateLatencies:
    """Each layer's candidates, resolved to latencies.

    Attributes:
        names: Layer names.
        latencies_ms: ``latencies_ms[l][j]``: candidate ``j`` of layer ``l``, in ms.
        input_shapes: Each layer's input shape.
        std_ms: ``std_ms[l][j]``: the source spread of candidate ``j`` of layer ``l`` (its prediction's
            ``sigma`` times its latency; 0 for a number given in ms).
    """

    names: tuple[str, ...]
    latencies_ms: tuple[tuple[float, ...], ...]
    input_shapes: tuple[tuple[int, ...], ...]
    std_ms: tuple[tuple[float, ...], ...] = ()


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
    names, lats, shapes, stds = [], [], [], []
    for name, candidates, shape in layers:
        row, std = [], []
        for j, c in enumerate(candidates):
            if isinstance(c, nn.Module):
                pred = predictor.predict_cached(c, shape)
                row.append(float(pred))
                std.append(float(pred) * pred.sigma)
            elif isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c) and c >= 0:
                row.append(float(c))
                std.append(0.0)
            else:
                raise SearchError(
                    f"candidate {j} of layer {name!r} must be an nn.Module or a latency in ms (>= 0), but got {c!r}."
                )
        if not row:
            raise SearchError(f"layer {name!r} has no candidate; give every layer at least one.")
        names.append(str(name))
        lats.append(tuple(row))
        stds.append(tuple(std))
        shapes.append(tuple(int(d) for d in shape))
    if not names:
        raise SearchError("no layers were given; pass (name, candidates, input_shape) for each searchable layer.")
    return CandidateLatencies(tuple(names), tuple(lats), tuple(shapes), tuple(stds))


def supernet_layers(
    model: nn.Module,
    input_shape: Sequence[int],
    mixed: type | tuple[type, ...],
    candidates: str = "candidates",
) -> list[LayerSpec]:
    """Find a supernet's mixed ops and their candidates, with each one's input shape.

    The model is run once on meta tensors (see :func:`mmt_nas.space.trace.trace_calls`) to learn
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
        std_ms: Optional, per layer, its candidates' standard deviations in ms (same lengths as
            ``latencies_ms``; default 0): for :meth:`variance`.
        model_sigma: The model-level relative spread (log units, e.g. the predictor's interval model's;
            :meth:`from_candidates` reads it), common to the whole architecture.
    """

    latency_ms: torch.Tensor
    std_ms: torch.Tensor
    mask: torch.Tensor
    fixed_ms: torch.Tensor

    def __init__(
        self,
        latencies_ms: Sequence[Sequence[float]],
        fixed_ms: float = 0.0,
        names: Sequence[str] | None = None,
        std_ms: Sequence[Sequence[float]] | None = None,
        model_sigma: float = 0.0,
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
        std = torch.zeros(len(rows), width, dtype=torch.float64)
        if std_ms is not None:
            srows = [list(map(float, r)) for r in std_ms]
            if [len(r) for r in srows] != [len(r) for r in rows] or any(
                not math.isfinite(x) or x < 0 for r in srows for x in r
            ):
                raise SearchError(
                    f"std_ms must give one finite number >= 0 (ms) per candidate, shaped like latencies_ms "
                    f"({[len(r) for r in rows]} per layer), but got {std_ms!r}."
                )
            for i, r in enumerate(srows):
                std[i, : len(r)] = torch.tensor(r, dtype=torch.float64)
        if isinstance(model_sigma, bool) or not isinstance(model_sigma, (int, float)) or not model_sigma >= 0:
            raise SearchError(f"model_sigma must be a number >= 0 (log units), but got model_sigma={model_sigma!r}.")
        self.model_sigma = float(model_sigma)
        self.register_buffer("latency_ms", lat)
        self.register_buffer("std_ms", std)
        self.register_buffer("mask", mask)
        self.register_buffer("fixed_ms", torch.tensor(float(fixed_ms), dtype=torch.float64))
        self.names = tuple(names) if names is not None else tuple(f"layer{i}" for i in range(len(rows)))
        if len(self.names) != len(rows):
            raise SearchError(f"names has {len(self.names)} entries but there are {len(rows)} layers.")

    @classmethod
    def from_candidates(
        cls, predictor: LatencyPredictor, layers: Iterable[LayerSpec], fixed_ms: float = 0.0
    ) -> ExpectedLatency:
        """Resolve each layer's candidates with ``predictor`` (see :func:`resolve_candidates`).

        Args:
            predictor: The predictor (its table, and fallback if any).
            layers: ``(layer name, candidates, input shape)`` per layer.
            fixed_ms: Latency of the ops outside the searchable layers.
        """
        resolved = resolve_candidates(predictor, layers)
        model_sigma = max(log_sd(predictor.intervals), 0.0)
        return cls(resolved.latencies_ms, fixed_ms, resolved.names, resolved.std_ms, model_sigma)

    @property
    def shape(self) -> tuple[int, int]:
        """``(layers, max_candidates)``: the shape ``alpha`` must have."""
        return (int(self.mask.shape[0]), int(self.mask.shape[1]))

    def extra_repr(self) -> str:
        """The module's size and fixed latency, for ``repr()``."""
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

    def _moments(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lat, std = self.latency_ms.to(p.dtype), self.std_ms.to(p.dtype)
        mean_l = (p * lat).sum(dim=-1)
        within = ((p * (std**2 + lat**2)).sum(dim=-1) - mean_l**2).clamp_min(0).sum()
        mean = self.fixed_ms.to(p.dtype) + mean_l.sum()
        return mean, within + (self.model_sigma * mean) ** 2

    def variance(self, alpha: torch.Tensor, tau: float | None = None, hard: bool = False) -> torch.Tensor:
        """``Var[LAT]`` in ms² (see the module docstring), a scalar differentiable in ``alpha``."""
        return self._moments(self.probabilities(alpha, tau, hard))[1]

    def upper(
        self, alpha: torch.Tensor, z: float = 1.2816, tau: float | None = None, hard: bool = False
    ) -> torch.Tensor:
        """``E[LAT] + z sqrt(Var[LAT])`` in ms (default ``z``: the normal 90% one-sided quantile), for a loss
        that keeps an upper quantile of the latency under budget rather than its mean. One draw of ``p``
        (with ``tau``) serves both moments."""
        if isinstance(z, bool) or not isinstance(z, (int, float)) or not math.isfinite(z):
            raise SearchError(f"z must be a finite number (standard deviations), but got z={z!r}.")
        mean, var = self._moments(self.probabilities(alpha, tau, hard))
        return mean + z * var.clamp_min(1e-24).sqrt()

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
            ms = float(self.latency_ms[i, pick[i]])
            lines.append(f"{name[:24]:24} {pick[i]:4d} {float(p[i, pick[i]]):6.3f} {ms:9.4f}  {cands}")
        return "\n".join(lines)
