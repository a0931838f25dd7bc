"""The layout: folders are layers, imports point down, and the public names import from where users find them."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "mmt_nas"

# The MMT tool's three calls, where its README put them (../shared/seed/mmt-original-readme.md).
FRONT_DOORS = {
    "mmt_nas.converter": ["generate_ops_list", "measure_latency", "measure_models"],
    "mmt_nas.meter": ["meter_ops"],
    "mmt_nas.parser": ["predict_latency", "parse_model", "trace_calls", "ParsedOp", "ModuleCall", "FunctionCall"],
}


def _resolve_all(names: list[str]) -> list[str]:
    """The dotted names (``module.attr`` or ``module``) that do not import, resolved in a fresh interpreter."""
    code = (
        "import importlib, json, sys\n"
        "bad = []\n"
        "for dotted in json.loads(sys.argv[1]):\n"
        "    parts = dotted.split('.')\n"
        "    for cut in range(len(parts), 0, -1):\n"
        "        try:\n"
        "            obj = importlib.import_module('.'.join(parts[:cut]))\n"
        "        except ModuleNotFoundError as exc:\n"
        "            if exc.name != '.'.join(parts[:cut]):\n"
        "                bad.append(f'{dotted}: {exc}')\n"
        "                break\n"
        "            continue\n"
        "        try:\n"
        "            for attr in parts[cut:]:\n"
        "                obj = getattr(obj, attr)\n"
        "        except (AttributeError, ImportError) as exc:\n"
        "            bad.append(f'{dotted}: {exc}')\n"
        "        break\n"
        "    else:\n"
        "        bad.append(dotted)\n"
        "print(json.dumps(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(names)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return list(json.loads(out.stdout))


def test_the_mmt_front_doors_and_every_public_name_import() -> None:
    import mmt_nas

    names = [f"{m}.{n}" for m, ns in FRONT_DOORS.items() for n in ns] + [f"mmt_nas.{n}" for n in mmt_nas.__all__]
    assert len(names) > 60
    assert _resolve_all(names) == []


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports, anywhere in it (functions and ``TYPE_CHECKING`` included)."""
    modules = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            graph[mod].update(t for t in targets if t in modules)
        graph[mod].discard(mod)
    # ``from mmt_nas.table.merge import X`` needs mmt_nas.table.merge, not mmt_nas.table's other modules: an
    # edge to a package is kept only where a package's own __init__ is what is imported from
    for targets in graph.values():
        for t in list(targets):
            if any(o.startswith(t + ".") and o in targets for o in targets):
                targets.discard(t)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                found.append(stack[stack.index(m) :] + [m])
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)
    return found


def test_the_import_graph_has_no_circle_between_modules_or_folders() -> None:
    graph = _import_graph()
    assert len(graph) > 50 and graph["mmt_nas.table.merge"] == {"mmt_nas.exceptions", "mmt_nas.table.table"}
    assert _cycles(graph) == []
    folder = {m: ".".join(m.split(".")[:2]) for m in graph}
    folders: dict[str, set[str]] = {}
    for m, targets in graph.items():
        if m == "mmt_nas":
            continue  # the package's lazy __init__ names everything
        folders.setdefault(folder[m], set()).update(folder[t] for t in targets if folder[t] != folder[m])
    assert _cycles(folders) == [], "folders must be one-way too"
    assert "mmt_nas.predict" in folders["mmt_nas.report"] and "mmt_nas.report" not in folders["mmt_nas.predict"]


def test_a_cycle_is_found_where_there_is_one() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_every_module_of_the_device_and_table_folders_is_kept_torch_free_by_the_contract() -> None:
    cfg = (ROOT / "setup.cfg").read_text()
    contract = cfg[cfg.index("[importlinter:contract:device]") :]
    for folder in ("mmt_nas.device", "mmt_nas.table", "mmt_nas.meter"):
        assert f"\n    {folder}\n" in contract
    code = (
        "import sys, mmt_nas.meter, mmt_nas.table, mmt_nas.device.meter, mmt_nas.device.endtoend, "
        "mmt_nas.device.profile\n"
        "print(sorted(m for m in ('torch', 'sklearn', 'onnx') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_importing_the_predictor_search_integration_and_cli_pulls_in_no_torch() -> None:
    code = (
        "import sys, mmt_nas.predict.predictor, mmt_nas.parser, mmt_nas.predict.calibration, mmt_nas.predict.fallback, "
        "mmt_nas.integrations.optuna, mmt_nas.integrations.keys, mmt_nas.cli, mmt_nas.report\n"
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
