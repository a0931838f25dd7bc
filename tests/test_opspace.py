"""The op-space YAML: expansion, every documented error, and spaces built from models."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from conftest import TINY_SHAPE, write_space
from hypothesis import given, settings
from hypothesis import strategies as st

from mmt_nas.exceptions import OpSpaceError
from mmt_nas.space.describe import space_from_model
from mmt_nas.space.opspace import expand_space, load_space


def test_cartesian_expansion_counts_every_combination(tmp_path: Path) -> None:
    path = write_space(
        tmp_path,
        """
torch.nn:
  Conv2d:
    in_channels: [3, 8]
    out_channels: [8, 16, 32]
    kernel_size: [1, 3]
    input_shape: [[1, 3, 8, 8], [1, 8, 8, 8]]
  ReLU:
    no_params: true
    input_shape: [[1, 4], [1, 8]]
""",
    )
    specs = load_space(path)
    convs = [s for s in specs if s.class_name == "Conv2d"]
    assert len(convs) == 2 * 3 * 2 * 2
    assert {(s.args["in_channels"], s.args["out_channels"], s.args["kernel_size"], s.input_shape) for s in convs} == {
        (i, o, k, sh) for i in (3, 8) for o in (8, 16, 32) for k in (1, 3) for sh in ((1, 3, 8, 8), (1, 8, 8, 8))
    }
    relus = [s for s in specs if s.class_name == "ReLU"]
    assert [s.args for s in relus] == [{}, {}] and {s.input_shape for s in relus} == {(1, 4), (1, 8)}


def test_list_of_blocks_and_duplicates_removed(tmp_path: Path) -> None:
    path = write_space(
        tmp_path,
        """
torch.nn:
  BatchNorm2d:
    - {num_features: [8], input_shape: [[1, 8, 4, 4]]}
    - {num_features: [8, 16], input_shape: [[1, 8, 4, 4]]}
""",
    )
    specs = load_space(path)
    assert sorted(s.args["num_features"] for s in specs) == [8, 16]


def test_user_module_found_next_to_the_yaml(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "mods_next_to_yaml.py").write_text(
        "from torch import nn\nclass Mine(nn.Module):\n    def __init__(self, width):\n        super().__init__()\n"
        "        self.width = width\n    def forward(self, x):\n        return x * self.width\n"
    )
    (tmp_path / "sub" / "ops.yaml").write_text("mods_next_to_yaml:\n  Mine: {width: [2, 3], input_shape: [[1, 4]]}\n")
    specs = load_space(tmp_path / "sub" / "ops.yaml")
    assert [s.args["width"] for s in specs] == [2, 3]
    assert specs[0].build(tmp_path / "sub").width == 2


ERROR_CASES = {
    "yaml syntax": ("torch.nn:\n  Conv2d: {in_channels: [3\n", ["not valid YAML", "line"]),
    "module missing": ("no_such_module_xyz:\n  Foo: {input_shape: [[1, 2]]}\n", ["no_such_module_xyz", "imported"]),
    "class missing": ("torch.nn:\n  Conv9d: {input_shape: [[1, 2]]}\n", ["torch.nn.Conv9d", "does not exist"]),
    "not a module class": ("torch.nn:\n  functional: {input_shape: [[1, 2]]}\n", ["torch.nn.functional"]),
    "unknown argument": (
        "torch.nn:\n  Conv2d: {in_channels: [3], kernel: [3], input_shape: [[1, 3, 8, 8]]}\n",
        ["torch.nn.Conv2d.kernel", "does not accept", "kernel_size"],
    ),
    "value not a list": (
        "torch.nn:\n  Conv2d: {in_channels: [3], kernel_size: 3, input_shape: [[1, 3, 8, 8]]}\n",
        ["torch.nn.Conv2d.kernel_size", "must be a non-empty list", "kernel_size: [3]"],
    ),
    "shape not a list of shapes": (
        "torch.nn:\n  ReLU: {no_params: true, input_shape: [1, 3, 8, 8]}\n",
        ["torch.nn.ReLU.input_shape", "one shape", "[[1, 3, 8, 8]]"],
    ),
    "malformed shape": (
        "torch.nn:\n  ReLU: {no_params: true, input_shape: [[1, -3, 8]]}\n",
        ["torch.nn.ReLU.input_shape", "[[1, -3, 8]]"],
    ),
    "missing shape": ("torch.nn:\n  ReLU: {no_params: true}\n", ["torch.nn.ReLU.input_shape is missing"]),
    "no_params with args": (
        "torch.nn:\n  ReLU: {no_params: true, inplace: [true], input_shape: [[1, 2]]}\n",
        ["torch.nn.ReLU", "no_params", "inplace"],
    ),
    "empty document": ("", ["non-empty mapping"]),
    "classes not a mapping": ("torch.nn: [Conv2d]\n", ["torch.nn must map class names"]),
    "block list of non-mappings": ("torch.nn:\n  ReLU: [1, 2]\n", ["torch.nn.ReLU must be a mapping"]),
}


@pytest.mark.parametrize("text,fragments", list(ERROR_CASES.values()), ids=list(ERROR_CASES))
def test_invalid_spaces_raise_clear_errors(tmp_path: Path, text: str, fragments: list[str]) -> None:
    path = write_space(tmp_path, text)
    with pytest.raises(OpSpaceError) as info:
        load_space(path)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_yaml_error_names_the_line(tmp_path: Path) -> None:
    path = write_space(tmp_path, "torch.nn:\n  ReLU:\n    no_params: true\n   input_shape: [[1, 2]]\n")
    with pytest.raises(OpSpaceError, match=r"line [34]"):
        load_space(path)


def test_missing_file_is_an_op_space_error(tmp_path: Path) -> None:
    with pytest.raises(OpSpaceError, match="cannot read the op space"):
        load_space(tmp_path / "absent.yaml")


_values = st.lists(st.integers(1, 64), min_size=1, max_size=4, unique=True)


@settings(max_examples=40, deadline=None)
@given(
    features=_values,
    shapes=st.lists(st.lists(st.integers(1, 9), min_size=2, max_size=4), min_size=1, max_size=3, unique_by=tuple),
)
def test_expansion_size_is_the_product_of_the_lists(features: list[int], shapes: list[list[int]]) -> None:
    doc = {"torch.nn": {"Linear": {"in_features": features, "out_features": [3, 5], "input_shape": shapes}}}
    specs = expand_space(doc)
    assert len(specs) == len(features) * 2 * len(shapes)
    assert math.prod((len(features), 2, len(shapes))) == len(
        {(s.args["in_features"], s.args["out_features"], s.input_shape) for s in specs}
    )


def test_space_from_model_covers_every_leaf_op(tmp_path: Path) -> None:
    from tinymods import TinyNet

    from mmt_nas.build.generate import prepare_ops
    from mmt_nas.parser import parse_model

    model = TinyNet()
    doc = space_from_model(model, TINY_SHAPE)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(doc))
    specs = load_space(path)
    ready, skipped = prepare_ops(specs, tmp_path)
    assert skipped == []
    space_keys = {record.key for record, _ in ready}
    counted = {op.key for op in parse_model(model, TINY_SHAPE) if op.fused_into is None}
    assert counted == space_keys
    assert any(k.startswith("Functional|Tensor.add") for k in space_keys)
    assert {"Conv2d", "ReLU", "AdaptiveAvgPool2d", "Linear"} <= {op.class_name for op in parse_model(model, TINY_SHAPE)}


def test_space_from_model_refuses_undescribable_modules() -> None:
    import torch

    class Local(torch.nn.Module):
        def __init__(self, hidden: int) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(hidden))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.weight

    with pytest.raises(OpSpaceError, match="Local"):
        space_from_model(Local(4), [1, 4])


def test_an_op_space_written_before_the_layout_naming_mmt_nas_ops_builds_the_same_ops(tmp_path: Path) -> None:
    """Op spaces (and ops folders' records) written before mmt_nas's modules moved into folders name the
    tensor-function module ``mmt_nas.ops``; it is now ``mmt_nas.space.ops``, and both build the same op."""
    block = """
  Functional:
    - {fn: [torch.flatten], args: [[{input: true}, 1]], input_shape: [[1, 8, 2, 2]]}
"""
    old = load_space(write_space(tmp_path / "old", "mmt_nas.ops:" + block))
    new = load_space(write_space(tmp_path / "new", "mmt_nas.space.ops:" + block))
    assert len(old) == len(new) == 1 and (old[0].args, old[0].input_shape) == (new[0].args, new[0].input_shape)
    built_old, built_new = old[0].build(), new[0].build()
    assert type(built_old) is type(built_new) and repr(built_old) == repr(built_new)
    with pytest.raises(OpSpaceError, match="mmt_nas.no_such_module"):
        load_space(write_space(tmp_path / "bad", "mmt_nas.no_such_module:" + block))[0].build()
