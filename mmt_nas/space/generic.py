"""A generic op space: ops of the kinds CNNs and small transformers are built of, drawn from a broad grid.

For a table that is not written from any particular model (the *held-out* case: the models to predict
are not known when the device is metered), :func:`generic_space` draws ``budget`` ops, seeded, from a grid
of op kinds x channel counts x feature-map sizes x kernels x strides x groups, with a fixed share of the
budget per op kind. Nothing here is fitted to a zoo: the shares follow how many free dimensions a kind has
(a convolution's time depends on six, an activation's on two), the grid is the usual channel and size
ladders of image networks up to 224x224 inputs, and implausible ops (more than :data:`MAX_FLOPS`, or
feature maps larger than :data:`MAX_ELEMENTS` values) are left out. The fallback regression
(:class:`mmt_nas.predict.fallback.LatencyRegressor`) then estimates the ops a model has that the table lacks.

Standard library only: the result is an op-space document for :func:`mmt_nas.space.opspace.dump_space`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Any

from mmt_nas.exceptions import OpSpaceError
from mmt_nas.space.opspace import add_block

__all__ = ["generic_space", "GENERIC_SHARES", "CHANNELS", "SIZES", "MAX_FLOPS", "MAX_ELEMENTS", "MAX_BUDGET"]

#: Channel counts of the grid (the usual ladders of image networks).
CHANNELS: tuple[int, ...] = (8, 12, 16, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256, 320, 384, 512, 640, 768, 1024)
#: Feature-map sizes (height = width) of the grid: what 96..224 inputs give at strides 1 to 32.
SIZES: tuple[int, ...] = (3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112)
#: Token counts for the transformer-shaped ops (patch grids of 96..224 inputs).
TOKENS: tuple[int, ...] = (9, 16, 25, 36, 49, 64, 100, 144, 196)
#: Ops above this many FLOPs are left out (a 7x7 1024->1024 convolution at 112x112 is no network's layer).
MAX_FLOPS = 2_000_000_000
#: Feature maps above this many values are left out (64 channels at 112x112 is about the largest in use).
MAX_ELEMENTS = 1_000_000
#: The most ops :func:`generic_space` draws.
MAX_BUDGET = 20_000

#: Share of the budget per op kind, by how many free dimensions the kind's time depends on.
GENERIC_SHARES: dict[str, float] = {
    "conv": 0.30,
    "depthwise": 0.12,
    "grouped": 0.08,
    "linear": 0.06,
    "batchnorm": 0.05,
    "activation": 0.11,
    "pool": 0.05,
    "layernorm": 0.03,
    "add": 0.04,
    "mul": 0.04,
    "cat": 0.06,
    "layout": 0.03,
    "attention": 0.03,
}
ACTIVATIONS = ("ReLU", "ReLU6", "SiLU", "Hardswish", "Hardsigmoid", "Sigmoid", "GELU")

Op = tuple[str, str, dict[str, Any], list[int]]


def _conv(cin: int, cout: int, k: int, s: int, size: int, groups: int = 1) -> Op | None:
    out = (size + 2 * (k // 2) - k) // s + 1
    if out < 1 or cin * size * size > MAX_ELEMENTS or cout * out * out > MAX_ELEMENTS:
        return None
    if 2 * (cin // groups) * k * k * cout * out * out > MAX_FLOPS:
        return None
    args = {
        "in_channels": cin,
        "out_channels": cout,
        "kernel_size": k,
        "stride": s,
        "padding": k // 2,
        "groups": groups,
        "bias": False,
    }
    return ("torch.nn", "Conv2d", args, [1, cin, size, size])


def _maps() -> Iterator[tuple[int, int]]:
    for c in CHANNELS:
        for s in SIZES:
            if c * s * s <= MAX_ELEMENTS:
                yield c, s


def _fn(name: str, args: list[Any], shape: list[int], kwargs: dict[str, Any] | None = None) -> Op:
    doc: dict[str, Any] = {"fn": name, "args": args}
    if kwargs:
        doc["kwargs"] = kwargs
    return ("mmt_nas.space.ops", "Functional", doc, shape)


def _kind(kind: str) -> Iterator[Op | None]:
    x: dict[str, bool] = {"input": True}
    if kind == "conv":
        for cin in (3, *CHANNELS):
            for cout in CHANNELS:
                for k in (1, 3, 5, 7):
                    for s in (1, 2):
                        for size in SIZES:
                            if cin != 3 or (size >= 96 and k > 1):
                                yield _conv(cin, cout, k, s, size)
    elif kind == "depthwise":
        for c, size in _maps():
            for k in (3, 5, 7):
                for s in (1, 2):
                    yield _conv(c, c, k, s, size, groups=c)
    elif kind == "grouped":
        for c, size in _maps():
            for g in (2, 4, 8, 16, 32, 64):
                if c % g == 0 and c // g >= 4:
                    for k in (1, 3):
                        for s in (1, 2) if k == 3 else (1,):
                            yield _conv(c, c, k, s, size, groups=g)
    elif kind == "linear":
        for cin in (*CHANNELS, 1280, 1536, 2048, 3072):
            for cout in (*CHANNELS, 1000, 1536, 2048, 3072):
                yield ("torch.nn", "Linear", {"in_features": cin, "out_features": cout}, [1, cin])
                for t in TOKENS:
                    if t * max(cin, cout) <= MAX_ELEMENTS and 2 * t * cin * cout <= MAX_FLOPS:
                        yield ("torch.nn", "Linear", {"in_features": cin, "out_features": cout}, [1, t, cin])
    elif kind == "batchnorm":
        for c, size in _maps():
            yield ("torch.nn", "BatchNorm2d", {"num_features": c}, [1, c, size, size])
    elif kind == "activation":
        for name in ACTIVATIONS:
            for c, size in _maps():
                yield ("torch.nn", name, {}, [1, c, size, size])
            for c in CHANNELS:
                yield ("torch.nn", name, {}, [1, c, 1, 1])
    elif kind == "pool":
        for c, size in _maps():
            if size >= 4:
                yield ("torch.nn", "MaxPool2d", {"kernel_size": 3, "stride": 2, "padding": 1}, [1, c, size, size])
                yield ("torch.nn", "AvgPool2d", {"kernel_size": 2, "stride": 2}, [1, c, size, size])
            yield ("torch.nn", "AdaptiveAvgPool2d", {"output_size": 1}, [1, c, size, size])
    elif kind == "layernorm":
        for c, size in _maps():
            yield ("torch.nn", "LayerNorm", {"normalized_shape": [c], "eps": 1e-6}, [1, size, size, c])
        for c in CHANNELS:
            for t in TOKENS:
                yield ("torch.nn", "LayerNorm", {"normalized_shape": [c], "eps": 1e-6}, [1, t, c])
    elif kind in ("add", "mul"):
        for c, size in _maps():
            other = [1, c, size, size] if kind == "add" else [1, c, 1, 1]
            yield _fn(f"Tensor.{kind}", [x, {"tensor": other}], [1, c, size, size])
    elif kind == "cat":
        for c, size in _maps():
            for parts in (2, 3, 4):
                if c * parts * size * size <= MAX_ELEMENTS:
                    rest = [{"tensor": [1, c, size, size]} for _ in range(parts - 1)]
                    yield _fn("torch.cat", [[x, *rest], 1], [1, c, size, size])
    elif kind == "layout":
        for c, size in _maps():
            yield _fn("Tensor.permute", [x, 0, 2, 3, 1], [1, c, size, size])
            yield _fn("Tensor.permute", [x, 0, 3, 1, 2], [1, size, size, c])
        for c in CHANNELS:
            for t in TOKENS:
                yield _fn("Tensor.transpose", [x, 1, 2], [1, c, t])
    elif kind == "attention":
        for heads in (1, 2, 3, 4, 6, 8, 12):
            for d in (16, 32, 48, 64):
                for t in TOKENS:
                    if heads * t * max(t, d) <= MAX_ELEMENTS:
                        yield _fn("torch.matmul", [x, {"tensor": [1, heads, d, t]}], [1, heads, t, d])
                        yield _fn("Tensor.softmax", [x], [1, heads, t, t], {"dim": -1})
                        yield _fn("torch.matmul", [x, {"tensor": [1, heads, t, d]}], [1, heads, t, t])


def generic_space(budget: int = 2000, seed: int = 0, shares: dict[str, float] | None = None) -> dict[str, Any]:
    """Draw ``budget`` distinct ops from the generic grid, ``shares`` of them per op kind, seeded.

    Args:
        budget: How many ops (1 to :data:`MAX_BUDGET`); 2,000 meter in about 5 minutes on a 2-core VM.
        seed: The draw's seed: the same seed gives the same space.
        shares: Share of the budget per kind (keys of :data:`GENERIC_SHARES`); default :data:`GENERIC_SHARES`.

    Returns:
        An op-space document (list-of-blocks form) for :func:`mmt_nas.space.opspace.dump_space`.

    Raises:
        OpSpaceError: A budget out of range, or shares naming an unknown kind.
    """
    if isinstance(budget, bool) or not isinstance(budget, int) or not 1 <= budget <= MAX_BUDGET:
        raise OpSpaceError(f"the generic space's budget must be an integer from 1 to {MAX_BUDGET}, but got {budget!r}.")
    shares = dict(GENERIC_SHARES if shares is None else shares)
    unknown = sorted(set(shares) - set(GENERIC_SHARES))
    if unknown or not shares or any(not isinstance(v, (int, float)) or v < 0 for v in shares.values()):
        raise OpSpaceError(
            f"shares must map op kinds ({', '.join(GENERIC_SHARES)}) to non-negative numbers, but got {shares!r}."
        )
    total = sum(shares.values()) or 1.0
    rng = random.Random(seed)
    # Largest-remainder rounding, so the kinds' counts add up to the budget exactly.
    exact = {k: budget * v / total for k, v in shares.items()}
    counts = {k: math.floor(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: counts[k] - exact[k])[: budget - sum(counts.values())]:
        counts[k] += 1
    doc: dict[str, Any] = {}
    for kind, n in counts.items():
        pool = [op for op in _kind(kind) if op is not None]
        for module, cls, args, shape in rng.sample(pool, min(n, len(pool))):
            add_block(doc, module, cls, args, shape)
    return doc
