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

Two modules, re-exported here; :mod:`~mmt_nas.integrations.torch.losses` imports nothing of
:mod:`~mmt_nas.integrations.torch.expected`:

- :mod:`~mmt_nas.integrations.torch.expected`: :class:`ExpectedLatency`, and the candidates'
  latencies it is built from (:func:`resolve_candidates`, :func:`supernet_layers`).
- :mod:`~mmt_nas.integrations.torch.losses`: :class:`LatencyLoss` and the losses of
  ProxylessNAS (:func:`proxyless_add_linear`, :func:`proxyless_mul_log`), FBNet
  (:func:`fbnet_loss`) and a hinge above a budget (:func:`hinge_loss`).
"""

from __future__ import annotations

from mmt_nas.integrations.torch.expected import (
    CandidateLatencies,
    ExpectedLatency,
    LayerSpec,
    resolve_candidates,
    supernet_layers,
)
from mmt_nas.integrations.torch.losses import (
    LatencyLoss,
    LossForm,
    fbnet_loss,
    hinge_loss,
    proxyless_add_linear,
    proxyless_mul_log,
)

__all__ = [
    "CandidateLatencies",
    "resolve_candidates",
    "supernet_layers",
    "ExpectedLatency",
    "LayerSpec",
    "LatencyLoss",
    "LossForm",
    "proxyless_add_linear",
    "proxyless_mul_log",
    "fbnet_loss",
    "hinge_loss",
]
