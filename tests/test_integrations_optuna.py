"""Optuna integration: real studies (TPE, NSGA-II, GP; single and multi-objective; ask-and-tell; SQLite
shared by two real worker processes) on a real metered table; penalties against hand-computed values.

Run as a script, this file is the worker of the two-process test.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from tinymods import chain  # noqa: E402

from mmt_nas.integrations import MissingExtraError, SearchError, require  # noqa: E402
from mmt_nas.integrations.optuna import (  # noqa: E402
    BUDGET_ATTR,
    PREDICTED_ATTR,
    LatencyConstraint,
    SearchLog,
    hinge_penalty,
    linear_penalty,
    mnasnet_penalty,
)
from mmt_nas.predict.predictor import LatencyPredictor  # noqa: E402
from mmt_nas.report.evaluation import load_model_specs  # noqa: E402

SHAPE = [1, 3, 16, 16]
optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def predictor(tiny_ops: Path) -> LatencyPredictor:
    return LatencyPredictor(tiny_ops)


@pytest.fixture(scope="module")
def latencies(predictor: LatencyPredictor) -> list[float]:
    """Predicted latency of chain(0..4); strictly increasing."""
    lats = [float(predictor.predict(chain(n), SHAPE)) for n in range(5)]
    assert all(a < b for a, b in zip(lats, lats[1:]))
    return lats


def _budget(latencies: list[float]) -> float:
    """Between chain(2) and chain(3): 0, 1 and 2 blocks are feasible."""
    return (latencies[2] + latencies[3]) / 2


def _check_trials(study: optuna.Study, latencies: list[float], budget: float) -> None:
    for t in study.trials:
        predicted = latencies[t.params["blocks"]]
        assert t.user_attrs[PREDICTED_ATTR] == pytest.approx(predicted, rel=1e-12)
        assert t.user_attrs[BUDGET_ATTR] == budget
        assert t.constraints == pytest.approx({"latency_ms": predicted - budget}, rel=1e-12)


SAMPLERS = {
    "tpe": lambda: optuna.samplers.TPESampler(seed=1, n_startup_trials=4),
    "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=1, population_size=4),
    "gp": lambda: optuna.samplers.GPSampler(seed=1, n_startup_trials=4),
}


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_single_objective_best_trial_is_the_best_feasible(
    sampler: str, predictor: LatencyPredictor, latencies: list[float]
) -> None:
    budget = _budget(latencies)
    constraint = LatencyConstraint(predictor, budget)

    def objective(trial: optuna.Trial) -> float:
        blocks = trial.suggest_int("blocks", 0, 4)
        constraint(trial, chain(blocks), SHAPE)
        return float(blocks)  # "accuracy" grows with depth; only latency holds it back

    study = optuna.create_study(direction="maximize", sampler=SAMPLERS[sampler]())
    study.optimize(objective, n_trials=10)
    _check_trials(study, latencies, budget)
    feasible = [t.params["blocks"] for t in study.trials if t.params["blocks"] <= 2]
    assert feasible and any(t.params["blocks"] > 2 for t in study.trials)  # both kinds were seen
    assert study.best_trial.params["blocks"] == max(feasible)  # Optuna skips the infeasible deeper nets


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_multi_objective_front_is_feasible_and_matches_the_log(
    sampler: str, predictor: LatencyPredictor, latencies: list[float], tmp_path: Path
) -> None:
    budget = _budget(latencies)
    constraint = LatencyConstraint(predictor, budget)

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        blocks = trial.suggest_int("blocks", 0, 4)
        return float(blocks), float(constraint(trial, chain(blocks), SHAPE))

    log = SearchLog(tmp_path / "search.json")
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=SAMPLERS[sampler]())
    study.optimize(objective, n_trials=10, callbacks=[log])
    _check_trials(study, latencies, budget)
    front = {t.number for t in study.best_trials}
    assert front and all(t.params["blocks"] <= 2 for t in study.best_trials)
    assert {r.number for r in log.pareto_front()} == front
    doc = json.loads((tmp_path / "search.json").read_text())
    assert doc["schema"] == "mmt_nas/search-log" and doc["directions"] == ["maximize", "minimize"]
    assert [d["number"] for d in doc["trials"]] == [t.number for t in study.trials]
    for d, t in zip(doc["trials"], study.trials):
        assert d["predicted_latency_ms"] == t.user_attrs[PREDICTED_ATTR]
        assert d["feasible"] == (t.params["blocks"] <= 2) and d["params"] == t.params


def test_ask_and_tell_with_pruning_before_training(predictor: LatencyPredictor, latencies: list[float]) -> None:
    budget = _budget(latencies)
    constraint = LatencyConstraint(predictor, budget, prune_factor=1.0)
    study = optuna.create_study(directions=["maximize", "minimize"])
    trained: list[int] = []
    for blocks in range(5):
        study.enqueue_trial({"blocks": blocks})
        trial = study.ask()
        assert trial.suggest_int("blocks", 0, 4) == blocks
        try:
            latency = constraint(trial, chain(blocks), SHAPE)
        except optuna.TrialPruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        trained.append(blocks)  # training would happen here
        study.tell(trial, [float(blocks), float(latency)])
    assert trained == [0, 1, 2]
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * 3 + [optuna.trial.TrialState.PRUNED] * 2
    for blocks, t in enumerate(study.trials):  # pruned trials keep their prediction and constraint
        assert t.user_attrs[PREDICTED_ATTR] == pytest.approx(latencies[blocks], rel=1e-12)
        assert t.constraints["latency_ms"] == pytest.approx(latencies[blocks] - budget, rel=1e-12)


def test_objective_pruned_before_training_and_the_sampler_sees_the_constraint(
    predictor: LatencyPredictor, latencies: list[float]
) -> None:
    budget = _budget(latencies)
    constraint = LatencyConstraint(predictor, budget, prune_factor=1.05)
    trained: list[int] = []

    def objective(trial: optuna.Trial) -> float:
        blocks = trial.suggest_int("blocks", 0, 4)
        constraint(trial, chain(blocks), SHAPE)
        trained.append(trial.number)
        return float(blocks)

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=3, n_startup_trials=5))
    study.optimize(objective, n_trials=12)
    far = {n for n in range(5) if latencies[n] > 1.05 * budget}
    assert far
    for t in study.trials:
        pruned = t.params["blocks"] in far
        assert (t.state == optuna.trial.TrialState.PRUNED) == pruned
        assert (t.number in trained) == (not pruned)  # pruned trials never reached training
        assert (t.constraints["latency_ms"] > 0) == (t.params["blocks"] > 2)
    assert any(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)


def test_constraints_func_for_optuna_4(predictor: LatencyPredictor, latencies: list[float]) -> None:
    budget = _budget(latencies)
    constraint = LatencyConstraint(predictor, budget)
    study = optuna.create_study(direction="maximize")
    for blocks in (1, 4):
        trial = study.ask()
        constraint.record(trial, latencies[blocks])
        study.tell(trial, 0.0)
    bare = study.ask()
    study.tell(bare, 0.0)
    values = [constraint.constraints_func(t) for t in study.trials]
    assert values[0] == pytest.approx((latencies[1] - budget,)) and values[1] == pytest.approx((latencies[4] - budget,))
    assert values[2] == (math.inf,)  # finished without a prediction: infeasible, never silently fine
    with pytest.warns(FutureWarning):  # Optuna 5 still accepts it, deprecated
        sampler = optuna.samplers.TPESampler(constraints_func=constraint.constraints_func, n_startup_trials=1)
    study = optuna.create_study(sampler=sampler)

    def objective(trial: optuna.Trial) -> float:
        constraint.record(trial, latencies[trial.suggest_int("blocks", 0, 4)])
        return 0.0

    study.optimize(objective, n_trials=2)
    assert all(t.constraints["0"] == t.constraints["latency_ms"] for t in study.trials)  # both paths agree


@pytest.mark.parametrize(
    ("fn", "args", "kwargs", "expected"),
    [
        (hinge_penalty, (0.9, 12.0, 10.0), {"lam": 0.5}, 0.8),  # 0.9 - 0.5 * 0.2
        (hinge_penalty, (0.9, 8.0, 10.0), {"lam": 0.5}, 0.9),  # within budget: untouched
        (hinge_penalty, (0.3, 15.0, 10.0), {"lam": 2.0, "direction": "minimize"}, 1.3),  # 0.3 + 2 * 0.5
        (linear_penalty, (0.9, 5.0, 10.0), {"lam": 0.1}, 0.85),
        (linear_penalty, (0.9, 5.0, 10.0), {"lam": 0.1, "direction": "minimize"}, 0.95),
        (mnasnet_penalty, (0.8, 20.0, 10.0), {}, 0.8 * 0.9526379),  # 2 ** -0.07 = 0.9526379
        (mnasnet_penalty, (0.8, 5.0, 10.0), {}, 0.8 * 1.0497166),  # 0.5 ** -0.07 = 1.0497166
        (mnasnet_penalty, (0.8, 5.0, 10.0), {"alpha": 0.0, "beta": -1.0}, 0.8),  # hard: free within budget
        (mnasnet_penalty, (0.8, 20.0, 10.0), {"alpha": 0.0, "beta": -1.0}, 0.4),  # hard: 0.8 * 2 ** -1
        (mnasnet_penalty, (0.2, 20.0, 10.0), {"direction": "minimize"}, 0.2 * 1.0497166),  # 2 ** 0.07
    ],
)
def test_penalties_match_hand_computed_values(fn: Any, args: tuple, kwargs: dict, expected: float) -> None:
    assert fn(*args, **kwargs) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: hinge_penalty(1.0, 5.0, 0.0), "budget_ms must be a finite number > 0"),
        (lambda: hinge_penalty(1.0, 5.0, 10.0, direction="up"), "direction must be 'maximize' or 'minimize'"),
        (lambda: linear_penalty(1.0, -1.0, 10.0), "latency_ms must be a finite number >= 0"),
        (lambda: mnasnet_penalty(-0.5, 5.0, 10.0), "must be >= 0, but got objective=-0.5"),
        (lambda: mnasnet_penalty(0.5, 5.0, 10.0, alpha=0.07), "alpha must be a finite number <= 0"),
    ],
)
def test_penalty_errors_state_the_rule(call: Any, match: str) -> None:
    with pytest.raises(SearchError, match=match):
        call()


def test_constraint_arguments_are_checked(predictor: LatencyPredictor) -> None:
    with pytest.raises(SearchError, match="budget_ms must be a finite number > 0"):
        LatencyConstraint(predictor, 0)
    with pytest.raises(SearchError, match="prune_factor must be >= 1"):
        LatencyConstraint(predictor, 1.0, prune_factor=0.5)


def test_model_list_for_the_report(predictor: LatencyPredictor, latencies: list[float], tmp_path: Path) -> None:
    budget = _budget(latencies)
    constraint = LatencyConstraint(predictor, budget)
    study = optuna.create_study(directions=["maximize", "minimize"])
    log = SearchLog()
    for blocks in range(5):
        study.enqueue_trial({"blocks": blocks})
        trial = study.ask()
        trial.suggest_int("blocks", 0, 4)
        study.tell(trial, [float(blocks), float(constraint(trial, chain(blocks), SHAPE))])
        log(study, study.trials[-1])
    path = log.write_models(tmp_path / "models.yaml", lambda p: ("tinymods:TinyBlock", {"channels": 8}), [1, 8, 16, 16])
    specs = load_model_specs(path)
    assert [s.name for s in specs] == ["trial-0", "trial-1", "trial-2"]  # the feasible front (a trade-off)
    assert specs[0].kwargs == {"channels": 8} and specs[0].input_shape == (1, 8, 16, 16)
    import yaml

    entries = yaml.safe_load(path.read_text())["models"]
    assert [e["predicted_latency_ms"] for e in entries] == pytest.approx(latencies[:3], rel=1e-12)
    assert float(predictor.predict(specs[0].build(), specs[0].input_shape)) > 0
    assert (
        len(
            load_model_specs(
                log.write_models(
                    tmp_path / "all.yaml",
                    lambda p: ("tinymods:TinyBlock", {"channels": 8}),
                    [1, 8, 16, 16],
                    which="all",
                )
            )
        )
        == 5
    )
    assert SearchLog.from_study(study).to_dict() == log.to_dict()
    with pytest.raises(SearchError, match="which must be"):
        log.write_models(tmp_path / "x.yaml", lambda p: ("a:b", {}), [1], which="best")


def test_two_worker_processes_share_one_sqlite_storage(
    tiny_ops: Path, predictor: LatencyPredictor, latencies: list[float], tmp_path: Path
) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    budget = _budget(latencies)
    optuna.create_study(study_name="shared", storage=storage, directions=["maximize", "minimize"])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = [
        subprocess.Popen(
            [sys.executable, str(Path(__file__)), storage, str(tiny_ops), str(budget), str(seed), "4"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=HERE,
        )
        for seed in (1, 2)
    ]
    reports = []
    for w in workers:
        out, err = w.communicate(timeout=240)
        assert w.returncode == 0, err
        reports.append(json.loads(out.strip().splitlines()[-1]))
    assert [r["tables_seen"] for r in reports] == [1, 1]  # a new constraint per trial, one table load per process
    study = optuna.load_study(study_name="shared", storage=storage)
    assert len(study.trials) == 8
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert {t.user_attrs["pid"] for t in study.trials} == {r["pid"] for r in reports}
    _check_trials(study, latencies, budget)
    log = SearchLog.from_study(study)
    assert len(log.records) == 8 and all(r.feasible == (r.params["blocks"] <= 2) for r in log.records)


def _worker(storage: str, table: str, budget: float, seed: int, n_trials: int) -> None:
    rdb = optuna.storages.RDBStorage(storage, engine_kwargs={"connect_args": {"timeout": 60}})
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=2)
    study = optuna.load_study(study_name="shared", storage=rdb, sampler=sampler)
    tables: set[int] = set()

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        constraint = LatencyConstraint(table, budget)  # as a worker that builds it per trial would
        tables.add(id(constraint.predictor.table))
        blocks = trial.suggest_int("blocks", 0, 4)
        trial.set_user_attr("pid", os.getpid())
        return float(blocks), float(constraint(trial, chain(blocks), SHAPE))

    study.optimize(objective, n_trials=n_trials)
    print(json.dumps({"pid": os.getpid(), "tables_seen": len(tables)}))


def test_missing_extra_names_it() -> None:
    with pytest.raises(MissingExtraError, match=r"mmt-nas\[optuna\]"):
        require("mmt_nas_no_such_module", "optuna")
    with pytest.raises(ImportError):  # still catchable as the built-in
        require("mmt_nas_no_such_module", "optuna")


def test_importing_the_integration_does_not_import_optuna() -> None:
    code = "import sys, mmt_nas.integrations.optuna, mmt_nas.integrations.keys; print('optuna' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_chance_constraint_rejects_what_the_point_constraint_accepts(
    predictor: LatencyPredictor, latencies: list[float], tmp_path: Path
) -> None:
    """Budget just above chain(2)'s point prediction: the point constraint accepts chain(2); at confidence 0.9
    its upper bound is over budget, so the study marks it infeasible and the best feasible trial is chain(1)
    (whose 90% bound is under the budget). The log and the trials carry the interval and the bound."""
    from mmt_nas.integrations.optuna import BOUND_ATTR, CONFIDENCE_ATTR, LOWER_ATTR, UPPER_ATTR

    p1, p2 = (predictor.predict(chain(n), SHAPE) for n in (1, 2))
    budget = float(p2) * 1.02
    assert p2.upper(0.9) > budget > float(p2) and p1.upper(0.9) < budget  # the case this test is about

    def study_with(confidence: float | None) -> optuna.Study:
        constraint = LatencyConstraint(predictor, budget, confidence=confidence)

        def objective(trial: optuna.Trial) -> float:
            blocks = trial.suggest_int("blocks", 0, 4)
            constraint(trial, chain(blocks), SHAPE)
            return float(blocks)

        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.BruteForceSampler(seed=0))
        study.optimize(objective, n_trials=5)
        return study

    point, chance = study_with(None), study_with(0.9)
    assert point.best_trial.params["blocks"] == 2
    assert chance.best_trial.params["blocks"] == 1
    two = next(t for t in chance.trials if t.params["blocks"] == 2)
    assert two.user_attrs[BOUND_ATTR] == pytest.approx(p2.upper(0.9))
    assert two.user_attrs[CONFIDENCE_ATTR] == 0.9
    assert two.constraints["latency_ms"] == pytest.approx(p2.upper(0.9) - budget) and two.constraints["latency_ms"] > 0
    assert (two.user_attrs[LOWER_ATTR], two.user_attrs[UPPER_ATTR]) == pytest.approx(p2.interval(0.9))
    record = next(r for r in SearchLog.from_study(chance).records if r.number == two.number)
    assert record.feasible is False and record.confidence == 0.9 and record.interval_ms is not None
    doc = json.loads(SearchLog.from_study(chance).write(tmp_path / "log.json").read_text())
    assert any(t["bound_ms"] == pytest.approx(p2.upper(0.9)) for t in doc["trials"])
    four_x = LatencyConstraint(predictor, budget, confidence=0.9)
    assert four_x.constraints_func(two) == pytest.approx((p2.upper(0.9) - budget,))
    with pytest.raises(SearchError, match="confidence"):
        LatencyConstraint(predictor, budget, confidence=1.0)
    with pytest.raises(SearchError, match="plain number"):
        four_x.record(optuna.create_study().ask(), 1.0)
