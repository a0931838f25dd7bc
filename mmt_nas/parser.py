"""The MMT tool's front door: :func:`predict_latency`, and the tracer's names where MMT users found them.

The tracer itself is :mod:`mmt_nas.space.trace`; the predictor :mod:`mmt_nas.predict.predictor`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from mmt_nas.predict.predictor import LatencyPredictor, Prediction
from mmt_nas.space.trace import FunctionCall, FunctionSpec, ModuleCall, ParsedOp, parse_model, trace_calls
from mmt_nas.table.table import Precision

if TYPE_CHECKING:
    import torch

__all__ = ["ModuleCall", "FunctionCall", "FunctionSpec", "ParsedOp", "trace_calls", "parse_model", "predict_latency"]


def predict_latency(
    model: torch.nn.Module,
    path: str | os.PathLike[str],
    input_shape: Sequence[int],
    verbose: bool = False,
    *,
    backend: str | None = None,
    threads: int | None = None,
    precision: Precision | None = None,
) -> Prediction:
    """Predict the latency of ``model`` in milliseconds from a latency table (the MMT call).

    Args:
        model: The model.
        path: The table (``meta_latency.json``) or the ops folder holding it.
        input_shape: The input shape, e.g. ``[1, 3, 224, 224]``.
        verbose: Print the per-op breakdown.
        backend: Refuse the table unless measured on this backend (default: any).
        threads: Refuse the table unless measured with this many threads (default: any).
        precision: Refuse the table unless measured with this precision (default: any).

    Returns:
        A :class:`~mmt_nas.predict.predictor.Prediction`: a float (milliseconds) that also
        carries the per-op breakdown (``.ops``, ``.explain()``).

    Raises:
        UnknownOpError: Ops are missing from the table (each listed, with the closest keys).
        TableError: The table is unusable or measured under other settings.
    """
    predictor = LatencyPredictor(path, backend=backend, threads=threads, precision=precision)
    prediction = predictor.predict(model, input_shape)
    if verbose:
        print(prediction.explain())  # noqa: T201 - the caller asked for the breakdown
    return prediction
