"""Differentiable latency: the expectation (gradcheck, one-hot = table sum, convergence to the fastest
candidates), candidates resolved from a real metered table and from a supernet, and the loss forms."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
from tinymods import TinyBlock
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from darts_latency import MixedOp  # noqa: E402  (the example's DARTS mixed op)

from mmt_nas.integrations import SearchError  # noqa: E402
from mmt_nas.integrations.torch import (  # noqa: E402
    ExpectedLatency,
    fbnet_loss,
    hinge_loss,
    proxyless_add_linear,
    proxyless_mul_log,
    resolve_candidates,
    supernet_layers,
)
from mmt_nas.predict.intervals import ONE_SD  # noqa: E402
from mmt_nas.predict.predictor import LatencyPredictor  # noqa: E402
from mmt_nas.vocab import op_key  # noqa: E402

LATS = [[1.0, 2.0, 3.0], [4.0, 0.5], [2.5, 2.0, 7.0]]  # ragged: layer 1 has two candidates


class Supernet(nn.Module):
    """stem conv (3->8), two mixed layers over the tiny table's 8-channel ops, pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.layers = nn.ModuleList(MixedOp([TinyBlock(8), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()]) for _ in range(2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.alpha = nn.Parameter(torch.zeros(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(self.alpha, -1)
        x = self.stem(x)
        for i, layer in enumerate(self.layers):
            x = layer(x, w[i])
        return self.pool(x)


@pytest.fixture(scope="module")
def predictor(tiny_ops: Path) -> LatencyPredictor:
    return LatencyPredictor(tiny_ops)


def test_expectation_is_the_probability_weighted_sum() -> None:
    e = ExpectedLatency(LATS, fixed_ms=0.25)
    alpha = torch.tensor([[0.0, 1.0, -1.0], [2.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    want = 0.25
    for row, lats in zip(alpha, LATS):
        p = torch.softmax(row[: len(lats)], 0)
        want += sum(float(pi) * lat for pi, lat in zip(p, lats))
    assert float(e(alpha)) == pytest.approx(want, rel=1e-6)
    p = e.probabilities(alpha)
    assert float(p[1, 2]) == 0.0 and torch.allclose(p.sum(-1), torch.ones(3))  # padded slot never chosen
    assert e.shape == (3, 3) and e.fastest() == [0, 1, 1]


@pytest.mark.parametrize("tau", [None, 0.7])
def test_gradcheck(tau: float | None) -> None:
    e = ExpectedLatency(LATS, fixed_ms=0.25)
    alpha = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)

    def f(a: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(1)  # the same Gumbel noise at every evaluation
        return e(a, tau=tau)

    assert torch.autograd.gradcheck(f, (alpha,))
    assert torch.autograd.gradcheck(lambda a: e.per_layer(a), (alpha,))


def test_one_hot_alpha_gives_the_plain_table_sum(predictor: LatencyPredictor) -> None:
    layers = supernet_layers(Supernet(), [1, 3, 16, 16], MixedOp)
    fixed = float(predictor.predict(nn.Conv2d(3, 8, 3, padding=1), [1, 3, 16, 16]))
    e = ExpectedLatency.from_candidates(predictor, layers, fixed)
    keys = [[op_key(type(c).__name__, repr(c), shape) for c in cands] for _, cands, shape in layers]
    stem = op_key("Conv2d", repr(nn.Conv2d(3, 8, 3, padding=1)), (1, 3, 16, 16))
    for choice in ([0, 0], [1, 2], [2, 1]):
        alpha = torch.full(e.shape, -math.inf, dtype=torch.float64)
        alpha[torch.arange(2), torch.tensor(choice)] = 0.0  # exactly one-hot after the softmax
        table_sum = float(predictor.predict_keys([stem] + [keys[layer][j] for layer, j in enumerate(choice)]))
        assert float(e(alpha)) == pytest.approx(table_sum, rel=1e-12)
        assert e.latency_of(choice) == pytest.approx(table_sum, rel=1e-12)
        hard = e(alpha.clamp(min=-50.0), tau=0.5, hard=True)  # a hard Gumbel sample of a near one-hot α
        assert float(hard) == pytest.approx(table_sum, rel=1e-9)


def test_latency_term_alone_converges_to_each_layers_fastest_candidate() -> None:
    e = ExpectedLatency(LATS, fixed_ms=1.0)
    alpha = torch.zeros(e.shape, requires_grad=True)
    opt = torch.optim.Adam([alpha], lr=0.1)
    zero = torch.tensor(0.0)
    for _ in range(300):
        opt.zero_grad()
        proxyless_add_linear(zero, e(alpha), target_ms=5.0, lam=1.0).loss.backward()
        opt.step()
    p = e.probabilities(alpha.detach())
    assert p.argmax(-1).tolist() == e.fastest() == [0, 1, 1]
    assert bool((p.max(-1).values > 0.95).all())
    assert float(e(alpha.detach())) == pytest.approx(e.latency_of(e.fastest()), rel=0.05)


def test_candidates_resolved_from_a_real_table(predictor: LatencyPredictor) -> None:
    net = Supernet()
    layers = supernet_layers(net, [1, 3, 16, 16], MixedOp)
    assert [(name, shape) for name, _, shape in layers] == [("layers.0", (1, 8, 16, 16)), ("layers.1", (1, 8, 16, 16))]
    assert layers[0][1] == list(net.layers[0].candidates)
    resolved = resolve_candidates(
        predictor, [*layers, ("skip-or-conv", [0.0, nn.Conv2d(8, 8, 3, padding=1)], [1, 8, 16, 16])]
    )
    conv = float(predictor.predict(nn.Conv2d(8, 8, 3, padding=1), [1, 8, 16, 16]))
    block = predictor.table.get(op_key("TinyBlock", "TinyBlock-8-3", (1, 8, 16, 16)))
    assert block is not None
    assert resolved.latencies_ms[0][1] == resolved.latencies_ms[1][1] == conv > 0
    assert resolved.latencies_ms[0][0] == float(predictor.predict(TinyBlock(8), [1, 8, 16, 16])) > 0
    assert resolved.latencies_ms[2] == (0.0, conv)
    with pytest.raises(SearchError, match="must be an nn.Module or a latency"):
        resolve_candidates(predictor, [("bad", ["conv"], [1, 8, 16, 16])])
    with pytest.raises(SearchError, match="no module of type"):
        supernet_layers(nn.Sequential(nn.ReLU()), [1, 8], MixedOp)


def test_buffers_move_with_the_module() -> None:
    e = ExpectedLatency(LATS)
    assert set(dict(e.named_buffers())) == {"latency_ms", "std_ms", "mask", "fixed_ms"}
    assert e.to(torch.float32)(torch.zeros(3, 3)).dtype == torch.float32
    e.to("meta")
    assert all(b.device.type == "meta" for b in (e.latency_ms, e.std_ms, e.mask, e.fixed_ms))
    assert e(torch.zeros(3, 3, device="meta")).device.type == "meta"


def test_invalid_inputs_are_refused() -> None:
    e = ExpectedLatency(LATS)
    with pytest.raises(SearchError, match=r"alpha must have shape \[layers, max_candidates\] = \[3, 3\]"):
        e(torch.zeros(3, 2))
    with pytest.raises(SearchError, match="tau"):
        e(torch.zeros(3, 3), hard=True)
    with pytest.raises(SearchError, match="at least one candidate"):
        ExpectedLatency([[1.0], []])
    with pytest.raises(SearchError, match="finite numbers >= 0"):
        ExpectedLatency([[1.0, -2.0]])
    with pytest.raises(SearchError, match="no candidate 2"):
        e.latency_of([0, 2, 0])


CE = torch.tensor(2.0)


@pytest.mark.parametrize(
    ("result", "total", "term"),
    [
        (proxyless_add_linear(CE, torch.tensor(12.0), 10.0, lam=0.2), 2.04, 0.04),  # 2 + 0.2 * (12 - 10) / 10
        (proxyless_add_linear(CE, torch.tensor(8.0), 10.0, lam=0.2), 1.96, -0.04),  # rewards speed below T
        (hinge_loss(CE, torch.tensor(12.0), 10.0, lam=1.0), 2.2, 0.2),
        (hinge_loss(CE, torch.tensor(8.0), 10.0, lam=1.0), 2.0, 0.0),  # no pressure within budget
        # (log 12 / log 10) ** 0.6 = 1.0791812 ** 0.6 = 1.0467829
        (proxyless_mul_log(CE, torch.tensor(12.0), 10.0), 2.0 * 1.0467829, 1.0467829),
        # the same in microseconds: 0.012 ms and 0.010 ms counted in 0.001 ms units
        (proxyless_mul_log(CE, torch.tensor(0.012), 0.010, unit_ms=0.001), 2.0 * 1.0467829, 1.0467829),
        # (log 12) ** 0.6 = 2.4849066 ** 0.6 = 1.7265774; 0.2 * 2 * that
        (fbnet_loss(CE, torch.tensor(12.0)), 0.4 * 1.7265774, 1.7265774),
    ],
)
def test_loss_forms_match_hand_computed_values(result: object, total: float, term: float) -> None:
    d = result.to_dict()  # type: ignore[attr-defined]
    assert d["loss"] == pytest.approx(total, rel=1e-6) and d["latency_term"] == pytest.approx(term, rel=1e-6, abs=1e-12)
    assert d["task_loss"] == 2.0


@pytest.mark.parametrize(
    "loss",
    [
        lambda e: proxyless_add_linear(CE, e, 10.0),
        lambda e: proxyless_mul_log(CE, e, 10.0),
        lambda e: fbnet_loss(CE, e),
        lambda e: hinge_loss(CE, e, 10.0),
    ],
)
def test_every_form_grows_with_latency_above_target(loss: object) -> None:
    expected = torch.tensor(12.0, requires_grad=True)
    loss(expected).loss.backward()  # type: ignore[operator]
    assert float(expected.grad) > 0


def test_log_forms_refuse_latencies_below_one_unit() -> None:
    with pytest.raises(SearchError, match="unit_ms=0.001 counts in microseconds"):
        proxyless_mul_log(CE, torch.tensor(0.5), 0.8)
    with pytest.raises(SearchError, match="above one unit"):
        fbnet_loss(CE, torch.tensor(0.9))
    with pytest.raises(SearchError, match="target_ms must be a finite number > 0"):
        proxyless_add_linear(CE, torch.tensor(1.0), 0.0)


def test_variance_is_the_law_of_total_variance_and_differentiable() -> None:
    """Var[LAT] over architectures drawn from p, each candidate with its own spread, plus a model-level spread
    common to the architecture: checked against a Monte-Carlo draw, then gradchecked; one-hot alpha leaves the
    candidates' own spreads only; upper() is E + z sqrt(Var)."""
    stds = [[0.1, 0.3, 0.05], [0.2, 0.0], [0.4, 0.1, 0.1]]
    e = ExpectedLatency(LATS, fixed_ms=0.25, std_ms=stds, model_sigma=0.1)
    alpha = torch.tensor([[0.0, 1.0, -1.0], [2.0, 0.0, 0.0], [0.5, 0.5, 0.0]], dtype=torch.float64)
    p = e.probabilities(alpha)
    gen = torch.Generator().manual_seed(0)
    n = 400_000
    total = torch.full((n,), 0.25, dtype=torch.float64)
    for layer, (lats, sd) in enumerate(zip(LATS, stds)):
        pick = torch.multinomial(p[layer, : len(lats)], n, replacement=True, generator=gen)
        mu, s = torch.tensor(lats, dtype=torch.float64)[pick], torch.tensor(sd, dtype=torch.float64)[pick]
        total += mu + s * torch.randn(n, generator=gen, dtype=torch.float64)
    mean = float(e(alpha))
    total = total * (1 + 0.1 * torch.randn(n, generator=gen, dtype=torch.float64))  # the common, model-level part
    # Monte-Carlo: the model-level part multiplies the draw, so its variance term is 0.1^2 E[LAT^2]; the closed
    # form uses (0.1 E[LAT])^2, smaller by 0.1^2 Var: within 1% here
    assert float(e.variance(alpha)) == pytest.approx(float(total.var()), rel=0.02)
    assert float(e(alpha)) == pytest.approx(float(total.mean()), rel=0.01)
    assert float(e.upper(alpha, z=1.5)) == pytest.approx(mean + 1.5 * math.sqrt(float(e.variance(alpha))))
    one_hot = torch.full(e.shape, -math.inf, dtype=torch.float64)
    one_hot[torch.arange(3), torch.tensor([1, 0, 2])] = 0.0
    lat = e.latency_of([1, 0, 2])
    want = 0.3**2 + 0.2**2 + 0.1**2 + (0.1 * lat) ** 2
    assert float(e.variance(one_hot)) == pytest.approx(want, rel=1e-9)
    a = alpha.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: e.variance(x), (a,))
    assert torch.autograd.gradcheck(lambda x: e.upper(x), (a,))
    with pytest.raises(SearchError, match="std_ms"):
        ExpectedLatency(LATS, std_ms=[[0.1], [0.2, 0.0], [0.4, 0.1, 0.1]])
    with pytest.raises(SearchError, match="model_sigma"):
        ExpectedLatency(LATS, model_sigma=-1.0)


def test_candidates_spreads_come_from_their_predictions(predictor: LatencyPredictor) -> None:
    layers = supernet_layers(Supernet(), [1, 3, 16, 16], MixedOp)
    e = ExpectedLatency.from_candidates(predictor, layers)
    resolved = resolve_candidates(predictor, layers)
    pred = predictor.predict(layers[0][1][0], layers[0][2])
    assert resolved.std_ms[0][0] == pytest.approx(float(pred) * pred.sigma) and resolved.std_ms[0][0] > 0
    assert e.model_sigma == pytest.approx(predictor.intervals.log_quantile(ONE_SD, 0.0)) and e.model_sigma > 0
    alpha = torch.zeros(e.shape, dtype=torch.float64)
    assert float(e.upper(alpha)) > float(e(alpha))
