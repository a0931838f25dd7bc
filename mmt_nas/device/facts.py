"""The facts of the device a table is measured on: CPU model, cores, machine, OS, Python and MNN."""

from __future__ import annotations

import logging
import os
import platform
from typing import Any

from mmt_nas.device.timing import mnn_runtime

_logger = logging.getLogger(__name__)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine() or "unknown"  # not platform.processor(): it starts a `uname -p` process


def device_info() -> dict[str, Any]:
    """Describe the machine and runtime latencies are measured on.

    Returns:
        A JSON-ready dict: CPU model, core count, machine, OS, Python and MNN versions, host name.
    """
    mnn = mnn_runtime()
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count() or 1,
        "machine": platform.machine(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "mnn_version": str(mnn.version()) if hasattr(mnn, "version") else "unknown",
        "hostname": platform.node(),
    }
