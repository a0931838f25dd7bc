"""End-to-end timing as a deployed app runs a model (input in, run, output out), and interleaved rounds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TINY_SHAPE
from tinymods import TinyNet

import mmt_nas.build.measure as measure
import mmt_nas.device.endtoend as endtoend
from mmt_nas.device.endtoend import InterleavedResult, measure_interleaved, time_inference
from mmt_nas.device.rounds import round_order
from mmt_nas.device.timing import time_model
from mmt_nas.exceptions import MeteringError
from mmt_nas.table.records import load_ops_meta
from mmt_nas.table.table import LatencyStats, RuntimeSettings


def _files(ops: Path) -> dict[str, Path]:
    """Three .mnn files of the tiny ops folder, the TinyBlock (the slowest) first."""
    by_class = {op.class_name: ops / str(op.file) for op in load_ops_meta(ops) if op.file}
    return {name: by_class[name] for name in ("TinyBlock", "ReLU", "Linear")}


def test_time_inference_times_whole_inferences(tiny_ops: Path) -> None:
    for path in _files(tiny_ops).values():
        stats = time_inference(path, 7, warmup=2)
        assert isinstance(stats, LatencyStats) and stats.n == 7
        assert 0 < stats.min_ms <= stats.median_ms <= stats.p90_ms
    assert time_inference(path, 3, settings=RuntimeSettings("CPU", 2, "low")).n == 3


def test_inference_is_not_less_than_the_bare_session_run(tiny_ops: Path) -> None:
    """It does what the session run does and more (input in, output out): interleaved, so drift hits both."""
    block = _files(tiny_ops)["TinyBlock"]
    res = measure_interleaved(
        {"inference": block, "session": block},
        60,
        rounds=3,
        method={"inference": "inference", "session": "session"},
    )
    inf, ses = res["inference"], res["session"]
    assert (inf.method, ses.method) == ("inference", "session")
    assert inf.latency.median_ms >= 0.9 * ses.latency.min_ms
    assert sum(m >= 0.9 * ses.latency.min_ms for m in inf.rounds_ms) >= 2  # in most rounds


def test_measure_interleaved_rounds_and_results(tiny_ops: Path) -> None:
    files = _files(tiny_ops)
    done: list[str] = []
    res = measure_interleaved(files, 10, rounds=3, on_complete=lambda name, r: done.append(name))
    assert list(res) == list(files) and sorted(done) == sorted(files)
    assert done == round_order(files, 0, 2)  # each complete as soon as its last round is timed
    for r in res.values():
        assert isinstance(r, InterleavedResult)
        assert len(r.rounds_ms) == 3 and [s.n for s in r.rounds] == [4, 3, 3] and r.latency.n == 10
        assert r.rounds_ms == tuple(s.median_ms for s in r.rounds)
        assert r.latency.median_ms == sorted(r.rounds_ms)[1]  # the median of the rounds' medians
        assert r.latency.min_ms == min(s.min_ms for s in r.rounds)
        assert r.run_to_run == pytest.approx((max(r.rounds_ms) - min(r.rounds_ms)) / sorted(r.rounds_ms)[1])
        doc = json.loads(json.dumps(r.to_dict(), allow_nan=False))
        assert doc["method"] == "inference" and len(doc["rounds_ms"]) == 3 and doc["latency_ms"]["n"] == 10
    (one,) = measure_interleaved({"a": files["ReLU"]}, 3, rounds=1).values()
    assert one.run_to_run is None and one.rounds_ms == (one.latency.median_ms,)


def test_measure_interleaved_order_is_seeded(tiny_ops: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = _files(tiny_ops)
    names = {str(p): n for n, p in files.items()}
    log: list[tuple[str, int]] = []

    def logged(path: Path, times: int, **kw: object) -> LatencyStats:
        log.append((names[str(path)], times))
        return LatencyStats.from_samples([0.1 * (len(log) % 3 + 1)] * times)

    monkeypatch.setattr(endtoend, "time_inference", logged)

    def order(seed: int) -> list[tuple[str, int]]:
        log.clear()
        measure_interleaved(files, 7, rounds=3, seed=seed)
        return list(log)

    first = order(0)
    rounds = [first[i : i + 3] for i in (0, 3, 6)]
    for r, chunk in enumerate(rounds):
        assert sorted(n for n, _ in chunk) == sorted(files)  # every model once a round
        assert [n for n, _ in chunk] == round_order(files, 0, r)
        assert {t for _, t in chunk} == {(3, 2, 2)[r]}  # 7 runs: 3 + 2 + 2
    assert len({tuple(n for n, _ in chunk) for chunk in rounds}) > 1  # not the same order every round
    assert order(0) == first  # reproducible
    assert order(1) != first  # another seed, another order


def test_measure_interleaved_failures(tiny_ops: Path, tmp_path: Path) -> None:
    files = _files(tiny_ops)
    bad = tmp_path / "bad.mnn"
    bad.write_bytes(b"not a model")
    with pytest.raises(MeteringError, match="could not load or prepare .*Check that"):
        time_inference(bad, 3)
    with pytest.raises(MeteringError, match="not found"):
        time_inference(tmp_path / "missing.mnn", 3)
    with pytest.raises(MeteringError, match="bad.mnn"):
        measure_interleaved({"ok": files["ReLU"], "bad": bad}, 2, rounds=2)
    errors: list[str] = []
    steps: list[tuple[str, int]] = []
    res = measure_interleaved(
        {"ok": files["ReLU"], "bad": bad},
        2,
        rounds=2,
        on_error=lambda name, exc: errors.append(name),
        on_step=lambda name, r: steps.append((name, r)),
    )
    assert list(res) == ["ok"] and errors == ["bad"]  # once: left out of the later rounds
    # every model's turn in every round is counted, the failed one's and its skipped turn included
    assert sorted(steps) == [("bad", 0), ("bad", 1), ("ok", 0), ("ok", 1)]
    assert [r for _, r in steps] == [0, 0, 1, 1]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"times": 0}, "times=0"),
        ({"times": 2.5}, "times=2.5"),
        ({"rounds": 0}, "rounds=0"),
        ({"rounds": True}, "rounds=True"),
        ({"times": 2, "rounds": 3}, "at most `times`"),
        ({"seed": "x"}, "seed='x'"),
        ({"warmup": -1}, "warmup=-1"),
        ({"method": "wall"}, "one of \\['inference', 'session'\\]"),
        ({"settings": {"backend": "CPU"}}, "RuntimeSettings"),
        ({"paths": {}}, "non-empty mapping"),
        ({"paths": ["a.mnn"]}, "non-empty mapping"),
        ({"paths": {1: "a.mnn"}}, "must be strings"),
    ],
)
def test_bad_arguments_are_metering_errors(tiny_ops: Path, kwargs: dict, match: str) -> None:
    args = {"paths": _files(tiny_ops), "times": 3, **kwargs}
    with pytest.raises(MeteringError, match=match):
        measure_interleaved(args.pop("paths"), args.pop("times"), **args)
    if set(kwargs) <= {"times", "warmup", "settings"}:
        with pytest.raises(MeteringError, match=match):
            time_inference(_files(tiny_ops)["ReLU"], **{"times": 3, **kwargs})


def test_measure_latency_methods(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = TinyNet()
    kept = tmp_path / "tiny.mnn"
    session = measure.measure_latency(model, TINY_SHAPE, 5, method="session", keep_mnn=kept)
    old = time_model(kept, 5)  # the old path: what measure_latency measured before
    assert type(session) is type(old) and session.to_dict().keys() == old.to_dict().keys() and session.n == old.n
    called: list[str] = []
    spy = lambda path, times, **kw: called.append(Path(path).name) or time_inference(path, times, **kw)  # noqa: E731
    monkeypatch.setattr(measure, "time_inference", spy)
    default = measure.measure_latency(model, TINY_SHAPE, 5, keep_mnn=kept)
    assert called == ["tiny.mnn"] and default.n == 5 and default.median_ms > 0  # the default: inference
    combined = measure.measure_latency(model, TINY_SHAPE, 6, rounds=3)
    assert combined.n == 6
    with pytest.raises(MeteringError, match="one of"):
        measure.measure_latency(model, TINY_SHAPE, 5, method="bare")  # type: ignore[arg-type]
    with pytest.raises(MeteringError, match="at most `times`"):
        measure.measure_latency(model, TINY_SHAPE, 2, rounds=3)


def test_measure_models_exports_each_once_and_interleaves(tmp_path: Path) -> None:
    res = measure.measure_models(
        {"narrow": (TinyNet(4), TINY_SHAPE), "wide": (TinyNet(16), TINY_SHAPE)}, 4, rounds=2, keep_mnn=tmp_path
    )
    assert list(res) == ["narrow", "wide"] and sorted(p.name for p in tmp_path.iterdir()) == [
        "model-0.mnn",
        "model-1.mnn",
    ]
    assert all(len(r.rounds_ms) == 2 and r.latency.n == 4 and r.run_to_run is not None for r in res.values())
    with pytest.raises(MeteringError, match="pair"):
        measure.measure_models({"x": TinyNet()}, 4, rounds=2)  # type: ignore[dict-item]


def test_evaluate_measures_interleaved_and_records_the_rounds(tiny_ops: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mmt_nas.report.evaluation as evaluation
    from mmt_nas.predict.predictor import LatencyPredictor

    calls: list[dict] = []
    real = evaluation.measure_interleaved

    def spy(paths, times, **kw):  # type: ignore[no-untyped-def]
        calls.append({"n": len(paths), "times": times, **kw})
        return real(paths, times, **kw)

    monkeypatch.setattr(evaluation, "measure_interleaved", spy)
    cases = [("tiny", TinyNet(), TINY_SHAPE), ("wide", TinyNet(width=16), TINY_SHAPE)]
    results = evaluation.evaluate(LatencyPredictor(tiny_ops), cases, times=4, repeats=3, profile_times=2)
    (call,) = calls  # one interleaved measurement of all the models
    assert call["n"] == 2 and call["times"] == 12 and call["rounds"] == 3 and call["method"] == "inference"
    for r in results:
        d = r.to_dict()
        assert len(d["run_medians_ms"]) == d["rounds"] == 3 and d["timing_method"] == "inference"
        assert d["run_to_run"] == pytest.approx((max(r.run_medians_ms) - min(r.run_medians_ms)) / r.measured_ms)
        assert d["run_to_run_cv"] is not None and d["within_run_cv"] is not None
        assert r.measured_ms == sorted(r.run_medians_ms)[1] and r.profile
    with pytest.raises(MeteringError, match="repeats=0"):
        evaluation.evaluate(LatencyPredictor(tiny_ops), cases, times=4, repeats=0)
