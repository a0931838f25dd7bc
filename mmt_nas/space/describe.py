"""Describe a module or a traced op in the vocabulary of op spaces and tables.

- :func:`describe_module`: the constructor arguments that rebuild a module (with the same ``repr()``).
- :func:`space_from_model`: the op space that covers every op a model runs.
- :func:`record_from_parsed`: an :class:`~mmt_nas.table.records.OpRecord` (arguments, FLOPs, parameters) for a
  traced op, as the fallback and the calibration need for ops that are not in the table.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mmt_nas.exceptions import OpSpaceError
from mmt_nas.space.opspace import add_block, to_python
from mmt_nas.space.trace import ParsedOp, parse_model
from mmt_nas.table.records import OpRecord

if TYPE_CHECKING:
    import torch

__all__ = ["describe_module", "space_from_model", "record_from_parsed"]


def _module_path(cls: type) -> str:
    """The shortest importable path exposing ``cls`` (``torch.nn`` for torch's own layers)."""
    import torch

    if getattr(torch.nn, cls.__name__, None) is cls:
        return "torch.nn"
    return cls.__module__


def _yaml_value(value: Any, name: str = "") -> Any:
    import torch

    if name == "bias" and (isinstance(value, torch.Tensor) or value is None):
        return value is not None  # torch stores bias=True as a Parameter, bias=False as None
    if isinstance(value, tuple):
        return [_yaml_value(v) for v in value]
    if isinstance(value, torch.Size):
        return list(value)
    return value


def describe_module(module: torch.nn.Module) -> dict[str, Any] | None:
    """Recover constructor arguments that rebuild ``module`` with the same ``repr()``.

    Arguments equal to the constructor's defaults are left out. Returns ``None``
    when the class stores its arguments under other names than its constructor's.
    """
    cls = type(module)
    try:
        sig = inspect.signature(cls.__init__)
    except (TypeError, ValueError):
        return None
    args: dict[str, Any] = {}
    for p in list(sig.parameters.values())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if not hasattr(module, p.name):
            if p.default is inspect.Parameter.empty:
                return None
            continue
        value = _yaml_value(getattr(module, p.name), p.name)
        if not isinstance(value, (bool, int, float, str, list)) and value is not None:
            return None
        default = p.default
        if default is not inspect.Parameter.empty and _yaml_value(default, p.name) == value:
            continue
        args[p.name] = value
    try:
        rebuilt = cls(**{k: to_python(v) for k, v in args.items()})
    except Exception:  # any constructor failure means the recovered arguments are wrong
        return None
    return args if repr(rebuilt) == repr(module) else None


def space_from_model(
    model: torch.nn.Module, input_shape: Sequence[int], *, include_fused: bool = False
) -> dict[str, Any]:
    """Build the op space that covers every op ``model`` runs on ``input_shape``.

    The ops are those :func:`mmt_nas.space.trace.parse_model` finds: leaf modules and the
    tensor functions the model's containers call (as ``mmt_nas.space.ops.Functional``), less the
    ops MNN fuses into the op before them (they cost nothing of their own). Each op becomes
    one block of single-valued lists (the seed's format with the list-of-blocks extension).
    Write it with :func:`dump_space`.

    Args:
        model: The model.
        input_shape: Its input shape, e.g. ``[1, 3, 224, 224]``.
        include_fused: Also list the ops MNN fuses (to compare with ``composition="modules"``).

    Returns:
        The op-space document.

    Raises:
        OpSpaceError: A leaf module cannot be described (its arguments are not recoverable,
            or its class is not importable); the message names each one.
    """
    doc: dict[str, dict[str, list[dict[str, Any]]]] = {}
    problems: list[str] = []
    seen: set[str] = set()
    for op in parse_model(model, input_shape):
        if (op.fused_into is not None and not include_fused) or op.key in seen:
            continue
        seen.add(op.key)
        if op.function is not None:
            kwargs = {"kwargs": op.function.kwargs} if op.function.kwargs else {}
            add_block(
                doc,
                "mmt_nas.space.ops",
                "Functional",
                {"fn": op.function.fn, "args": op.function.args, **kwargs},
                op.input_shape,
            )
            continue
        cls = type(op.module)
        path = _module_path(cls)
        if path == "__main__":
            problems.append(f"{op.name} ({cls.__name__}): defined in __main__; move it to an importable module")
            continue
        args = describe_module(op.module)
        if args is None:
            problems.append(
                f"{op.name} ({cls.__name__}): its constructor arguments cannot be recovered from its attributes"
            )
            continue
        add_block(doc, path, cls.__name__, args, op.input_shape)
    if problems:
        raise OpSpaceError(
            "these ops cannot be written to an op space: " + "; ".join(problems) + ". Give those classes "
            "attributes named like their constructor arguments, or write their YAML entries by hand."
        )
    return doc


_RECORDS: dict[str, OpRecord] = {}
_RECORDS_MAX = 4096


def record_from_parsed(op: ParsedOp) -> OpRecord:
    """An :class:`OpRecord` for a parsed op: arguments recovered, FLOPs counted by running it once on zeros.

    Records are remembered by key (a key determines its op: class, ``repr()`` and input shape), so
    an op estimated by the fallback and then calibrated, or predicted again, is run only once.
    """
    hit = _RECORDS.get(op.key)
    if hit is None:
        if len(_RECORDS) >= _RECORDS_MAX:
            _RECORDS.pop(next(iter(_RECORDS)))
        hit = _RECORDS[op.key] = _record_from_parsed(op)
    return hit


def _record_from_parsed(op: ParsedOp) -> OpRecord:
    import torch  # deferred: the tracer's callers have torch; importing this module should stay light
    from torch.utils.flop_counter import FlopCounterMode

    if op.function is not None:
        return OpRecord(
            op.key, "Functional", "mmt_nas.space.ops", {"fn": op.function.fn}, op.input_shape, op.output_shape, 0, 0
        )
    module = op.module
    args = describe_module(module) or {}
    flops = 0
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(torch.zeros(op.input_shape))
        flops = int(counter.get_total_flops())
    except Exception:  # an op that cannot run alone keeps 0 FLOPs; the other features remain
        pass
    return OpRecord(
        op.key,
        op.class_name,
        type(module).__module__,
        args,
        op.input_shape,
        op.output_shape,
        flops,
        sum(p.numel() for p in module.parameters()),
    )
