"""Fuzzing the parsers with hostile and broken input: op spaces (YAML) and latency tables / ops metadata (JSON).

Property: whatever the input, the only exceptions that escape are the package's own (``MmtNasError``),
each with a message that names the problem. Op spaces name Python modules that get imported, so every
example runs under :func:`only_safe_imports`: a module name outside a fixed safe set is never imported
(the fuzzer sees it as absent, which is what the real import says of the names it generates).
"""

from __future__ import annotations

import contextlib
import datetime
import importlib
import json
import math
import shutil
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import tinymods  # noqa: F401 - imported before the fuzzing, so that it may check nothing else gets imported
import torch.nn  # noqa: F401
import yaml
from conftest import HERE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mmt_nas.space.ops  # noqa: F401
from mmt_nas.exceptions import MmtNasError, OpSpaceError, TableError
from mmt_nas.space import opspace
from mmt_nas.space.opspace import expand_space, load_space
from mmt_nas.table.records import OpRecord, load_ops_meta, save_ops_meta
from mmt_nas.table.table import LatencyStats, LatencyTable, RuntimeSettings, TableEntry
from mmt_nas.vocab import op_key

FUZZ = settings(
    max_examples=1000,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

# -- safety: the only modules an op space under test may import ------------------------------------------

SAFE_MODULES = frozenset({"torch.nn", "mmt_nas.space.ops", "tinymods"})
MISSING_PREFIX = "no_such_mod_"  # with a suffix of [a-z0-9_]: certainly not installed
_missing_names = st.from_regex(r"no_such_mod_[a-z0-9_]{1,10}", fullmatch=True)


@contextlib.contextmanager
def only_safe_imports(check_modules: bool = True) -> Iterator[list[str]]:
    """Within the block, ``mmt_nas.space.opspace`` imports only SAFE_MODULES and certainly-missing names.

    Any other name (random text can spell ``antigravity`` or ``this``) raises ``ModuleNotFoundError``
    without being looked up, as the real import does for an absent module. Yields the names refused.
    ``check_modules``: also check that nothing else was imported (running torch ops imports its own lazily).
    """
    real = importlib.import_module
    refused: list[str] = []

    def guarded(name: str, package: str | None = None) -> types.ModuleType:
        if name in SAFE_MODULES or (
            isinstance(name, str)
            and name.startswith(MISSING_PREFIX)
            and all(c.isascii() and (c.isalnum() or c == "_") for c in name)
        ):
            return real(name, package)
        refused.append(name)
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    before = {m.partition(".")[0] for m in sys.modules}
    proxy = types.SimpleNamespace(import_module=guarded, util=importlib.util)
    with mock.patch.object(opspace, "importlib", proxy):
        yield refused
    new = {m.partition(".")[0] for m in sys.modules} - before if check_modules else set()
    assert new <= {"torch", "mmt_nas", "tinymods"}, f"the fuzzer imported unexpected modules: {sorted(new)}"


def check_error(exc: BaseException, *fragments: str) -> None:
    """The error is the package's own, with a short message naming the problem (one of ``fragments``)."""
    assert isinstance(exc, MmtNasError), f"{type(exc).__name__} escaped: {exc!r}"
    msg = str(exc)
    assert msg.strip(), f"{type(exc).__name__} with an empty message"
    assert len(msg) < 10_000, f"message of {len(msg)} characters (values must be shown shortened)"
    if fragments:
        assert any(f in msg for f in fragments), f"none of {fragments} in the message: {msg}"


#: Escapes found in code this file's author may not change (TableEntry and LatencyTable belong to another
#: change in progress); reported to its owner. Each is matched exactly (exception type and the function it
#: leaves), so any other escape still fails, and is turned into a TableError here only to keep fuzzing.
KNOWN_ESCAPES: set[tuple[type, str, str]] = set()  # (exception, function, class) of escapes not fixed yet
known_escapes_seen: list[str] = []


def _outcome(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, MmtNasError | None]:
    """``fn``'s result, or the MmtNasError it raised. Any other exception propagates: an escape."""
    try:
        return fn(*args, **kwargs), None
    except MmtNasError as exc:
        return None, exc
    except Exception as exc:
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        frame = tb.tb_frame if tb is not None else None
        owner = type(frame.f_locals.get("self")).__name__ if frame is not None else ""
        if frame is not None and (type(exc), frame.f_code.co_name, owner) in KNOWN_ESCAPES:
            known_escapes_seen.append(f"{type(exc).__name__} in {owner}.{frame.f_code.co_name}: {exc}")
            return None, TableError(f"known escape: {exc}")
        raise


@pytest.fixture(scope="module")
def space_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fuzz_space")
    shutil.copy(HERE / "tinymods.py", folder / "tinymods.py")
    return folder


# -- op spaces: arbitrary YAML text -------------------------------------------------------------------------

_YAML_TOKENS = [
    "\n",
    "\n  ",
    "\n    ",
    "\n      ",
    "  ",
    "\t",
    " ",
    ": ",
    ":",
    "- ",
    "? ",
    ", ",
    "[",
    "]",
    "{",
    "}",
    "#",
    "'",
    '"',
    "---\n",
    "...\n",
    "%YAML 1.1\n",
    "%TAG ! tag:x,2000:\n",
    "|\n",
    ">-\n",
    "&a ",
    "&b ",
    "*a",
    "*b",
    "<<: *a",
    "torch.nn:",
    "mmt_nas.space.ops:",
    "tinymods:",
    "no_such_mod_q:",
    "Conv2d:",
    "ReLU:",
    "Linear:",
    "TinyBlock:",
    "Functional:",
    "NoSuchClass:",
    "in_channels: ",
    "out_channels: ",
    "kernel_size: ",
    "in_features: ",
    "out_features: ",
    "channels: ",
    "fn: ",
    "args: ",
    "input_shape: ",
    "no_params: ",
    "true",
    "false",
    "yes",
    "no",
    "~",
    "null",
    "0",
    "-1",
    "3",
    "8",
    "1.5",
    "1.0e+999",
    "-1.0e+999",
    ".nan",
    ".inf",
    "0x1F",
    "0o17",
    "1_000",
    "1e3",
    "9" * 400,
    "2001-12-14",
    "2001-12-14t21:59:43.10-05:00",
    "12:30:00",
    "!!binary aGVsbG8=",
    "!!binary ???",
    "!!str ",
    "!!int x",
    "!!float ",
    "!!set {a, b}",
    "!!omap [a: 1]",
    "!!python/object/apply:builtins.print ['x']",
    "!!python/name:builtins.print",
    "!custom ",
    "[1, 3, 8, 8]",
    "[[1, 3, 8, 8]]",
    "[[1, 8]]",
    "[[0, 4]]",
    "[[1, -4]]",
    "[[1, true]]",
    "[[1, 2.5]]",
    "[]",
    "{}",
    "[[]]",
    "Tensor.add",
    "[{input: true}, 1.0]",
    "\ufeff",
    "\x00",
    "\x85",
    "\u2028",
    "\r\n",
    "\x1b",
    "é",
]
_token_soup = st.lists(st.sampled_from(_YAML_TOKENS), max_size=60).map("".join)


def _nested(n: int, kind: str) -> str:
    if kind == "list":
        return "torch.nn: " + "[" * n + "]" * n
    if kind == "map":
        return "torch.nn: " + "{a: " * n + "1" + "}" * n
    return "torch.nn:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(n)) + "  " * (n + 1) + "x"


def _alias_bomb(levels: int, width: int) -> str:
    lines = [f"a0: &a0 [{', '.join(['1'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]")
    lines.append(f"torch.nn:\n  Linear: {{in_features: *a{levels - 1}, out_features: [2], input_shape: [[1, 2]]}}")
    return "\n".join(lines) + "\n"


_REFERENCES = [
    "torch.nn:\n  ReLU: &r {no_params: true, input_shape: [[1, 4]], x: *r}\n",
    "a: &x [*x]\ntorch.nn:\n  Linear: {in_features: *x, out_features: [2], input_shape: [[1, 2]]}\n",
    "torch.nn: &m {ReLU: {no_params: true, input_shape: [[1, 4]]}, Again: *m}\n",
    "torch.nn:\n  ReLU: {no_params: true, input_shape: &s [[1, 4], *s]}\n",
]

yaml_texts = st.one_of(
    st.binary(max_size=300).map(lambda b: ("bytes", b)),
    st.text(max_size=300).map(lambda t: ("text", t)),
    _token_soup.map(lambda t: ("tokens", t)),
    st.tuples(st.integers(1, 5000), st.sampled_from(["list", "map"])).map(lambda a: ("nesting", _nested(*a))),
    st.integers(1, 400).map(lambda n: ("nesting", _nested(n, "block"))),  # PyYAML stops near 330 levels
    st.tuples(st.integers(2, 9), st.integers(2, 12)).map(lambda a: ("aliases", _alias_bomb(*a))),
    st.sampled_from(_REFERENCES).map(lambda t: ("self-reference", t)),
)


@pytest.mark.slow  # the fuzzers' long runs (1,000 examples each)
@FUZZ
@given(case=yaml_texts)
def test_fuzz_op_space_text(space_dir: Path, case: tuple[str, Any]) -> None:
    kind, content = case
    path = space_dir / "ops.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_bytes(content.encode("utf-8", "surrogatepass"))
    with only_safe_imports():
        specs, exc = _outcome(load_space, path)
    if exc is not None:
        check_error(exc)
        assert isinstance(exc, OpSpaceError)
    else:
        assert specs and all(isinstance(s, opspace.OpSpec) for s in specs)


# -- op spaces: structured documents with one wrong piece ---------------------------------------------------

_dims = st.integers(1, 16)


@st.composite
def valid_blocks(draw: st.DrawFn) -> list[tuple[str, str, Any]]:
    """(module, class, body) triples of a valid op space, bodies in either form."""
    c = draw(st.lists(_dims, min_size=1, max_size=3, unique=True))
    shape4 = [[1, draw(_dims), draw(_dims), draw(_dims)]]
    pool = [
        ("torch.nn", "Conv2d", {"in_channels": c, "out_channels": [4], "kernel_size": [1, 3], "input_shape": shape4}),
        ("torch.nn", "ReLU", {"no_params": True, "input_shape": [[1, draw(_dims)]]}),
        (
            "torch.nn",
            "Linear",
            {"in_features": c, "out_features": [draw(_dims)], "bias": [True, False], "input_shape": [[1, c[0]]]},
        ),
        ("torch.nn", "BatchNorm2d", [{"num_features": [n], "input_shape": [[1, n, 4, 4]]} for n in c]),
        ("tinymods", "TinyBlock", {"channels": c, "input_shape": shape4}),
        (
            "mmt_nas.space.ops",
            "Functional",
            [{"fn": ["Tensor.add"], "args": [[{"input": True}, 1.0]], "input_shape": shape4}],
        ),
    ]
    return draw(st.lists(st.sampled_from(pool), min_size=1, max_size=4, unique_by=lambda b: b[:2]))


def _build(blocks: list[tuple[Any, Any, Any]]) -> dict[Any, Any]:
    doc: dict[Any, Any] = {}
    for module, cls, body in blocks:
        doc.setdefault(module, {})[cls] = body
    return doc


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.binary(max_size=8),
    st.dates(),
    st.datetimes().map(lambda d: d.replace(fold=0)),
)
_garbage = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.one_of(st.text(max_size=6), st.integers()), inner, max_size=4)
    ),
    max_leaves=12,
)
_bad_dim = st.one_of(
    st.integers(-(10**12), 0),
    st.booleans(),
    st.floats(),
    st.text(max_size=4),
    st.none(),
    st.just([1, 2]),
    st.integers(2**40, 2**70),
)
_non_list = st.one_of(_scalars, st.dictionaries(st.text(max_size=4), _scalars, max_size=2))


@st.composite
def bad_shapes(draw: st.DrawFn) -> Any:
    """A value that is not a valid list of input shapes."""
    good = [1, 3, 8, 8]
    kind = draw(
        st.sampled_from(
            ["one shape", "not a list", "empty", "empty shape", "bad dim", "too many elements", "deeper", "mixed"]
        )
    )
    if kind == "one shape":
        return good
    if kind == "not a list":
        return draw(_non_list)
    if kind == "empty":
        return []
    if kind == "empty shape":
        return [[]]
    if kind == "bad dim":
        shape = list(good)
        shape[draw(st.integers(0, 3))] = draw(_bad_dim)
        return [shape]
    if kind == "too many elements":
        return [[1, 65536, 65536, draw(st.integers(1, 2**40))]]
    if kind == "deeper":
        return [[good]]
    return [
        good,
        draw(
            _garbage.filter(
                lambda v: (
                    not (
                        isinstance(v, list)
                        and v
                        and all(isinstance(d, int) and not isinstance(d, bool) and 0 < d < 1000 for d in v)
                    )
                )
            )
        ),
    ]


def _where(module: str, cls: str, body: Any, index: int) -> str:
    return f"{module}.{cls}" if isinstance(body, dict) or len(body) == 1 else f"{module}.{cls}[{index}]"


@st.composite
def one_wrong_piece(draw: st.DrawFn) -> tuple[dict[Any, Any], tuple[str, ...] | None]:
    """A valid op space with one piece made wrong, and fragments the error must contain (None: still valid)."""
    blocks = draw(valid_blocks())
    i = draw(st.integers(0, len(blocks) - 1))
    module, cls, body = blocks[i]
    body = json.loads(json.dumps(body))  # a private copy
    b = draw(st.integers(0, len(body) - 1)) if isinstance(body, list) else 0
    block = body[b] if isinstance(body, list) else body
    where = _where(module, cls, body, b)
    fault = draw(
        st.sampled_from(
            [
                "module key type",
                "missing module",
                "classes type",
                "class key type",
                "missing class",
                "body type",
                "input_shape",
                "missing input_shape",
                "no_params type",
                "no_params with args",
                "unknown argument",
                "argument name type",
                "argument values not a list",
                "wrong argument values",
            ]
        )
    )
    expect: tuple[str, ...] | None
    if fault == "module key type":
        blocks[i] = (
            draw(
                st.one_of(st.integers(), st.none(), st.booleans(), st.floats(allow_nan=False), st.dates(), st.just(""))
            ),
            cls,
            body,
        )
        expect = ("top-level keys must be module paths",)
    elif fault == "missing module":
        name = draw(_missing_names)
        blocks[i] = (name, cls, body)
        expect = (name, "cannot be imported")
    elif fault == "classes type":
        doc = _build([bl for j, bl in enumerate(blocks) if bl[0] != module])
        doc[module] = draw(st.one_of(_scalars, st.lists(_scalars, max_size=3), st.just({})))
        return doc, (f"{module} must map class names",)
    elif fault == "class key type":
        blocks[i] = (module, draw(st.one_of(st.integers(), st.none(), st.booleans(), st.dates())), body)
        expect = (f"class names under {module} must be strings",)
    elif fault == "missing class":
        name = "NoSuchClass" + draw(st.text("abcXYZ_0123456789", max_size=6))
        blocks[i] = (module, name, body)
        expect = (f"{module}.{name} does not exist",)
    elif fault == "body type":
        blocks[i] = (
            module,
            cls,
            draw(st.one_of(_scalars, st.just([]), st.lists(_scalars, min_size=1, max_size=3), st.just([block, 1]))),
        )
        expect = (f"{module}.{cls} must be a mapping of argument lists",)
    else:
        if fault == "input_shape":
            block["input_shape"] = draw(bad_shapes())
            expect = (f"{where}.input_shape",)
        elif fault == "missing input_shape":
            del block["input_shape"]
            expect = (f"{where}.input_shape is missing",)
        elif fault == "no_params type":
            block["no_params"] = draw(_garbage.filter(lambda v: not isinstance(v, bool)))
            expect = (f"{where}.no_params must be true or false",)
        elif fault == "no_params with args":
            block["no_params"] = True
            block["zz_extra"] = [1]
            extra = [k for k in block if k not in ("input_shape", "no_params")][0]
            expect = (f"{where} sets no_params: true but also gives the argument {extra!r}",)
        elif fault == "unknown argument":
            name = "zz_" + draw(st.text("abcdefgh_", min_size=1, max_size=6))
            block[name] = draw(st.lists(_scalars, min_size=1, max_size=3))
            expect = (
                f"{where}.{name}: {cls}'s constructor does not accept {name!r}",
                f"{where} sets no_params: true but also gives the argument {name!r}",
            )
        elif fault == "argument name type":
            block[draw(st.one_of(st.integers(), st.none(), st.booleans(), st.dates(), st.floats(allow_nan=False)))] = [
                1
            ]
            expect = (f"argument names under {where} must be strings",)
        else:
            args = [k for k in block if k not in ("input_shape", "no_params")]
            if not args:
                block["no_params"] = draw(st.booleans())  # nothing to break: stays valid
                expect = None
            else:
                name = draw(st.sampled_from(args))
                if fault == "argument values not a list":
                    block[name] = draw(st.one_of(_non_list, st.just([])))
                    expect = (f"{where}.{name} must be a non-empty list of values",)
                else:
                    # wrong types and values are only found when the op is built (converter.prepare_ops skips them)
                    block[name] = draw(st.lists(_garbage, min_size=1, max_size=3))
                    expect = None
        blocks[i] = (module, cls, body)
    return _build(blocks), expect


@pytest.mark.slow  # the fuzzers' long runs (1,000 examples each)
@FUZZ
@given(case=one_wrong_piece())
def test_fuzz_op_space_documents(space_dir: Path, case: tuple[dict[Any, Any], tuple[str, ...] | None]) -> None:
    doc, expect = case
    with only_safe_imports() as refused:
        specs, exc = _outcome(expand_space, doc, base_dir=space_dir)
        if expect is None:
            assert exc is None, f"a valid document was refused: {exc}"
            assert specs
        else:
            assert exc is not None, f"no error, expected one naming {expect}"
            check_error(exc, *expect)
        # the same document as a YAML file gives the same outcome
        path = space_dir / "doc.yaml"
        path.write_text(yaml.dump(doc, Dumper=yaml.CSafeDumper, allow_unicode=True, sort_keys=False), encoding="utf-8")
        specs2, exc2 = _outcome(load_space, path)
    assert refused == []
    # (the rule broken must be the same; the value shown may differ: YAML does not keep every string exactly)
    assert (exc2 is None) == (exc is None)
    assert exc is None or str(exc2).split(" but got ")[0] == str(exc).split(" but got ")[0]
    if specs is not None:
        assert [(s.module, s.class_name, s.input_shape) for s in specs2] == [
            (s.module, s.class_name, s.input_shape) for s in specs
        ]


def test_op_space_fuzzer_never_imports_unsafe_names(space_dir: Path) -> None:
    path = space_dir / "unsafe.yaml"
    path.write_text("antigravity:\n  X: {input_shape: [[1]]}\n")
    with only_safe_imports() as refused:
        _, exc = _outcome(load_space, path)
    assert refused == ["antigravity"] and "antigravity" not in sys.modules
    check_error(exc, "antigravity", "cannot be imported")


# -- latency tables and ops metadata ------------------------------------------------------------------------

DEVICE = {"cpu_model": "Fuzz CPU", "cpu_count": 2, "machine": "x86_64", "mnn_version": "3.6.0", "hostname": "fz"}


def _real_table() -> LatencyTable:
    table = LatencyTable(RuntimeSettings("CPU", 1, "high"), DEVICE, {"times": 20, "method": "perf_counter_ns"})
    did = table.add_device(DEVICE)
    ops = [
        OpRecord(
            op_key("Conv2d", "Conv2d(3, 8, kernel_size=(3, 3))", (1, 3, 16, 16)),
            "Conv2d",
            "torch.nn",
            {"in_channels": 3, "out_channels": 8, "kernel_size": 3},
            (1, 3, 16, 16),
            (1, 8, 14, 14),
            86016,
            224,
            "Conv2d-0123456789abcdef.mnn",
            True,
        ),
        OpRecord(op_key("ReLU", "ReLU()", (1, 8)), "ReLU", "torch.nn", {}, (1, 8), (1, 8), 0, 0, "ReLU-1.mnn"),
    ]
    for k, op in enumerate(ops):
        table.add(
            TableEntry(
                op, LatencyStats.from_samples([0.01 * (k + 1), 0.012 * (k + 1), 0.02]), 0.008 if k == 0 else None, did
            )
        )
    return table


REAL_DOC = _real_table().to_dict()
REAL_TEXT = json.dumps(REAL_DOC, indent=1)
META_DOC = json.loads(
    json.dumps({"schema": "mmt_nas/ops-meta", "schema_version": 1, "ops": [e.op.to_dict() for e in _real_table()]})
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside a JSON document."""
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, prefix + (i,))
    return out


_json_garbage = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(10**20), 10**20),
        st.floats(),
        st.text(max_size=10),
        st.sampled_from([0, -1, 1e308, -0.0, 5e-324, 10**400, "", "NaN", [], {}]),
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10,
)


@st.composite
def mutated_docs(draw: st.DrawFn, base: dict[str, Any]) -> tuple[dict[str, Any], tuple[Any, ...]]:
    """``base`` with one value replaced by garbage, removed, or one unknown field added; and the path changed."""
    doc = json.loads(json.dumps(base))
    path = draw(st.sampled_from(_paths(doc)))
    parent = doc
    for p in path[:-1]:
        parent = parent[p]
    action = draw(st.sampled_from(["replace", "replace", "replace", "delete", "add"]))
    if action == "delete":
        if isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent.pop(path[-1])
    elif action == "add" and isinstance(parent, dict):
        parent["zz_" + draw(st.text(max_size=5))] = draw(_json_garbage)
    else:
        parent[path[-1]] = draw(_json_garbage)
    return doc, path


def _json_text(doc: Any) -> str:
    text = json.dumps(doc, allow_nan=True)  # NaN / Infinity / -Infinity literals where floats are not finite
    return text


_json_tokens = st.lists(
    st.sampled_from(
        [
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            '"',
            '"schema"',
            '"mmt_nas/latency-table"',
            '"mmt_nas/ops-meta"',
            '"entries"',
            '"ops"',
            '"schema_version"',
            "1",
            "-1",
            "0",
            "1e999",
            "-1e999",
            "NaN",
            "Infinity",
            "-Infinity",
            "null",
            "true",
            "false",
            '"latency_ms"',
            '"median"',
            "9" * 5000,
            "1.5",
            " ",
            "\n",
            "\\u0000",
            "\\ud800",
            "\x00",
            "\ufeff",
            "é",
        ]
    ),
    max_size=60,
).map("".join)


@st.composite
def table_files(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["bytes", "text", "tokens", "truncated", "flipped", "nested", "mutated"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "text":
        return draw(st.text(max_size=300)).encode("utf-8", "surrogatepass")
    if kind == "tokens":
        return draw(_json_tokens).encode("utf-8", "surrogatepass")
    if kind == "truncated":
        return REAL_TEXT.encode()[: draw(st.integers(0, len(REAL_TEXT) - 1))]
    if kind == "flipped":
        raw = bytearray(REAL_TEXT.encode())
        for _ in range(draw(st.integers(1, 4))):
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
        return bytes(raw)
    if kind == "nested":
        n = draw(st.integers(1, 100_000))
        return (
            '{"schema": "mmt_nas/latency-table", "schema_version": 1, "entries": ' + "[" * n + "]" * n + "}"
        ).encode()
    doc, _ = draw(mutated_docs(REAL_DOC))
    return _json_text(doc).encode("utf-8", "surrogatepass")


@pytest.fixture(scope="module")
def table_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz_table")


@pytest.mark.slow  # the fuzzers' long runs (1,000 examples each)
@FUZZ
@given(content=table_files())
def test_fuzz_table_files(table_dir: Path, content: bytes) -> None:
    path = table_dir / "meta_latency.json"
    path.write_bytes(content)
    table, exc = _outcome(LatencyTable.load, path)
    if exc is not None:
        check_error(exc)
        assert isinstance(exc, TableError)
    else:
        assert isinstance(table, LatencyTable)
        assert all(math.isfinite(e.latency_ms) and e.latency_ms >= 0 for e in table)
    # the same bytes as an ops folder's meta.json
    (table_dir / "meta.json").write_bytes(content)
    ops, exc = _outcome(load_ops_meta, table_dir)
    if exc is not None:
        check_error(exc)


def _expected_fragments(path: tuple[Any, ...], list_name: str) -> tuple[str, ...]:
    """What an error about the value at ``path`` must name: the entry and field, or the top-level field."""
    if path[0] == list_name and len(path) >= 2:
        return (f"{list_name}[{path[1]}]",)
    if path[0] == "runtime":
        return ("runtime", "backend", "threads", "precision", "engine")
    if path[0] == "devices":
        return ("devices", "device")
    return (str(path[0]),)


@pytest.mark.slow  # the fuzzers' long runs (1,000 examples each)
@FUZZ
@given(case=mutated_docs(REAL_DOC))
def test_fuzz_table_documents(table_dir: Path, case: tuple[dict[str, Any], tuple[Any, ...]]) -> None:
    doc, path = case
    table, exc = _outcome(LatencyTable.from_dict, doc, "fuzz.json")
    if exc is not None:
        check_error(exc, *_expected_fragments(path, "entries"))
    else:
        # accepted: every latency is a finite non-negative number and the table survives a round trip
        assert all(math.isfinite(e.latency_ms) and e.latency_ms >= 0 for e in table)
        if not _has_non_finite(doc):  # device and timing facts are free-form: NaN there is kept in memory
            assert LatencyTable.from_dict(json.loads(json.dumps(table.to_dict(), allow_nan=False))) == table
    file = table_dir / "doc.json"
    file.write_text(_json_text(doc), encoding="utf-8", errors="surrogatepass")
    table2, exc2 = _outcome(LatencyTable.load, file)
    assert (exc2 is None) == (exc is None) or _has_non_finite(doc)
    if exc2 is not None:
        check_error(exc2)


def _has_non_finite(doc: Any) -> bool:
    """JSON text of ``doc`` holds NaN/Infinity, which the loader refuses as text before any field is read."""
    try:
        json.dumps(doc, allow_nan=False)
    except ValueError:
        return True
    return False


@pytest.mark.slow  # the fuzzers' long runs (1,000 examples each)
@FUZZ
@given(case=mutated_docs(META_DOC))
def test_fuzz_ops_meta_documents(table_dir: Path, case: tuple[dict[str, Any], tuple[Any, ...]]) -> None:
    doc, path = case
    folder = table_dir / "meta"
    folder.mkdir(exist_ok=True)
    (folder / "meta.json").write_text(_json_text(doc), encoding="utf-8", errors="surrogatepass")
    ops, exc = _outcome(load_ops_meta, folder)
    if exc is not None:
        check_error(exc, *(_expected_fragments(path, "ops") + (("non-finite",) if _has_non_finite(doc) else ())))
    else:
        assert all(isinstance(o, OpRecord) for o in ops)
        save_ops_meta(folder, ops)
        assert load_ops_meta(folder) == ops


# -- round trips of valid tables ----------------------------------------------------------------------------

_finite = st.floats(min_value=0, max_value=1e300, allow_nan=False, allow_infinity=False)
_shape = st.lists(st.integers(1, 2**31 - 1), min_size=1, max_size=5).map(tuple)
_json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(10**18), 10**18), _finite, st.text(max_size=10)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def valid_tables(draw: st.DrawFn) -> LatencyTable:
    device = {
        "cpu_model": draw(st.text(max_size=12)),
        "cpu_count": draw(st.integers(1, 256)),
        "hostname": draw(st.text(max_size=8)),
    }
    table = LatencyTable(
        RuntimeSettings(
            draw(st.sampled_from(["CPU", "OPENCL", "Vulkan"])),
            draw(st.integers(1, 64)),
            draw(st.sampled_from(["high", "normal", "low"])),
        ),
        device,
        draw(st.dictionaries(st.text(max_size=6), _json_value, max_size=3)),
    )
    ids = [None, table.add_device(device)]
    for _ in range(draw(st.integers(0, 2))):
        ids.append(table.add_device({**device, "hostname": draw(st.text(max_size=8)), "os": draw(st.text(max_size=8))}))
    for _ in range(draw(st.integers(0, 6))):
        cls = draw(st.sampled_from(["Conv2d", "ReLU", "Functional", "Blöck"]))
        shape = draw(_shape)
        op = OpRecord(
            key=op_key(cls, draw(st.text(min_size=1, max_size=20)), shape),
            class_name=cls,
            module=draw(st.sampled_from(["torch.nn", "mmt_nas.space.ops", "my.mods"])),
            args=draw(st.dictionaries(st.text(min_size=1, max_size=6), _json_value, max_size=4)),
            input_shape=shape,
            output_shape=draw(st.none() | _shape),
            flops=draw(st.integers(0, 10**15)),
            params=draw(st.integers(0, 10**12)),
            file=draw(st.none() | st.from_regex(r"[A-Za-z0-9_.-]{0,12}\.mnn", fullmatch=True)),
            single_output=draw(st.none() | st.booleans()),
        )
        # (from_samples overflows, OverflowError, on samples near 1e300 ms: its variance; reported, not used here)
        stats = LatencyStats.from_samples(draw(st.lists(_finite.filter(lambda x: x < 1e150), min_size=1, max_size=8)))
        table.add(TableEntry(op, stats, draw(st.none() | _finite), draw(st.sampled_from(ids))))
    return table


@settings(max_examples=100, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(table=valid_tables())
def test_valid_tables_round_trip(table_dir: Path, table: LatencyTable) -> None:
    assert LatencyTable.from_dict(table.to_dict()) == table
    assert LatencyTable.from_dict(json.loads(json.dumps(table.to_dict()))) == table
    path = table_dir / "rt.json"
    table.save(path)
    assert LatencyTable.load(path) == table
    folder = table_dir / "rt_meta"
    save_ops_meta(folder, [e.op for e in table])
    assert load_ops_meta(folder) == [e.op for e in table]


def test_fuzz_inputs_include_the_dates_binary_and_huge_numbers_yaml_makes() -> None:
    """The YAML fuzzer's tokens really produce the types it means to (the parser sees them)."""
    doc = yaml.safe_load("a: 2001-12-14\nb: !!binary aGVsbG8=\nc: 1.0e+999\nd: " + "9" * 400 + "\ne: .nan\n")
    assert isinstance(doc["a"], datetime.date) and doc["b"] == b"hello" and doc["c"] == math.inf
    assert doc["d"] == int("9" * 400) and math.isnan(doc["e"])


# -- building ops: wrong argument values are skipped and reported, never raised ----------------------------------

_small_values = st.one_of(
    st.integers(-4, 48),
    st.booleans(),
    st.none(),
    st.floats(-4, 48),
    st.text(max_size=4),
    st.lists(st.integers(-2, 9), max_size=3),
)
_BUILD_TARGETS = [
    ("torch.nn", "Conv2d", ["in_channels", "out_channels", "kernel_size", "stride", "padding", "groups"], 4),
    ("torch.nn", "Linear", ["in_features", "out_features", "bias"], 2),
    ("torch.nn", "BatchNorm2d", ["num_features", "eps", "momentum"], 4),
    ("torch.nn", "MaxPool2d", ["kernel_size", "stride", "padding", "dilation", "ceil_mode"], 4),
    ("torch.nn", "Softmax", ["dim"], 2),
    ("tinymods", "TinyBlock", ["channels", "kernel"], 4),
    ("mmt_nas.space.ops", "Functional", ["args", "kwargs"], 2),
]


@st.composite
def wrong_arguments(draw: st.DrawFn) -> dict[str, Any]:
    module, cls, names, rank = draw(st.sampled_from(_BUILD_TARGETS))
    block: dict[str, Any] = {
        n: draw(st.lists(_small_values, min_size=1, max_size=2))
        for n in draw(st.lists(st.sampled_from(names), min_size=1, unique=True))
    }
    if cls == "Functional":
        block["fn"] = [draw(st.sampled_from(["Tensor.add", "torch.cat", "F.relu", "torch.flatten"]))]
    shape = [1] + draw(st.lists(st.integers(1, 8), min_size=rank - 1, max_size=rank - 1))
    block["input_shape"] = [shape]
    return {module: {cls: block}}


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(doc=wrong_arguments())
def test_wrong_argument_values_are_skipped_with_a_reason(space_dir: Path, doc: dict[str, Any]) -> None:
    """The parser accepts any list of values; building is where wrong ones show (converter.prepare_ops skips them)."""
    from mmt_nas.build.generate import prepare_ops

    with only_safe_imports(check_modules=False):  # torch's FLOP counter imports sympy etc. when first run
        specs, exc = _outcome(expand_space, doc, base_dir=space_dir)
        if exc is not None:  # only a value that is not a list of values is the parser's to refuse
            check_error(exc, "must be a non-empty list")
            return
        result, exc = _outcome(prepare_ops, specs, space_dir)
    if exc is not None:
        check_error(exc, "repr()")  # two argument sets the class prints alike: the only error prepare_ops raises
        return
    ready, skipped = result
    assert len(ready) + len(skipped) <= len(specs) and (ready or skipped)
    for s in skipped:
        assert s.reason.startswith(("cannot be built: ", "cannot run on this input shape: ")) and len(s.reason) > 20
