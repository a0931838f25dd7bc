"""Differentiable architecture search with a latency loss, at two strengths.

A tiny supernet on scikit-learn's digits (8x8, upscaled to 16x16): a stem, five searchable
layers and a head. Each searchable layer is a DARTS mixed op: the softmax-weighted sum of six
MobileNetV2 blocks (kernel 3/5/7 x expansion 3/6). The blocks were metered on this machine
(``nas_space.py``), so ``ExpectedLatency`` gives the supernet's expected latency as a
differentiable function of the architecture logits ``alpha``. The weights learn on training
batches; ``alpha`` learns on validation batches with ProxylessNAS's ``add#linear`` loss
``CE + λ·(E[LAT] − T)/T`` (first-order DARTS). A weak ``λ`` follows accuracy; a strong one picks
faster blocks. Each derived architecture is predicted and measured with MNN, side by side.

Run:  python examples/darts_latency.py [--quick] [--epochs 8] [--work-dir DIR]
(about two minutes on 2 cores; --quick: about 20 s)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))  # nas_space, also for the op space's imports

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from nas_space import SPACES, ConvBNAct, Head, MBBlock, Space, accuracy, build_table, digits, train  # noqa: E402
from torch import nn  # noqa: E402

from mmt_nas.build.measure import measure_latency  # noqa: E402
from mmt_nas.integrations.torch import ExpectedLatency, proxyless_add_linear, supernet_layers  # noqa: E402
from mmt_nas.predict.predictor import LatencyPredictor  # noqa: E402

SPACE = SPACES["digits"]
DEPTHS = (2, 2, 1)  # five searchable layers


class MixedOp(nn.Module):
    """DARTS' mixed op: the weighted sum of every candidate's output."""

    def __init__(self, candidates: list[nn.Module]) -> None:
        super().__init__()
        self.candidates = nn.ModuleList(candidates)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return sum(w * op(x) for w, op in zip(weights, self.candidates))  # type: ignore[return-value]


class Supernet(nn.Module):
    """Stem, one mixed op per block slot, head; ``alpha`` holds the architecture logits."""

    def __init__(self, space: Space, depths: tuple[int, ...]) -> None:
        super().__init__()
        self.choices = [(k, e) for k in space.kernels for e in space.expansions]
        positions = space.positions(depths)
        n = len(positions)
        stem, *_, head = space.describe({"depths": list(depths), "kernels": [3] * n, "expansions": [3] * n})
        self.stem, self.stem_shape = ConvBNAct(**stem[2]), list(stem[3])
        self.head, self.head_shape = Head(**head[2]), list(head[3])
        self.layers = nn.ModuleList(
            MixedOp([MBBlock(p.cin, p.cout, p.stride, e, k) for k, e in self.choices]) for p in positions
        )
        self.alpha = nn.Parameter(torch.zeros(n, len(self.choices)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.alpha, dim=-1)
        x = self.stem(x)
        for i, layer in enumerate(self.layers):
            x = layer(x, weights[i])
        return self.head(x)

    def derive(self) -> dict[str, list[int]]:
        """The architecture of the largest logits."""
        picks = [self.choices[j] for j in self.alpha.argmax(dim=-1).tolist()]
        return {"depths": list(DEPTHS), "kernels": [k for k, _ in picks], "expansions": [e for _, e in picks]}


def search(
    data: tuple[torch.Tensor, ...], expected: ExpectedLatency, target_ms: float, lam: float, epochs: int, seed: int
) -> tuple[Supernet, float]:
    """First-order DARTS: alternate a weight step (train batch) and an alpha step (validation batch)."""
    torch.manual_seed(seed)
    net = Supernet(SPACE, DEPTHS)
    weights = [p for n, p in net.named_parameters() if n != "alpha"]
    w_opt = torch.optim.Adam(weights, lr=3e-3)
    a_opt = torch.optim.Adam([net.alpha], lr=0.05)
    xt, yt, xv, yv = data
    for _ in range(epochs):
        net.train()
        for tr, va in zip(torch.randperm(len(yt)).split(64), torch.randperm(len(yv)).split(64)):
            w_opt.zero_grad()
            F.cross_entropy(net(xt[tr]), yt[tr]).backward()
            w_opt.step()
            a_opt.zero_grad()
            result = proxyless_add_linear(F.cross_entropy(net(xv[va]), yv[va]), expected(net.alpha), target_ms, lam=lam)
            result.loss.backward()
            a_opt.step()
    return net, accuracy(net, xv, yv)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short search, short measurements (smoke test)")
    ap.add_argument("--epochs", type=int, default=None, help="search epochs per strength (default 8; quick: 1)")
    ap.add_argument("--work-dir", type=Path, default=Path("darts_latency_work"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    epochs = args.epochs or (1 if args.quick else 8)
    t0 = time.perf_counter()

    ops = build_table(SPACE, args.work_dir / "table", times=10 if args.quick else 30)
    predictor = LatencyPredictor(ops)
    probe = Supernet(SPACE, DEPTHS)
    fixed = float(predictor.predict(probe.stem, probe.stem_shape)) + float(
        predictor.predict(probe.head, probe.head_shape)
    )
    expected = ExpectedLatency.from_candidates(predictor, supernet_layers(probe, SPACE.input_shape, MixedOp), fixed)
    fastest = expected.latency_of(expected.fastest())
    slowest = expected.latency_of(expected.latency_ms.masked_fill(~expected.mask, -1).argmax(dim=-1).tolist())
    target = (fastest + slowest) / 2
    print(
        f"latency table: {len(predictor.table)} blocks ({time.perf_counter() - t0:.0f} s). Architectures of the "
        f"supernet: {fastest:.4f} .. {slowest:.4f} ms predicted; target T = {target:.4f} ms"
    )

    data = digits(SPACE.resolution, seed=args.seed)
    rows = []
    for label, lam in (("weak", 0.05), ("strong", 5.0)):
        net, supernet_acc = search(data, expected, target, lam, epochs, args.seed)
        arch = net.derive()
        model = SPACE.build(arch)
        predicted = float(predictor.predict(model, SPACE.input_shape))
        measured = float(measure_latency(model, SPACE.input_shape, times=100 if args.quick else 300))
        acc = float("nan") if args.quick else train(model, data, 3, seed=args.seed)  # quick: not retrained
        with torch.no_grad():
            e_lat = float(expected(net.alpha))
        rows.append((label, lam, arch, e_lat, predicted, measured, supernet_acc, acc))
        print(f"\n{label} (λ={lam}): final logits\n{expected.describe(net.alpha.detach())}")

    print(
        f"\n{'strength':8} {'λ':>5}  {'kernels':16} {'expansions':16} {'E[LAT]':>8} {'predicted':>9} "
        f"{'measured':>9} {'supernet acc':>12} {'retrained acc':>13}"
    )
    for label, lam, arch, e_lat, pred, meas, sacc, acc in rows:
        print(
            f"{label:8} {lam:5g}  {str(arch['kernels']):16} {str(arch['expansions']):16} {e_lat:8.4f} "
            f"{pred:9.4f} {meas:9.4f} {sacc:12.3f} {acc:13.3f}"
        )
    print(
        "(latencies in ms; predicted = table sum of the derived architecture's blocks; measured = the whole "
        "network exported to MNN and timed)"
    )
    (_, _, _, _, p_weak, m_weak, _, _), (_, _, _, _, p_strong, m_strong, _, _) = rows
    faster = p_strong < p_weak
    print(
        f"\nstronger latency loss -> {'faster' if faster else 'NOT faster'} architecture: predicted "
        f"{p_strong:.4f} vs {p_weak:.4f} ms ({p_strong / p_weak - 1:+.0%}), measured {m_strong:.4f} vs "
        f"{m_weak:.4f} ms ({m_strong / m_weak - 1:+.0%})"
    )
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0 if faster else 1


if __name__ == "__main__":
    raise SystemExit(main())
