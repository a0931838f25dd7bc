"""Generating ops folders: export to MNN, skipping, collisions, incremental runs, failures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import TINY_SPACE, write_space

from mmt_nas.build.export import export_to_mnn
from mmt_nas.build.generate import generate_ops_list
from mmt_nas.exceptions import ExportError, OpSpaceError
from mmt_nas.table.records import load_ops_meta
from mmt_nas.vocab import op_key


def test_tiny_space_generates_valid_ops_and_skips_misfits(tiny_ops: Path) -> None:
    ops = load_ops_meta(tiny_ops)
    by_class: dict[str, list] = {}
    for op in ops:
        by_class.setdefault(op.class_name, []).append(op)
    # Conv2d: in_channels {3, 8} x shapes {3ch, 8ch}: only the two matching pairs are valid.
    assert sorted((o.args["in_channels"], o.input_shape[1]) for o in by_class["Conv2d"]) == [(3, 3), (8, 8)]
    assert set(by_class) == {"Conv2d", "ReLU", "AdaptiveAvgPool2d", "Linear", "TinyBlock", "Functional"}
    assert sorted(o.key for o in by_class["Functional"]) == [
        "Functional|Tensor.add(x, T[1x8x16x16])|1x8x16x16",
        "Functional|torch.flatten(x, 1)|1x8x1x1",
    ]
    for op in ops:
        assert (tiny_ops / op.file).stat().st_size > 0
        assert op.key == op_key(op.class_name, op.key.split("|")[1], op.input_shape)
    conv = next(o for o in by_class["Conv2d"] if o.args["in_channels"] == 3)
    assert conv.output_shape == (1, 8, 16, 16)
    assert conv.params == 8 * 3 * 3 * 3 + 8
    assert conv.flops == 2 * (8 * 3 * 3 * 3) * 16 * 16  # multiply-adds of the conv, counted as 2 FLOPs
    assert not list(tiny_ops.glob("*.onnx"))


def test_generate_reports_skipped_combinations(tmp_path: Path) -> None:
    result = generate_ops_list(write_space(tmp_path, TINY_SPACE), tmp_path / "ops")
    assert len(result.skipped) == 2
    assert all("cannot run on this input shape" in s.reason for s in result.skipped)
    assert {s.args["in_channels"] for s in result.skipped} == {3, 8}
    assert len(result.exported) == 8 and result.failed == []


def test_generate_is_incremental(tmp_path: Path) -> None:
    small = "torch.nn:\n  ReLU: {no_params: true, input_shape: [[1, 4], [1, 8]]}\n"
    path = write_space(tmp_path, small)
    first = generate_ops_list(path, tmp_path / "ops")
    assert len(first.exported) == 2
    files = {f.name: f.stat().st_mtime_ns for f in (tmp_path / "ops").glob("*.mnn")}
    again = generate_ops_list(path, tmp_path / "ops")
    assert again.exported == [] and len(again.reused) == 2
    path.write_text(small.replace("[1, 8]]", "[1, 8], [1, 16]]"))
    grown = generate_ops_list(path, tmp_path / "ops")
    assert grown.exported == [op_key("ReLU", "ReLU()", (1, 16))]
    assert {f.name: f.stat().st_mtime_ns for f in (tmp_path / "ops").glob("*.mnn") if f.name in files} == files
    assert len(load_ops_meta(tmp_path / "ops")) == 3


def test_identical_repr_for_different_arguments_is_refused(tmp_path: Path) -> None:
    (tmp_path / "collide_mods.py").write_text(
        "from torch import nn\nclass Scale(nn.Module):\n    def __init__(self, factor):\n        super().__init__()\n"
        "        self.factor = factor\n    def forward(self, x):\n        return x * self.factor\n"
        "    def __repr__(self):\n        return 'Scale()'\n"
    )
    (tmp_path / "ops.yaml").write_text("collide_mods:\n  Scale: {factor: [2, 3], input_shape: [[1, 4]]}\n")
    with pytest.raises(OpSpaceError) as info:
        generate_ops_list(tmp_path / "ops.yaml", tmp_path / "ops")
    msg = str(info.value)
    assert "Override __repr__" in msg and "'factor': 2" in msg and "'factor': 3" in msg
    assert not (tmp_path / "ops").exists()


def test_a_library_subclass_that_computes_the_same_is_the_same_op_and_one_that_differs_is_refused(
    tmp_path: Path,
) -> None:
    """As timm's Linear: a subclass of torch.nn.Linear with the same class name and repr. Computing the same, it
    is the same op (one entry, which either class's models then find); computing otherwise, it is refused."""
    (tmp_path / "mylib.py").write_text(
        "import torch\nfrom torch import nn\nimport torch.nn.functional as F\n"
        "class Linear(nn.Linear):\n    def forward(self, x):\n"
        "        return F.linear(x, self.weight.to(dtype=x.dtype), self.bias)\n"
    )
    (tmp_path / "otherlib.py").write_text(
        "from torch import nn\nclass Linear(nn.Linear):\n    def forward(self, x):\n"
        "        return super().forward(x).relu()\n"
    )
    block = "  Linear: {in_features: [8], out_features: [4], input_shape: [[1, 8]]}\n"
    (tmp_path / "ops.yaml").write_text("torch.nn:\n" + block + "mylib:\n" + block)
    generate_ops_list(tmp_path / "ops.yaml", tmp_path / "ops")
    ops = load_ops_meta(tmp_path / "ops")
    assert [(op.module, op.key) for op in ops] == [("torch.nn", op_key("Linear", repr(torch.nn.Linear(8, 4)), (1, 8)))]
    (tmp_path / "einsumlib.py").write_text(  # the same numbers, but another graph (MatMul + Add, not Gemm)
        "import torch\nfrom torch import nn\nclass Linear(nn.Linear):\n    def forward(self, x):\n"
        "        return torch.einsum('bi,oi->bo', x, self.weight) + self.bias\n"
    )
    for lib in ("otherlib", "einsumlib"):
        (tmp_path / "bad.yaml").write_text("torch.nn:\n" + block + f"{lib}:\n" + block)
        with pytest.raises(OpSpaceError, match="two different ops have the same key") as info:
            generate_ops_list(tmp_path / "bad.yaml", tmp_path / "bad")
        assert f"{lib}.Linear" in str(info.value) and not (tmp_path / "bad").exists()


def test_failed_export_is_reported_and_the_rest_proceed(tmp_path: Path) -> None:
    path = write_space(
        tmp_path,
        "tinymods:\n  NotExportable: {no_params: true, input_shape: [[1, 4, 4]]}\n"
        "torch.nn:\n  ReLU: {no_params: true, input_shape: [[1, 4]]}\n",
    )
    result = generate_ops_list(path, tmp_path / "ops")
    assert [k.split("|")[0] for k, _ in result.failed] == ["NotExportable"]
    assert "fft" in result.failed[0][1]
    assert [op.class_name for op in load_ops_meta(tmp_path / "ops")] == ["ReLU"]


def test_space_with_no_valid_op_is_an_error(tmp_path: Path) -> None:
    path = write_space(
        tmp_path,
        "torch.nn:\n  Conv2d: {in_channels: [3], out_channels: [4], kernel_size: [3], input_shape: [[1, 5, 8, 8]]}\n",
    )
    with pytest.raises(OpSpaceError, match="yields no valid op"):
        generate_ops_list(path, tmp_path / "ops")


def test_keep_onnx(tmp_path: Path) -> None:
    path = write_space(tmp_path, "torch.nn:\n  ReLU: {no_params: true, input_shape: [[1, 4]]}\n")
    generate_ops_list(path, tmp_path / "ops", keep_onnx=True)
    assert len(list((tmp_path / "ops").glob("*.onnx"))) == 1


def test_export_error_names_the_module(tmp_path: Path) -> None:
    from tinymods import NotExportable

    with pytest.raises(ExportError, match="NotExportable"):
        export_to_mnn(NotExportable(), [1, 4, 4], tmp_path / "x.mnn")
    assert list(tmp_path.iterdir()) == []


def test_a_second_process_generating_into_the_same_folder_is_refused(tmp_path: Path) -> None:
    from mmt_nas._files import exclusive_lock
    from mmt_nas.exceptions import LockedError

    path = write_space(tmp_path, "torch.nn:\n  ReLU: {no_params: true, input_shape: [[1, 4, 8, 8]]}\n")
    out = tmp_path / "ops"
    with exclusive_lock(out / ".meta.json.lock", "generating (the test)"):  # as a running generate holds it
        with pytest.raises(LockedError, match=r"already generating ops into .*generate into another folder"):
            generate_ops_list(path, out)
        assert not (out / "meta.json").exists()
    assert len(generate_ops_list(path, out).exported) == 1  # released: a rerun proceeds
