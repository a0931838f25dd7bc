"""Shared fixtures: a tiny op space, its generated ops folder and its metered table."""

from __future__ import annotations

import shutil
import sys
import textwrap
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

TINY_SPACE = textwrap.dedent(
    """
    torch.nn:
      Conv2d:
        in_channels: [3, 8]
        out_channels: [8]
        kernel_size: [3]
        padding: [1]
        input_shape: [[1, 3, 16, 16], [1, 8, 16, 16]]
      ReLU:
        no_params: true
        input_shape: [[1, 8, 16, 16]]
      AdaptiveAvgPool2d:
        output_size: [1]
        input_shape: [[1, 8, 16, 16]]
      Linear:
        in_features: [8]
        out_features: [4]
        input_shape: [[1, 8]]
    tinymods:
      TinyBlock:
        channels: [8]
        input_shape: [[1, 8, 16, 16]]
    mmt_nas.space.ops:
      Functional:
        - {fn: [Tensor.add], args: [[{input: true}, {tensor: [1, 8, 16, 16]}]], input_shape: [[1, 8, 16, 16]]}
        - {fn: [torch.flatten], args: [[{input: true}, 1]], input_shape: [[1, 8, 1, 1]]}
    """
)
TINY_SHAPE = [1, 3, 16, 16]


def write_space(folder: Path, text: str, name: str = "ops.yaml") -> Path:
    """Write an op-space YAML (and tinymods.py next to it) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(HERE / "tinymods.py", folder / "tinymods.py")
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_ops(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ops folder generated from TINY_SPACE and metered (times=20). Do not modify it."""
    from mmt_nas.build.generate import generate_ops_list
    from mmt_nas.device.meter import meter_ops

    base = tmp_path_factory.mktemp("tiny")
    yaml_path = write_space(base, TINY_SPACE)
    out = base / "ops"
    generate_ops_list(yaml_path, out)
    meter_ops(out, times=20)
    return out


@pytest.fixture()
def tiny_ops_copy(tiny_ops: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny ops folder, free to modify."""
    dst = tmp_path / "ops"
    shutil.copytree(tiny_ops, dst)
    return dst
