"""Crash safety of the long commands: generate, meter and report are killed (SIGKILL) at several points and
interrupted (SIGINT) once, as real subprocesses. After every stop each file of the output folder must be as it
was, or complete and valid (loaded with the package's own loaders and, for models, by MNN), temporaries must be
the package's hidden ``.NAME.XXXX.tmp`` ones, and a rerun must continue (keep what was done) and end with what an
uninterrupted run gives.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest
from conftest import HERE, TINY_SHAPE, write_space

from mmt_nas.device.meter import JOURNAL_SUFFIX
from mmt_nas.device.timing import time_model
from mmt_nas.table.records import load_ops_meta
from mmt_nas.table.table import LatencyTable

# The quick tier (`pytest -m "not slow"`) leaves these out:
# kills real generate, meter and report processes at several points.
pytestmark = pytest.mark.slow

# the package's temporaries: .NAME.XXXXXXXX.tmp (atomic_write_text) and .NAME.PID.tmp (staged exports)
TEMP = re.compile(r"^\.(?P<target>.+)\.(\d+|[a-z0-9_]{8})\.tmp$")
RNG_SEED = 1729  # where in each command's progress the kills land
INTERRUPTED = "interrupted; rerun to continue where it stopped"


def _start(args: list[str], cwd: Path, log: str) -> subprocess.Popen[bytes]:
    """Start ``mmt-nas ARGS`` with its output in files (a full pipe would stall it)."""
    with open(cwd / f"{log}.out", "wb") as out, open(cwd / f"{log}.err", "wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "mmt_nas.cli", *args], cwd=cwd, stdout=out, stderr=err, preexec_fn=_default_sigint
        )


def _default_sigint() -> None:
    """In the child, before Python starts: SIGINT's default action. A shell runs background jobs with SIGINT
    ignored, children inherit that, and Python then never raises KeyboardInterrupt: the command would not see
    the Ctrl-C these tests send (this is how the suite failed when started as `bash .ci/run &`)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _stop_when(proc: subprocess.Popen[bytes], sig: int, ready: Callable[[], bool], what: str) -> None:
    """Send ``sig`` to ``proc`` as soon as ``ready()``, polling every 2 ms; fail if it ends first."""
    deadline = time.monotonic() + 300  # a safeguard against a hung command, not a timing assertion
    try:
        while not ready():
            if proc.poll() is not None:
                pytest.fail(f"{what}: the command ended (status {proc.returncode}) before its stop point was reached")
            if time.monotonic() > deadline:
                pytest.fail(f"{what}: no progress")
            time.sleep(0.002)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    proc.send_signal(sig)
    proc.wait(timeout=300)
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL, what


def _check_interrupted(proc: subprocess.Popen[bytes], cwd: Path, log: str, command: str) -> None:
    err = (cwd / f"{log}.err").read_text()
    assert proc.returncode == 130, err
    assert f"mmt-nas {command}: {INTERRUPTED}" in err


def _temps(folder: Path) -> set[str]:
    return {n for n in os.listdir(folder) if TEMP.match(n)} if folder.is_dir() else set()


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _plant_temps(folder: Path, target: str) -> tuple[set[str], set[str], IO[str]]:
    """Temporaries as a killed writer leaves them (stale) and as live writers hold them (kept).

    Returns the stale names, the live names and an open file to close once the rerun is checked.
    """
    old = time.time() - 60
    stale = {f".{target}.k1ll3d00.tmp", f".{target}.{_dead_pid()}.tmp"}
    live = {f".{target}.{os.getpid()}.tmp", f".{target}.h0ld1ng0.tmp"}
    for name in stale | live:
        (folder / name).write_text("half a fi")
        os.utime(folder / name, (old, old))
    held = open(folder / f".{target}.h0ld1ng0.tmp")  # noqa: SIM115 (held open, like a live writer's)
    return stale, live, held


def _loads_in_mnn(path: Path) -> None:
    stats = time_model(path, 1, warmup=0)
    assert stats.n == 1 and stats.median_ms > 0, path


# -- generate ---------------------------------------------------------------------------------------------------

GEN_SPACE = """
torch.nn:
  Conv2d:
    in_channels: [4]
    out_channels: [4, 8]
    kernel_size: [1, 3]
    input_shape: [[1, 4, 6, 6], [1, 4, 8, 8], [1, 4, 10, 10], [1, 4, 12, 12]]
  ReLU:
    no_params: true
    input_shape: [[1, 4, 6, 6], [1, 4, 8, 8], [1, 4, 10, 10], [1, 4, 12, 12], [1, 4, 14, 14], [1, 8, 6, 6],
                  [1, 8, 8, 8], [1, 8, 10, 10], [1, 8, 12, 12], [1, 8, 14, 14], [1, 16, 6, 6], [1, 16, 8, 8],
                  [1, 16, 10, 10], [1, 16, 12, 12]]
"""


def _check_ops_folder(out: Path, files: set[str], temps_allowed: bool) -> dict[str, tuple[int, int]]:
    """Every file of the ops folder is complete and valid; returns the .mnn files' (inode, mtime)."""
    names = set(os.listdir(out)) if out.is_dir() else set()
    temps = _temps(out)
    assert temps_allowed or not temps, f"temporaries left: {temps}"
    for name in names - temps:
        assert name in ("meta.json", ".meta.json.lock") or name in files, f"unexpected file {name} in the ops folder"
    if "meta.json" in names:
        for op in load_ops_meta(out):  # parses and validates
            assert op.file in names, f"meta.json names {op.file}, which is missing"
    mnn = {}
    for name in sorted(names & files):
        _loads_in_mnn(out / name)  # complete: MNN loads and runs it
        st = (out / name).stat()
        mnn[name] = (st.st_ino, st.st_mtime_ns)
    return mnn


def test_generate_killed_at_several_points_continues(tmp_path: Path) -> None:
    from mmt_nas.build.generate import prepare_ops
    from mmt_nas.space.opspace import load_space

    space = write_space(tmp_path, GEN_SPACE)
    ready, _ = prepare_ops(load_space(space), tmp_path)
    expected = {r.key: r.file for r, _ in ready}
    files = set(expected.values())
    assert len(expected) == 30
    out = tmp_path / "ops"
    rng = random.Random(RNG_SEED)
    # stop points: as soon as anything appears, then after a random number of further exported ops
    plan = [
        (signal.SIGKILL, 0),
        (signal.SIGKILL, rng.randint(4, 7)),
        (signal.SIGINT, rng.randint(3, 6)),
        (signal.SIGKILL, rng.randint(4, 7)),
    ]
    seen_temps: set[str] = set()
    for i, (sig, new_ops) in enumerate(plan):
        before = _check_ops_folder(out, files, temps_allowed=True)
        names_before = set(os.listdir(out)) if out.is_dir() else set()
        proc = _start(["generate", str(space), str(out)], tmp_path, f"gen{i}")

        def progressed(before: dict = before, names_before: set = names_before, new_ops: int = new_ops) -> bool:
            now = set(os.listdir(out)) if out.is_dir() else set()
            if new_ops == 0:
                return bool(now - names_before)
            return len((now & files) - set(before)) >= new_ops

        _stop_when(proc, sig, progressed, f"generate stop {i}")
        seen_temps |= _temps(out)
        after = _check_ops_folder(out, files, temps_allowed=sig == signal.SIGKILL)
        for name, ident in before.items():  # done before: kept, not exported again
            assert after.get(name) == ident, f"{name} was rewritten by run {i}"
        if sig == signal.SIGINT:
            _check_interrupted(proc, tmp_path, f"gen{i}", "generate")
            # a clean interrupt records the exported ops in meta.json (but perhaps the one whose file was
            # renamed into place as the interrupt arrived: the rerun adopts it)
            recorded = {op.file for op in load_ops_meta(out)}
            assert recorded <= set(after) and len(set(after) - recorded) <= 1
    assert 0 < len(before) < len(after) < len(expected)

    stale, live, held = _plant_temps(out, "meta.json")
    present = _check_ops_folder(out, files, temps_allowed=True)
    done = subprocess.run(
        [sys.executable, "-m", "mmt_nas.cli", "generate", str(space), str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    # the ops exported before the stops (recorded in meta.json or not) are reported as present, not redone
    assert f"{len(expected) - len(present)} exported, {len(present)} already present" in done.stdout
    assert _temps(out) == live, "the rerun must remove the temporaries of dead writers, and only those"
    held.close()
    for name in live:
        (out / name).unlink()
    final = _check_ops_folder(out, files, temps_allowed=False)
    assert {op.key: op.file for op in load_ops_meta(out)} == expected  # what an uninterrupted run gives
    for name, ident in present.items():
        assert final[name] == ident, f"{name} was exported again"
    assert not (stale & set(os.listdir(out))) and not (seen_temps & set(os.listdir(out)))


# -- meter ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def meter_ops_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """28 small convolutions, and a --times that makes each take about 0.4 s to meter on this machine."""
    from mmt_nas.build.generate import generate_ops_list

    base = tmp_path_factory.mktemp("meter")
    shapes = ", ".join(f"[1, 8, {s}, {s}]" for s in range(14, 28))
    space = write_space(
        base,
        f"torch.nn:\n  Conv2d: {{in_channels: [8], out_channels: [8, 16], kernel_size: [3], "
        f"padding: [1], input_shape: [{shapes}]}}\n",
    )
    out = base / "ops"
    generate_ops_list(space, out)
    runs_ms = [time_model(out / op.file, 200).median_ms for op in load_ops_meta(out)]
    return out, max(200, int(400 / (sum(runs_ms) / len(runs_ms))))


def _journal_entries(journal: Path) -> dict[tuple[str, int], dict]:
    """The journal's lines by (key, round); only the last may be torn (an interrupted append)."""
    if not journal.exists():
        return {}
    text = journal.read_text()
    lines = text.split("\n")
    entries = {}
    for i, line in enumerate(lines):
        if not line:
            continue
        try:
            d = json.loads(line)
        except ValueError:
            assert i == len(lines) - 1, f"journal line {i} is unreadable and is not the last one"
            continue
        assert (d["key"], d["round"]) not in entries, f"{d['key']} round {d['round']} journaled twice"
        entries[d["key"], d["round"]] = d
    return entries


def _measured(ops: Path) -> dict[tuple[str, int], float]:
    """Every op timed in every round, in the table or in its journal: (key, round) -> the round's median."""
    measured: dict[tuple[str, int], float] = {}
    if (ops / "meta_latency.json").exists():
        for e in LatencyTable.load(ops / "meta_latency.json"):
            assert e.rounds_ms is not None, e.op.key
            measured.update({(e.op.key, r): ms for r, ms in enumerate(e.rounds_ms)})
    for (key, r), d in _journal_entries(ops / ("meta_latency.json" + JOURNAL_SUFFIX)).items():
        # killed between a checkpoint's save and its journal rewrite: both hold it, alike
        assert measured.get((key, r), d["latency_ms"]["median"]) == d["latency_ms"]["median"], (key, r)
        measured[key, r] = d["latency_ms"]["median"]
    return measured


def _check_table_folder(ops: Path, snapshot: dict[str, bytes], temps_allowed: bool) -> dict[tuple[str, int], float]:
    """The ops are untouched, the table and journal valid; returns every measured entry."""
    for name, data in snapshot.items():
        assert (ops / name).read_bytes() == data, f"meter changed {name}"
    temps = _temps(ops)
    assert temps_allowed or not temps, f"temporaries left: {temps}"
    for name in set(os.listdir(ops)) - set(snapshot) - temps:
        assert name in ("meta_latency.json", "meta_latency.json" + JOURNAL_SUFFIX, ".meta_latency.json.lock"), name
    return _measured(ops)


def test_meter_killed_at_several_points_continues(meter_ops_dir: tuple[Path, int], tmp_path: Path) -> None:
    import shutil

    ops = tmp_path / "ops"
    shutil.copytree(meter_ops_dir[0], ops)
    times = meter_ops_dir[1]
    keys = {op.key for op in load_ops_meta(ops)}
    snapshot = {n: (ops / n).read_bytes() for n in os.listdir(ops)}
    table_file, journal = ops / "meta_latency.json", ops / ("meta_latency.json" + JOURNAL_SUFFIX)
    rng = random.Random(RNG_SEED)
    first, third, fourth = rng.randint(1, 3), rng.randint(1, 2), rng.randint(1, 2)

    def journal_lines() -> int:
        try:
            return journal.read_bytes().count(b"\n")
        except FileNotFoundError:
            return 0

    seen: list[int] = []

    def after_checkpoint() -> bool:  # the table was saved and the journal rewritten (every 5 s): a new file
        try:
            inode = journal.stat().st_ino
        except FileNotFoundError:
            return False
        seen.append(inode)
        return seen[0] != inode

    def more_than(n: int) -> Callable[[], bool]:
        return lambda: len(_measured(ops)) >= n

    # stop points: after the first ops, right after a checkpoint, then after a random number of further ops
    plan: list[tuple[int, Callable[[int], Callable[[], bool]]]] = [
        (signal.SIGKILL, lambda n0: lambda: journal_lines() >= first),
        (signal.SIGKILL, lambda n0: after_checkpoint),
        (signal.SIGINT, lambda n0: more_than(n0 + third)),
        (signal.SIGKILL, lambda n0: more_than(n0 + fourth)),
    ]
    args = ["meter", str(ops), "--times", str(times)]
    measured: dict[tuple[str, int], float] = {}
    for i, (sig, point) in enumerate(plan):
        proc = _start(args, tmp_path, f"meter{i}")
        _stop_when(proc, sig, point(len(measured)), f"meter stop {i}")
        now = _check_table_folder(ops, snapshot, temps_allowed=sig == signal.SIGKILL)
        for key, stats in measured.items():  # timed before: kept with its statistics
            assert now.get(key) == stats, f"{key} lost or timed again by run {i}"
        assert len(now) > len(measured), f"run {i} measured nothing"
        measured = now
        if sig == signal.SIGINT:
            _check_interrupted(proc, tmp_path, f"meter{i}", "meter")
    assert len(measured) < 2 * len(keys)  # two rounds of every op

    done = subprocess.run(
        [sys.executable, "-m", "mmt_nas.cli", *args], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    table = LatencyTable.load(table_file)
    assert set(table.keys()) == keys  # what an uninterrupted run gives
    for (key, r), median in measured.items():
        assert table.get(key).rounds_ms[r] == median, f"{key} round {r} was timed again"  # type: ignore[union-attr,index]
    assert all(e.latency.n == times and len(e.rounds_ms or ()) == 2 for e in table)
    assert not journal.exists()
    _check_table_folder(ops, snapshot, temps_allowed=False)


def test_meter_rerun_removes_stale_temporaries(meter_ops_dir: tuple[Path, int], tmp_path: Path) -> None:
    import shutil

    ops = tmp_path / "ops"
    shutil.copytree(meter_ops_dir[0], ops)
    stale, live, held = _plant_temps(ops, "meta_latency.json")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "mmt_nas.cli", "meter", str(ops), "--times", "5"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr
        assert _temps(ops) == live
    finally:
        held.close()


# -- report -----------------------------------------------------------------------------------------------------

REPORT_MODELS = [  # name, kwargs, input shape, predicted from the tiny table?
    ("tiny-a", {}, TINY_SHAPE, True),
    ("wide", {"width": 16}, TINY_SHAPE, False),
    ("tiny-b", {}, TINY_SHAPE, True),
    ("big-input", {}, [1, 3, 24, 24], False),
]


def _check_report_folder(rep: Path, snapshot: dict[str, bytes], temps_allowed: bool) -> dict[str, dict]:
    """Every file is as before or complete and valid; returns the journaled measurements by model name."""
    from mmt_nas.report.evaluation import JOURNAL_FILENAME

    temps = _temps(rep)
    assert temps_allowed or not temps, f"temporaries left: {temps}"
    journaled: dict[str, dict] = {}
    for name in set(os.listdir(rep)) - temps if rep.is_dir() else ():
        path = rep / name
        if name == ".report.json.lock" or snapshot.get(name) == path.read_bytes():  # the lock: any content
            continue
        if name == "report.json":
            doc = json.loads(path.read_text())
            assert doc["schema"] == "mmt_nas/report" and len(doc["models"]) == len(REPORT_MODELS)
        elif name == "report.md":
            text = path.read_text()
            assert text.startswith("# Prediction-error report") and text.count("\n| ") >= len(REPORT_MODELS)
        elif name == "report.html":
            assert path.read_text().rstrip().endswith("</html>")
        elif name.endswith(".png"):
            data = path.read_bytes()
            assert data.startswith(b"\x89PNG\r\n\x1a\n") and data.endswith(b"IEND\xaeB`\x82"), name
        elif name == JOURNAL_FILENAME:
            lines = path.read_text().split("\n")
            for i, line in enumerate(lines):
                try:
                    d = json.loads(line) if line else None
                except ValueError:
                    assert i == len(lines) - 1, f"journal line {i} is unreadable and is not the last one"
                    continue
                if d is not None:
                    journaled[d["key"]["name"]] = d
        else:
            pytest.fail(f"unexpected file {name} in the report folder")
    return journaled


def test_report_killed_at_several_points_continues(tiny_ops: Path, tmp_path: Path) -> None:
    from tinymods import TinyNet

    from mmt_nas.predict.predictor import LatencyPredictor
    from mmt_nas.report.evaluation import JOURNAL_FILENAME

    (tmp_path / "models.yaml").write_text(
        "models:\n"
        + "".join(
            f"  - {{name: {n}, model: '{HERE / 'tinymods.py'}:TinyNet', kwargs: {json.dumps(kw)}, input_shape: {s}}}\n"
            for n, kw, s, _ in REPORT_MODELS
        )
    )
    rep = tmp_path / "rep"
    journal = rep / JOURNAL_FILENAME
    args = [
        "report",
        "--table",
        str(tiny_ops),
        "--models",
        "models.yaml",
        "--out",
        str(rep),
        "--times",
        "5",
        "--repeats",
        "2",
        "--profile-times",
        "3",
    ]
    rng = random.Random(RNG_SEED)

    def journaled() -> int:
        return len(_check_report_folder(rep, {}, temps_allowed=True))

    # stop points: after the first models are measured, mid-way, and while the report's files are written
    plan = [(signal.SIGKILL, rng.randint(1, 2)), (signal.SIGINT, 1), (signal.SIGKILL, None)]
    measured: dict[str, dict] = {}
    killed: list[int] = []
    for i, (sig, more) in enumerate(plan):
        snapshot = {n: (rep / n).read_bytes() for n in os.listdir(rep)} if rep.is_dir() else {}
        proc = _start(args, tmp_path, f"report{i}")
        killed.append(proc.pid)
        if more is None:
            ready = lambda: (rep / "report.json").exists()  # noqa: E731
        else:
            ready = (lambda n: lambda: journaled() >= n)(len(measured) + more)
        _stop_when(proc, sig, ready, f"report stop {i}")
        now = _check_report_folder(rep, snapshot, temps_allowed=sig == signal.SIGKILL)
        if journal.exists():  # (it is removed only once the report is complete)
            for name, d in measured.items():  # measured before: kept as it was
                assert now.get(name) == d, f"{name} lost or measured again by run {i}"
            assert len(now) > len(measured), f"run {i} measured nothing"
        if sig == signal.SIGINT:
            _check_interrupted(proc, tmp_path, f"report{i}", "report")
        measured = now

    stale, live, held = _plant_temps(rep, "report.json")
    done = subprocess.run(
        [sys.executable, "-m", "mmt_nas.cli", *args], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    assert _temps(rep) == live, "the rerun must remove the temporaries of dead writers, and only those"
    held.close()
    for name in live:
        (rep / name).unlink()
    assert not journal.exists(), "the journal is removed once the report is complete"
    work = [n for n in os.listdir(tempfile.gettempdir()) for pid in killed if n.startswith(f"mmt_nas_report_{pid}_")]
    assert not work, f"work folders of killed runs left behind: {work}"
    _check_report_folder(rep, {}, temps_allowed=False)
    doc = json.loads((rep / "report.json").read_text())
    models = {m["name"]: m for m in doc["models"]}
    assert [m["name"] for m in doc["models"]] == [n for n, *_ in REPORT_MODELS]  # as an uninterrupted run
    predictor = LatencyPredictor(tiny_ops)
    for name, kw, shape, predicted in REPORT_MODELS:
        m = models[name]
        assert m["measured_ms"] > 0 and len(m["run_medians_ms"]) == 2
        assert m["status"] == ("ok" if predicted else "failed")
        if predicted:
            assert m["predicted_ms"] == pytest.approx(float(predictor.predict(TinyNet(**kw), shape)), rel=1e-9)
        reused = name in measured
        assert m["measurement_reused"] is reused
        if reused:  # measured before a stop: its journaled measurements, not new ones
            assert m["run_medians_ms"] == measured[name]["run_medians_ms"]
            assert f"  {name}: " in done.stdout and "(measurement reused)" in done.stdout
    assert f"{len(measured)} of {len(REPORT_MODELS)} models' measurements reused" in done.stdout


def test_stale_temporaries_are_told_from_live_ones(tmp_path: Path) -> None:
    from mmt_nas._files import atomic_write_text, remove_stale_temp_files

    stale, live, held = _plant_temps(tmp_path, "meta.json")
    other = f".meta_latency.json.{_dead_pid()}.tmp"  # stale, but another command's
    recent = ".meta.json.n0wn0w00.tmp"  # just written: perhaps about to be renamed by its writer
    keep = {other, recent, "meta.json", ".meta.json.tmp", ".notes.k1ll3d00.tmp.bak"}
    for name in (other, recent, "meta.json", ".meta.json.tmp", ".notes.k1ll3d00.tmp.bak"):
        (tmp_path / name).write_text("x")
    os.utime(tmp_path / other, (time.time() - 60, time.time() - 60))
    try:
        removed = remove_stale_temp_files(tmp_path, ["meta.json", "*.mnn"])
    finally:
        held.close()
    assert {p.name for p in removed} == stale
    assert set(os.listdir(tmp_path)) == live | keep
    assert remove_stale_temp_files(tmp_path / "missing") == []
    atomic_write_text(tmp_path / "meta.json", "y")  # the writer's own temporary is never left behind
    assert set(os.listdir(tmp_path)) == live | keep
