"""The ``mmt-nas`` command line, subcommand by subcommand: a happy path on a tiny table each, and bad inputs,
which must exit with status 2 and say what was wrong in one line on stderr.

Most runs are in process (``main([...])``, with the stderr logging handler the real command installs), and a few
are real processes (``python -m mmt_nas.cli``), which also see what native code writes to the file descriptors.
"""

from __future__ import annotations

import json
import logging
import shlex
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import HERE, ROOT, TINY_SHAPE, write_space
from tinymods import TinyNet

from mmt_nas.build.generate import prepare_ops
from mmt_nas.cli import load_model, main
from mmt_nas.predict.predictor import LatencyPredictor
from mmt_nas.space.opspace import load_space
from mmt_nas.table.table import LatencyTable

CLI = [sys.executable, "-m", "mmt_nas.cli"]
TINY_NET = f"{HERE / 'tinymods.py'}:TinyNet"
SHAPE = ",".join(map(str, TINY_SHAPE))


def run(capfd: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    """``mmt-nas ARGS`` in process: (exit status, stdout, stderr). argparse's exits become statuses, and log
    records reach stderr as in the real command (its ``logging.basicConfig`` is a no-op under pytest)."""
    capfd.readouterr()  # drop what came before
    handler = logging.StreamHandler(sys.stderr)  # capfd's stderr
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.WARNING)
    logging.getLogger().addHandler(handler)
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:
        code = exc.code
    finally:
        logging.getLogger().removeHandler(handler)
    out, err = capfd.readouterr()
    return code, out, err


def run_process(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(CLI + [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=600)


def error_line(code: int, err: str, command: str, *, usage: bool = False) -> str:
    """Check a refusal: status 2 and one ``mmt-nas COMMAND: error: ...`` line (after argparse's usage lines for
    an argparse error); return that line."""
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = err.rstrip("\n").splitlines()
    if usage:
        assert lines[0].startswith("usage: mmt-nas"), err
    else:
        assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    assert lines[-1].startswith(f"mmt-nas {command}: error: " if command else "mmt-nas: error: "), err
    return lines[-1]


def meta_keys(ops_dir: Path) -> set[str]:
    return {op["key"] for op in json.loads((ops_dir / "meta.json").read_text())["ops"]}


def keys_of_space(path: Path) -> set[str]:
    ready, skipped = prepare_ops(load_space(path), path.parent)
    assert skipped == []
    return {record.key for record, _ in ready}


# -- happy paths --------------------------------------------------------------------------------------------------


def test_space_writes_the_op_space_of_a_model(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capfd, "space", TINY_NET, "--input-shape", SHAPE, "--kwargs", "{width: 4}", "-o", tmp_path / "s.yaml"
    )
    assert code == 0, err
    specs = load_space(tmp_path / "s.yaml")
    # TinyNet: stem conv, block conv, the block's residual add, pool, flatten, fc (its ReLUs fuse into the convs)
    assert Counter(s.class_name for s in specs) == {"Conv2d": 2, "Functional": 2, "AdaptiveAvgPool2d": 1, "Linear": 1}
    assert out.strip() == f"wrote {tmp_path / 's.yaml'}: 6 ops"
    linear = next(s for s in specs if s.class_name == "Linear")
    assert linear.args["in_features"] == 4 and linear.input_shape == (1, 4)  # --kwargs reached the model
    assert {tuple(s.input_shape) for s in specs if s.class_name == "Conv2d"} == {(1, 3, 16, 16), (1, 4, 16, 16)}


def test_generate_writes_meta_json_and_mnn_files(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    yaml_path = write_space(
        tmp_path,
        (
            "torch.nn:\n"
            "  Conv2d: {in_channels: [3, 8], out_channels: [8], kernel_size: [1], input_shape: [[1, 3, 8, 8]]}\n"
            "  Linear: {in_features: [8], out_features: [4, 6], input_shape: [[1, 8]]}\n"
            "  ReLU: {no_params: true, input_shape: [[1, 8]]}\n"
        ),
    )
    code, out, err = run(capfd, "generate", yaml_path, tmp_path / "ops")
    assert code == 0, err
    assert "4 exported" in out and "1 invalid combinations skipped" in out  # in_channels 8 on a 3-channel input
    meta = json.loads((tmp_path / "ops" / "meta.json").read_text())
    assert {op["class_name"] for op in meta["ops"]} == {"Conv2d", "Linear", "ReLU"} and len(meta["ops"]) == 4
    files = {p.name for p in (tmp_path / "ops").iterdir() if p.suffix == ".mnn"}
    assert files == {op["file"] for op in meta["ops"]}
    assert all((tmp_path / "ops" / f).stat().st_size > 0 for f in files)
    assert not list((tmp_path / "ops").glob("*.onnx"))  # no --keep-onnx
    code, out, err = run(capfd, "generate", yaml_path, tmp_path / "ops")  # again: nothing to do
    assert code == 0 and "0 exported, 4 already present" in out, out + err


def test_meter_writes_one_entry_per_op(tiny_ops_copy: Path, capfd: pytest.CaptureFixture[str]) -> None:
    out_path = tiny_ops_copy / "t.json"
    code, out, err = run(capfd, "meter", tiny_ops_copy, "--times", "3", "-o", out_path)
    assert code == 0, err
    table = LatencyTable.load(out_path)
    keys = meta_keys(tiny_ops_copy)
    assert set(table.keys()) == keys and len(table) == len(keys) == 8
    assert all(e.latency.n == 3 and e.latency.median_ms > 0 for e in table)
    assert table.settings.threads == 1 and table.settings.backend == "CPU"
    assert out.startswith(f"{len(keys)} ops in the table")
    floor = table.noise_floor()
    assert floor is not None and f"noise floor: run-to-run spread of {len(keys)} ops: median " in out
    assert any(line.startswith("device: ") for line in out.splitlines()) and table.timing["device_state"]["wall_s"] > 0
    assert any(line.startswith("sentinel: ") for line in out.splitlines()) and table.timing["sentinel"]["series"]
    assert f"median {floor.median_pct:.1f}%, p90 {floor.p90_pct:.1f}%" in out


def test_the_meter_command_runs_on_a_device_without_torch_or_scikit_learn(tiny_ops_copy: Path) -> None:
    code = (
        "import importlib.abc, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'sklearn', 'onnx', 'optuna', 'matplotlib'):\n"
        "            raise ImportError('blocked on this device: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from mmt_nas.cli import main\n"
        f"raise SystemExit(main(['meter', {str(tiny_ops_copy)!r}, '--times', '3', '-o', 'device.json']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tiny_ops_copy, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert set(LatencyTable.load(tiny_ops_copy / "device.json").keys()) == meta_keys(tiny_ops_copy)


def test_meter_shards_and_merge_gives_their_union(tiny_ops_copy: Path, capfd: pytest.CaptureFixture[str]) -> None:
    shards = []
    for i in (1, 2):
        code, out, err = run(capfd, "meter", tiny_ops_copy, "--times", "3", "--shard", f"{i}/2")
        assert code == 0, err
        assert f"(shard {i}/2)" in out
        shards.append(LatencyTable.load(tiny_ops_copy / f"meta_latency.shard-{i}-of-2.json"))
    first, second = (set(s.keys()) for s in shards)
    assert first and second and not first & second and first | second == meta_keys(tiny_ops_copy)
    merged_path = tiny_ops_copy.parent / "merged.json"
    code, out, err = run(
        capfd,
        "merge",
        *(tiny_ops_copy / f"meta_latency.shard-{i}-of-2.json" for i in (1, 2)),
        "-o",
        merged_path,
        "--report",
        tiny_ops_copy.parent / "merge.json",
    )
    assert code == 0, err
    merged = LatencyTable.load(merged_path)
    assert set(merged.keys()) == first | second
    for shard in shards:
        for entry in shard:
            assert merged.get(entry.op.key).latency == entry.latency
    report = json.loads((tiny_ops_copy.parent / "merge.json").read_text())
    assert report["sources"] == [len(first), len(second)] and report["conflicts"] == []
    assert out.startswith(f"wrote {merged_path}: {len(first | second)} entries")


def test_predict_prints_what_the_predictor_computes(tiny_ops: Path, capfd: pytest.CaptureFixture[str]) -> None:
    expected = LatencyPredictor(LatencyTable.load(tiny_ops)).predict(TinyNet(), TINY_SHAPE)
    code, out, err = run(capfd, "predict", TINY_NET, "--input-shape", SHAPE, "--table", tiny_ops, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["latency_ms"] == pytest.approx(float(expected), rel=1e-12) and doc["latency_ms"] > 0
    assert [o["key"] for o in doc["ops"]] == [o.key for o in expected.ops]
    code, out, err = run(capfd, "predict", TINY_NET, "--input-shape", SHAPE, "--table", tiny_ops / "meta_latency.json")
    assert code == 0, err
    lo, hi = expected.interval(0.9)
    assert out.strip() == f"{float(expected):.3f} ms (90% interval {lo:.3f} to {hi:.3f} ms, uncalibrated)"
    code, out, err = run(capfd, "predict", TINY_NET, "--input-shape", SHAPE, "--table", tiny_ops, "--explain")
    assert code == 0, err
    assert all(o.key in out for o in expected.ops) and "90% interval" in out


def test_predict_prints_the_interval_calibrated_or_not(
    tiny_ops: Path, capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """--json carries the interval; --intervals FILE (conformal, fitted on measured models) replaces the prior;
    --confidence sets its level; a confidence of 1 is refused with the value received."""
    from mmt_nas.predict.intervals import ConformalIntervals

    expected = LatencyPredictor(LatencyTable.load(tiny_ops)).predict(TinyNet(), TINY_SHAPE)
    args = ["predict", TINY_NET, "--input-shape", SHAPE, "--table", tiny_ops]
    code, out, err = run(capfd, *args, "--json", "--confidence", "0.8")
    assert code == 0, err
    doc = json.loads(out)["interval"]
    assert doc["confidence"] == 0.8 and not doc["calibrated"]
    assert (doc["lower_ms"], doc["upper_ms"]) == pytest.approx(expected.interval(0.8))
    ConformalIntervals().fit([1.0, 2.0, 3.0, 4.0, 5.0], [0.05] * 5, [1.1, 2.3, 3.2, 4.6, 5.1]).save(
        tmp_path / "iv.json"
    )
    code, out, err = run(capfd, *args, "--intervals", tmp_path / "iv.json", "--json")
    assert code == 0, err
    assert (
        json.loads(out)["interval"]["calibrated"] is True and "conformal on 5" in json.loads(out)["interval"]["basis"]
    )
    code, out, err = run(capfd, *args, "--confidence", "1")
    assert "confidence=1.0" in error_line(code, err, "predict")


def test_measure_json_in_a_real_process(tmp_path: Path) -> None:
    proc = run_process("measure", TINY_NET, "--input-shape", SHAPE, "--times", "3", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)["latency_ms"]  # stdout is the JSON and nothing else
    assert stats["n"] == 3 and 0 < stats["min"] <= stats["median"] <= stats["p90"]
    assert proc.stderr == ""


def test_measure_prints_the_median(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capfd, "measure", TINY_NET, "--input-shape", SHAPE, "--kwargs", "{width: 4}", "--times", "3")
    assert code == 0, err
    assert out.startswith("median ") and out.rstrip().endswith("n=3)")
    assert float(out.split()[1]) > 0


def test_sample_proposes_ops_not_in_the_table(
    tiny_ops: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    candidates = write_space(
        tmp_path,
        (
            "torch.nn:\n"
            "  Conv2d: {in_channels: [8], out_channels: [8, 12, 16], kernel_size: [3], padding: [1], "
            "input_shape: [[1, 8, 16, 16]]}\n"
            "  Linear: {in_features: [8], out_features: [4, 6], input_shape: [[1, 8]]}\n"
        ),
        "candidates.yaml",
    )
    table = LatencyTable.load(tiny_ops)
    cand_keys = keys_of_space(candidates)
    new = {k for k in cand_keys if k not in table}
    assert len(cand_keys) == 5 and len(new) == 3  # the 8->8 conv and the 8->4 linear are in the tiny table
    code, out, err = run(capfd, "sample", candidates, "--table", tiny_ops, "--budget", "2", "-o", tmp_path / "n.yaml")
    assert code == 0, err
    chosen = keys_of_space(tmp_path / "n.yaml")
    assert len(chosen) == 2 and chosen <= new
    assert "5 candidate ops" in out and "2 already measured" in out
    # a budget above what is left: every candidate not measured yet, and only those
    code, out, err = run(
        capfd, "sample", candidates, "--table", tiny_ops, "--budget", "10", "-o", tmp_path / "all.yaml"
    )
    assert code == 0, err
    assert keys_of_space(tmp_path / "all.yaml") == new


def test_report_writes_json_and_markdown(tiny_ops: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "models.yaml").write_text(
        f"models:\n  - {{name: tiny, model: '{TINY_NET}', input_shape: {TINY_SHAPE}}}\n"
    )
    code, out, err = run(
        capfd,
        "report",
        "--table",
        tiny_ops,
        "--models",
        tmp_path / "models.yaml",
        "--out",
        tmp_path / "rep",
        "--times",
        "3",
        "--repeats",
        "1",
        "--profile-times",
        "2",
        "--no-plots",
    )
    assert code == 0, err
    doc = json.loads((tmp_path / "rep" / "report.json").read_text())
    (model,) = doc["models"]
    assert model["name"] == "tiny" and model["status"] == "ok" and model["measured_ms"] > 0
    expected = LatencyPredictor(LatencyTable.load(tiny_ops)).predict(TinyNet(), TINY_SHAPE)
    assert model["predicted_ms"] == pytest.approx(float(expected), rel=1e-12)
    assert doc["metrics"]["n_models"] == 1 and doc["metrics"]["n_failed"] == 0
    assert "| tiny | 1x3x16x16 |" in (tmp_path / "rep" / "report.md").read_text()
    assert "1 models (0 failed)" in out and not (tmp_path / "rep" / "report.json.journal").exists()


@pytest.mark.slow
def test_demo(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """The whole ResNet-18 demo (about 20 s)."""
    work = tmp_path / "demo"
    code, out, err = run(capfd, "demo", "--times", "3", "--work-dir", work)
    assert code == 0, err
    ops_dir = work / "ops"
    table = LatencyTable.load(ops_dir)
    assert set(table.keys()) == meta_keys(ops_dir) and len(table) > 10
    model = load_model(f"{ROOT / 'examples' / 'resnet18' / 'resnet18.py'}:ResNet18")
    predicted = LatencyPredictor(table).predict(model, [1, 3, 224, 224])
    assert "[3/4] predict" in out and f": {float(predicted):.2f} ms\n" in out
    assert f"prediction {float(predicted):.2f} ms vs measured " in out


# -- bad inputs -------------------------------------------------------------------------------------------------
# (id, command line, fragments its error line must hold, an argparse error?). In the command line, @OPS is the tiny
# ops folder (read only), @COPY a private copy of it, @TMP the test's temporary folder, @MODS tests/tinymods.py,
# @NET its TinyNet.

BAD = [
    (
        "space-shape-letters",
        "space @NET --input-shape 1,a,16,16 -o @TMP/s.yaml",
        ["argument --input-shape", "'1,a,16,16'"],
        True,
    ),
    ("space-shape-zero", "space @NET --input-shape 1,0,16,16", ["positive sizes", "'1,0,16,16'"], True),
    (
        "space-no-module",
        "space nowhere_xyz:Model --input-shape 1,3,16,16 -o @TMP/s.yaml",
        ["cannot import 'nowhere_xyz'", "No module named"],
        False,
    ),
    (
        "space-no-callable",
        "space @MODS:NoSuchNet --input-shape 1,3,16,16 -o @TMP/s.yaml",
        ["no attribute 'NoSuchNet'"],
        False,
    ),
    (
        "space-kwargs-list",
        "space @NET --input-shape 1,3,16,16 --kwargs [1] -o @TMP/s.yaml",
        ["--kwargs must be a mapping", "'[1]'"],
        False,
    ),
    (
        "space-wrong-shape",
        "space @NET --input-shape 1,4,16,16 -o @TMP/s.yaml",
        ["failed to run on input_shape=[1, 4, 16, 16]"],
        False,
    ),
    (
        "generate-missing-yaml",
        "generate @TMP/missing.yaml @TMP/ops",
        ["cannot read the op space", "missing.yaml"],
        False,
    ),
    ("generate-invalid-yaml", "generate @TMP/broken.yaml @TMP/ops", ["broken.yaml", "not valid YAML at line 3"], False),
    ("generate-no-valid-op", "generate @TMP/novalid.yaml @TMP/ops", ["yields no valid op", "in_channels"], False),
    ("generate-no-out-dir", "generate @TMP/novalid.yaml", ["the following arguments are required: out_dir"], True),
    ("meter-missing-folder", "meter @TMP/no_such_ops --times 3", ["cannot meter", "no_such_ops"], False),
    ("meter-shard-text", "meter @OPS --times 3 --shard x", ["a shard is written i/n", "'x'"], False),
    ("meter-shard-range", "meter @OPS --times 3 --shard 3/2", ["1 <= i <= n", "(3, 2)"], False),
    ("meter-times-0", "meter @OPS --times 0", ["times=0"], False),
    ("meter-times-text", "meter @OPS --times many", ["argument --times", "'many'"], True),
    ("meter-other-settings", "meter @COPY --times 3 --threads 2", ["threads=2", "meta_latency.json"], False),
    ("merge-no-inputs", "merge -o @TMP/m.json", ["the following arguments are required: tables"], True),
    ("merge-over-an-existing-output", "merge @OPS -o @TMP/existing.json", ["existing.json", "exists"], False),
    ("merge-missing-input", "merge @TMP/nothere.json -o @TMP/m.json", ["not found", "nothere.json"], False),
    ("merge-negative-rtol", "merge @OPS -o @TMP/m.json --rtol -1", ["rtol", "-1"], False),
    ("predict-shape-malformed", "predict @NET --input-shape 1,3,16,1b --table @OPS", ["'1,3,16,1b'"], True),
    ("predict-missing-table", "predict @NET --input-shape 1,3,16,16 --table @TMP/nodir", ["not found", "nodir"], False),
    ("predict-no-module", "predict nowhere_xyz:Model --input-shape 1,3,16,16 --table @OPS", ["'nowhere_xyz'"], False),
    (
        "predict-no-colon",
        "predict nowhere_xyz --input-shape 1,3,16,16 --table @OPS",
        ["module:callable", "'nowhere_xyz'"],
        False,
    ),
    (
        "predict-bad-kwarg",
        "predict @NET --input-shape 1,3,16,16 --table @OPS --kwargs '{depth: 3}'",
        ["'depth'"],
        False,
    ),
    ("predict-other-threads", "predict @NET --input-shape 1,3,16,16 --table @OPS --threads 2", ["threads=2"], False),
    (
        "predict-bad-expect-device",
        "predict @NET --input-shape 1,3,16,16 --table @OPS --expect-device '[1'",
        ["--expect-device", "'[1'"],
        False,
    ),
    (
        "predict-other-device",
        "predict @NET --input-shape 1,3,16,16 --table @OPS --expect-device '{cpu_model: Zz-9}'",
        ["another device", "'Zz-9'"],
        False,
    ),
    (
        "predict-missing-calibration",
        "predict @NET --input-shape 1,3,16,16 --table @OPS --calibration @TMP/c.json",
        ["calibration", "c.json"],
        False,
    ),
    (
        "predict-truncated-table",
        "predict @NET --input-shape 1,3,16,16 --table @TMP/truncated.json",
        ["truncated.json", "truncated"],
        False,
    ),
    ("measure-times-0", "measure @NET --input-shape 1,3,16,16 --times 0", ["times=0"], False),
    ("measure-threads-0", "measure @NET --input-shape 1,3,16,16 --times 3 --threads 0", ["threads=0"], False),
    ("measure-no-shape", "measure @NET --times 3", ["the following arguments are required: --input-shape"], True),
    (
        "measure-not-exportable",
        "measure @MODS:NotExportable --input-shape 1,4,4 --times 3",
        ["could not export NotExportable"],
        False,
    ),
    ("sample-budget-0", "sample @TMP/candidates.yaml --table @OPS --budget 0 -o @TMP/n.yaml", ["budget=0"], False),
    (
        "sample-missing-candidates",
        "sample @TMP/missing.yaml --table @OPS -o @TMP/n.yaml",
        ["cannot read the op space", "missing.yaml"],
        False,
    ),
    (
        "sample-missing-table",
        "sample @TMP/candidates.yaml --table @TMP/nodir -o @TMP/n.yaml",
        ["not found", "nodir"],
        False,
    ),
    ("sample-budget-text", "sample @TMP/candidates.yaml --table @OPS --budget all", ["--budget", "'all'"], True),
    (
        "report-empty-models",
        "report --table @OPS --models @TMP/empty_models.yaml --out @TMP/rep",
        ["empty_models.yaml", "non-empty list under 'models:'"],
        False,
    ),
    (
        "report-model-without-shape",
        "report --table @OPS --models @TMP/shapeless_models.yaml --out @TMP/rep",
        ["models[0].input_shape"],
        False,
    ),
    (
        "report-missing-models",
        "report --table @OPS --models @TMP/nomodels.yaml --out @TMP/rep",
        ["cannot read the model list", "nomodels.yaml"],
        False,
    ),
    (
        "report-missing-table",
        "report --table @TMP/nodir --models @TMP/models.yaml --out @TMP/rep",
        ["not found", "nodir"],
        False,
    ),
    (
        "demo-missing-example",
        "demo --example-dir @TMP/no_example --work-dir @TMP/demo",
        ["cannot read the op space", "no_example"],
        False,
    ),
    ("demo-times-text", "demo --times x --work-dir @TMP/demo", ["argument --times", "'x'"], True),
    ("no-command", "", ["the following arguments are required: command"], True),
]
#: one refusal per subcommand, also run as a real process
IN_A_PROCESS = [
    "space-no-module",
    "generate-missing-yaml",
    "meter-shard-text",
    "merge-over-an-existing-output",
    "predict-missing-table",
    "measure-times-0",
    "sample-budget-0",
    "report-empty-models",
    "demo-missing-example",
]


@pytest.fixture()
def bad_files(tmp_path: Path) -> Path:
    """The files the bad command lines name, in ``tmp_path/work``."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "broken.yaml").write_text("torch.nn:\n  ReLU: [\n")
    (work / "novalid.yaml").write_text(
        "torch.nn:\n  Conv2d: {in_channels: [8], out_channels: [8], kernel_size: [3], input_shape: [[1, 3, 8, 8]]}\n"
    )
    (work / "candidates.yaml").write_text(
        "torch.nn:\n  Linear: {in_features: [8], out_features: [5], input_shape: [[1, 8]]}\n"
    )
    (work / "existing.json").write_text("{}\n")
    (work / "truncated.json").write_text('{"schema": "mmt_nas/latency-table", "entries": [\n')
    (work / "empty_models.yaml").write_text("models: []\n")
    (work / "shapeless_models.yaml").write_text(f"models:\n  - {{name: tiny, model: '{TINY_NET}'}}\n")
    (work / "models.yaml").write_text(f"models:\n  - {{name: tiny, model: '{TINY_NET}', input_shape: {TINY_SHAPE}}}\n")
    return work


def command_line(case: str, work: Path, request: pytest.FixtureRequest) -> tuple[list[str], str, list[str], bool]:
    """The case's argv, subcommand, fragments (placeholders filled in) and whether argparse refuses it."""
    line, fragments, usage = next((c[1], c[2], c[3]) for c in BAD if c[0] == case)
    places = {"@NET": TINY_NET, "@MODS": str(HERE / "tinymods.py"), "@TMP": str(work)}
    if "@OPS" in line:
        places["@OPS"] = str(request.getfixturevalue("tiny_ops"))
    if "@COPY" in line:
        places["@COPY"] = str(request.getfixturevalue("tiny_ops_copy"))
    argv = []
    for arg in shlex.split(line):
        for k, v in places.items():
            arg = arg.replace(k, v)
        argv.append(arg)
    return argv, (argv[0] if argv else ""), fragments, usage


@pytest.mark.parametrize("case", [c[0] for c in BAD])
def test_bad_input_is_refused_in_one_line(
    case: str, bad_files: Path, request: pytest.FixtureRequest, capfd: pytest.CaptureFixture[str]
) -> None:
    argv, command, fragments, usage = command_line(case, bad_files, request)
    before = sorted(p.name for p in request.getfixturevalue("tiny_ops").iterdir())
    code, _, err = run(capfd, *argv)
    line = error_line(code, err, command, usage=usage)
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    assert sorted(p.name for p in request.getfixturevalue("tiny_ops").iterdir()) == before  # a refusal writes nothing


@pytest.mark.parametrize("case", IN_A_PROCESS)
def test_bad_input_is_refused_in_one_line_by_a_real_process(
    case: str, bad_files: Path, request: pytest.FixtureRequest
) -> None:
    argv, command, fragments, usage = command_line(case, bad_files, request)
    proc = run_process(*argv, cwd=bad_files)
    line = error_line(proc.returncode, proc.stderr, command, usage=usage)
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"


def test_merge_of_tables_with_other_settings_is_refused(
    tiny_ops: Path, tiny_ops_copy: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    other = tiny_ops_copy / "threads2.json"
    code, _, err = run(capfd, "meter", tiny_ops_copy, "--times", "3", "--threads", "2", "-o", other)
    assert code == 0, err
    out_path = tiny_ops_copy.parent / "mixed.json"
    code, _, err = run(capfd, "merge", tiny_ops, other, "-o", out_path)
    line = error_line(code, err, "merge")
    assert "threads=2" in line and "threads=1" in line and "never merged" in line
    assert not out_path.exists()


def test_predict_of_ops_missing_from_the_table_lists_them(tiny_ops: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """Refused with status 2; the first line says what is wrong, then one line per missing op (and its closest)."""
    code, _, err = run(
        capfd, "predict", TINY_NET, "--kwargs", "{width: 16}", "--input-shape", SHAPE, "--table", tiny_ops
    )
    assert code == 2 and "Traceback" not in err
    first, *rest = err.rstrip("\n").splitlines()
    assert first.startswith("mmt-nas predict: error: 6 op(s) of the model are not in the latency table")
    assert sum(line.startswith("  - ") for line in rest) == 6
    assert any("Linear(in_features=16, out_features=4" in line for line in rest)


# -- refusals that were found to be tracebacks, exit 0 or several lines, and fixed --------------------------------


@pytest.mark.parametrize("command", ["space", "predict", "measure"])
def test_malformed_kwargs_are_refused_in_one_line(
    command: str, tiny_ops: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    extra = {
        "space": ["-o", str(tmp_path / "s.yaml")],
        "predict": ["--table", str(tiny_ops)],
        "measure": ["--times", "3"],
    }[command]
    code, _, err = run(capfd, command, TINY_NET, "--input-shape", SHAPE, "--kwargs", "{width: ", *extra)
    assert "--kwargs" in error_line(code, err, command)


def test_input_shape_with_an_empty_part_is_refused(tiny_ops: Path, capfd: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capfd, "predict", TINY_NET, "--input-shape", "1,3,,16", "--table", tiny_ops)
    assert "'1,3,,16'" in error_line(code, err, "predict", usage=True)


def test_report_with_a_models_file_that_is_not_yaml(
    tiny_ops: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "models.yaml").write_text("models: [\n")
    code, _, err = run(
        capfd, "report", "--table", tiny_ops, "--models", tmp_path / "models.yaml", "--out", tmp_path / "rep"
    )
    assert "not valid YAML" in error_line(code, err, "report")


def test_meter_on_a_backend_that_does_not_exist(tiny_ops_copy: Path, capfd: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        capfd, "meter", tiny_ops_copy, "--times", "3", "--backend", "NOPE", "-o", tiny_ops_copy / "nope.json"
    )
    lines = err.strip().splitlines()
    assert code == 2, err
    # each op's failure is logged, then the last line says that nothing could be metered, and why
    n_ops = len(json.loads((tiny_ops_copy / "meta.json").read_text())["ops"])
    assert lines[-1].startswith(f"mmt-nas meter: error: none of the {n_ops} ops") and "NOPE" in lines[-1], err
    assert sum("skipping" in line for line in lines) == n_ops, err
    assert not (tiny_ops_copy / "nope.json").exists()  # no empty table left behind
