"""The names that moved in the one-way layout still import from where users found them, as the same objects."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Every name each module exported (its __all__) at 2eda2c8, before the layout issue: frozen here.
OLD_ALL: dict[str, list[str]] = {
    "mmt_nas": [
        "ExportError",
        "LatencyPredictor",
        "LatencyStats",
        "LatencyTable",
        "LockedError",
        "MeteringError",
        "MmtNasError",
        "OpSpaceError",
        "OpSpec",
        "Prediction",
        "RuntimeSettings",
        "TableError",
        "UnknownOpError",
        "__version__",
        "generate_ops_list",
        "load_space",
        "measure_latency",
        "merge_tables",
        "meter_ops",
        "parse_model",
        "predict_latency",
        "space_from_model",
    ],
    "mmt_nas.calibration": [
        "CalibrationSample",
        "InContextCalibration",
        "cross_fitted",
        "profile_scope",
        "samples_from_profile",
    ],
    "mmt_nas.converter": [
        "GenerateResult",
        "SkippedOp",
        "export_to_mnn",
        "generate_ops_list",
        "measure_latency",
        "prepare_ops",
    ],
    "mmt_nas.exceptions": [
        "ExportError",
        "LockedError",
        "MeteringError",
        "MmtNasError",
        "OpSpaceError",
        "TableError",
        "UnknownOpError",
    ],
    "mmt_nas.fallback": [
        "FAMILIES",
        "FEATURE_NAMES",
        "LatencyRegressor",
        "compare_regressors",
        "op_family",
        "op_features",
        "propose_samples",
        "record_from_parsed",
    ],
    "mmt_nas.integrations": ["MissingExtraError", "SearchError", "require"],
    "mmt_nas.integrations.keys": ["KeyBuilder", "OpDescription"],
    "mmt_nas.integrations.optuna": [
        "BUDGET_ATTR",
        "LatencyConstraint",
        "PREDICTED_ATTR",
        "SearchLog",
        "TrialRecord",
        "create_study",
        "hinge_penalty",
        "linear_penalty",
        "make_storage",
        "mnasnet_penalty",
    ],
    "mmt_nas.integrations.torch": [
        "CandidateLatencies",
        "ExpectedLatency",
        "LatencyLoss",
        "fbnet_loss",
        "hinge_loss",
        "proxyless_add_linear",
        "proxyless_mul_log",
        "resolve_candidates",
        "supernet_layers",
    ],
    "mmt_nas.meter": [
        "JOURNAL_SUFFIX",
        "OpProfile",
        "device_info",
        "in_shard",
        "meter_ops",
        "parse_shard",
        "profile_model",
        "time_model",
    ],
    "mmt_nas.ops": [
        "FUNCTIONS",
        "Functional",
        "SameInputs",
        "canonical_name",
        "encode_args",
        "function_category",
        "required_inputs",
        "signature",
    ],
    "mmt_nas.opspace": [
        "OpSpec",
        "dump_space",
        "expand_space",
        "load_model",
        "load_space",
        "resolve_class",
        "space_from_model",
        "space_of",
    ],
    "mmt_nas.parser": ["FunctionCall", "ModuleCall", "ParsedOp", "parse_model", "predict_latency", "trace_calls"],
    "mmt_nas.predictor": ["LatencyPredictor", "OpContribution", "OpEstimator", "Prediction", "load_table_cached"],
    "mmt_nas.report": [
        "JOURNAL_FILENAME",
        "ModelResult",
        "ModelSpec",
        "REPORT_FILES",
        "Report",
        "compute_metrics",
        "evaluate",
        "kendall_tau",
        "load_model_specs",
        "mnn_category",
        "op_category",
        "spearman_rho",
    ],
    "mmt_nas.table": [
        "DEVICE_CLASS_FIELDS",
        "LatencyStats",
        "LatencyTable",
        "MergeConflict",
        "MergeReport",
        "OpRecord",
        "RuntimeSettings",
        "SCHEMA_VERSION",
        "TableEntry",
        "atomic_write_text",
        "device_class",
        "device_id",
        "exclusive_lock",
        "load_ops_meta",
        "lock_path",
        "merge_tables",
        "op_key",
        "open_journal",
        "save_ops_meta",
    ],
}


def test_every_name_an_old_module_exported_still_imports_from_it() -> None:
    code = (
        "import importlib, json, sys, warnings\n"
        "warnings.simplefilter('ignore', DeprecationWarning)\n"
        "old = json.loads(sys.argv[1])\n"
        "bad = [f'{m}.{n}' for m, names in old.items() for n in names if not hasattr(importlib.import_module(m), n)]\n"
        "print(json.dumps(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(OLD_ALL)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout) == [], f"no longer importable from their old module: {out.stdout}"


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


@pytest.mark.parametrize(
    ("old", "name", "new"),
    [
        ("mmt_nas.table", "merge_tables", "mmt_nas.merge"),
        ("mmt_nas.table", "MergeReport", "mmt_nas.merge"),
        ("mmt_nas.opspace", "space_from_model", "mmt_nas.describe"),
    ],
)
def test_an_old_home_of_a_moved_name_warns_and_gives_the_same_object(old: str, name: str, new: str) -> None:
    import importlib

    with pytest.warns(DeprecationWarning, match=rf"{old}.{name} moved to {new}.{name}"):
        got = getattr(importlib.import_module(old), name)
    assert got is getattr(importlib.import_module(new), name)
    with pytest.raises(AttributeError, match="no_such_name"):
        importlib.import_module(old).no_such_name  # noqa: B018


def test_importing_the_predictor_search_integration_and_cli_pulls_in_no_torch() -> None:
    code = (
        "import sys, mmt_nas.predictor, mmt_nas.parser, mmt_nas.calibration, mmt_nas.integrations.optuna, "
        "mmt_nas.integrations.keys, mmt_nas.cli, mmt_nas.report\n"
        "print(sorted(m for m in ('torch', 'sklearn', 'optuna', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


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
