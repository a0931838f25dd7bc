"""mmt_nas: operator latency tables and model latency prediction with MNN, for NAS.

The public names below are imported lazily, on first use, so ``import mmt_nas.meter`` on a
deployment device does not pull in torch, and ``import mmt_nas`` has no side effect.
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
    "MissingExtraError",
    "SearchError",
    "NotFittedError",
    "OptionError",
    "LatencyTable",
    "LatencyStats",
    "RuntimeSettings",
    "TableEntry",
    "OpRecord",
    "merge_tables",
    "op_key",
    "parse_key",
    "check_shape",
    "OpSpec",
    "load_space",
    "dump_space",
    "space_from_model",
    "describe_module",
    "record_from_parsed",
    "generate_ops_list",
    "measure_latency",
    "measure_models",
    "measure_interleaved",
    "time_inference",
    "meter_ops",
    "predict_latency",
    "parse_model",
    "ParsedOp",
    "LatencyPredictor",
    "Prediction",
    "OpContribution",
    "LatencyRegressor",
    "InContextCalibration",
    "cross_fitted",
    "leave_one_group_out",
    "cold_share",
    "CACHE_BYTES",
    "cold_core_ms",
    "ConformalIntervals",
    "PriorIntervals",
    "generic_space",
    "evaluate",
    "Report",
    "error_beyond_noise",
    "BeyondNoise",
    "Functional",
    "KeyBuilder",
    "LatencyConstraint",
    "SearchLog",
    "prepare_dashboard",
    "save_latency_plot",
    "create_study",
    "hinge_penalty",
    "mnasnet_penalty",
    "linear_penalty",
    "ExpectedLatency",
    "supernet_layers",
]

_WHERE = {
    "ConformalIntervals": "predict.intervals",
    "PriorIntervals": "predict.intervals",
    "generic_space": "space.generic",
    "leave_one_group_out": "predict.calibration",
    "cold_share": "predict.cache",
    "CACHE_BYTES": "predict.cache",
    "cold_core_ms": "device.profile",
    "MmtNasError": "exceptions",
    "OpSpaceError": "exceptions",
    "ExportError": "exceptions",
    "MeteringError": "exceptions",
    "TableError": "exceptions",
    "UnknownOpError": "exceptions",
    "LockedError": "exceptions",
    "MissingExtraError": "exceptions",
    "SearchError": "exceptions",
    "NotFittedError": "exceptions",
    "OptionError": "exceptions",
    "LatencyTable": "table.table",
    "LatencyStats": "table.table",
    "RuntimeSettings": "table.table",
    "TableEntry": "table.table",
    "OpRecord": "table.records",
    "merge_tables": "table.merge",
    "op_key": "vocab",
    "parse_key": "vocab",
    "check_shape": "vocab",
    "OpSpec": "space.opspace",
    "load_space": "space.opspace",
    "dump_space": "space.opspace",
    "space_from_model": "space.describe",
    "describe_module": "space.describe",
    "record_from_parsed": "space.describe",
    "generate_ops_list": "converter",
    "measure_latency": "converter",
    "measure_models": "converter",
    "measure_interleaved": "device.endtoend",
    "time_inference": "device.endtoend",
    "meter_ops": "meter",
    "predict_latency": "parser",
    "parse_model": "space.trace",
    "ParsedOp": "space.trace",
    "LatencyPredictor": "predict.predictor",
    "Prediction": "predict.predictor",
    "OpContribution": "predict.predictor",
    "LatencyRegressor": "predict.fallback",
    "InContextCalibration": "predict.calibration",
    "cross_fitted": "predict.calibration",
    "evaluate": "report",
    "Report": "report",
    "error_beyond_noise": "report.metrics",
    "BeyondNoise": "report.metrics",
    "Functional": "space.ops",
    "KeyBuilder": "integrations.keys",
    "LatencyConstraint": "integrations.optuna",
    "SearchLog": "integrations.optuna",
    "prepare_dashboard": "integrations.optuna",
    "save_latency_plot": "integrations.optuna",
    "create_study": "integrations.optuna",
    "hinge_penalty": "integrations.optuna",
    "mnasnet_penalty": "integrations.optuna",
    "linear_penalty": "integrations.optuna",
    "ExpectedLatency": "integrations.torch",
    "supernet_layers": "integrations.torch",
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
