"""Op keys from op-space entries, so a candidate is predicted without building its model.

A search space is made of ops described the way an op space describes them: a module
path, a class, constructor arguments and an input shape. Once-for-All's evolutionary
search checks every candidate's latency this way, from its description, never
instantiating the network. :class:`KeyBuilder` turns such descriptions into table keys
(building each distinct op once, on the meta device, to read its ``repr()``), and
:meth:`mmt_nas.predict.predictor.LatencyPredictor.predict_keys` sums them::

    builder = KeyBuilder()
    ops = [OpDescription("torch.nn", "Conv2d", {"in_channels": 3, "out_channels": 16,
                                                "kernel_size": 3}, (1, 3, 32, 32)), ...]
    latency_ms = builder.predict(predictor, ops)

The prediction equals ``predictor.predict(model, shape)`` when the descriptions list the
ops the parser would count for that model: at the granularity the table holds (whole
blocks, if the table has blocks) and in the same number.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mmt_nas._imports import require
from mmt_nas.exceptions import OpSpaceError
from mmt_nas.space.opspace import OpSpec
from mmt_nas.vocab import check_shape, op_key

if TYPE_CHECKING:
    from mmt_nas.predict.predictor import LatencyPredictor, Prediction

__all__ = ["OpDescription", "KeyBuilder"]


@dataclass(frozen=True)
class OpDescription:
    """One op of a candidate, as an op space names it.

    Attributes:
        module: Importable module path, e.g. ``"torch.nn"``.
        class_name: The ``nn.Module`` class in it.
        kwargs: Constructor keyword arguments (JSON-like values; lists become tuples).
        input_shape: The op's input shape.
    """

    module: str
    class_name: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    input_shape: tuple[int, ...] = ()


class KeyBuilder:
    """Builds table keys from op descriptions, remembering each op's class name and ``repr()``.

    An op is instantiated once per distinct ``(module, class, kwargs)``: on the meta device
    (no memory, no initialisation arithmetic), or for real if its constructor cannot run
    there. Later keys for the same op at any input shape cost a dictionary lookup.

    Args:
        base_dir: A folder searched first when importing the descriptions' modules (as the
            folder of an op-space YAML is).
    """

    def __init__(self, base_dir: str | os.PathLike[str] | None = None) -> None:
        self.base_dir = base_dir
        self._ops: dict[tuple[str, str, Any], tuple[str, str]] = {}
        self._modules: dict[tuple[str, str, Any], Any] = {}

    def __len__(self) -> int:
        """How many distinct ops have been built."""
        return len(self._ops)

    def key(self, module: str, class_name: str, kwargs: Mapping[str, Any] | None, input_shape: Sequence[int]) -> str:
        """The table key of one op.

        Args:
            module: Importable module path, e.g. ``"torch.nn"``.
            class_name: The ``nn.Module`` class in it.
            kwargs: Its constructor keyword arguments (JSON-like values).
            input_shape: The op's input shape.

        Returns:
            The key, ``Class|repr|1x3x224x224`` (see :func:`mmt_nas.vocab.op_key`).

        Raises:
            OpSpaceError: The class cannot be imported or built with ``kwargs``, or the shape is malformed.
        """
        ident = _ident(module, class_name, kwargs)
        hit = self._ops.get(ident)
        if hit is None:
            try:
                with _meta_device():
                    op = self._build(module, class_name, kwargs)
            except OpSpaceError:  # e.g. a constructor computing on its tensors: build it for real (or fail clearly)
                op = self.module(module, class_name, kwargs)
            hit = self._ops[ident] = (getattr(op, "op_class_name", type(op).__name__), repr(op))
        return op_key(hit[0], hit[1], check_shape(input_shape, "an op description's input_shape", error=OpSpaceError))

    def module(self, module: str, class_name: str, kwargs: Mapping[str, Any] | None) -> Any:
        """The op itself, built for real (eval mode) once per ``(module, class, kwargs)``.

        Args:
            module: Importable module path.
            class_name: The ``nn.Module`` class in it.
            kwargs: Its constructor keyword arguments.

        Returns:
            The built ``nn.Module`` (the same object for the same op).

        Raises:
            OpSpaceError: The class cannot be imported or built with ``kwargs``.
        """
        ident = _ident(module, class_name, kwargs)
        if ident not in self._modules:
            self._modules[ident] = self._build(module, class_name, kwargs)
        return self._modules[ident]

    def keys(self, ops: Iterable[OpDescription | tuple[str, str, Mapping[str, Any], Sequence[int]]]) -> list[str]:
        """Keys of many ops: :class:`OpDescription` values or ``(module, class, kwargs, shape)`` tuples.

        Raises:
            OpSpaceError: See :meth:`key`.
        """
        return [self.key(*_fields(op)) for op in ops]

    def predict(
        self,
        predictor: LatencyPredictor,
        ops: Iterable[OpDescription | tuple[str, str, Mapping[str, Any], Sequence[int]]],
    ) -> Prediction:
        """Predict a candidate from its op descriptions (one per op run).

        With a fallback predictor, the ops missing from the table are built for real
        (once each) so the fallback can see them.

        Args:
            predictor: The predictor (its table, and fallback if any).
            ops: The candidate's ops, as :meth:`keys` takes them.

        Returns:
            The prediction, as :meth:`~mmt_nas.predict.predictor.LatencyPredictor.predict_keys` returns it.

        Raises:
            OpSpaceError: See :meth:`key`.
            UnknownOpError: Ops are missing from the table and the predictor has no fallback.
        """
        fields = [_fields(op) for op in ops]
        keys = [self.key(*f) for f in fields]
        modules = None
        if predictor.on_missing == "fallback":
            modules = {k: self.module(*f[:3]) for k, f in zip(keys, fields) if k not in predictor.table}
        return predictor.predict_keys(keys, modules=modules)

    def _build(self, module: str, class_name: str, kwargs: Mapping[str, Any] | None) -> Any:
        kwargs = dict(kwargs or {})
        try:
            return OpSpec(module, class_name, kwargs).build(self.base_dir)
        except OpSpaceError:
            raise
        except Exception as exc:  # the user's constructor may raise anything
            raise OpSpaceError(
                f"{module}.{class_name} cannot be built with {kwargs!r}: {exc!r}. Check the description's "
                "arguments against the class's constructor."
            ) from exc


def _ident(module: str, class_name: str, kwargs: Mapping[str, Any] | None) -> tuple[str, str, Any]:
    """A hashable identity of an op: scalar arguments as (name, type, value) triples, else their JSON."""
    items = sorted((kwargs or {}).items())
    if all(type(v) in _SCALARS for _, v in items):  # the common case, without the cost of json.dumps
        return (module, class_name, tuple((k, type(v).__name__, v) for k, v in items))
    try:
        return (module, class_name, json.dumps(dict(items), sort_keys=True))
    except TypeError as exc:
        raise OpSpaceError(
            f"the arguments of {module}.{class_name} must be JSON-like values (numbers, strings, lists, "
            f"mappings) as in an op space, but got {kwargs!r} ({exc})."
        ) from None


_SCALARS = (int, float, str, bool, type(None))


def _fields(op: OpDescription | tuple[str, str, Mapping[str, Any], Sequence[int]]) -> tuple[Any, ...]:
    if isinstance(op, OpDescription):
        return (op.module, op.class_name, op.kwargs, op.input_shape)
    return tuple(op)


def _meta_device() -> Any:
    """The meta device, as a context manager (torch is imported here, on first use)."""
    return require("torch", "torch", "KeyBuilder (mmt_nas.integrations.keys)").device("meta")
