"""Prediction intervals: sources of spread, split-conformal calibration, the prior, JSON round trips."""

from __future__ import annotations

import json
import math
import random
import statistics
from pathlib import Path

import pytest
from conftest import TINY_SHAPE
from tinymods import TinyNet

from mmt_nas.exceptions import NotFittedError, OptionError, TableError
from mmt_nas.predict.fallback import LatencyRegressor
from mmt_nas.predict.intervals import PRIOR_SIGMA, ConformalIntervals, PriorIntervals, check_intervals, entry_sigma
from mmt_nas.predict.predictor import LatencyPredictor, Prediction
from mmt_nas.table.table import LatencyTable


def _synthetic(n: int, seed: int) -> tuple[list[float], list[float], list[float]]:
    """Models whose latency is the prediction times exp(bias + sd * noise), with a heteroscedastic sd: the
    prediction's source spread sigma (0.02-0.3) plus a model-level 0.08, and a -10% bias (a predictor that
    runs low, as on unseen networks)."""
    rng = random.Random(seed)
    pred, sig, meas = [], [], []
    for _ in range(n):
        p, s = rng.uniform(0.5, 80), rng.uniform(0.02, 0.3)
        pred.append(p)
        sig.append(s)
        meas.append(p * math.exp(0.1 + math.hypot(s, 0.08) * rng.gauss(0, 1)))
    return pred, sig, meas


@pytest.mark.parametrize("confidence", [0.8, 0.9, 0.95])
def test_conformal_intervals_cover_as_promised_and_are_not_too_wide(confidence: float) -> None:
    """Fitted on 300 models, scored on 4,000 others: coverage within 3 points of nominal; the interval is
    about as wide as the oracle's (which knows the noise) and asymmetric toward the bias."""
    cal = ConformalIntervals().fit(*_synthetic(300, seed=1))
    pred, sig, meas = _synthetic(4000, seed=2)
    inside, ratio = 0, []
    z = statistics.NormalDist().inv_cdf((1 + confidence) / 2)
    for p, s, m in zip(pred, sig, meas):
        lo, hi = Prediction(p, sigma=s, intervals=cal).interval(confidence)
        inside += lo <= m <= hi
        ratio.append(math.log(hi / lo) / (2 * z * math.hypot(s, 0.08)))
    assert abs(inside / len(pred) - confidence) <= 0.03
    assert 0.85 <= statistics.median(ratio) <= 1.25
    mid = Prediction(10.0, sigma=0.1, intervals=cal)
    lo, hi = mid.interval(confidence)
    assert hi / 10.0 > 10.0 / lo  # reaches further up: the predictor runs 10% low


def test_heteroscedastic_width_follows_the_source_spread() -> None:
    cal = ConformalIntervals().fit(*_synthetic(300, seed=3))
    narrow = Prediction(10.0, sigma=0.02, intervals=cal).interval(0.9)
    wide = Prediction(10.0, sigma=0.3, intervals=cal).interval(0.9)
    assert wide[1] - wide[0] > 2 * (narrow[1] - narrow[0])


def test_quantiles_agree_with_mapie_split_conformal() -> None:
    """With one source spread for all models, the intervals are MAPIE's SplitConformalRegressor's on the log
    latency (asymmetric absolute score, a prefit identity model on the log prediction)."""
    np = pytest.importorskip("numpy")
    mapie = pytest.importorskip("mapie.regression")
    from mapie.conformity_scores import AbsoluteConformityScore
    from sklearn.base import BaseEstimator, RegressorMixin

    class LogPrediction(RegressorMixin, BaseEstimator):
        def fit(self, X: object, y: object) -> LogPrediction:
            self.fitted_ = True
            return self

        def predict(self, X: object) -> object:
            return np.asarray(X)[:, 0]

    pred, _, meas = _synthetic(61, seed=4)
    cal = ConformalIntervals().fit(pred, [0.0] * len(pred), meas)
    X, y = np.log(np.asarray(pred))[:, None], np.log(np.asarray(meas))
    for confidence in (0.8, 0.9, 0.95):
        ref = mapie.SplitConformalRegressor(
            LogPrediction().fit(X, y), confidence_level=confidence,
            conformity_score=AbsoluteConformityScore(sym=False), prefit=True,
        ).conformalize(X, y)  # fmt: skip
        _, bounds = ref.predict_interval(np.log([[7.0]]))
        want = (math.exp(bounds[0, 0, 0]), math.exp(bounds[0, 1, 0]))
        assert Prediction(7.0, sigma=0.0, intervals=cal).interval(confidence) == pytest.approx(want, rel=1e-9)


def test_beyond_what_the_models_certify_the_prior_tail_is_used() -> None:
    """With 9 models a 95% one-sided bound is not certified (it needs 19): the prior's, or the largest score."""
    pred, sig, meas = _synthetic(9, seed=5)
    cal = ConformalIntervals().fit(pred, sig, meas)
    assert math.isinf(cal.score_quantile(0.95)) and math.isfinite(cal.score_quantile(0.85))
    p = Prediction(10.0, sigma=0.1, intervals=cal)
    prior = Prediction(10.0, sigma=0.1, intervals=PriorIntervals())
    assert p.upper(0.95) >= max(prior.upper(0.95), p.upper(0.85))
    assert "9 measured models" in cal.describe()


def test_the_uncalibrated_prior_is_wider_than_the_sources_and_says_so() -> None:
    p = Prediction(10.0, sigma=0.02)
    lo, hi = p.interval(0.9)
    z = statistics.NormalDist().inv_cdf(0.95)
    assert hi == pytest.approx(10 * math.exp(z * math.hypot(0.02, PRIOR_SIGMA)))
    assert hi / lo > math.exp(2 * z * 0.1)  # far wider than the 2% measurement spread alone
    assert not p.calibrated and "uncalibrated" in p.explain() and p.to_dict()["interval"]["calibrated"] is False
    assert p.std_ms == pytest.approx(10 * math.sinh(math.hypot(0.02, PRIOR_SIGMA)), rel=0.01)


def test_intervals_and_predictions_round_trip_through_json(tmp_path: Path) -> None:
    cal = ConformalIntervals().fit(*_synthetic(40, seed=6), models=[f"m{i}" for i in range(40)])
    cal.save(tmp_path / "iv.json")
    again = ConformalIntervals.load(tmp_path / "iv.json")
    assert again.scores_ == cal.scores_ and again.ref_sigma_ == cal.ref_sigma_ and again.models_ == cal.models_
    assert "pickle" not in (tmp_path / "iv.json").read_text()
    p = Prediction(12.5, sigma=0.07, intervals=cal)
    doc = json.loads(json.dumps(p.to_dict()))
    back = Prediction.from_dict(doc)
    assert float(back) == 12.5 and back.interval(0.8) == pytest.approx(p.interval(0.8)) and back.calibrated
    old = {"latency_ms": 3.0, "ops": []}  # a prediction written before intervals
    assert not Prediction.from_dict(old).calibrated


def test_bad_input_is_refused_with_the_package_errors(tmp_path: Path) -> None:
    with pytest.raises(NotFittedError):
        ConformalIntervals().score_quantile(0.9)
    with pytest.raises(OptionError, match="one value per model"):
        ConformalIntervals().fit([1.0, 2.0], [0.1], [1.0, 2.0])
    with pytest.raises(OptionError, match="at least 2"):
        ConformalIntervals().fit([1.0], [0.1], [1.0])
    with pytest.raises(OptionError, match="measured_ms"):
        ConformalIntervals().fit([1.0, 2.0], [0.1, 0.1], [1.0, -2.0])
    with pytest.raises(OptionError, match="confidence"):
        Prediction(1.0).interval(1.5)
    with pytest.raises(OptionError, match="prior"):
        PriorIntervals(-0.1)
    (tmp_path / "x.json").write_text('{"schema": "something else"}')
    with pytest.raises(TableError, match="not an mmt_nas intervals file"):
        ConformalIntervals.load(tmp_path / "x.json")


def test_real_predictions_carry_each_ops_spread(tiny_ops: Path) -> None:
    """From a real metered table: every table op's spread comes from its rounds; a fallback op's is the
    fallback's, larger; the interval holds the point and the explanation names what widens it."""
    table = LatencyTable.load(tiny_ops)
    pred = LatencyPredictor(table).predict(TinyNet(), TINY_SHAPE)
    for o in pred.ops:
        entry = table.get(o.key)
        if o.source == "table":
            assert o.sigma == pytest.approx(entry_sigma(entry) or 0.0)
    assert pred.sigma > 0
    lo, hi = pred.interval(0.9)
    assert lo < float(pred) < hi
    fallback = LatencyRegressor("forest").fit(table)
    wide = LatencyPredictor(table, on_missing="fallback", fallback=fallback).predict(TinyNet(width=16), TINY_SHAPE)
    fb = [o for o in wide.ops if o.source == "fallback"]
    assert fb and min(o.sigma for o in fb) >= fallback.oof_log_std() - 1e-12
    assert wide.sigma > pred.sigma
    text = wide.explain()
    assert "90% interval" in text and "its width comes from" in text and "fallback op" in text


def test_check_intervals_scores_each_group_with_intervals_fitted_on_the_others() -> None:
    """A predictor 25% low with a 5% spread: the prior's 90% interval (sd 0.15) misses many models; intervals
    fitted leave-one-group-out cover about 90%, and at every budget the chance constraint keeps fewer models
    measured over budget than the point prediction does."""
    rng = random.Random(7)
    pred, sig, meas, groups = [], [], [], []
    for g in range(12):
        for _ in range(15):
            p = rng.uniform(1, 100)
            pred.append(p)
            sig.append(0.03)
            meas.append(p * math.exp(0.25 + 0.05 * rng.gauss(0, 1)))
            groups.append(f"family{g}")
    out = check_intervals(pred, sig, meas, groups)
    assert out["n_models"] == 180 and out["conformal"] is not None
    assert abs(out["conformal"]["coverage"]["0.9"] - 0.9) <= 0.06
    assert out["prior"]["coverage"]["0.9"] < 0.75
    for q, ff in out["conformal"]["false_feasible"].items():
        assert ff["chance"] is not None and ff["point"] is not None and ff["chance"] < ff["point"], q
    assert check_intervals(pred[:10], sig[:10], meas[:10], ["a"] * 5 + ["b"] * 5)["conformal"] is None
    with pytest.raises(OptionError, match="one value per model"):
        check_intervals(pred, sig[:3], meas)


def test_sampling_toward_a_decision_ranks_the_ops_of_the_models_nearest_the_budget(
    tiny_ops: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Two nets whose ops the table lacks (the fallback estimates them): a narrow TinyNet and a stack of forty
    24-channel convs, over 10x slower. With the budget at the stack's prediction, its conv is proposed
    first; at the narrow net's, one of the narrow net's ops. With a budget far from both, every score is about 0.
    The command writes the proposals as an op space."""
    from test_cli import run
    from tinymods import conv_stack

    from mmt_nas.predict.decisions import propose_for_budget
    from mmt_nas.space.opspace import load_space

    table = LatencyTable.load(tiny_ops)
    predictor = LatencyPredictor(table, on_missing="fallback", fallback=LatencyRegressor("forest").fit(table))
    models = [("narrow", TinyNet(width=12), TINY_SHAPE), ("stack", conv_stack(24, 40), TINY_SHAPE)]
    narrow, stack = (predictor.predict(m, s) for _, m, s in models)
    assert float(stack) > 10 * float(narrow)
    near_stack = propose_for_budget(predictor, models, float(stack), n=50)
    near_narrow = propose_for_budget(predictor, models, float(narrow), n=50)
    assert near_stack[0].models == ("stack",) and "Conv2d(24, 24" in near_stack[0].record.key
    assert near_narrow[0].models[0] == "narrow"
    far = propose_for_budget(predictor, models, 1000 * float(stack), n=50)
    assert max(p.score for p in far) < 1e-6 < near_stack[0].score
    with pytest.raises(OptionError, match="fallback"):
        propose_for_budget(LatencyPredictor(table), models, float(stack))
    mods = Path(__file__).parent / "tinymods.py"
    (tmp_path / "models.yaml").write_text(
        "models:\n"
        f"  - {{name: narrow, model: '{mods}:TinyNet', kwargs: {{width: 12}}, input_shape: {TINY_SHAPE}}}\n"
        f"  - {{name: stack, model: '{mods}:conv_stack', kwargs: {{depth: 40}}, input_shape: {TINY_SHAPE}}}\n"
    )
    args = [
        "sample",
        "--near-budget",
        str(float(stack)),
        "--table",
        str(tiny_ops),
        "--models",
        str(tmp_path / "models.yaml"),
    ]
    code, out, err = run(capfd, *args, "--budget", "2", "-o", tmp_path / "next.yaml")
    assert code == 0, err
    assert "in stack" in out and len(load_space(tmp_path / "next.yaml")) == 2


def test_the_fast_paths_carry_the_same_intervals(tiny_ops: Path) -> None:
    """predict_cached (a hit too) and predict_keys give the interval predict gives, and the predictor's
    conformal intervals reach all three."""
    table = LatencyTable.load(tiny_ops)
    cal = ConformalIntervals().fit(*_synthetic(30, seed=8))
    predictor = LatencyPredictor(table, intervals=cal)
    direct = predictor.predict(TinyNet(), TINY_SHAPE)
    first = predictor.predict_cached(TinyNet(), TINY_SHAPE)
    hit = predictor.predict_cached(TinyNet(), TINY_SHAPE)
    keys = [k for o in direct.ops for k in [o.key] * o.count if o.source != "fused"]
    by_keys = predictor.predict_keys(keys)
    assert direct.calibrated and hit is first
    for p in (first, hit):
        assert p.interval(0.9) == pytest.approx(direct.interval(0.9))
    assert by_keys.sigma == pytest.approx(direct.sigma) and by_keys.interval(0.8) == pytest.approx(direct.interval(0.8))


def test_the_fallback_remembers_its_estimates_until_refit(tiny_ops: Path) -> None:
    """Estimates are remembered by op key (a search predicts the same ops again and again), and forgotten when
    the regressor is fitted again: refitted on a table twice as slow, the same op's estimate doubles."""
    import dataclasses

    table = LatencyTable.load(tiny_ops)
    base = [e for e in table if e.core_ms]  # the regressor learns core times: the same entries both times
    fallback = LatencyRegressor("forest").fit(base)
    predictor = LatencyPredictor(table, on_missing="fallback", fallback=fallback)
    op = next(o for o in predictor.parse(TinyNet(width=16), TINY_SHAPE) if o.key not in table and o.fused_into is None)
    first = fallback.predict_op(op)
    assert fallback.predict_op(op) == first and ("ms", op.key) in fallback._op_cache
    slow = [dataclasses.replace(e, core_ms=2 * e.core_ms) for e in base]
    fallback.fit(slow)
    assert fallback.predict_op(op) == pytest.approx(2 * first, rel=0.02)  # a stale cache would give `first`


def test_a_models_fallback_ops_are_estimated_in_one_call(tiny_ops: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """prepare() estimates every missing op of a model at once, to exactly what one op at a time gives: the
    forest is asked once per quantity (time, spread, cold ratio) for the whole model, not once per op."""
    table = LatencyTable.load(tiny_ops)
    fallback = LatencyRegressor("forest").fit(table)
    one_by_one = LatencyPredictor(table, on_missing="fallback", fallback=fallback)
    ops = [o for w in (16, 24, 32) for o in one_by_one.parse(TinyNet(width=w), TINY_SHAPE)]  # ops the table lacks
    missing = {o.key: o for o in ops if o.key not in table and o.fused_into is None}
    assert len(missing) >= 6
    expected = {
        k: (fallback.predict_op(o), fallback.log_std_op(o), fallback.cold_ratio_op(o)) for k, o in missing.items()
    }

    fresh = LatencyRegressor("forest").fit(table)
    fresh.oof_log_std()  # computed once per fit, on the table's own ops: not what is counted here
    calls: list[tuple[str, int]] = []
    for name in ("estimator_", "cold_estimator_"):
        estimator = getattr(fresh, name)
        real = estimator.predict
        estimator.predict = lambda x, real=real, name=name: calls.append((name, len(x))) or real(x)
    batched = LatencyPredictor(table, on_missing="fallback", fallback=fresh).predict_ops(ops)
    # the time and the cold ratio of all of them in one call each (the spread asks the trees)
    assert sorted(calls) == [("cold_estimator_", len(missing)), ("estimator_", len(missing))]
    for k, o in missing.items():
        assert (fresh.predict_op(o), fresh.log_std_op(o), fresh.cold_ratio_op(o)) == pytest.approx(expected[k])
    assert float(batched) == pytest.approx(float(one_by_one.predict_ops(ops)), rel=1e-12)
    assert len(calls) == 2  # everything after came from what prepare() remembered
