"""The operator space: the seed's YAML format, validated and expanded into :class:`OpSpec`.

Format (the MMT tool's, with one extension)::

    torch.nn:                     # an importable module path
      Conv2d:                     # a class in it (an nn.Module)
        in_channels: [3]          # each argument: a list of values
        out_channels: [16, 32]
        kernel_size: [3]
        input_shape: [[1, 3, 32, 32]]   # a list of input shapes
      ReLU:
        no_params: true           # construct with no arguments
        input_shape: [[1, 16, 32, 32]]
      BatchNorm2d:                # extension: a list of such blocks,
        - {num_features: [16], input_shape: [[1, 16, 32, 32]]}
        - {num_features: [32], input_shape: [[1, 32, 16, 16]]}

The ops of a block are the cartesian product of its lists. A module path is
imported like any Python import (the YAML file's folder is searched first), so
an op space is code of the same trust as ``import``.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import itertools
import os
import pkgutil
import re
import reprlib
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mmt_nas._files import atomic_write_text
from mmt_nas._imports import require
from mmt_nas.exceptions import OpSpaceError
from mmt_nas.vocab import did_you_mean, is_shape

if TYPE_CHECKING:
    import torch

    from mmt_nas.table.records import OpRecord

__all__ = [
    "OpSpec",
    "load_space",
    "expand_space",
    "yaml_error_text",
    "resolve_class",
    "load_model",
    "space_of",
    "add_block",
    "to_python",
    "dump_space",
]

_RESERVED = ("input_shape", "no_params")
#: Most ops one op space may expand to, and most values its document may hold once YAML aliases are
#: expanded: far beyond any space worth exporting, small enough that a hostile file cannot exhaust memory.
MAX_OPS = 100_000
MAX_VALUES = 1_000_000
#: MNN stores tensor sizes in 32-bit integers.
_MAX_ELEMENTS = 2**31 - 1

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 4, 80, 80, 40
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 8


def _show(value: Any) -> str:
    """``repr(value)`` for messages, shortened: a hostile document may hold huge or deeply nested values."""
    try:
        return _REPR.repr(value)
    except Exception:  # a value whose repr fails still gets a message
        return f"<{type(value).__name__}>"


@dataclass(frozen=True)
class OpSpec:
    """One op of the space: a class, its constructor arguments and an input shape.

    Attributes:
        module: Module path as written in the YAML (e.g. ``"torch.nn"``).
        class_name: Class name inside that module.
        args: Constructor keyword arguments (YAML values; lists become tuples when built).
        input_shape: Shape of the input tensor.
        where: Where it came from in the YAML, for messages.
    """

    module: str
    class_name: str
    args: Mapping[str, Any] = field(default_factory=dict)
    input_shape: tuple[int, ...] = ()
    where: str = ""

    def build(self, base_dir: str | os.PathLike[str] | None = None) -> torch.nn.Module:
        """Instantiate the op in eval mode.

        Raises:
            OpSpaceError: The class cannot be imported.
            Exception: Whatever the constructor raises for these arguments.
        """
        cls = resolve_class(self.module, self.class_name, base_dir)
        return cls(**{k: to_python(v) for k, v in self.args.items()}).eval()


def to_python(value: Any) -> Any:
    """A YAML argument value as a constructor gets it: lists become tuples (what torch's own modules store
    for sizes)."""
    if isinstance(value, list):
        return tuple(to_python(v) for v in value)
    return value


@contextlib.contextmanager
def _search_path(base_dir: str | os.PathLike[str] | None) -> Iterator[None]:
    if base_dir is None:
        yield
        return
    entry = str(Path(base_dir).resolve())
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(entry)


#: Modules of mmt_nas's own that op spaces and ops folders (``meta.json``) name, under the names they had before
#: mmt_nas's modules moved into folders: what was written then keeps loading.
MOVED_MODULES: dict[str, str] = {"mmt_nas.ops": "mmt_nas.space.ops"}


def resolve_class(module: str, class_name: str, base_dir: str | os.PathLike[str] | None = None) -> type:
    """Import ``module`` (searching ``base_dir`` first) and return its ``nn.Module`` subclass ``class_name``.

    ``module`` may be an old name of one of mmt_nas's modules (:data:`MOVED_MODULES`).

    Raises:
        OpSpaceError: The module cannot be imported, or has no such ``nn.Module`` class.
        MissingExtraError: torch is not installed.
    """
    torch = require("torch", "torch", "building an op")
    module = MOVED_MODULES.get(module, module)
    try:
        with _search_path(base_dir):
            mod = importlib.import_module(module)
    except Exception as exc:  # an op space may name any module; report whatever its import raised
        where = f" or in {str(base_dir)!r}" if base_dir is not None else ""
        raise OpSpaceError(
            f"module {_show(module)} (a top-level key of the op space) cannot be imported: {_show(exc)}."
            f"{_module_suggestion(module, exc, base_dir)} "
            f"Put {module.replace('.', '/')}.py next to the YAML file{where}, or on sys.path."
        ) from exc
    cls = getattr(mod, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        found = sorted(n for n, v in vars(mod).items() if isinstance(v, type) and issubclass(v, torch.nn.Module))
        hint = did_you_mean(class_name, found)
        if not hint and found:
            hint = f" Its nn.Module classes include: {', '.join(found[:12])}."
        what = "is not an nn.Module class" if cls is not None else "does not exist"
        raise OpSpaceError(f"{module}.{class_name} {what}.{hint} Check the class name in the op space.")
    return cls


def _module_suggestion(module: str, exc: Exception, base_dir: str | os.PathLike[str] | None) -> str:
    """``" Did you mean 'torch.nn'?"`` when ``module`` (or a package on its path) does not exist and a module
    of a close name does; ``""`` when nothing is close, or when the module exists but its import failed.

    Only modules on the path are listed (``pkgutil``), nothing more is imported.
    """
    missing = exc.name if isinstance(exc, ModuleNotFoundError) else None
    if not missing or not (module == missing or module.startswith(missing + ".")):
        return ""  # not a missing name of ours (e.g. a dependency of the module is missing)
    parent, _, leaf = missing.rpartition(".")
    try:
        with _search_path(base_dir):
            if parent:
                path = getattr(importlib.import_module(parent), "__path__", None)  # imported already, by the failure
                names = [m.name for m in pkgutil.iter_modules(path)] if path is not None else []
            else:
                names = [m.name for m in pkgutil.iter_modules()] + list(sys.builtin_module_names)
    except Exception:  # a suggestion is a courtesy: never a second error
        return ""
    # what replaces the missing part (for 'trch.nn', 'trch' is missing: 'torch'), not guesses of the rest
    return did_you_mean(leaf, {n: f"{parent}.{n}" if parent else n for n in names})


def load_model(spec: str, kwargs: Mapping[str, Any] | None = None) -> torch.nn.Module:
    """Build a model from ``package.module:callable`` or ``path/to/file.py:callable``.

    Args:
        spec: Where the callable lives: a class or function returning an ``nn.Module``
            (or an ``nn.Module`` instance). A module path is searched from the current folder.
        kwargs: Keyword arguments for the callable.

    Returns:
        The model, in eval mode.

    Raises:
        OpSpaceError: The spec cannot be resolved, or the callable fails or returns something else.
    """
    import importlib.util

    torch = require("torch", "torch", "building a model")

    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise OpSpaceError(f"a model must be given as module:callable or file.py:callable, but got {spec!r}.")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name).resolve()
            loader = importlib.util.spec_from_file_location(path.stem, path)
            if loader is None or loader.loader is None or not path.is_file():
                raise ImportError(f"no Python file at {str(path)!r}")
            with _search_path(path.parent):
                module = importlib.util.module_from_spec(loader)
                sys.modules[path.stem] = module
                loader.loader.exec_module(module)
        else:
            with _search_path(Path.cwd()):
                module = importlib.import_module(module_name)
    except Exception as exc:  # importing user code may raise anything
        raise OpSpaceError(f"cannot import {module_name!r} for the model {spec!r}: {exc!r}.") from exc
    target = getattr(module, attr, None)
    if target is None:
        hint = did_you_mean(attr, [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")])
        raise OpSpaceError(f"{module_name!r} has no attribute {attr!r} (model {spec!r}).{hint}")
    try:
        model = target if isinstance(target, torch.nn.Module) else target(**dict(kwargs or {}))
    except Exception as exc:  # the user's constructor may raise anything
        raise OpSpaceError(f"building the model {spec!r} with {dict(kwargs or {})} failed: {exc!r}.") from exc
    if not isinstance(model, torch.nn.Module):
        raise OpSpaceError(f"{spec!r} returned {type(model).__name__}, not a torch.nn.Module.")
    return model.eval()


#: Deepest nesting of flow collections (``[`` and ``{``) read: an op space needs about six, and PyYAML's
#: scanner takes time quadratic in this depth (a 50 KB file of ``[`` would take minutes).
_MAX_FLOW_DEPTH = 64
_FLOW_CHARS = re.compile(r"[\[\]{}'\"#\\\n]")


def _flow_depth_exceeds(text: str, limit: int) -> bool:
    """Whether ``[``/``{`` nest deeper than ``limit`` outside quotes and comments (a quick, lenient scan)."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth, quote, skip_to = 0, "", -1
    for m in _FLOW_CHARS.finditer(text):
        i, c = m.start(), m.group()
        if i < skip_to:
            continue
        if quote:
            if c == "\\" and quote == '"':
                skip_to = i + 2  # an escaped character
            elif c == quote:
                quote = ""
        elif c == "#":
            if i == 0 or text[i - 1] in " \t\n":
                end = text.find("\n", i)
                skip_to = len(text) if end < 0 else end
        elif c in "'\"":
            quote = c
        elif c in "[{":
            depth += 1
            if depth > limit:
                return True
        elif c in "]}":
            depth = max(0, depth - 1)
    return False


def yaml_error_text(exc: yaml.YAMLError) -> str:
    """Where and what PyYAML's error is, on one line: ``" at line 2, column 1: expected the node content"``."""
    mark = getattr(exc, "problem_mark", None)
    line = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
    return f"{line}: {problem}"


def _parse_yaml(text: str, source: str) -> Any:
    if _flow_depth_exceeds(text, _MAX_FLOW_DEPTH):
        raise OpSpaceError(
            f"op space {source} nests lists or mappings ([ or {{) more than {_MAX_FLOW_DEPTH} levels deep. An op "
            "space needs about six (module, class, argument, list of values, a shape or an encoded argument); "
            "remove the extra nesting."
        )
    try:
        return yaml.safe_load(text)
    except RecursionError as exc:
        raise OpSpaceError(
            f"op space {source} is nested too deeply for the YAML parser (RecursionError). An op space needs "
            "four levels (module, class, argument, list of values); remove the extra nesting."
        ) from exc
    except yaml.YAMLError as exc:
        raise OpSpaceError(
            f"op space {source} is not valid YAML{yaml_error_text(exc)}. Fix the syntax there."
        ) from None
    except Exception as exc:  # PyYAML's constructors raise plain errors for some values, e.g. `!!int x`, 2001-13-45
        raise OpSpaceError(
            f"op space {source} holds a value YAML cannot read ({type(exc).__name__}: {_show(str(exc))[1:-1]}), "
            "e.g. a tag such as !!int or !!timestamp on text that is not one, or a date that does not exist. "
            "Fix or quote that value."
        ) from exc


def load_space(path: str | os.PathLike[str]) -> list[OpSpec]:
    """Read, validate and expand an op-space YAML file.

    Args:
        path: The YAML file. Modules it names are searched for next to it first.

    Returns:
        Every op of the space, in YAML order, duplicates removed.

    Raises:
        OpSpaceError: Any problem, with the YAML path (e.g. ``torch.nn.Conv2d.kernel_size``) and the fix.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise OpSpaceError(f"cannot read the op space {str(p)!r}: {exc.strerror or exc}. Check the path.") from None
    except UnicodeDecodeError as exc:
        raise OpSpaceError(
            f"op space {str(p)!r} is not UTF-8 text: byte {exc.object[exc.start : exc.start + 1]!r} at offset "
            f"{exc.start} cannot be decoded ({exc.reason}). Save the YAML file as UTF-8."
        ) from exc
    return expand_space(_parse_yaml(text, repr(str(p))), base_dir=p.parent)


def _elements(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
        if n > _MAX_ELEMENTS:
            break
    return n


def _check_expanded_size(doc: Any) -> None:
    """Refuse documents that YAML aliases make huge (an "alias bomb") or that contain themselves."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(v: Any) -> int:
        if not isinstance(v, (list, dict)):
            return 1
        if id(v) in sizes:
            return sizes[id(v)]
        if id(v) in active:
            raise OpSpaceError(
                "the op space contains itself through a YAML alias (e.g. `a: &x [*x]`), so it has no finite "
                "value. Replace the alias by the values it should stand for."
            )
        active.add(id(v))
        total = 1
        for item in v.items() if isinstance(v, dict) else v:
            total += sum(size(i) for i in item) if isinstance(v, dict) else size(item)
            if total > MAX_VALUES:
                raise OpSpaceError(
                    f"the op space holds more than {MAX_VALUES:,} values once its YAML aliases are expanded "
                    "(anchors referring to anchors multiply). Write the values out, or split the space."
                )
        active.discard(id(v))
        sizes[id(v)] = total
        return total

    try:
        size(doc)
    except RecursionError as exc:
        raise OpSpaceError(
            "the op space is nested too deeply to be an op space (RecursionError). An op space needs four "
            "levels (module, class, argument, list of values); remove the extra nesting."
        ) from exc


def _accepted_args(cls: type) -> tuple[set[str], bool]:
    try:
        sig = inspect.signature(cls.__init__)  # type: ignore[misc]  # the class's own, as written
    except (TypeError, ValueError):
        return set(), True
    params = list(sig.parameters.values())[1:]
    open_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names, open_kw


def _blocks(where: str, value: Any) -> list[Mapping[str, Any]]:
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list) and value and all(isinstance(b, dict) for b in value):
        return value
    raise OpSpaceError(
        f"{where} must be a mapping of argument lists (or a list of such mappings), but got {_show(value)}. "
        "Write e.g. `Conv2d: {in_channels: [3], input_shape: [[1, 3, 224, 224]]}`."
    )


def expand_space(doc: Any, base_dir: str | os.PathLike[str] | None = None) -> list[OpSpec]:
    """Validate a parsed op-space document and expand it into ops.

    Args:
        doc: The document as loaded by ``yaml.safe_load``.
        base_dir: Folder searched first for the modules the document names.

    Returns:
        The ops, in document order, without duplicates.

    Raises:
        OpSpaceError: The document is malformed; the message names the YAML path, the value and the fix.
    """
    if not isinstance(doc, dict) or not doc:
        raise OpSpaceError(
            f"an op space must be a non-empty mapping of module paths to classes, but got {_show(doc)}. "
            "See the format in the mmt_nas.space.opspace docstring or the README."
        )
    _check_expanded_size(doc)
    specs: dict[tuple[Any, ...], OpSpec] = {}
    total = 0
    for module, classes in doc.items():
        if not isinstance(module, str) or not module:
            raise OpSpaceError(f"top-level keys must be module paths such as 'torch.nn', but got {_show(module)}.")
        if not isinstance(classes, dict) or not classes:
            raise OpSpaceError(
                f"{module} must map class names to their arguments, but got {_show(classes)}. "
                f"Write e.g. `{module}: {{ClassName: {{input_shape: [[1, 3, 224, 224]]}}}}`."
            )
        for class_name, body in classes.items():
            where_cls = f"{module}.{class_name}"
            if not isinstance(class_name, str):
                raise OpSpaceError(f"class names under {module} must be strings, but got {_show(class_name)}.")
            cls = resolve_class(module, class_name, base_dir)
            accepted, open_kw = _accepted_args(cls)
            blocks = _blocks(where_cls, body)
            for b, block in enumerate(blocks):
                where = where_cls if len(blocks) == 1 else f"{where_cls}[{b}]"
                block_specs = _expand_block(module, class_name, where, block, accepted, open_kw, MAX_OPS - total)
                total += len(block_specs)
                for spec in block_specs:
                    specs.setdefault(
                        (spec.class_name, spec.module, repr(sorted(spec.args.items())), spec.input_shape), spec
                    )
    return list(specs.values())


def _expand_block(
    module: str,
    class_name: str,
    where: str,
    block: Mapping[str, Any],
    accepted: set[str],
    open_kw: bool,
    budget: int = MAX_OPS,
) -> list[OpSpec]:
    shapes = block.get("input_shape")
    if shapes is None:
        raise OpSpaceError(
            f"{where}.input_shape is missing. Every op needs its input shapes, e.g. input_shape: [[1, 3, 224, 224]]."
        )
    if is_shape(shapes, sequence=list):
        raise OpSpaceError(
            f"{where}.input_shape must be a list of shapes, but got one shape {_show(shapes)}. Write [{_show(shapes)}]."
        )
    if not isinstance(shapes, list) or not shapes or not all(is_shape(s, sequence=list) for s in shapes):
        raise OpSpaceError(
            f"{where}.input_shape must be a non-empty list of shapes of positive integers, "
            f"but got {_show(shapes)}. Write e.g. [[1, 3, 224, 224]]."
        )
    big = next((s for s in shapes if _elements(s) > _MAX_ELEMENTS), None)
    if big is not None:
        raise OpSpaceError(
            f"{where}.input_shape: the shape {_show(big)} has more than {_MAX_ELEMENTS:,} elements, more than MNN's "
            "32-bit tensor sizes hold. Use a smaller shape."
        )
    no_params = block.get("no_params", False)
    if not isinstance(no_params, bool):
        raise OpSpaceError(f"{where}.no_params must be true or false, but got {_show(no_params)}.")
    arg_lists: dict[str, list[Any]] = {}
    for name, values in block.items():
        if name in _RESERVED:
            continue
        if not isinstance(name, str):
            raise OpSpaceError(f"argument names under {where} must be strings, but got {_show(name)}.")
        if no_params:
            raise OpSpaceError(
                f"{where} sets no_params: true but also gives the argument {_show(name)}. Remove one of the two."
            )
        if name not in accepted and not open_kw:
            raise OpSpaceError(
                f"{where}.{name}: {class_name}'s constructor does not accept {_show(name)}."
                f"{did_you_mean(name, accepted)} It accepts: {', '.join(sorted(accepted)) or 'no arguments'}."
            )
        if not isinstance(values, list) or not values:
            raise OpSpaceError(
                f"{where}.{name} must be a non-empty list of values, but got {_show(values)}. "
                f"Write {name}: [{_show(values)}]."
            )
        arg_lists[name] = values
    names = list(arg_lists)
    count = len(shapes)
    for n in names:
        count *= len(arg_lists[n])
    if count > budget:
        dims = " x ".join([f"{len(arg_lists[n])} {n}" for n in names] + [f"{len(shapes)} input_shape"])
        raise OpSpaceError(
            f"{where} expands to {count:,} ops ({dims}), which takes the op space past its limit of {MAX_OPS:,} "
            "ops. Split it into "
            "several op spaces, or list fewer values."
        )
    specs = []
    for combo in itertools.product(*(arg_lists[n] for n in names)):
        args = dict(zip(names, combo))
        for shape in shapes:
            specs.append(OpSpec(module, class_name, args, tuple(shape), where))
    return specs


# -- building a space from a model --------------------------------------------------


def add_block(
    doc: dict[str, Any], module: str, class_name: str, args: Mapping[str, Any], input_shape: Sequence[int]
) -> None:
    """Append one op, as a block of single-valued lists, to an op-space document."""
    block: dict[str, Any] = {k: [v] for k, v in args.items()} or {"no_params": True}
    block["input_shape"] = [list(input_shape)]
    doc.setdefault(module, {}).setdefault(class_name, []).append(block)


def space_of(records: Iterable[OpRecord]) -> dict[str, Any]:
    """An op-space document (list-of-blocks form) listing exactly ``records`` (e.g. ops to measure next)."""
    doc: dict[str, Any] = {}
    for r in records:
        add_block(doc, r.module, r.class_name, r.args, r.input_shape)
    return doc


def dump_space(doc: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Write an op-space document as YAML, atomically."""
    atomic_write_text(path, yaml.safe_dump(dict(doc), sort_keys=False, default_flow_style=None, width=120))
