"""Ops that are not modules: tensor functions a model calls in its own ``forward``.

Residual additions, ``torch.flatten``, concatenations, channel shuffles and
squeeze-excitation products are not ``nn.Module``s, so forward hooks never see
them, yet MNN runs them. The parser records them as :class:`Functional` ops; an
op space can list them like any module, so the table can hold their latency::

    mmt_nas.space.ops:
      Functional:
        - fn: [Tensor.add]
          args: [[{input: true}, {tensor: [1, 64, 56, 56]}]]
          input_shape: [[1, 64, 56, 56]]

``{input: true}`` stands for the op's input, ``{tensor: shape}`` for another
tensor (a constant when the op is timed alone).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from mmt_nas.exceptions import OpSpaceError
from mmt_nas.vocab import FUNCTIONS, function_category, signature

__all__ = [
    "Functional",
    "SameInputs",
    "FUNCTIONS",
    "function_category",
    "canonical_name",
    "encode_args",
    "signature",
    "required_inputs",
]

_NAMESPACES = {"Tensor": torch.Tensor, "torch": torch, "F": nn.functional}


def canonical_name(func: Any) -> str | None:
    """``Tensor.add``, ``torch.cat`` or ``F.relu`` for a recorded function, else ``None``.

    In-place variants (``add_``) are named as their out-of-place twin: they cost the same.
    """
    name = getattr(func, "__name__", None)
    if not isinstance(name, str):
        return None
    if name.endswith("_") and not name.endswith("__"):
        name = name[:-1]
    if name not in FUNCTIONS:
        return None
    qual = getattr(func, "__qualname__", "") or ""
    module = getattr(func, "__module__", "") or ""
    if module == "torch.nn.functional":
        ns = "F"
    elif qual.startswith(("TensorBase.", "Tensor.", "_TensorBase.")):
        ns = "Tensor"
    elif module == "torch" or qual.startswith("_VariableFunctionsClass."):
        ns = "torch"
    else:
        return None
    return f"{ns}.{name}" if hasattr(_NAMESPACES[ns], name) else None


class _Unsupported(Exception):
    pass


class _Buffer:
    """Where a constant tensor (a registered buffer) goes in a replayed call."""

    def __init__(self, name: str) -> None:
        self.name = name


_INPUT = object()  # where the module's input goes in a replayed call


def encode_args(args: Sequence[Any], kwargs: Mapping[str, Any], x: Any) -> tuple[list[Any], dict[str, Any]]:
    """Encode a call's arguments as JSON values: ``x`` as the input, other tensors by shape.

    Raises:
        ValueError: An argument of a kind that cannot be written down (an arbitrary object).
    """

    def enc(v: Any) -> Any:
        if v is x:
            return {"input": True}
        if isinstance(v, torch.Tensor):
            return {"tensor": [int(d) for d in v.shape]}
        if isinstance(v, torch.Size):
            return [int(d) for d in v]
        if isinstance(v, (list, tuple)):
            return [enc(i) for i in v]
        if isinstance(v, slice):
            return {"slice": [enc(v.start), enc(v.stop), enc(v.step)]}
        if v is Ellipsis:
            return {"ellipsis": True}
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        raise _Unsupported(type(v).__name__)

    try:
        return [enc(a) for a in args], {k: enc(v) for k, v in sorted(kwargs.items())}
    except _Unsupported as exc:
        raise ValueError(f"cannot encode an argument of type {exc}") from None


class Functional(nn.Module):
    """A tensor function replayed as a module, so it can be exported and timed alone.

    Args:
        fn: Canonical name such as ``Tensor.add``, ``torch.cat`` or ``F.relu``.
        args: Encoded positional arguments (see :func:`encode_args`); ``{input: true}``
            marks where the module's input goes.
        kwargs: Encoded keyword arguments.
    """

    op_class_name = "Functional"

    def __init__(self, fn: str, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        ns, _, name = str(fn).partition(".")
        if ns not in _NAMESPACES or name not in FUNCTIONS or not hasattr(_NAMESPACES[ns], name):
            raise OpSpaceError(
                f"Functional fn must be Tensor.<name>, torch.<name> or F.<name> for a supported function, "
                f"but got fn={fn!r}. Supported names: {', '.join(sorted(FUNCTIONS))}."
            )
        self.fn = fn
        self._func = getattr(_NAMESPACES[ns], name)
        self.args = _plain(list(args))
        self.kwargs = _plain(dict(kwargs or {}))
        self._constants = 0
        gen = torch.Generator().manual_seed(0)
        self._decoded_args = self._decode_constants(self.args, gen)
        self._decoded_kwargs = self._decode_constants(self.kwargs, gen)

    def _decode_constants(self, v: Any, gen: torch.Generator) -> Any:
        if isinstance(v, dict):
            if "tensor" in v:
                name = f"const{self._constants}"
                self._constants += 1
                # values in [0.5, 1.5): safe for division, square roots and logs
                self.register_buffer(name, torch.rand(v["tensor"], generator=gen) + 0.5)
                return _Buffer(name)
            if "slice" in v:
                return slice(*(self._decode_constants(p, gen) for p in v["slice"]))
            if v.get("ellipsis"):
                return Ellipsis
            if v.get("input"):
                return _INPUT
            return {k: self._decode_constants(i, gen) for k, i in v.items()}
        if isinstance(v, list):
            return tuple(self._decode_constants(i, gen) for i in v)
        return v

    def _bind(self, v: Any, x: torch.Tensor) -> Any:
        if v is _INPUT:
            return x
        if isinstance(v, _Buffer):
            return getattr(self, v.name)
        if isinstance(v, tuple):
            return tuple(self._bind(i, x) for i in v)
        if isinstance(v, dict):
            return {k: self._bind(i, x) for k, i in v.items()}
        return v

    def forward(self, x: torch.Tensor) -> Any:
        args = self._bind(self._decoded_args, x)
        kwargs = self._bind(self._decoded_kwargs, x)
        return self._func(*args, **kwargs)

    def __repr__(self) -> str:
        return signature(self.fn, self.args, self.kwargs)


def _plain(v: Any) -> Any:
    """YAML/JSON values with tuples turned back into lists (op spaces build args as tuples)."""
    if isinstance(v, (list, tuple)):
        return [_plain(i) for i in v]
    if isinstance(v, dict):
        return {k: _plain(i) for k, i in v.items()}
    return v


class SameInputs(nn.Module):
    """Calls a module whose ``forward`` takes several tensors with the same one, keeping the first output.

    This is how a self-attention layer (``nn.MultiheadAttention(x, x, x)``) is timed alone.

    Args:
        module: The module.
        n_inputs: How many positional tensors its ``forward`` requires.
    """

    def __init__(self, module: nn.Module, n_inputs: int) -> None:
        super().__init__()
        self.module = module
        self.n_inputs = n_inputs

    def forward(self, x: torch.Tensor) -> Any:
        out = self.module(*([x] * self.n_inputs))
        return out[0] if isinstance(out, (tuple, list)) else out


def required_inputs(module: nn.Module) -> int:
    """How many positional arguments without defaults ``module.forward`` takes."""
    try:
        params = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):
        return 1
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty for p in params)
