"""The long steps show a progress bar with its ETA on a terminal, and nothing when piped.

Each command runs as a real process whose standard error is a pseudo-terminal (the terminal a person
watches), then again with it piped (a log, CI)."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import TINY_SHAPE, TINY_SPACE, write_space

from mmt_nas.progress import bar, progress

# The quick tier (`pytest -m "not slow"`) leaves these out:
# each long command as a real process, on a real pseudo-terminal and piped.
pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
TINY_NET = f"{HERE / 'tinymods.py'}:TinyNet"
#: tqdm's bar: "meter:  50%|█████     | 3/6 [00:01<00:01,  2.10op/s]": done/total, elapsed<remaining, rate.
ETA = r"{desc}:\s+\d+%\|.*?\| *\d+/{total} \[\d\d:\d\d<\d\d:\d\d, +[\d.]+(?:s/)?{unit}"


def _mmt_nas(args: list[str], cwd: Path, *, terminal: bool) -> tuple[int, str, str]:
    """Run ``mmt-nas ARGS``; return (exit code, stdout, stderr). With ``terminal``, stderr is a pty."""
    cmd = [sys.executable, "-c", "import sys; from mmt_nas.cli import main; sys.exit(main(sys.argv[1:]))", *args]
    # TQDM_MININTERVAL=0: every update is drawn, so a step faster than tqdm's 0.1 s still shows its ETA
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_MININTERVAL": "0"}
    if not terminal:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        return proc.returncode, proc.stdout, proc.stderr
    master, slave = pty.openpty()
    chunks: list[bytes] = []

    def drain() -> None:  # read as it is written: a full pty would block the process
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the last writer closed
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    out, _ = proc.communicate(timeout=600)
    reader.join(timeout=30)
    os.close(master)
    return proc.returncode, out.decode(), b"".join(chunks).decode(errors="replace")


def _bars(text: str, desc: str, total: int | None, unit: str) -> list[str]:
    """The bars of ``desc`` in ``text`` that show an ETA (of ``total`` units; ``None``: any)."""
    count = r"\d+" if total is None else str(total)
    return re.findall(ETA.format(desc=re.escape(desc), total=count, unit=unit), text.replace("\r", "\n"))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "models.yaml"
    path.write_text(
        "models:\n"
        + "".join(f"  - {{name: tiny{i}, model: '{TINY_NET}', input_shape: {TINY_SHAPE}}}\n" for i in range(2))
    )
    return path


@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "piped"])
def test_generate_and_meter_show_their_eta_on_a_terminal_only(tmp_path: Path, terminal: bool) -> None:
    space = write_space(tmp_path, TINY_SPACE)
    code, out, err = _mmt_nas(["generate", str(space), "ops"], tmp_path, terminal=terminal)
    assert code == 0, out + err
    n_ops = len(list((tmp_path / "ops").glob("*.mnn")))
    assert n_ops >= 8
    exports = _bars(err, "export", n_ops, "op")
    code, out, err = _mmt_nas(["meter", "ops", "--times", "3"], tmp_path, terminal=terminal)
    assert code == 0, out + err
    meters = _bars(err, "meter", None, "op")  # every op in each of its rounds
    if terminal:
        assert exports, "no export bar with an ETA"
        assert meters, err[-2000:]
    else:
        assert not exports and not meters and "%|" not in err  # a log gets no bar


@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "piped"])
def test_report_shows_its_eta_on_a_terminal_only(tiny_ops: Path, models: Path, tmp_path: Path, terminal: bool) -> None:
    args = ["report", "--table", str(tiny_ops), "--models", str(models), "--out", "rep"]
    code, out, err = _mmt_nas([*args, "--times", "3", "--repeats", "2", "--no-plots"], tmp_path, terminal=terminal)
    assert code == 0, out + err
    assert "2 models (0 failed)" in out  # the results still go to stdout, either way
    prepare, measure = _bars(err, "prepare", 2, "model"), _bars(err, "measure (2 rounds)", 4, "model")
    if terminal:
        assert prepare and measure, err[-2000:]
    else:
        assert not prepare and not measure and "%|" not in err


@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "piped"])
def test_sample_near_budget_shows_its_eta_on_a_terminal_only(
    tiny_ops: Path, models: Path, tmp_path: Path, terminal: bool
) -> None:
    args = ["sample", "--near-budget", "1", "--table", str(tiny_ops), "--models", str(models), "-o", "next.yaml"]
    code, out, err = _mmt_nas(args, tmp_path, terminal=terminal)
    assert code == 0, out + err
    assert "2 models" in out and (tmp_path / "next.yaml").is_file()
    assert bool(_bars(err, "predict", 2, "model")) == terminal, err[-2000:]
    if not terminal:
        assert "%|" not in err


def test_a_bar_counts_what_it_is_given_and_nothing_when_off(capfd: pytest.CaptureFixture[str]) -> None:
    assert list(progress(iter(range(5)), 5, "x", enabled=False)) == [0, 1, 2, 3, 4]
    assert list(progress(range(3), 3, "x", enabled=True, unit="model")) == [0, 1, 2]
    err = capfd.readouterr().err.replace("\r", "\n")
    assert re.search(r"x: +0%\|.*\| 0/3 \[00:00<\?, \?model/s\]", err), err  # drawn on stderr, then removed
    with bar(4, "y", enabled=False) as off:
        off.update(4)
        assert not off.shown
    with bar(0, "z", enabled=True) as empty:  # nothing to count: no bar
        assert not empty.shown
    assert capfd.readouterr().err == ""


def test_verbose_draws_the_bar_even_piped(tiny_ops: Path, models: Path, tmp_path: Path) -> None:
    args = ["-v", "sample", "--near-budget", "1", "--table", str(tiny_ops), "--models", str(models), "-o", "n.yaml"]
    code, out, err = _mmt_nas(args, tmp_path, terminal=False)
    assert code == 0, out + err
    assert _bars(err, "predict", 2, "model"), err[-2000:]
