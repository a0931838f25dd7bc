"""The names that moved in the one-way layout still import from where users found them, as the same objects."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

MOVED = [
    ("mmt_nas.table", "atomic_write_text", "mmt_nas._files"),
    ("mmt_nas.table", "exclusive_lock", "mmt_nas._files"),
    ("mmt_nas.table", "op_key", "mmt_nas.vocab"),
    ("mmt_nas.table", "OpRecord", "mmt_nas.records"),
    ("mmt_nas.table", "load_ops_meta", "mmt_nas.records"),
    ("mmt_nas.parser", "parse_model", "mmt_nas.trace"),
    ("mmt_nas.parser", "trace_calls", "mmt_nas.trace"),
    ("mmt_nas.parser", "ParsedOp", "mmt_nas.trace"),
    ("mmt_nas.fallback", "record_from_parsed", "mmt_nas.describe"),
    ("mmt_nas.fallback", "op_family", "mmt_nas.vocab"),
    ("mmt_nas.ops", "function_category", "mmt_nas.vocab"),
    ("mmt_nas.integrations", "MissingExtraError", "mmt_nas.exceptions"),
    ("mmt_nas.integrations", "SearchError", "mmt_nas.exceptions"),
    ("mmt_nas.integrations", "require", "mmt_nas._imports"),
]


@pytest.mark.parametrize(("old", "name", "new"), MOVED)
def test_a_moved_name_imports_from_its_old_module_as_the_same_object(old: str, name: str, new: str) -> None:
    code = (
        f"import importlib; from {old} import {name} as a; b = getattr(importlib.import_module({new!r}), {name!r}); "
        "assert a is b, (a, b); print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_merge_tables_is_public_at_the_top_and_in_its_module() -> None:
    import mmt_nas
    import mmt_nas.merge

    assert mmt_nas.merge_tables is mmt_nas.merge.merge_tables


def test_errors_are_one_family_and_their_builtins() -> None:
    from mmt_nas.exceptions import MissingExtraError, MmtNasError, NotFittedError, OptionError, SearchError

    assert issubclass(NotFittedError, MmtNasError) and issubclass(NotFittedError, ValueError)
    assert issubclass(NotFittedError, AttributeError)  # as scikit-learn's
    assert issubclass(MissingExtraError, ImportError) and issubclass(SearchError, ValueError)
    assert issubclass(OptionError, ValueError) and issubclass(OptionError, MmtNasError)


def test_try_import_defers_a_missing_extra_to_check() -> None:
    from mmt_nas._imports import try_import
    from mmt_nas.exceptions import MissingExtraError

    with try_import("plots", "the test's plot") as imported:
        import mmt_nas_no_such_module  # noqa: F401
    assert not imported.is_successful()
    with pytest.raises(MissingExtraError, match=r"the test's plot needs mmt_nas_no_such_module.*mmt-nas\[plots\]"):
        imported.check()
    with try_import("plots", "json") as fine:
        import json  # noqa: F401
    assert fine.is_successful()
    fine.check()
