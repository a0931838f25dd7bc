"""Broken tables, models that cannot be exported, ops MNN cannot convert, and models asked at the wrong shape:
each gets its own clear error, with the real converter and runtime."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TINY_SHAPE, write_space
from tinymods import NotExportable, TinyNet

from mmt_nas.build.export import export_to_mnn
from mmt_nas.build.generate import generate_ops_list
from mmt_nas.build.measure import measure_latency
from mmt_nas.exceptions import ExportError, TableError, UnknownOpError
from mmt_nas.parser import predict_latency
from mmt_nas.table.records import SCHEMA_VERSION, load_ops_meta
from mmt_nas.table.table import LatencyTable

# -- broken tables --------------------------------------------------------------------------------------------


def _real(tiny_ops: Path) -> tuple[str, dict]:
    text = (tiny_ops / "meta_latency.json").read_text(encoding="utf-8")
    return text, json.loads(text)


def _load_error(tmp_path: Path, content: str | bytes) -> str:
    path = tmp_path / "meta_latency.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(TableError) as info:
        LatencyTable.load(path)
    return str(info.value)


def test_truncated_table(tiny_ops: Path, tmp_path: Path) -> None:
    text, _ = _real(tiny_ops)
    for cut in (len(text) // 2, len(text) // 3, len(text) - 3):
        msg = _load_error(tmp_path, text[:cut])
        assert "truncated" in msg and "not valid JSON" in msg and "meta_latency.json" in msg


def test_future_schema_version(tiny_ops: Path, tmp_path: Path) -> None:
    _, doc = _real(tiny_ops)
    msg = _load_error(tmp_path, json.dumps({**doc, "schema_version": SCHEMA_VERSION + 1}))
    assert f"schema_version={SCHEMA_VERSION + 1}" in msg and "Upgrade mmt_nas" in msg


def _with_median(doc: dict, index: int, value: float | str) -> dict:
    doc = json.loads(json.dumps(doc))
    doc["entries"][index]["latency_ms"]["median"] = value
    return doc


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
def test_non_finite_latency_names_the_entry_and_field(tiny_ops: Path, tmp_path: Path, literal: str) -> None:
    _, doc = _real(tiny_ops)
    i = len(doc["entries"]) // 2
    marked = json.dumps(_with_median(doc, i, 987654.321)).replace("987654.321", literal)
    msg = _load_error(tmp_path, marked)
    assert f"entries[{i}].latency_ms.median" in msg and repr(doc["entries"][i]["key"]) in msg
    assert "non-finite" in msg


def test_negative_latency_names_the_entry_and_field(tiny_ops: Path, tmp_path: Path) -> None:
    _, doc = _real(tiny_ops)
    i = len(doc["entries"]) - 1
    msg = _load_error(tmp_path, json.dumps(_with_median(doc, i, -0.25)))
    assert f"entries[{i}]" in msg and "median" in msg and "-0.25" in msg and ">= 0" in msg


NOT_TABLES = {
    "binary": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", ["not UTF-8"]),
    "empty": ("", ["not valid JSON"]),
    "yaml op space": ("torch.nn:\n  ReLU: {no_params: true, input_shape: [[1, 4]]}\n", ["not valid JSON"]),
    "json list": ("[1, 2, 3]", ["is not a latency table", "'list'"]),
    "other json": (json.dumps({"name": "pkg", "version": "1.0"}), ["is not a latency table", "expected schema"]),
}


@pytest.mark.parametrize("content,fragments", list(NOT_TABLES.values()), ids=list(NOT_TABLES))
def test_a_file_that_is_not_a_table(tmp_path: Path, content: str | bytes, fragments: list[str]) -> None:
    msg = _load_error(tmp_path, content)
    for fragment in fragments:
        assert fragment in msg


def test_ops_meta_in_place_of_a_table_and_back(tiny_ops: Path, tmp_path: Path) -> None:
    msg = _load_error(tmp_path, (tiny_ops / "meta.json").read_text(encoding="utf-8"))
    assert "is not a latency table" in msg and "'mmt_nas/ops-meta'" in msg and "meta.json" in msg
    folder = tmp_path / "swapped"
    folder.mkdir()
    shutil.copy(tiny_ops / "meta_latency.json", folder / "meta.json")
    with pytest.raises(TableError, match="It is a latency table"):
        load_ops_meta(folder)


# -- models and ops that cannot be exported or converted --------------------------------------------------------


class UsesErfinv(torch.nn.Module):
    """A torch op with no ONNX export at opset 17."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.erfinv(x.tanh())


class UsesHistc(torch.nn.Module):
    """A data-dependent op (a histogram of the input's values) with no ONNX export."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.histc(x, bins=4).sum()


@pytest.mark.parametrize(
    "module,shape,op",
    [(NotExportable(), [1, 4, 4], "fft"), (UsesErfinv(), [1, 8], "erfinv"), (UsesHistc(), [2, 3], "histc")],
    ids=["fft", "erfinv", "histc"],
)
def test_model_that_cannot_be_exported(tmp_path: Path, module: torch.nn.Module, shape: list[int], op: str) -> None:
    name = type(module).__name__
    with pytest.raises(ExportError) as info:
        measure_latency(module, shape, times=2)
    msg = str(info.value)
    assert name in msg and f"input_shape={shape}" in msg and op in msg and "ONNX" in msg
    with pytest.raises(ExportError) as info:
        export_to_mnn(module, shape, tmp_path / "m.mnn")
    assert name in str(info.value) and f"input_shape={shape}" in str(info.value)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


_UNCONVERTIBLE = '''
import torch


class IsInfMask(torch.nn.Module):
    """Exports to ONNX IsInf, which MNN 3.6's converter does not support."""

    def forward(self, x):
        return torch.isinf(x).float() + x
'''

_SPACE = """
hostile_mods:
  IsInfMask: {no_params: true, input_shape: [[1, 8]]}
torch.nn:
  ReLU: {no_params: true, input_shape: [[1, 8]]}
  Linear: {in_features: [8], out_features: [4], input_shape: [[1, 8]]}
"""


def test_op_mnn_cannot_convert_is_reported_and_the_rest_proceed(tmp_path: Path) -> None:
    path = write_space(tmp_path, _SPACE)
    (tmp_path / "hostile_mods.py").write_text(_UNCONVERTIBLE)
    result = generate_ops_list(path, tmp_path / "ops")
    assert [k.split("|")[0] for k, _ in result.failed] == ["IsInfMask"]
    key, reason = result.failed[0]
    assert key == "IsInfMask|IsInfMask()|1x8"
    assert "IsInf" in reason and "does not support" in reason and "input_shape=[1, 8]" in reason
    assert sorted(op.class_name for op in load_ops_meta(tmp_path / "ops")) == ["Linear", "ReLU"]
    assert sorted(k.split("|")[0] for k in result.exported) == ["Linear", "ReLU"]
    # the command line: non-zero exit status, the op's key and reason printed
    cli = subprocess.run(
        [sys.executable, "-m", "mmt_nas.cli", "generate", str(path), str(tmp_path / "ops2")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert cli.returncode != 0
    assert f"FAILED {key}" in cli.stdout and "IsInf" in cli.stdout and "Traceback" not in cli.stderr


def test_corrupt_onnx_file_is_an_export_error(tmp_path: Path) -> None:
    from mmt_nas.build.export import _onnx_to_mnn

    onnx = tmp_path / "broken.onnx"
    onnx.write_bytes(b"\x08\x07garbage, not a protobuf model" * 10)
    with pytest.raises(ExportError, match="broken.onnx"):
        _onnx_to_mnn(onnx, tmp_path / "broken.mnn")


# -- a model asked at another input shape than the table holds ---------------------------------------------------


def test_model_at_another_shape_names_missing_ops_and_the_shapes_the_table_has(tiny_ops: Path) -> None:
    table = LatencyTable.load(tiny_ops)
    shape = [1, 3, 32, 32]  # the table was generated for 1x3x16x16
    with pytest.raises(UnknownOpError) as info:
        predict_latency(TinyNet(), tiny_ops, shape)
    msg, missing = str(info.value), info.value.missing
    assert missing and all(k not in table for k in missing)
    sections = msg.split("\n  - ")[1:]
    assert len(sections) == len(missing)
    with_shapes = 0
    for key, section in zip(missing, sections):
        assert section.startswith(key)
        assert "closest in the table:" in section
        op_part = key.rpartition("|")[0]
        others = [k.rpartition("|")[2] for k in table.keys() if k.rpartition("|")[0] == op_part]
        if others:
            with_shapes += 1
            assert f"the table has this op at input shape {', '.join(others)}, not {key.rpartition('|')[2]}" in section
        else:
            assert "the table has this op" not in section
    assert with_shapes >= 1  # e.g. the stem convolution, measured at 1x3x16x16
    assert any(k.startswith("Conv2d|") and k.endswith("|1x3x32x32") for k in missing)
    assert predict_latency(TinyNet(), tiny_ops, TINY_SHAPE) > 0  # the right shape predicts
