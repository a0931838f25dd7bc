"""Rewrite one section of benchmarks/RESULTS.md, leaving the other scripts' sections alone."""

from __future__ import annotations

import datetime as _dt
import os
import platform
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
_HEADER = (
    "# Benchmark results\n\nEach section is rewritten by the script named in it; numbers are from the machine "
    "named there.\n"
)


def machine_line() -> str:
    """One line naming the machine, the date and the library versions."""
    from mmt_nas.device.facts import device_info

    info = device_info()
    import torch

    return (
        f"{_dt.date.today().isoformat()}, {info['cpu_model']}, {info['cpu_count']} cores, {platform.system()}, "
        f"Python {info['python']}, torch {torch.__version__}, MNN {info['mnn_version']}"
    )


def update_section(name: str, body: str, path: Path = RESULTS) -> None:
    """Replace (or append) the section ``name`` of a results file (default RESULTS.md) with ``body``."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.exists() else _HEADER
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
