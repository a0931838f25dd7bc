"""Export a torch module to MNN: torch → ONNX → MNN.

ONNX → MNN goes through MNN's compiled converter extension (``_tools``) in process. MNN's ``tools`` Python
subpackage is never imported: importing it installs packages with pip and sends telemetry.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmt_nas._files import exclusive_lock, lock_path, remove_stale_temp_files, replace_file
from mmt_nas._imports import require
from mmt_nas.device.endtoend import InterleavedResult, Method, check_method, check_plan, measure_interleaved, time_inference
from mmt_nas.exceptions import ExportError, MeteringError, OpSpaceError, TableError
from mmt_nas.device.timing import quiet_native_output, time_model
from mmt_nas.space.ops import SameInputs, required_inputs
from mmt_nas.space.opspace import OpSpec, load_space
from mmt_nas.progress import progress
from mmt_nas.table.records import OpRecord, load_ops_meta, save_ops_meta
from mmt_nas.table.table import LatencyStats, Precision, RuntimeSettings
from mmt_nas.space.trace import eval_mode, shape_of
from mmt_nas.vocab import check_shape, op_key

if TYPE_CHECKING:
    import torch

_logger = logging.getLogger(__name__)
_OPSET = 17


def _onnx_to_mnn(onnx_path: Path, mnn_path: Path, what: str | None = None) -> None:
    """Convert with MNN's in-process converter, capturing its native output.

    ``what`` names the exported thing in messages (default: the ONNX file's name).
    """
    what = what or onnx_path.name
    with quiet_native_output() as out:  # importing the extension prints a banner from C++, too
        _tools = require("_tools", "base", "MNN's converter")  # the compiled converter, not its tools package
        ok = _tools.mnnconvert(
            [
                "mnnconvert",
                "-f",
                "ONNX",
                "--modelFile",
                str(onnx_path),
                "--MNNModel",
                str(mnn_path),
                "--bizCode",
                "mmt_nas",
            ]
        )
    if not ok or not mnn_path.is_file() or mnn_path.stat().st_size == 0:
        log = " ".join((out[0] if out else "").split())
        unsupported = re.search(r"These Op Not Support:\s*(.*?)\s*(?:Converted Failed!|$)", log)
        if unsupported:
            raise ExportError(
                f"MNN's converter does not support the ONNX op(s) {unsupported.group(1)[:300]} that {what} "
                "exports to. Leave this op out of the op space, or write it with operations MNN supports."
            )
        raise ExportError(f"MNN could not convert {what}: {log[-500:] or 'no output'}")


def export_to_mnn(
    module: torch.nn.Module,
    input_shape: Sequence[int],
    mnn_path: str | os.PathLike[str],
    *,
    onnx_path: str | os.PathLike[str] | None = None,
) -> None:
    """Export ``module`` on ``input_shape`` to an ``.mnn`` file (through ONNX, opset 17).

    The module is exported in eval mode (its flags are restored afterwards). The
    ``.mnn`` file appears complete or not at all.

    Args:
        module: What to export.
        input_shape: Static input shape.
        mnn_path: Destination ``.mnn`` file.
        onnx_path: Keep the intermediate ONNX file here (default: a temporary file, removed).

    Raises:
        ExportError: torch or MNN failed; the message says which and why.
        MissingExtraError: torch is not installed.
    """
    torch = require("torch", "torch", "exporting a model")

    shape = check_shape(list(input_shape))
    mnn_path = Path(mnn_path)
    mnn_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mmt_nas_") as tmp:
        onnx_file = Path(onnx_path) if onnx_path is not None else Path(tmp) / "op.onnx"
        try:
            # grad stays enabled: torch's fused inference paths (e.g. nn.MultiheadAttention's) have no ONNX export
            with eval_mode(module), warnings.catch_warnings(), quiet_native_output():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    module,
                    (torch.randn(shape),),
                    str(onnx_file),
                    dynamo=False,
                    opset_version=_OPSET,
                    input_names=["input"],
                    output_names=["output"],
                )
        except Exception as exc:
            raise ExportError(
                f"torch could not export {type(module).__name__} on input_shape={list(shape)} to ONNX: {exc}"
            ) from exc
        staged = mnn_path.with_name(f".{mnn_path.name}.{os.getpid()}.tmp")
        try:
            _onnx_to_mnn(onnx_file, staged, f"{type(module).__name__} on input_shape={list(shape)}")
            replace_file(staged, mnn_path)  # MNN made it with the umask's mode; a replaced file's is kept
        finally:
            staged.unlink(missing_ok=True)
