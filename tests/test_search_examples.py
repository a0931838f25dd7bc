"""Smoke test: both search examples run as written, in their --quick mode, in subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mmt_nas.report import load_model_specs

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(script: str, work: Path) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--quick", "--work-dir", str(work)],
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


def test_darts_latency_quick(tmp_path: Path) -> None:
    out = _run("darts_latency.py", tmp_path / "darts")
    assert "stronger latency loss -> faster architecture" in out
    assert "predicted" in out and "measured" in out
