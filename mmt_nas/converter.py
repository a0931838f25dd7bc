"""The MMT tool's front door for building: :func:`generate_ops_list` and :func:`measure_latency`.

They live in :mod:`mmt_nas.build` (:mod:`~mmt_nas.build.generate`, :mod:`~mmt_nas.build.measure`).
"""

from __future__ import annotations

from mmt_nas.build.generate import generate_ops_list
from mmt_nas.build.measure import measure_latency, measure_models

__all__ = ["generate_ops_list", "measure_latency", "measure_models"]
