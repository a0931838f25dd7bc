"""Error metrics of latency predictions against measurements: absolute and relative errors, rank correlations.

Pure functions of numbers: standard library only, no I/O, no torch, so they run anywhere (a report, a
benchmark, a search's own bookkeeping).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ranks",
    "pearson",
    "spearman_rho",
    "kendall_tau",
    "compute_metrics",
    "BeyondNoise",
    "error_beyond_noise",
    "beyond_noise_of",
    "median_variance",
    "noise_variance",
    "log_sd",
]


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


# The variance of the median of R independent normal draws, over the variance of one draw, times R: 1 for the
# mean (R <= 2: the median of two is their mean), up to pi / 2 for large R (exact values for small R).
_MEDIAN_EFFICIENCY = {1: 1.0, 2: 1.0, 3: 1.3467, 4: 1.1930, 5: 1.4350, 6: 1.2868, 7: 1.4756, 8: 1.3370}


def log_sd(values: Sequence[float]) -> float | None:
    """The sample standard deviation of ``log(values)`` (all > 0); ``None`` for fewer than two values."""
    if len(values) < 2 or any(v <= 0 for v in values):
        return None
    logs = [math.log(v) for v in values]
    mean = sum(logs) / len(logs)
    return math.sqrt(sum((x - mean) ** 2 for x in logs) / (len(logs) - 1))


def median_variance(sd: float, rounds: int) -> float:
    """The variance of the median of ``rounds`` independent estimates, each of standard deviation ``sd``."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, but got rounds={rounds!r}.")
    factor = _MEDIAN_EFFICIENCY.get(rounds, math.pi / 2)
    return factor * sd * sd / rounds


def noise_variance(rounds_ms: Sequence[float], ops: Sequence[Mapping[str, Any]]) -> float | None:
    """The noise variance (log units squared) of a model's log error ``log(predicted / measured)``.

    Its measured time's: the median of its rounds (``rounds_ms``, each a round's median), from their log spread
    (:func:`median_variance`); plus its prediction's: each table op's entry spread (its ``sigma``, the standard
    deviation of the entry's median, :func:`mmt_nas.predict.intervals.entry_sigma`) weighted by its share of
    the prediction, as independent errors. The fallback's spread is an error of the estimate, not noise, and
    is left out.

    Args:
        rounds_ms: The model's measured rounds' medians.
        ops: The prediction's ops (``Prediction.to_dict()["ops"]``: ``total_ms``, ``source``, ``sigma``).

    Returns:
        The variance, or ``None`` with fewer than two rounds.
    """
    sd = log_sd(rounds_ms)
    if sd is None:
        return None
    predicted = sum(float(o["total_ms"]) for o in ops)
    table = sum(
        (float(o["total_ms"]) / predicted * float(o.get("sigma", 0.0))) ** 2
        for o in ops
        if o["source"] == "table" and predicted > 0
    )
    return median_variance(sd, len(rounds_ms)) + table


@dataclass(frozen=True)
class BeyondNoise:
    """How far predictions are from the truth once the measurements' own noise is taken out.

    All in percent of log error (``100 * log(predicted / measured)``, close to the relative error for errors of
    a few percent).

    Attributes:
        n: The models it is computed over.
        rms_pct: The root mean square of the models' log errors.
        noise_pct: The root mean of the noise variances (truths' and predictions'): the RMS error a perfect
            predictor would show against these noisy numbers.
        beyond_pct: ``sqrt(max(0, rms_pct**2 - noise_pct**2))``: the error of the model itself.
        low_pct: The lower end of its bootstrap interval (models resampled with their noise).
        high_pct: The upper end.
        confidence: The interval's coverage.
    """

    n: int
    rms_pct: float
    noise_pct: float
    beyond_pct: float
    low_pct: float
    high_pct: float
    confidence: float

    def __str__(self) -> str:
        """``beyond_pct`` and its interval, e.g. ``5.8% (4.3-7.1)``."""
        return f"{self.beyond_pct:.1f}% ({self.low_pct:.1f}-{self.high_pct:.1f})"

    def to_dict(self) -> dict[str, float]:
        """The fields as a JSON-ready dict."""
        return {
            "n": self.n,
            "rms_pct": self.rms_pct,
            "noise_pct": self.noise_pct,
            "beyond_pct": self.beyond_pct,
            "low_pct": self.low_pct,
            "high_pct": self.high_pct,
            "confidence": self.confidence,
        }


def _beyond(errors: Sequence[float], noise: Sequence[float]) -> tuple[float, float, float]:
    mse = sum(e * e for e in errors) / len(errors)
    var = sum(noise) / len(noise)
    return math.sqrt(mse), math.sqrt(var), math.sqrt(max(0.0, mse - var))


def error_beyond_noise(
    log_errors: Sequence[float],
    noise_variances: Sequence[float],
    *,
    confidence: float = 0.9,
    resamples: int = 2000,
    seed: int = 0,
) -> BeyondNoise | None:
    """The models' error beyond the measurement noise: the mean squared log error less the mean noise variance.

    A model's log error ``log(predicted / measured)`` is its own error plus the noise of its measured time (the
    median of its rounds) and of its prediction (the table's entries, medians of theirs). When those are
    independent, the mean squared log error is the model's mean squared error plus the mean noise variance, so
    the difference estimates the error no measurement could explain. Its interval comes from resampling the
    models (with their noise variances), ``resamples`` times with a seeded generator.

    Args:
        log_errors: Each model's ``log(predicted / measured)``.
        noise_variances: Each model's noise variance (log units squared), as long as ``log_errors``: e.g.
            :func:`median_variance` of its rounds' log spread, plus its prediction's.
        confidence: The bootstrap interval's coverage, in (0, 1).
        resamples: Bootstrap resamples, >= 1.
        seed: The generator's seed.

    Returns:
        The estimate, or ``None`` without models.

    Raises:
        ValueError: The sequences differ in length, a variance is negative or a number is not finite.
    """
    if len(log_errors) != len(noise_variances):
        raise ValueError(
            f"log_errors and noise_variances must have the same length, got {len(log_errors)} and "
            f"{len(noise_variances)}."
        )
    if not all(math.isfinite(x) for x in (*log_errors, *noise_variances)) or any(v < 0 for v in noise_variances):
        raise ValueError("log errors must be finite and noise variances finite and >= 0.")
    if not 0 < confidence < 1 or resamples < 1:
        raise ValueError(f"confidence must be in (0, 1) and resamples >= 1, got {confidence!r} and {resamples!r}.")
    n = len(log_errors)
    if n == 0:
        return None
    rms, noise, beyond = _beyond(log_errors, noise_variances)
    rng = random.Random(seed)
    boots = []
    for _ in range(resamples):
        idx = [rng.randrange(n) for _ in range(n)]
        boots.append(_beyond([log_errors[i] for i in idx], [noise_variances[i] for i in idx])[2])
    boots.sort()
    tail = (1 - confidence) / 2
    low = boots[min(resamples - 1, int(tail * resamples))]
    high = boots[min(resamples - 1, int((1 - tail) * resamples))]
    return BeyondNoise(n, 100 * rms, 100 * noise, 100 * beyond, 100 * low, 100 * high, confidence)


def beyond_noise_of(
    predicted: Sequence[float], measured: Sequence[float], noise_variances: Sequence[float | None]
) -> BeyondNoise | None:
    """:func:`error_beyond_noise` of the models whose noise is known (a variance, not ``None``) and whose times are
    positive, from their predicted and measured times (ms) and noise variances, in the same order."""
    known = [(p, m, v) for p, m, v in zip(predicted, measured, noise_variances) if v is not None and p > 0 and m > 0]
    return error_beyond_noise([math.log(p / m) for p, m, _ in known], [v for _, _, v in known])
