"""Smoke test: both search examples run as written, in their --quick mode, in subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmt_nas.report.evaluation import load_model_specs

# The quick tier (`pytest -m "not slow"`) leaves these out:
# the search examples, run as written.
pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(script: str, work: Path, *args: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--quick", "--work-dir", str(work), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=work.parent,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_optuna_search_quick(tmp_path: Path) -> None:
    work = tmp_path / "optuna"
    out = _run("optuna_search.py", work)
    assert "feasible Pareto front" in out and "budget = median" in out
    assert (work / "pareto.png").stat().st_size > 1000
    log = json.loads((work / "search.json").read_text())
    assert log["directions"] == ["maximize", "minimize"] and len(log["trials"]) == 5
    assert all(t["predicted_latency_ms"] > 0 for t in log["trials"])
    if (work / "pareto_models.yaml").exists():  # the front can be empty if no feasible trial completed
        specs = load_model_specs(work / "pareto_models.yaml")
        assert specs and all(s.target.endswith("nas_space.py:build_net") for s in specs)


def test_optuna_search_in_sqlite_for_the_dashboard(tmp_path: Path) -> None:
    """The README's dashboard line: the example writes a SQLite study that optuna-dashboard shows."""
    import optuna
    import pytest

    pytest.importorskip("optuna_dashboard", reason="optuna-dashboard is not installed (the dashboard extra)")
    from optuna_dashboard import get_note

    from mmt_nas.integrations.optuna import FEASIBLE_ATTR, PREDICTED_ATTR, UPPER_ATTR, TrialRecord

    url = f"sqlite:///{tmp_path / 'search.db'}"
    out = _run("optuna_search.py", tmp_path / "optuna", "--storage", url, "--confidence", "0.9")
    assert f"watch the study:  optuna-dashboard {url}" in out
    study = optuna.load_study(study_name="optuna_search", storage=url)
    assert study.metric_names == ["accuracy", "latency_ms"]
    assert "P[latency <= budget] >= 0.9" in get_note(study)
    trials = [t for t in study.trials if PREDICTED_ATTR in t.user_attrs]
    assert len(trials) == 5
    assert all(t.user_attrs[UPPER_ATTR] > t.user_attrs[PREDICTED_ATTR] for t in trials)
    assert all(t.user_attrs[FEASIBLE_ATTR] == TrialRecord.from_trial(t).feasible for t in trials)
    storage = optuna.storages.RDBStorage(url)
    system_attrs = storage.get_study_system_attrs(storage.get_study_id_from_name("optuna_search"))
    assert any(k.startswith("dashboard:plot_data:") for k in system_attrs)  # the latency figure


def test_darts_latency_quick(tmp_path: Path) -> None:
    out = _run("darts_latency.py", tmp_path / "darts")
    assert "stronger latency loss -> faster architecture" in out
    assert "predicted" in out and "measured" in out
