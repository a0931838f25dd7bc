"""Rough edges: files get the user's umask, ``mmt-nas report`` locks its folder, and typos get suggestions."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import HERE, ROOT, TINY_SHAPE, write_space

from mmt_nas._files import atomic_write_text, atomic_writer, replace_file
from mmt_nas.cli import main
from mmt_nas.exceptions import LockedError, OpSpaceError, OptionError
from mmt_nas.report.document import Report
from mmt_nas.space.opspace import load_space
from mmt_nas.table.table import LatencyTable
from mmt_nas.vocab import check_choice, close_matches


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- 1. files written with the user's umask ----------------------------------------------------------------------

# Run by a shell that set the umask, as a user's login shell does: a table, an op-space YAML, a report with its
# plots, and a generated ops folder (its .mnn file is written by MNN's converter and staged by mmt_nas).
_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from mmt_nas.converter import generate_ops_list
    from mmt_nas.space.opspace import dump_space
    from mmt_nas.report import Report
    from mmt_nas.table import LatencyTable

    out = Path(sys.argv[1])
    LatencyTable().save(out / "table.json")
    dump_space({"torch.nn": {"ReLU": {"no_params": True, "input_shape": [[1, 4, 8, 8]]}}}, out / "ops.yaml")
    Report([], LatencyTable(), {}).write(out / "rep", plots=True)
    generate_ops_list(out / "ops.yaml", out / "ops")
    """
)


@pytest.mark.parametrize("umask,expected", [(0o022, 0o644), (0o077, 0o600), (0o027, 0o640)])
def test_files_the_package_writes_get_the_users_umask(tmp_path: Path, umask: int, expected: int) -> None:
    done = subprocess.run(
        ["sh", "-c", f'umask {umask:03o} && exec "$0" -c "$1" "$2"', sys.executable, _WRITER, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    files = [
        tmp_path / "table.json",
        tmp_path / "ops.yaml",
        *(tmp_path / "rep" / n for n in ("report.json", "report.md", "report.html", "pred_vs_measured.png")),
        tmp_path / "ops" / "meta.json",
        *(tmp_path / "ops").glob("*.mnn"),
    ]
    assert len(files) == 8  # one .mnn
    assert {str(p.relative_to(tmp_path)): oct(_mode(p)) for p in files} == {
        str(p.relative_to(tmp_path)): oct(expected) for p in files
    }


@contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def test_a_rewritten_file_keeps_its_mode(tmp_path: Path) -> None:
    table, yaml_file, png = tmp_path / "t.json", tmp_path / "ops.yaml", tmp_path / "p.png"
    with _umask(0o022):
        LatencyTable().save(table)
        atomic_write_text(yaml_file, "a: 1\n")
        with atomic_writer(png) as fh:
            fh.write(b"x")
        assert {_mode(p) for p in (table, yaml_file, png)} == {0o644}
        table.chmod(0o600)  # made private by its owner
        yaml_file.chmod(0o664)  # shared with the group
        png.chmod(0o4640)  # a set-user-ID bit is not carried over to new content
        LatencyTable().save(table)
        atomic_write_text(yaml_file, "a: 2\n")
        with atomic_writer(png) as fh:
            fh.write(b"y")
    assert (_mode(table), _mode(yaml_file), _mode(png)) == (0o600, 0o664, 0o640)
    assert yaml_file.read_text() == "a: 2\n" and png.read_bytes() == b"y"
    # a file another writer staged (as MNN's converter does) takes the mode of the file it replaces
    staged = tmp_path / ".p.png.123.tmp"
    staged.write_bytes(b"z")
    staged.chmod(0o644)
    replace_file(staged, png)
    assert _mode(png) == 0o640 and png.read_bytes() == b"z" and not staged.exists()
    # and a failed write leaves neither its temporary nor a changed file
    with pytest.raises(RuntimeError), atomic_writer(png) as fh:
        fh.write(b"half")
        raise RuntimeError("killed")
    assert png.read_bytes() == b"z" and sorted(p.name for p in tmp_path.iterdir()) == ["ops.yaml", "p.png", "t.json"]


# -- 2. mmt-nas report locks its output folder ---------------------------------------------------------------------

_HOLDER = textwrap.dedent(
    """
    import sys
    from mmt_nas.report import report_lock

    with report_lock(sys.argv[1]):
        print("held", flush=True)
        sys.stdin.read()  # until the test closes it
    """
)


@contextmanager
def _report_running(folder: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the report lock on ``folder``, as a running ``mmt-nas report`` does."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(folder)], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "held\n"
        yield proc
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=60)


def test_a_second_report_into_the_same_folder_is_refused(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    from mmt_nas.report.evaluation import JOURNAL_FILENAME

    LatencyTable().save(tmp_path / "table.json")
    models = tmp_path / "models.yaml"
    models.write_text(
        f"models:\n  - {{name: tiny, model: '{HERE / 'tinymods.py'}:TinyNet', input_shape: {TINY_SHAPE}}}\n"
    )
    rep = tmp_path / "rep"
    rep.mkdir()
    journal = rep / JOURNAL_FILENAME
    journal.write_text("the other run's measurements\n")
    args = ["report", "--table", str(tmp_path / "table.json"), "--models", str(models), "--out", str(rep)]
    args += ["--times", "3", "--repeats", "1", "--profile-times", "0", "--no-plots", "--fresh"]
    with _report_running(rep) as proc:
        with pytest.raises(LockedError, match=rf"another process \(pid {proc.pid} on .*\) is already writing a report"):
            Report([], LatencyTable(), {}).write(rep, plots=False)
        capfd.readouterr()
        assert main(args) == 2
        err = capfd.readouterr().err
        assert f"mmt-nas report: error: another process (pid {proc.pid} on " in err
        assert f"already writing a report into {str(rep)!r}" in err
        assert "write this report into another folder (--out)" in err
        # the refused run touched nothing: --fresh did not remove the running report's journal
        assert journal.read_text() == "the other run's measurements\n"
        assert sorted(p.name for p in rep.iterdir()) == [".report.json.lock", JOURNAL_FILENAME]
    # the lock died with its holder: both proceed
    assert Report([], LatencyTable(), {}).write(rep, plots=False)["json"].is_file()
    assert main(args) == 0, capfd.readouterr().err
    (model,) = json.loads((rep / "report.json").read_text())["models"]
    assert model["name"] == "tiny" and model["measured_ms"] > 0 and not journal.exists()


# -- 3. did you mean ... -------------------------------------------------------------------------------------------

TYPOS = {
    "class in the wrong case": (
        "torch.nn:\n  Conv2D: {in_channels: [3], out_channels: [8], kernel_size: [3], input_shape: [[1, 3, 8, 8]]}\n",
        ["torch.nn.Conv2D does not exist. Did you mean 'Conv2d'? Check the class name"],
    ),
    "misspelt argument": (
        "torch.nn:\n  Conv2d: {in_channels: [3], out_channels: [8], kernal_size: [3], input_shape: [[1, 3, 8, 8]]}\n",
        [
            "torch.nn.Conv2d.kernal_size: Conv2d's constructor does not accept 'kernal_size'. Did you mean "
            "'kernel_size'? It accepts: bias, ",
        ],
    ),
    "misspelt module": (
        "torch.nnn:\n  ReLU: {no_params: true, input_shape: [[1, 4]]}\n",
        ["module 'torch.nnn' (a top-level key of the op space) cannot be imported", "Did you mean 'torch.nn'? Put "],
    ),
    "misspelt module next to the YAML file": (
        "tinymod:\n  TinyBlock: {channels: [8], input_shape: [[1, 8, 16, 16]]}\n",
        ["module 'tinymod'", "Did you mean 'tinymods'?"],
    ),
}


@pytest.mark.parametrize("text,fragments", list(TYPOS.values()), ids=list(TYPOS))
def test_typos_in_an_op_space_get_a_suggestion(tmp_path: Path, text: str, fragments: list[str]) -> None:
    with pytest.raises(OpSpaceError) as info:
        load_space(write_space(tmp_path, text))
    for fragment in fragments:
        assert fragment in str(info.value)


def test_names_nothing_is_close_to_get_no_suggestion(tmp_path: Path) -> None:
    with pytest.raises(OpSpaceError) as info:
        load_space(write_space(tmp_path, "torch.nn:\n  Frobnicator: {input_shape: [[1, 4]]}\n"))
    assert "Did you mean" not in str(info.value) and "Its nn.Module classes include: AdaptiveAvgPool1d" in str(
        info.value
    )
    with pytest.raises(OpSpaceError) as info:
        load_space(write_space(tmp_path, "no_such_module_xyz:\n  Foo: {input_shape: [[1, 2]]}\n"))
    assert "Did you mean" not in str(info.value) and "cannot be imported" in str(info.value)


def test_a_module_whose_own_import_fails_gets_no_suggestion(tmp_path: Path) -> None:
    (tmp_path / "broken_mod.py").write_text("import no_such_dependency_xyz\n")
    with pytest.raises(OpSpaceError) as info:
        load_space(write_space(tmp_path, "broken_mod:\n  Foo: {input_shape: [[1, 2]]}\n"))
    assert "no_such_dependency_xyz" in str(info.value) and "Did you mean" not in str(info.value)


def test_an_option_typo_gets_a_suggestion() -> None:
    from mmt_nas.predict.cache import CONTEXTS
    from mmt_nas.table.table import check_latency

    with pytest.raises(
        OptionError, match=r"^context must be 'alone', 'weights' or 'model', but got context='modle'\. Did you "
    ):
        check_choice("context", "modle", CONTEXTS)
    with pytest.raises(OptionError, match=r"but got latency='Wall'\. Did you mean 'wall'\?$"):
        check_latency("Wall")
    with pytest.raises(OptionError) as info:
        check_choice("latency", "hot", ("core", "wall"))
    assert str(info.value) == "latency must be 'core' or 'wall', but got latency='hot'."  # nothing close: as before
    assert close_matches("conv2D", ["Conv1d", "Conv2d", "conv2d", "Conv3d"]) == ["Conv2d", "conv2d"]
    assert close_matches("x" * 201, ["x" * 201 + "y"]) == []


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["metre", "ops"], "invalid choice: 'metre' (choose from 'demo', "),
        (["metre", "ops"], "Did you mean 'meter', 'merge' or 'measure'?"),
        (["meter", "ops", "--precision", "hihg"], "argument --precision: invalid choice: 'hihg' (choose from 'high', "),
        (["meter", "ops", "--precision", "hihg"], "Did you mean 'high'?"),
        (
            ["meter", "ops", "--precison", "high"],
            "mmt-nas meter: error: unrecognized arguments: --precison high. Did you mean '--precision'?",
        ),
        (
            ["predict", "m:f", "--input-shape", "1,3", "--table", "t", "--confidense=0.9"],
            "Did you mean '--confidence'?",
        ),
        (
            ["meter", "ops", "--verbose"],
            "--verbose is an option of mmt-nas itself: put it before the command (mmt-nas --verbose meter ...)",
        ),
        (
            ["meter", "ops", "--precison", "high", "--thredas", "2"],
            "'--precison': Did you mean '--precision'? '--thredas': Did you mean '--threads'",
        ),
    ],
)
def test_a_command_line_typo_gets_a_suggestion(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from mmt_nas.cli import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert expected in capsys.readouterr().err


def test_a_command_line_word_nothing_is_close_to_gets_no_suggestion(capsys: pytest.CaptureFixture[str]) -> None:
    from mmt_nas.cli import main

    # after a bare "--" a word is not an option, however close to one
    cases = (["meter", "ops", "--zzzz"], ["meter", "ops", "--precision", "qqqq"], ["meter", "ops", "--", "--precison"])
    for argv in cases:
        with pytest.raises(SystemExit):
            main(argv)
        err = capsys.readouterr().err
        assert "error:" in err and "Did you mean" not in err
