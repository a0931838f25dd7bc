"""The in-context calibration's model context, its shrinkage out of distribution, and leave-one-group-out."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from mmt_nas.device.profile import OpProfile
from mmt_nas.exceptions import OptionError, TableError
from mmt_nas.predict.cache import CACHE_BYTES, cold_share
from mmt_nas.predict.calibration import (
    CalibrationSample,
    InContextCalibration,
    leave_one_group_out,
    model_context,
    samples_from_profile,
)
from mmt_nas.predict.fallback import op_features
from mmt_nas.predict.predictor import LatencyPredictor
from mmt_nas.space.trace import ParsedOp
from mmt_nas.table.records import OpRecord
from mmt_nas.table.table import LatencyStats, LatencyTable, RuntimeSettings, TableEntry

MB = 1 << 20


def _conv(c: int, hw: int) -> OpRecord:
    """A 3x3 ``c``-to-``c`` convolution at ``hw`` x ``hw``, described as the table would."""
    shape = (1, c, hw, hw)
    args = {"in_channels": c, "out_channels": c, "kernel_size": 3, "stride": 1, "padding": 1, "groups": 1}
    params = 9 * c * c + c
    return OpRecord(
        f"Conv2d|c{c}|{'x'.join(map(str, shape))}",
        "Conv2d",
        "torch.nn",
        args,
        shape,
        shape,
        2 * 9 * c * c * hw * hw,
        params,
    )


def _alone_ms(op: OpRecord) -> float:
    return 1e-3 + op.flops * 1e-9


def _true_log_ratio(op: OpRecord) -> float:
    """The synthetic truth: bigger layers (more parameters) slow down more inside a model, up to e^0.6."""
    lo, hi = math.log1p(_conv(8, 8).params), math.log1p(_conv(64, 8).params)
    return 0.6 * (math.log1p(op.params) - lo) / (hi - lo)


def _synthetic(channels: list[int], weights: list[float]) -> list[CalibrationSample]:
    """Models (one per weight-byte count) that each run every conv of ``channels`` at three sizes."""
    out = []
    for i, w in enumerate(weights):
        for c in channels:
            for hw in (8, 16, 32):
                op = _conv(c, hw)
                alone = _alone_ms(op)
                ctx = alone * math.exp(_true_log_ratio(op))
                out.append(CalibrationSample(f"m{i}", op.key, tuple(op_features(op)), alone, ctx, model_context(w)))
    return out


TRAIN_CHANNELS = [8, 16, 24, 32, 40, 48, 56, 64]
TRAIN_WEIGHTS = [2 * MB, 5 * MB, 12 * MB, 30 * MB]


def test_samples_with_context_round_trip_and_old_files_load(tmp_path: Path) -> None:
    samples = _synthetic(TRAIN_CHANNELS[:4], TRAIN_WEIGHTS[:2])
    for s in samples[:3]:
        assert s.context == model_context(float(TRAIN_WEIGHTS[0]))
        assert CalibrationSample.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    cal = InContextCalibration().fit(samples)
    cal.save(tmp_path / "cal.json")
    again = InContextCalibration.load(tmp_path / "cal.json")
    assert again.samples_ == samples and again.get_params() == cal.get_params()
    items = [(_conv(20, 16), 0.05), (_conv(8, 8), 0.01)]
    assert again.ratios(items, 3 * MB) == pytest.approx(cal.ratios(items, 3 * MB))

    # A file written before contexts: schema version 1, no shrink or cache_bytes, samples without context.
    old = {
        "schema": "mmt_nas/calibration",
        "schema_version": 1,
        "params": {"model": "forest", "max_ratio": 20.0, "random_state": 0},
        "models": ["m0", "m1"],
        "samples": [{k: v for k, v in s.to_dict().items() if k != "context"} for s in samples],
    }
    (tmp_path / "old.json").write_text(json.dumps(old))
    legacy = InContextCalibration.load(tmp_path / "old.json")
    assert all(s.context == () for s in legacy.samples_) and legacy.models_ == ["m0", "m1"]
    ratios = legacy.ratios(items)
    assert all(r > 0 for r in ratios)
    assert legacy.ratios(items, 50 * MB) == pytest.approx(ratios)  # no context features: the size is ignored

    with pytest.raises(TableError, match="all carry their model's context"):
        InContextCalibration().fit(samples + list(legacy.samples_))
    with pytest.raises(OptionError, match="other cache_bytes"):
        InContextCalibration(cache_bytes=(1 * MB, 2 * MB)).fit(_synthetic(TRAIN_CHANNELS, [5 * MB, 12 * MB]))
    with pytest.raises(OptionError, match="model_weight_bytes"):
        cal.ratios(items, -1.0)


def test_correction_learns_in_distribution_and_steps_aside_far_out() -> None:
    samples = _synthetic(TRAIN_CHANNELS, TRAIN_WEIGHTS)
    shrunk = InContextCalibration().fit(samples)
    plain = InContextCalibration(shrink=False).fit(samples)
    assert shrunk.get_params()["shrink"] is True and plain.get_params()["shrink"] is False

    # Unseen convolutions between the trained ones, in a model of an unseen (but in-range) size.
    inside = [_conv(c, hw) for c in (12, 20, 28, 36, 44, 52, 60) for hw in (8, 16, 32)]
    items = [(op, _alone_ms(op)) for op in inside]
    truth = [_true_log_ratio(op) for op in inside]
    predicted = [math.log(r) for r in shrunk.ratios(items, 8 * MB)]
    error = sum(abs(p - t) for p, t in zip(predicted, truth)) / len(truth)
    uncorrected = sum(abs(t) for t in truth) / len(truth)
    assert error < 0.4 * uncorrected, (error, uncorrected)
    assert min(shrunk.trust(items, 8 * MB)) > 0.5

    # 1024x the parameters and FLOPs of the largest trained conv: the tree would repeat its edge value.
    far = _conv(64 * 32, 8)
    assert far.params > 1000 * _conv(64, 8).params
    far_item = [(far, _alone_ms(far))]
    unshrunk_log = math.log(plain.ratios(far_item, 8 * MB)[0])
    shrunk_log = math.log(shrunk.ratios(far_item, 8 * MB)[0])
    assert unshrunk_log > 0.3  # the unshrunk estimator extrapolates the trend's top
    assert abs(shrunk_log) < abs(unshrunk_log)
    assert shrunk.trust(far_item, 8 * MB)[0] < 0.2
    assert plain.trust(far_item, 8 * MB) == [1.0]

    # A model far larger than any trained one is out of distribution too, even for familiar ops.
    familiar = [(_conv(32, 16), _alone_ms(_conv(32, 16)))]
    assert shrunk.trust(familiar, 1 << 40)[0] < shrunk.trust(familiar, 8 * MB)[0]
    # Without the model's size: the median training model's context.
    assert shrunk.ratios(familiar) == pytest.approx(shrunk.ratios(familiar, math.expm1(shrunk.default_context_[0])))


def test_leave_one_group_out_never_scores_a_model_with_its_own_group() -> None:
    samples = []
    for fam in ("res", "mobile", "vgg", "dense"):
        for res in (160, 224):
            for s in _synthetic(TRAIN_CHANNELS[:4], [res * 0.05 * MB]):
                samples.append(dataclasses.replace(s, model=f"{fam}@{res}"))
    family = lambda name: name.split("@")[0]  # noqa: E731
    names = {s.model for s in samples}
    cals = leave_one_group_out(samples, group=family, model="forest")
    assert set(cals) == names
    for name, cal in cals.items():
        assert all(family(m) != family(name) for m in cal.models_), (name, cal.models_)
        assert set(cal.models_) == {n for n in names if family(n) != family(name)}
    assert cals["res@160"] is cals["res@224"] and cals["res@160"] is not cals["vgg@160"]
    with pytest.raises(TableError, match="at least 2 groups"):
        leave_one_group_out(samples, group=lambda name: "all")


def _entry(op: OpRecord, core: float, cold: float | None) -> TableEntry:
    return TableEntry(
        op, LatencyStats(core * 1.2, core * 1.2, 0.0, core * 1.2, core * 1.2, 1), core_ms=core, cold_ms=cold
    )


def test_samples_alone_time_is_the_composed_time() -> None:
    big1, big2, small = _conv(512, 7), _conv(384, 7), _conv(16, 7)
    relu = OpRecord("ReLU|r|1x512x7x7", "ReLU", "torch.nn", {}, (1, 512, 7, 7), (1, 512, 7, 7), 0, 0)
    table = LatencyTable(
        RuntimeSettings(),
        {"cpu_model": "test"},
        {},
        [_entry(big1, 0.5, 0.9), _entry(big2, 0.3, 0.5), _entry(small, 0.02, None), _entry(relu, 0.01, 0.01)],
    )
    ops = [
        ParsedOp(big1.key, "Conv2d", "conv1", big1.input_shape, big1.output_shape),
        ParsedOp(relu.key, "ReLU", "act", relu.input_shape, relu.output_shape, fused_into="conv1"),
        ParsedOp(big2.key, "Conv2d", "conv2", big2.input_shape, big2.output_shape),
        ParsedOp(small.key, "Conv2d", "head", small.input_shape, small.output_shape),
        ParsedOp(small.key, "Conv2d", "head", small.input_shape, small.output_shape),  # called twice: no sample
    ]
    profile = [
        OpProfile("/conv1/Conv_output_0", "Convolution", 1.1),
        OpProfile("/conv2/Conv_output_0", "Convolution", 0.6),
        OpProfile("/head/Conv_output_0", "Convolution", 0.05),
    ]
    weights = big1.weight_bytes + big2.weight_bytes + 2 * small.weight_bytes  # the fused ReLU has none
    share = cold_share(weights, CACHE_BYTES)
    assert 0 < share < 1  # between the cache sizes: the composition is partial

    samples = samples_from_profile("net", ops, profile, table)
    by_key = {s.key: s for s in samples}
    assert set(by_key) == {big1.key, big2.key}
    # the weights' part of an op's bytes moves by the model's share, its activations' part all the way
    w1 = big1.weight_bytes / big1.footprint_bytes
    w2 = big2.weight_bytes / big2.footprint_bytes
    assert 0.9 < w2 < w1 < 1
    assert by_key[big1.key].alone_ms == pytest.approx(0.5 + (share * w1 + 1 - w1) * (0.9 - 0.5))
    assert by_key[big2.key].alone_ms == pytest.approx(0.3 + (share * w2 + 1 - w2) * (0.5 - 0.3))
    weights_only = {s.key: s for s in samples_from_profile("net", ops, profile, table, context="weights")}
    assert weights_only[big1.key].alone_ms == pytest.approx(0.5 + share * w1 * (0.9 - 0.5))
    assert by_key[big1.key].in_context_ms == pytest.approx(1.1)
    assert all(s.context == pytest.approx((math.log1p(weights), share)) for s in samples)
    # The same time as the predictor's context="model" composes (before any calibration).
    predicted = {o.key: o.latency_ms for o in LatencyPredictor(table).predict_ops(ops).ops}
    for s in samples:
        assert s.alone_ms == pytest.approx(predicted[s.key])

    alone = {s.key: s for s in samples_from_profile("net", ops, profile, table, context="alone")}
    assert alone[big1.key].alone_ms == pytest.approx(0.5) and alone[big1.key].context == by_key[big1.key].context
    wall = {s.key: s for s in samples_from_profile("net", ops, profile, table, "wall")}
    assert wall[big1.key].alone_ms == pytest.approx(0.6 + (share * w1 + 1 - w1) * (0.9 - 0.5))
    with pytest.raises(OptionError, match="context must be"):
        samples_from_profile("net", ops, profile, table, context="hot")  # type: ignore[arg-type]


def _group_samples(ratio_of: dict[str, float], models_per_group: int = 2, n: int = 15) -> list:
    """Samples of models in groups; in group g every op runs ratio_of[g] times its composed time."""
    import random as _random

    from mmt_nas.predict.calibration import CalibrationSample
    from mmt_nas.predict.fallback import FEATURE_NAMES

    rng = _random.Random(0)
    out = []
    for g, ratio in ratio_of.items():
        for k in range(models_per_group):
            for i in range(n):
                alone = 0.01 * (1 + rng.random() * 9)
                feats = tuple(rng.random() for _ in FEATURE_NAMES)
                out.append(CalibrationSample(f"{g}_{k}@160", f"op{i}", feats, alone, alone * ratio))
    return out


def test_a_correction_that_carries_over_between_groups_is_kept_and_one_that_does_not_steps_aside() -> None:
    """Every group's ops running 1.6x their composed time: the leave-one-group-out check on the training data
    finds the correction carries over and keeps it (ratios near 1.6). Each group slower or faster its own way
    (no feature tells which): corrected, a held-out group gets the others' average, which makes some group
    worse, so the calibration steps aside (damping 0, ratios 1) instead of being applied."""
    from mmt_nas.predict.calibration import InContextCalibration

    family = lambda name: name.split("_")[0]  # noqa: E731
    same = InContextCalibration(shrink=False).fit(_group_samples({f"g{i}": 1.6 for i in range(5)}), group=family)
    assert same.damping_ == 1.0 and same.groups_["g0_0@160"] == "g0"
    probe = [(s, s.alone_ms) for s in same.samples_[:5]]
    assert all(abs(r - 1.6) < 0.1 for r in same.ratios([(_record(), ms) for _, ms in probe]))
    mixed = InContextCalibration(shrink=False).fit(
        _group_samples({"g0": 0.6, "g1": 1.9, "g2": 1.0, "g3": 0.7, "g4": 1.7}), group=family
    )
    assert mixed.damping_ < 0.5
    scores = mixed.damping_scores_
    assert scores["1.0"]["worst_group_increase_pts"] > 0.5  # why: the full correction made a group worse
    off = InContextCalibration(shrink=False, step_aside=False).fit(_group_samples({f"g{i}": 1.6 for i in range(5)}))
    assert off.damping_ == 1.0 and off.damping_scores_ == {}


def _record():
    from mmt_nas.table.records import OpRecord

    return OpRecord("Conv2d|x|1x8x8x8", "Conv2d", "torch.nn", {}, [1, 8, 8, 8], [1, 8, 8, 8], 1000, 100)
