"""Error metrics of latency predictions against measurements: absolute and relative errors, rank correlations.

Pure functions of numbers: standard library only, no I/O, no torch, so they run anywhere (a report, a
benchmark, a search's own bookkeeping).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["ranks", "pearson", "spearman_rho", "kendall_tau", "compute_metrics"]


def ranks(xs: Sequence[float]) -> list[float]:
    """Average ranks (1-based), ties sharing the mean of their positions.

    Args:
        xs: The values to rank.

    Returns:
        One rank per value, in the order of ``xs``; ``[10, 30, 20, 20]`` gives ``[1, 4, 2.5, 2.5]``.
    """
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    out = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Pearson's correlation coefficient of two equally long, non-empty sequences.

    Args:
        xs: First sample.
        ys: Second sample, as long as ``xs``.

    Returns:
        The correlation, or NaN when either sample has no spread.
    """
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else float("nan")


def spearman_rho(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Spearman's rank correlation (Pearson correlation of average ranks).

    Args:
        xs: First sample.
        ys: Second sample.

    Returns:
        The correlation; NaN if the lengths differ, there are fewer than two values, or a ranking is constant.
    """
    if len(xs) != len(ys) or len(xs) < 2:
        return float("nan")
    return pearson(ranks(xs), ranks(ys))


def kendall_tau(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Kendall's tau-b between two rankings (ties handled as in tau-b).

    Args:
        xs: First sample.
        ys: Second sample.

    Returns:
        Tau-b; NaN if the lengths differ, there are fewer than two values, or every pair is tied.
    """
    n = len(xs)
    if n != len(ys) or n < 2:
        return float("nan")
    concordant = discordant = ties_x = ties_y = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = xs[i] - xs[j], ys[i] - ys[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    denom = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return (concordant - discordant) / denom if denom > 0 else float("nan")


def compute_metrics(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, float]:
    """Error metrics of predictions against measurements (both in ms).

    Args:
        predicted: Predicted latencies.
        measured: Measured latencies, in the same order; each must be positive.

    Returns:
        ``n``, ``mae_ms``, ``rmse_ms``, ``mape_pct``, ``rmspe_pct``, ``within_5_pct`` and
        ``within_10_pct`` (share of models whose error is within ±5% / ±10%, in percent),
        ``kendall_tau``, ``spearman_rho``, and ``mean_signed_error_pct`` (bias). Only ``n`` when
        both are empty.

    Raises:
        ValueError: The sequences differ in length or a measurement is not positive.
    """
    if len(predicted) != len(measured):
        raise ValueError(f"predicted and measured must have the same length, got {len(predicted)} and {len(measured)}.")
    if any(m <= 0 for m in measured):
        raise ValueError("measured latencies must be > 0.")
    n = len(measured)
    if n == 0:
        return {"n": 0}
    err = [p - m for p, m in zip(predicted, measured)]
    rel = [e / m for e, m in zip(err, measured)]
    return {
        "n": n,
        "mae_ms": sum(abs(e) for e in err) / n,
        "rmse_ms": math.sqrt(sum(e * e for e in err) / n),
        "mape_pct": 100 * sum(abs(r) for r in rel) / n,
        "rmspe_pct": 100 * math.sqrt(sum(r * r for r in rel) / n),
        "within_5_pct": 100 * sum(abs(r) <= 0.05 for r in rel) / n,
        "within_10_pct": 100 * sum(abs(r) <= 0.10 for r in rel) / n,
        "mean_signed_error_pct": 100 * sum(rel) / n,
        "kendall_tau": kendall_tau(predicted, measured),
        "spearman_rho": spearman_rho(predicted, measured),
    }
