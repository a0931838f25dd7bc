"""The README's imports and names work: every ``from mmt_nas... import`` line, every dotted ``mmt_nas.x.y``
it names, and every mmt_nas class or function it names in backticks is in the public API."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import mmt_nas

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")

IMPORTS = sorted(set(re.findall(r"^\s*(from mmt_nas[\w.]* import [\w, ]+)", README, flags=re.MULTILINE)))
DOTTED = sorted(set(re.findall(r"`(mmt_nas(?:\.\w+)+)", README)))
# Names in backticks that are not mmt_nas's (Optuna's, torch's, the CLI's words).
NOT_OURS = {
    "RetryFailedTrialCallback",
    "PyYAML",
    "FAIL",
    "ResNet18",
    "Conv2d",
    "BatchNorm2d",
    "ReLU",
    "TinyNet",
    "SplitConformalRegressor",
    "BatchNormAct2d",  # timm's
    "Identity",  # torch.nn's
}


def _resolve(dotted: str) -> object:
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


def test_the_readme_has_imports_and_names_to_check() -> None:
    assert len(IMPORTS) >= 5 and len(DOTTED) >= 5, (IMPORTS, DOTTED)


@pytest.mark.parametrize("line", IMPORTS)
def test_each_readme_import_works(line: str) -> None:
    out = subprocess.run([sys.executable, "-c", line], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"{line!r} failed:\n{out.stderr[-2000:]}"


@pytest.mark.parametrize("dotted", DOTTED)
def test_each_dotted_name_in_the_readme_resolves(dotted: str) -> None:
    assert _resolve(dotted) is not None


def _exported_names() -> set[str]:
    """Every name a public mmt_nas module lists in its ``__all__``: what "an mmt_nas name" means here."""
    import pkgutil

    names: set[str] = set()
    for info in pkgutil.walk_packages(mmt_nas.__path__, "mmt_nas."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue  # private modules (mmt_nas._files, ...) are not the public API
        module = importlib.import_module(info.name)
        names.update(getattr(module, "__all__", ()))
    return names


def test_every_mmt_nas_name_the_readme_uses_is_in_the_public_api() -> None:
    imported = {n.strip() for line in IMPORTS for n in line.split(" import ", 1)[1].split(",")}
    # `Name`, `name`, `Name(...)`, `name(...)` in backticks: a function or class named in the prose
    backticked = set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)(?:\(|`)", README))
    dotted_leaves = {d.rsplit(".", 1)[1] for d in DOTTED if not isinstance(_resolve(d), type(mmt_nas))}
    ours = _exported_names()
    named = imported | dotted_leaves | (backticked & ours)
    assert len(named) >= 20, sorted(named)
    missing = sorted(n for n in named if n not in mmt_nas.__all__)
    assert not missing, f"named in the README but not exported by mmt_nas: {missing}"
    for name in named:
        assert getattr(mmt_nas, name) is not None
    # a class-like name in backticks that no mmt_nas module exports is a stale name (or a third party's)
    camel = {n for n in backticked if re.fullmatch(r"[A-Z][a-z0-9]+[A-Z]\w*|[A-Z][a-z]{3,}", n)}
    unknown = sorted(camel - ours - NOT_OURS)
    assert not unknown, f"class-like names in the README that mmt_nas does not export: {unknown}"


def test_every_public_name_resolves_and_import_is_lazy() -> None:
    for name in mmt_nas.__all__:
        assert getattr(mmt_nas, name) is not None, name
    code = "import sys, mmt_nas; print(sorted(m for m in ('torch', 'sklearn', 'optuna') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
