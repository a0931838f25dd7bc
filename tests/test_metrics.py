"""The error beyond the measurement noise, on synthetic data whose model error and noise are known."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from mmt_nas.report.metrics import error_beyond_noise, log_sd, median_variance


def _synthetic(n: int, model_sd: float, seed: int, rounds: int = 5) -> tuple[list[float], list[float]]:
    """``n`` models: a true error of spread ``model_sd``, and truths measured as the median of ``rounds`` noisy
    rounds (each model its own round-to-round spread, 3-15%), the noise estimated from those rounds only."""
    rng = random.Random(seed)
    errors, variances = [], []
    for _ in range(n):
        true_ms = rng.uniform(1, 50)
        predicted = true_ms * math.exp(rng.gauss(0, model_sd))
        spread = rng.uniform(0.03, 0.15)
        runs = [true_ms * math.exp(rng.gauss(0, spread)) for _ in range(rounds)]
        measured = statistics.median(runs)
        sd = log_sd(runs)
        assert sd is not None
        errors.append(math.log(predicted / measured))
        variances.append(median_variance(sd, rounds))
    return errors, variances


@pytest.mark.parametrize("model_sd", [0.03, 0.06])
def test_it_recovers_a_known_model_error_under_larger_noise(model_sd: float) -> None:
    errors, variances = _synthetic(400, model_sd, seed=int(model_sd * 100))
    got = error_beyond_noise(errors, variances)
    assert got is not None and got.n == 400
    assert got.noise_pct > 100 * model_sd * 0.6  # the noise is of the model error's size or larger ...
    assert abs(got.beyond_pct - 100 * model_sd) < 0.35 * 100 * model_sd  # ... and still taken out
    assert got.low_pct <= 100 * model_sd <= got.high_pct
    assert got.rms_pct > got.beyond_pct  # the raw RMS overstates the model's error


def test_a_perfect_predictor_is_within_the_noise() -> None:
    errors, variances = _synthetic(300, 0.0, seed=7)
    got = error_beyond_noise(errors, variances)
    assert got is not None and got.rms_pct > 2  # it looks wrong by several percent ...
    assert got.low_pct == 0.0 and got.beyond_pct < 0.6 * got.rms_pct  # ... but it is consistent with none


def test_the_interval_is_seeded_and_narrows_with_more_models() -> None:
    few = error_beyond_noise(*_synthetic(30, 0.05, seed=3), seed=1)
    assert few == error_beyond_noise(*_synthetic(30, 0.05, seed=3), seed=1)
    many = error_beyond_noise(*_synthetic(600, 0.05, seed=3), seed=1)
    assert few is not None and many is not None
    assert many.high_pct - many.low_pct < few.high_pct - few.low_pct


def test_bad_input_is_refused_and_nothing_gives_none() -> None:
    assert error_beyond_noise([], []) is None
    with pytest.raises(ValueError, match="same length"):
        error_beyond_noise([0.1], [])
    with pytest.raises(ValueError, match=">= 0"):
        error_beyond_noise([0.1], [-1.0])
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        median_variance(0.1, 0)
    assert log_sd([5.0]) is None and log_sd([1.0, 0.0]) is None


def test_the_median_variance_matches_simulation() -> None:
    rng = random.Random(0)
    for rounds in (1, 2, 3, 4, 5, 9):
        meds = [statistics.median(rng.gauss(0, 0.1) for _ in range(rounds)) for _ in range(20000)]
        assert statistics.pvariance(meds) == pytest.approx(median_variance(0.1, rounds), rel=0.06)
