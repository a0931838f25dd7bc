"""optuna-dashboard on a real search: a SQLite study run through LatencyConstraint on a real metered table,
served by optuna-dashboard's own WSGI app over HTTP, read through its JSON API as its web page reads it."""

from __future__ import annotations

import json
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import optuna
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from tinymods import chain  # noqa: E402

from mmt_nas.exceptions import SearchError  # noqa: E402
from mmt_nas.integrations.optuna import (  # noqa: E402
    ATTRIBUTES,
    BOUND_ATTR,
    BUDGET_ATTR,
    FEASIBLE_ATTR,
    GRAPH_ID,
    LOWER_ATTR,
    OVER_BUDGET_ATTR,
    PREDICTED_ATTR,
    UPPER_ATTR,
    LatencyConstraint,
    create_study,
    latency_figure,
    prepare_dashboard,
    save_latency_plot,
)
from mmt_nas.predict.predictor import LatencyPredictor  # noqa: E402

dashboard = pytest.importorskip("optuna_dashboard", reason="optuna-dashboard is not installed (the dashboard extra)")
SHAPE = [1, 3, 16, 16]
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # BruteForceSampler
optuna.logging.set_verbosity(optuna.logging.WARNING)


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        pass


@pytest.fixture()
def serve() -> Iterator[Any]:
    """Start optuna-dashboard's WSGI app for a storage URL on a free port; yield a JSON GET of a path."""
    servers = []

    def start(storage: str) -> Any:
        server = make_server("127.0.0.1", 0, dashboard.wsgi(storage), handler_class=_Quiet)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)

        def get(path: str) -> Any:
            with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}{path}", timeout=60) as response:
                assert response.status == 200
                return json.load(response)

        return get

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _search(storage: str, predictor: LatencyPredictor, budget: float, confidence: float | None) -> optuna.Study:
    """Every depth 0..4 once (brute force), objective = depth, a proxy for accuracy."""
    study = create_study(
        storage,
        study_name="dash",
        directions=["maximize", "minimize"],
        sampler=optuna.samplers.BruteForceSampler(seed=0),
    )
    constraint = LatencyConstraint(predictor, budget, confidence=confidence)
    prepare_dashboard(study, constraint, objective_names=["depth", "latency_ms"], note=True)

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        blocks = trial.suggest_int("blocks", 0, 4)
        return float(blocks), float(constraint(trial, chain(blocks), SHAPE))

    study.optimize(objective, n_trials=5)
    save_latency_plot(study, objective="depth")
    return study


def test_the_dashboard_lists_the_latency_of_every_trial(tiny_ops: Path, tmp_path: Path, serve: Any) -> None:
    predictor = LatencyPredictor(tiny_ops)
    predicted = [predictor.predict(chain(n), SHAPE) for n in range(5)]
    # Between chain(2)'s prediction and its 90% upper bound: feasible as a point, not as a chance constraint.
    budget = (float(predicted[2]) + predicted[2].upper(0.9)) / 2
    storage = f"sqlite:///{tmp_path / 'search.db'}"
    study = _search(storage, predictor, budget, confidence=0.9)
    get = serve(storage)

    (listed,) = [s for s in get("/api/studies")["study_summaries"] if s["study_name"] == "dash"]
    detail = get(f"/api/studies/{listed['study_id']}")
    assert detail["objective_names"] == ["depth", "latency_ms"]
    columns = {a["key"]: a["sortable"] for a in detail["union_user_attrs"]}
    for key in (PREDICTED_ATTR, BUDGET_ATTR, LOWER_ATTR, UPPER_ATTR, BOUND_ATTR, OVER_BUDGET_ATTR):
        assert columns[key] is True, key  # numeric: the trial table sorts and filters on it
    assert columns[FEASIBLE_ATTR] is False  # a bool: listed, not sorted (the note says to sort on the value)

    assert len(detail["trials"]) == 5
    for t in detail["trials"]:
        attrs = {a["key"]: a["value"] for a in t["user_attrs"]}
        blocks = int(t["params"][0]["param_external_value"])
        p = predicted[blocks]
        assert float(attrs[PREDICTED_ATTR]) == pytest.approx(float(p), rel=1e-9)
        lo, hi = p.interval(0.9)
        assert float(attrs[LOWER_ATTR]) == pytest.approx(lo, rel=1e-9)
        assert float(attrs[UPPER_ATTR]) == pytest.approx(hi, rel=1e-9)
        over = p.upper(0.9) - budget
        assert float(attrs[OVER_BUDGET_ATTR]) == pytest.approx(over, rel=1e-9)
        assert attrs[FEASIBLE_ATTR] == str(over <= 0)
    feasible = sorted(int(t["params"][0]["param_external_value"]) for t in detail["trials"] if _feasible(t))
    expected = [n for n in range(5) if predicted[n].upper(0.9) <= budget]
    assert feasible == expected and 2 not in expected

    # The study's note says what was constrained, on which table, and what each attribute means.
    body = detail["note"]["body"]
    assert f"{budget:.4g} ms" in body and "P[latency <= budget] >= 0.9" in body
    assert f"{len(predictor.table)} ops metered" in body
    for key in ATTRIBUTES:
        assert f"`{key}`" in body

    # The latency figure: feasible and infeasible trials, error bars from the intervals, the budget line.
    (graph,) = detail["plotly_graph_objects"]
    assert graph["id"] == GRAPH_ID
    figure = json.loads(graph["graph_object"])
    traces = {tr["name"]: tr for tr in figure["data"]}
    assert sorted(traces["infeasible"]["y"]) == [n for n in range(5) if n not in expected]
    assert sorted(traces.get("feasible", {}).get("y", [])) == expected
    i = traces["infeasible"]["y"].index(2)
    assert traces["infeasible"]["error_x"]["array"][i] == pytest.approx(predicted[2].interval(0.9)[1] - predicted[2])
    assert traces["infeasible"]["error_x"]["arrayminus"][i] == pytest.approx(
        predicted[2] - predicted[2].interval(0.9)[0]
    )
    assert figure["layout"]["shapes"][0]["x0"] == pytest.approx(budget)

    # Saved again after more trials, the figure is replaced, not added.
    save_latency_plot(study, objective=0)
    assert len(get(f"/api/studies/{listed['study_id']}")["plotly_graph_objects"]) == 1

    # Another worker's prepare_dashboard keeps a note a person edited; overwrite=True replaces it.
    dashboard.save_note(study, "## my notes\n")
    constraint = LatencyConstraint(predictor, budget, confidence=0.9)
    prepare_dashboard(study, constraint, objective_names=["depth", "latency_ms"], note=True)
    assert get(f"/api/studies/{listed['study_id']}")["note"]["body"] == "## my notes\n"
    prepare_dashboard(study, constraint, note=True, overwrite=True)
    assert get(f"/api/studies/{listed['study_id']}")["note"]["body"] == body


def test_the_figure_follows_the_latency_constraint_not_the_others(tiny_ops: Path) -> None:
    """A trial within its latency budget but over another constraint (memory, say) is drawn feasible: the
    figure is about latency. Its hover says by how much it is within budget."""
    study = optuna.create_study(directions=["maximize", "minimize"])
    predictor = LatencyPredictor(tiny_ops)
    budget = 2 * float(predictor.predict(chain(1), SHAPE))
    constraint = LatencyConstraint(predictor, budget)

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        latency = constraint(trial, chain(trial.suggest_int("blocks", 1, 1)), SHAPE)
        if hasattr(trial, "set_constraint"):
            trial.set_constraint("memory_mb", 1.0)  # infeasible by memory
        return 1.0, float(latency)

    study.optimize(objective, n_trials=1)
    (trial,) = study.trials
    assert trial.user_attrs[FEASIBLE_ATTR] is True
    figure = latency_figure(study)
    (trace,) = figure.data
    assert trace.name == "feasible" and "within budget by" in trace.text[0]


def _feasible(trial: dict[str, Any]) -> bool:
    return {a["key"]: a["value"] for a in trial["user_attrs"]}[FEASIBLE_ATTR] == "True"


def test_dashboard_inputs_are_checked(tiny_ops: Path) -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    constraint = LatencyConstraint(LatencyPredictor(tiny_ops), 1.0)
    with pytest.raises(SearchError, match=r"one non-empty name per objective \(2 for this study\).*\['acc'\]"):
        prepare_dashboard(study, constraint, objective_names=["acc"])
    with pytest.raises(SearchError, match="no completed trial with a predicted latency"):
        save_latency_plot(study)
    study.optimize(lambda t: (1.0, float(constraint(t, chain(t.suggest_int("b", 0, 1)), SHAPE))), n_trials=1)
    with pytest.raises(SearchError, match=r"objective must be an objective's index \(0\.\.1\).*'accuracy'"):
        save_latency_plot(study, objective="accuracy")
    text = prepare_dashboard(study, constraint, note=False)  # in memory, no note saved
    assert "a point constraint" in text and "Pruned before training:** never" in text
    assert f"`{OVER_BUDGET_ATTR}`" in text and f"`{BOUND_ATTR}`" not in text  # a point constraint stores no bound
