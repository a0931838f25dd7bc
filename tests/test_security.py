"""Security guards: a whole pipeline starts no process, opens no connection and never imports MNN.tools (which runs
pip and sends telemetry when imported); no unsafe deserialisation in the package; YAML only through yaml.safe_load."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import HERE, ROOT, TINY_SHAPE

#: Audit events (PEP 578) the pipeline must never raise, by name or name prefix (``os.exec`` covers
#: ``os.execv``... which all raise ``os.exec``; ``os.spawn``/``os.posix_spawn`` likewise).
FORBIDDEN_EVENTS = (
    "subprocess.Popen",
    "os.system",
    "os.exec",
    "os.posix_spawn",
    "os.spawn",
    "os.fork",
    "os.forkpty",
    "socket.connect",
    "socket.getaddrinfo",
    "socket.gethostbyname",
    "socket.gethostbyaddr",
    "socket.sendto",
)

PIPELINE = textwrap.dedent(
    """
    import atexit, json, sys, traceback

    FORBIDDEN = {forbidden!r}
    seen = []

    def hook(event, args):
        if event == "import":
            name = args[0] if args and isinstance(args[0], str) else ""
            if not (name == "MNN.tools" or name.startswith("MNN.tools.") or "aliyun" in name):
                return
        elif not any(event == f or event.startswith(f + "_") or (f in ("os.exec", "os.spawn") and
                     event.startswith(f)) for f in FORBIDDEN):
            return
        seen.append({{"event": event, "args": repr(args)[:300],
                      "stack": "".join(traceback.format_stack(limit=14)[:-1])}})
        raise PermissionError(f"mmt_nas security test: forbidden audit event {{event}} {{repr(args)[:200]}}")

    def report():
        print("AUDIT-EVENTS " + json.dumps(seen))
        bad = sorted(m for m in sys.modules if m == "MNN.tools" or m.startswith("MNN.tools.") or "aliyun" in m)
        print("AUDIT-MODULES " + json.dumps(bad))

    atexit.register(report)
    sys.addaudithook(hook)

    # multiprocessing's spawn and forkserver start children through _posixsubprocess.fork_exec directly, which
    # raises no audit event (subprocess.Popen's is raised in Python before it): guard that door too
    import _posixsubprocess

    def fork_exec(*args, **kwargs):
        seen.append({{"event": "_posixsubprocess.fork_exec", "args": repr(args[:2])[:300],
                      "stack": "".join(traceback.format_stack(limit=14)[:-1])}})
        raise PermissionError("mmt_nas security test: forbidden _posixsubprocess.fork_exec")

    _posixsubprocess.fork_exec = fork_exec

    sys.path.insert(0, {here!r})
    import optuna
    from tinymods import TinyNet

    from mmt_nas.converter import generate_ops_list
    from mmt_nas.predict.fallback import LatencyRegressor
    from mmt_nas.integrations.optuna import LatencyConstraint
    from mmt_nas.meter import meter_ops
    from mmt_nas.space.describe import space_from_model
    from mmt_nas.space.opspace import dump_space
    from mmt_nas.parser import predict_latency
    from mmt_nas.predict.predictor import LatencyPredictor
    from mmt_nas.report import Report, evaluate

    work = {work!r}
    shape = {shape!r}
    dump_space(space_from_model(TinyNet(), shape), work + "/ops.yaml")
    result = generate_ops_list(work + "/ops.yaml", work + "/ops")
    assert not result.failed, result.failed
    table = meter_ops(work + "/ops", times=3)
    print("predicted", float(predict_latency(TinyNet(), work + "/ops", shape)))
    predictor = LatencyPredictor(table, on_missing="fallback", fallback=LatencyRegressor().fit(table))
    print("fallback", float(predictor.predict(TinyNet(width=12), shape)))  # not in the table: the regressor
    results = evaluate(predictor, [("tiny", TinyNet(), shape), ("wide", TinyNet(width=12), shape)],
                       times=3, repeats=1, profile_times=2)
    assert all(r.ok for r in results), [r.error for r in results]
    written = Report(results, table, {{"times": 3}}).write(work + "/report", plots=True)
    assert any(str(p).endswith(".png") for p in written.values()), written
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    constraint = LatencyConstraint(predictor, budget_ms=float(table.get(table.keys()[0]).latency_ms) * 50)

    def objective(trial):
        width = trial.suggest_int("width", 4, 16, step=4)
        constraint(trial, TinyNet(width=width), shape)
        return float(width)

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    study.optimize(objective, n_trials=6)
    print("trials", len(study.trials))
    """
)


def test_whole_pipeline_never_imports_mnn_tools_runs_processes_or_opens_sockets(tmp_path: Path) -> None:
    """space → generate → meter → predict → fallback → report with plots → an Optuna study, under an audit hook."""
    code = PIPELINE.format(forbidden=FORBIDDEN_EVENTS, here=str(HERE), work=str(tmp_path), shape=TINY_SHAPE)
    env = {**os.environ, "MPLCONFIGDIR": str(tmp_path / "mpl"), "MPLBACKEND": "Agg"}
    # The one process a library starts: matplotlib, the first time it is imported with a given config folder,
    # builds its font cache and runs `fc-list --help` and `fc-list --format=...` (fontconfig) to find system
    # fonts (matplotlib/font_manager.py, _get_fontconfig_fonts). That is matplotlib's one-time setup, not
    # mmt_nas's doing, and it starts no network connection. It is done here beforehand, outside the hook, in
    # the private config folder the pipeline then uses; the pipeline itself must start nothing at all.
    warm = subprocess.run(
        [sys.executable, "-c", "import matplotlib.font_manager"], env=env, capture_output=True, text=True, timeout=300
    )
    assert warm.returncode == 0, warm.stderr
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=900, env=env)
    events = next(
        (json.loads(line.split(" ", 1)[1]) for line in out.stdout.splitlines() if line.startswith("AUDIT-EVENTS ")),
        None,
    )
    modules = next(
        (json.loads(line.split(" ", 1)[1]) for line in out.stdout.splitlines() if line.startswith("AUDIT-MODULES ")),
        None,
    )
    shown = "\n".join(f"{e['event']} {e['args']}\n{e['stack']}" for e in events or [])
    assert events == [], f"forbidden audit events:\n{shown}\nstderr:\n{out.stderr[-3000:]}"
    assert modules == [], f"MNN.tools or aliyun modules were imported: {modules}"
    assert out.returncode == 0, out.stderr[-3000:]
    assert "trials 6" in out.stdout and "fallback" in out.stdout


def test_the_audit_hook_sees_what_it_forbids(tmp_path: Path) -> None:
    """The guard is live: the same hook catches a process start, a DNS lookup and an MNN.tools import."""
    code = PIPELINE.split("sys.path.insert(0,")[0].format(forbidden=FORBIDDEN_EVENTS) + textwrap.dedent(
        """
        import os, socket, subprocess
        from multiprocessing.util import spawnv_passfds
        for attempt in (lambda: subprocess.run(["true"]), lambda: os.system("true"),
                        lambda: socket.getaddrinfo("localhost", 80), lambda: __import__("MNN.tools"),
                        lambda: spawnv_passfds(sys.executable, [sys.executable, "-c", "pass"], ())):
            try:
                attempt()
            except Exception:
                pass
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    events = next(
        json.loads(line.split(" ", 1)[1]) for line in out.stdout.splitlines() if line.startswith("AUDIT-EVENTS ")
    )
    assert [e["event"] for e in events] == [
        "subprocess.Popen",
        "os.system",
        "socket.getaddrinfo",
        "import",
        "_posixsubprocess.fork_exec",
    ]
    assert "MNN.tools" in events[3]["args"] and "MNN.tools" not in sys.modules


def test_package_has_no_unsafe_calls() -> None:
    pattern = re.compile(
        r"pickle|joblib|(?<![.\w])eval\(|(?<![.\w])exec\(|yaml\.load\(|unsafe_load|MNN\.tools|import MNN\.tools"
    )
    hits = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in (ROOT / "mmt_nas").rglob("*.py")
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line) and not line.lstrip().startswith("#") and "never" not in line
    ]
    assert hits == []


def test_every_yaml_read_goes_through_safe_load() -> None:
    """Every use of the yaml module in the package is safe_load (reading) or safe_dump (writing)."""
    allowed = {"safe_load", "safe_dump", "YAMLError", "MarkedYAMLError"}
    uses = []
    for path in sorted((ROOT / "mmt_nas").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "yaml":
                uses.append((f"{path.relative_to(ROOT)}:{node.lineno}", node.attr))
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "yaml":
                uses.append((f"{path.relative_to(ROOT)}:{node.lineno}", f"from {node.module} import ..."))
            elif isinstance(node, ast.Import) and any(a.name == "yaml" and a.asname for a in node.names):
                uses.append((f"{path.relative_to(ROOT)}:{node.lineno}", "import yaml as ..."))
    bad = [(where, what) for where, what in uses if what not in allowed]
    assert bad == [], f"yaml used otherwise than through safe_load/safe_dump: {bad}"
    assert any(what == "safe_load" for _, what in uses)  # the package does read YAML, and this test saw it
    loaders = [
        line
        for p in (ROOT / "mmt_nas").rglob("*.py")
        for line in p.read_text().splitlines()
        if re.search(r"\bLoader\b|FullLoader|UnsafeLoader|CLoader", line)
    ]
    assert loaders == []
