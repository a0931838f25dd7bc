"""mmt_nas: operator latency tables and model latency prediction with MNN, for NAS.

The public names below are imported lazily, so ``import mmt_nas.meter`` on a
deployment device does not pull in torch.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "MmtNasError",
    "OpSpaceError",
    "ExportError",
    "MeteringError",
    "TableError",
    "UnknownOpError",
    "LockedError",
    "LatencyTable",
    "LatencyStats",
    "RuntimeSettings",
    "merge_tables",
    "OpSpec",
    "load_space",
    "space_from_model",
    "generate_ops_list",
    "measure_latency",
    "meter_ops",
    "predict_latency",
    "parse_model",
    "LatencyPredictor",
    "Prediction",
]

_WHERE = {
    "MmtNasError": "exceptions",
    "OpSpaceError": "exceptions",
    "ExportError": "exceptions",
    "MeteringError": "exceptions",
    "TableError": "exceptions",
    "UnknownOpError": "exceptions",
    "LockedError": "exceptions",
    "LatencyTable": "table",
    "LatencyStats": "table",
    "RuntimeSettings": "table",
    "merge_tables": "table",
    "OpSpec": "opspace",
    "load_space": "opspace",
    "space_from_model": "opspace",
    "generate_ops_list": "converter",
    "measure_latency": "converter",
    "meter_ops": "meter",
    "predict_latency": "parser",
    "parse_model": "parser",
    "LatencyPredictor": "predictor",
    "Prediction": "predictor",
}

logging.getLogger(__name__).addHandler(logging.NullHandler())


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'mmt_nas' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"mmt_nas.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
