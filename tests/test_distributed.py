"""Distributed search: real worker processes sharing one study on a real PostgreSQL server (and SQLite).

A module fixture starts a private PostgreSQL server (initdb in a temporary folder, listening on
127.0.0.1 only, on a free port, trust auth; as the ``postgres`` user when the tests run as root) and
removes it afterwards. Without PostgreSQL binaries those tests are skipped with the reason.
The workers are ``tests/search_worker.py`` processes.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from search_worker import DIRECTIONS, SHAPE, chain  # noqa: E402

from mmt_nas.integrations import MissingExtraError, SearchError  # noqa: E402
from mmt_nas.integrations.optuna import (  # noqa: E402
    BUDGET_ATTR,
    PREDICTED_ATTR,
    SearchLog,
    create_study,
    make_storage,
)
from mmt_nas.predict.predictor import LatencyPredictor  # noqa: E402

# The quick tier (`pytest -m "not slow"`) leaves these out:
# search workers on a private PostgreSQL server, one killed.
pytestmark = pytest.mark.slow

optuna.logging.set_verbosity(optuna.logging.WARNING)
WORKER = HERE / "search_worker.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
HEARTBEAT, GRACE = 1, 3  # seconds: a killed worker's trial counts as dead 3 s after its last heartbeat


# -- a private PostgreSQL server -------------------------------------------------------------------


def _postgres_bindir() -> Path | None:
    """The folder holding initdb, pg_ctl and postgres: pg_config's, Debian's, or the PATH's."""
    candidates: list[Path] = []
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        if out.returncode == 0:
            candidates.append(Path(out.stdout.strip()))
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    if shutil.which("initdb"):
        candidates.append(Path(shutil.which("initdb")).resolve().parent)  # type: ignore[arg-type]
    for folder in candidates:
        if all((folder / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return folder
    return None


def _skip(reason: str) -> None:
    print(f"SKIP test_distributed PostgreSQL tests: {reason}", file=sys.stderr)
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """The URL of a database on a PostgreSQL server of its own, for this module's tests."""
    bindir = _postgres_bindir()
    if bindir is None:
        _skip(
            "no PostgreSQL binaries (initdb, pg_ctl, postgres) found via pg_config, /usr/lib/postgresql/*/bin "
            "or PATH; install the postgresql package (.ci/run does)"
        )
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        if shutil.which("runuser") is None:
            _skip("running as root, and runuser (to run PostgreSQL as the postgres user) is missing")
        try:
            import pwd

            pg_user = pwd.getpwnam("postgres")
        except KeyError:
            _skip("running as root, and there is no 'postgres' system user to run PostgreSQL as")
        as_user = ["runuser", "-u", "postgres", "--"]
    base = Path(tempfile.mkdtemp(prefix="mmt_nas_pg."))  # short: the unix socket path must fit 107 bytes
    if as_user:
        os.chown(base, pg_user.pw_uid, pg_user.pw_gid)
    data, log = base / "data", base / "server.log"

    def run(*cmd: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*as_user, *cmd], capture_output=True, text=True, timeout=120)

    started = False
    try:
        out = run(
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        assert out.returncode == 0, f"initdb failed: {out.stdout}\n{out.stderr}"
        for _ in range(3):  # another process may take the free port between our check and the start
            port = _free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c fsync=off "
                "-c synchronous_commit=off -c max_connections=60"
            )
            out = run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o", options, "start")
            if out.returncode == 0:
                started = True
                break
        assert started, f"pg_ctl start failed: {out.stdout}\n{out.stderr}\n{log.read_text() if log.exists() else ''}"
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE search")
        conn.close()
        yield f"postgresql://postgres@127.0.0.1:{port}/search"
    finally:
        if started:
            stop = run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "30", "stop")
            if stop.returncode != 0:
                run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)


# -- helpers ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def latencies(tiny_ops: Path) -> list[float]:
    """Predicted latency of chain(0..4), computed here, independently of the workers."""
    predictor = LatencyPredictor(tiny_ops)
    lats = [float(predictor.predict(chain(n), SHAPE)) for n in range(5)]
    assert all(a < b for a, b in zip(lats, lats[1:]))
    return lats


def _budget(latencies: list[float]) -> float:
    """Between chain(2) and chain(3): 0, 1 and 2 blocks are feasible."""
    return (latencies[2] + latencies[3]) / 2


def _worker(storage: str, study: str, table: Path, budget: float, trials: int, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            str(WORKER),
            "--storage",
            storage,
            "--study",
            study,
            "--table",
            str(table),
            "--budget",
            repr(budget),
            "--trials",
            str(trials),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        cwd=HERE,
    )


def _report(proc: subprocess.Popen[str]) -> dict:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def _check_prediction(t: optuna.trial.FrozenTrial, latencies: list[float], budget: float) -> None:
    predicted = latencies[t.params["blocks"]]
    assert t.user_attrs[PREDICTED_ATTR] == pytest.approx(predicted, rel=1e-12)
    assert t.user_attrs[BUDGET_ATTR] == budget
    assert t.constraints == pytest.approx({"latency_ms": predicted - budget}, rel=1e-12)


def _storage_url(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if kind == "postgresql":
        return request.getfixturevalue("postgres_url")
    return f"sqlite:///{tmp_path / 'study.db'}"


# -- tests ------------------------------------------------------------------------------------------


def test_four_workers_share_one_postgresql_study(postgres_url: str, tiny_ops: Path, latencies: list[float]) -> None:
    budget, per_worker = _budget(latencies), 5
    over = ("--enqueue", "4", "--enqueue", "3")  # over budget for sure: the feasibility checks below then bind
    workers = [
        _worker(postgres_url, "four", tiny_ops, budget, per_worker, "--seed", str(seed), *(over if seed == 0 else ()))
        for seed in range(4)
    ]
    reports = [_report(w) for w in workers]  # all four started together: the first creates the study
    study = optuna.load_study(study_name="four", storage=make_storage(postgres_url))
    trials = study.get_trials()
    ran = [n for r in reports for n in r["trials"]]
    assert [len(r["trials"]) for r in reports] == [per_worker] * 4
    assert sorted(ran) == list(range(4 * per_worker)) == [t.number for t in trials]  # none lost, none twice
    by_number = {t.number: t for t in trials}
    for r in reports:
        assert {by_number[n].user_attrs["pid"] for n in r["trials"]} == {r["pid"]}  # each ran by who reported it
    assert len({r["pid"] for r in reports}) == 4
    for t in trials:
        assert t.state == optuna.trial.TrialState.COMPLETE
        _check_prediction(t, latencies, budget)
    front = study.best_trials
    assert front and all(t.user_attrs[PREDICTED_ATTR] <= budget for t in front)
    log = SearchLog.from_study(study)
    assert [r.number for r in log.records] == [t.number for t in trials]
    assert {r.number for r in log.pareto_front()} == {t.number for t in front}
    assert all(r.predicted_latency_ms <= budget and r.feasible for r in log.pareto_front())
    assert {r.params["blocks"] for r in log.records if r.feasible is False} >= {3, 4}  # the budget did bind
    assert all(r.feasible is (r.params["blocks"] <= 2) for r in log.records)


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_killed_workers_trial_fails_and_is_retried(
    kind: str, request: pytest.FixtureRequest, tiny_ops: Path, latencies: list[float], tmp_path: Path
) -> None:
    storage, budget, wanted = _storage_url(kind, request, tmp_path), _budget(latencies), 4
    marker, log_path = tmp_path / "blocked", tmp_path / "logs" / "search.json"
    log_path.parent.mkdir()
    beat, go = ("--heartbeat", str(HEARTBEAT), "--grace", str(GRACE)), tmp_path / "go"
    doomed = _worker(storage, "crash", tiny_ops, budget, 1, "--block-marker", str(marker), *beat)
    survivor = _worker(
        storage,
        "crash",
        tiny_ops,
        budget,
        wanted + 5,
        "--seed",
        "7",
        "--until-complete",
        str(wanted),
        "--log",
        str(log_path),
        "--start-after",
        str(go),
        *beat,
    )  # imports meanwhile, then waits
    while not marker.exists():  # its trial 0 is running, its prediction stored
        assert doomed.poll() is None, doomed.communicate()[1]
        time.sleep(0.1)
    doomed.send_signal(signal.SIGKILL)
    doomed.communicate()
    assert doomed.returncode == -signal.SIGKILL
    study = optuna.load_study(study_name="crash", storage=make_storage(storage))
    (killed,) = study.get_trials()
    assert killed.number == int(marker.read_text()) == 0
    assert killed.state == optuna.trial.TrialState.RUNNING  # nobody finished it
    time.sleep(GRACE + 1.5)  # let its last heartbeat grow older than the grace period
    assert survivor.poll() is None and not study.get_trials()[0].state.is_finished()
    go.touch()  # the survivor joins the study now
    report = _report(survivor)
    trials = study.get_trials()
    assert trials[0].state == optuna.trial.TrialState.FAIL  # marked by the survivor, through the heartbeat
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == 0]  # what RetryFailedTrialCallback writes
    assert len(retries) == 1
    (retry,) = retries
    assert retry.number == 1 and retry.params == killed.params and retry.system_attrs["retry_history"] == [0]
    assert retry.state == optuna.trial.TrialState.COMPLETE and retry.user_attrs["pid"] == report["pid"]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == wanted and len(trials) == wanted + 1  # the study got the trials it asked for
    assert report["trials"] == [t.number for t in trials[1:]]
    for t in trials:
        _check_prediction(t, latencies, budget)  # the killed trial's prediction was stored before it died
    doc = json.loads(log_path.read_text())  # complete JSON, written atomically
    assert doc == SearchLog.from_study(study).to_dict()
    assert [(d["number"], d["state"]) for d in doc["trials"]] == [(t.number, t.state.name) for t in trials]
    assert sorted(p.name for p in log_path.parent.iterdir()) == ["search.json"]  # no temporary left behind


def test_study_name_is_required_with_a_storage(tmp_path: Path) -> None:
    with pytest.raises(SearchError, match=r"study_name is required with a storage.*got study_name=None"):
        create_study(f"sqlite:///{tmp_path / 's.db'}", direction="minimize")


def test_the_default_stays_in_memory() -> None:
    study = create_study(direction="maximize")
    assert isinstance(study._storage, optuna.storages.InMemoryStorage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert make_storage(None) is None and len(study.trials) == 2


def test_sqlite_storage_has_the_heartbeat_and_joins_an_existing_study(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    first = create_study(url, study_name="s", directions=DIRECTIONS, heartbeat_interval=5, grace_period=11, retries=2)
    first.optimize(lambda t: (t.suggest_int("blocks", 0, 4), 1.0), n_trials=2)
    second = create_study(url, study_name="s", directions=DIRECTIONS)  # a second worker: loads it
    assert len(second.trials) == 2
    storage = make_storage(url, heartbeat_interval=5, grace_period=11, retries=2)
    assert isinstance(storage, optuna.storages.RDBStorage)
    assert (storage.heartbeat_interval, storage.grace_period) == (5, 11)
    assert isinstance(storage.get_heartbeat_stale_trial_callback(), optuna.storages.RetryHeartbeatStaleTrialCallback)
    assert make_storage(url, heartbeat_interval=None).get_heartbeat_interval() is None
    with pytest.raises(SearchError, match=r"exists with directions=\['maximize', 'minimize'\].*asked for"):
        create_study(url, study_name="s", direction="minimize")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"storage": "postgres://u:hunter2@h/db"}, SearchError, r"Write 'postgresql://'"),
        (
            {"storage": "redis://h"},
            SearchError,
            r"must be a database URL starting with sqlite://.*got storage='redis://h'",
        ),
        (
            {"storage": "sqlite:///x.db", "heartbeat_interval": 5, "grace_period": 5},
            SearchError,
            r"grace_period must be more than heartbeat_interval.*grace_period=5.*Use at least grace_period=10",
        ),
        (
            {"storage": "sqlite:///x.db", "heartbeat_interval": 0.5},
            SearchError,
            r"heartbeat_interval must be a whole number of seconds >= 1.*0.5",
        ),
        ({"storage": "sqlite:///x.db", "retries": -1}, SearchError, r"retries must be an integer >= 0.*-1"),
        ({"storage": "mysql://u@h/db"}, MissingExtraError, r"driver 'MySQLdb'.*pip install mysqlclient"),
        ({"storage": "postgresql+pg8000://u@h/db"}, MissingExtraError, r"driver 'pg8000'.*pip install pg8000"),
        (
            {"storage": "postgresql://u:hunter2@127.0.0.1:1/db"},
            SearchError,
            r"could not open the study storage 'postgresql\+psycopg2://u:\*\*\*@127.0.0.1:1/db'.*server is running",
        ),
    ],
)
def test_storage_errors_state_the_rule_and_the_fix(
    kwargs: dict, error: type, match: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the sqlite cases must never reach a file; if they did, it lands here
    with pytest.raises(error, match=match) as info:
        create_study(study_name="s", direction="minimize", **kwargs)
    assert "hunter2" not in str(info.value)  # passwords are never printed


def test_postgresql_driver_missing_names_the_extra(tmp_path: Path) -> None:
    """In a fresh interpreter where psycopg2 and psycopg cannot be imported."""
    code = (
        "import sys; sys.modules['psycopg2'] = None; sys.modules['psycopg'] = None\n"
        "import importlib.util as u; f = u.find_spec; u.find_spec = lambda n, *a: None if n.startswith('psycopg') "
        "else f(n, *a)\n"
        "from mmt_nas.integrations import MissingExtraError\n"
        "from mmt_nas.integrations.optuna import create_study\n"
        "try:\n    create_study('postgresql://u@h/db', study_name='s')\n"
        "except MissingExtraError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "needs the database driver 'psycopg2'" in out.stdout and "mmt-nas[postgres]" in out.stdout


def test_passwords_with_at_signs_are_redacted_and_bad_study_arguments_are_search_errors() -> None:
    from mmt_nas.integrations import SearchError
    from mmt_nas.integrations.optuna import _redact, create_study

    assert _redact("postgresql://search:p@ss@db:5432/s") == "postgresql://search:***@db:5432/s"
    with pytest.raises(SearchError, match="sideways"):
        create_study(direction="sideways")
