"""End to end: a real model through space → generate → meter → predict → measure, the CLI,
the examples and the README's commands (the security guards are in test_security.py)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import HERE, ROOT, TINY_SHAPE
from tinymods import TinyNet

from mmt_nas.build.generate import generate_ops_list
from mmt_nas.build.measure import measure_latency
from mmt_nas.device.meter import meter_ops
from mmt_nas.parser import parse_model, predict_latency
from mmt_nas.predict.cache import in_model_ms
from mmt_nas.space.describe import space_from_model
from mmt_nas.space.opspace import dump_space

# The quick tier (`pytest -m "not slow"`) leaves these out:
# whole pipelines: generate, meter, predict and measure, the demo.
pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "mmt_nas.cli"]


def test_end_to_end_on_a_real_model(tmp_path: Path) -> None:
    model = TinyNet(width=16)
    dump_space(space_from_model(model, TINY_SHAPE), tmp_path / "ops.yaml")
    result = generate_ops_list(tmp_path / "ops.yaml", tmp_path / "ops")
    assert result.failed == [] and result.skipped == []
    table = meter_ops(tmp_path / "ops", times=10)
    pred = predict_latency(model, tmp_path / "ops", TINY_SHAPE)
    ops = parse_model(model, TINY_SHAPE)
    counted = [op for op in ops if op.fused_into is None]
    assert {op.class_name for op in counted} >= {"Conv2d", "Functional", "AdaptiveAvgPool2d", "Linear"}
    assert all(table.get(op.key).core_ms is not None for op in counted)
    # each op's core time in the model's cache state (a small model: its activations cold, its weights hot)
    assert float(pred) == pytest.approx(
        sum(in_model_ms(table.get(op.key), table.get(op.key).core_ms, 0.0) for op in counted), rel=1e-12
    )
    assert sum(o.count for o in pred.ops) == len(ops)
    measured = measure_latency(model, TINY_SHAPE, times=10)
    assert measured.n == 10 and measured.median_ms > 0
    assert model.training is False or model.training is True  # flags restored, model still usable
    model(__import__("torch").randn(TINY_SHAPE))


def _run(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(CLI + args, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_cli_space_generate_meter_predict_measure(tmp_path: Path) -> None:
    model = f"{HERE / 'tinymods.py'}:TinyNet"
    shape = ",".join(map(str, TINY_SHAPE))
    assert (
        _run(["space", model, "--input-shape", shape, "--kwargs", "{width: 4}", "-o", "s.yaml"], tmp_path).returncode
        == 0
    )
    gen = _run(["generate", "s.yaml", "ops"], tmp_path)
    assert gen.returncode == 0, gen.stderr
    assert "exported" in gen.stdout and "Converted" not in gen.stdout + gen.stderr  # MNN's chatter is hidden
    assert _run(["meter", "ops", "--times", "5"], tmp_path).returncode == 0
    pred = _run(
        ["predict", model, "--kwargs", "{width: 4}", "--input-shape", shape, "--table", "ops", "--json"], tmp_path
    )
    assert pred.returncode == 0, pred.stderr
    doc = json.loads(pred.stdout)
    assert doc["latency_ms"] == pytest.approx(sum(o["total_ms"] for o in doc["ops"]))
    meas = _run(
        ["measure", model, "--kwargs", "{width: 4}", "--input-shape", shape, "--times", "5", "--json"], tmp_path
    )
    assert json.loads(meas.stdout)["latency_ms"]["n"] == 5
    # a model with ops outside the table: a clear error, exit status 2
    bad = _run(["predict", model, "--input-shape", shape, "--table", "ops"], tmp_path)
    assert bad.returncode == 2 and "not in the latency table" in bad.stderr and "Traceback" not in bad.stderr
    bad = _run(["predict", "nowhere_xyz:Model", "--input-shape", shape, "--table", "ops"], tmp_path)
    assert bad.returncode == 2 and "nowhere_xyz" in bad.stderr


def test_demo_runs(tmp_path: Path) -> None:
    out = _run(["demo", "--times", "5", "--work-dir", str(tmp_path / "demo")], ROOT)
    assert out.returncode == 0, out.stderr
    assert re.search(r"prediction [\d.]+ ms vs measured [\d.]+ ms: error [+-][\d.]+%", out.stdout)


def test_quickstart_example_runs(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), "--times", "5", "--work-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    assert re.search(r"predicted [\d.]+ ms, measured [\d.]+ ms", out.stdout)


def test_ci_runs_the_readmes_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```(?:bash|sh)\n(.*?)\n```", readme, re.S)
    assert len(commands) >= 2 and "mmt-nas demo" in commands[0]
    assert commands[1].strip() in (ROOT / ".ci" / "run").read_text()
    for command in commands[:2]:
        assert "-c constraints.txt" in command
    assert "torch==2.13.0" in (ROOT / "constraints.txt").read_text()


def test_a_small_transformer_end_to_end(tmp_path: Path) -> None:
    """Self-attention (forward(q, k, v), tuple output) is generated, metered and predicted."""
    import torch

    layer = torch.nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.TransformerEncoder(layer, 1)).eval()
    shape = [1, 8, 16]
    dump_space(space_from_model(model, shape), tmp_path / "ops.yaml")
    result = generate_ops_list(tmp_path / "ops.yaml", tmp_path / "ops")
    assert result.failed == [] and result.skipped == []
    table = meter_ops(tmp_path / "ops", times=5)
    mha = next(e for e in table if e.op.class_name == "MultiheadAttention")
    assert mha.op.single_output is False  # so tracing never replaces it by a single tensor
    pred = predict_latency(model, tmp_path / "ops", shape)
    assert {o.class_name for o in pred.ops} >= {"MultiheadAttention", "Linear", "LayerNorm", "Functional"}
    assert measure_latency(model, shape, times=5).median_ms > 0
