"""The files of an ops folder: the generated ops' records (``meta.json``), the latency table
(``meta_latency.json``) and the merging of tables.

Standard library only, so a deployment device with the base install (MNN, numpy, PyYAML) loads, writes and
merges tables. The public names of its modules are importable from here.
"""

from __future__ import annotations

from mmt_nas.table.merge import MergeConflict, MergeReport, merge_tables
from mmt_nas.table.records import META_FILENAME, SCHEMA_VERSION, TABLE_FILENAME, OpRecord, load_ops_meta, save_ops_meta
from mmt_nas.table.table import (
    DEVICE_CLASS_FIELDS,
    LATENCIES,
    PRECISIONS,
    Latency,
    LatencyStats,
    LatencyTable,
    NoiseFloor,
    Precision,
    RuntimeSettings,
    TableEntry,
    check_latency,
    device_class,
    device_id,
)

__all__ = [
    "DEVICE_CLASS_FIELDS",
    "LATENCIES",
    "META_FILENAME",
    "PRECISIONS",
    "SCHEMA_VERSION",
    "TABLE_FILENAME",
    "Latency",
    "LatencyStats",
    "LatencyTable",
    "MergeConflict",
    "MergeReport",
    "NoiseFloor",
    "OpRecord",
    "Precision",
    "RuntimeSettings",
    "TableEntry",
    "check_latency",
    "device_class",
    "device_id",
    "load_ops_meta",
    "merge_tables",
    "save_ops_meta",
]
