"""Find the ops a PyTorch model runs, with their keys and input shapes.

The model is run once on the given shape with forward hooks on every module.
Where possible the run uses meta tensors (shapes only, no arithmetic); a model
that cannot run on meta tensors is run for real, without gradients.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mmt_nas.exceptions import OpSpaceError
from mmt_nas.table import op_key

if TYPE_CHECKING:
    import os

    import torch

    from mmt_nas.predictor import Prediction

__all__ = ["ModuleCall", "ParsedOp", "trace_calls", "parse_model", "predict_latency"]


@dataclass(eq=False)
class ModuleCall:
    """One call of a module during the traced forward pass.

    Attributes:
        name: The module's qualified name in the model (``""`` for the model itself).
        module: The module object.
        input_shape: Shape of the first tensor argument (``None`` if it had none).
        output_shape: Shape of the first tensor output (``None`` if none).
        children: Calls made inside this one, in order.
    """

    name: str
    module: torch.nn.Module
    input_shape: tuple[int, ...] | None
    output_shape: tuple[int, ...] | None = None
    children: list[ModuleCall] = field(default_factory=list)

    def key(self) -> str:
        """The op key of this call (class, ``repr()``, input shape)."""
        return op_key(type(self.module).__name__, repr(self.module), self.input_shape or ())


@dataclass(frozen=True)
class ParsedOp:
    """An op the model runs, as counted for prediction.

    Attributes:
        key: Lookup key.
        class_name: The module's class name.
        name: Qualified module name inside the model.
        input_shape: Input shape.
        output_shape: Output shape (``None`` if unknown).
        module: The module object (not compared).
    """

    key: str
    class_name: str
    name: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...] | None
    module: Any = field(default=None, compare=False, repr=False)


def _first_tensor(obj: Any) -> Any:
    import torch

    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, (list, tuple)):
        for item in obj:
            t = _first_tensor(item)
            if t is not None:
                return t
    if isinstance(obj, dict):
        return _first_tensor(list(obj.values()))
    return None


def _shape_of(obj: Any) -> tuple[int, ...] | None:
    t = _first_tensor(obj)
    return None if t is None else tuple(int(d) for d in t.shape)


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode for the block, restoring each flag afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in flags:
            m.training = training


def _check_shape(input_shape: Any) -> tuple[int, ...]:
    if (
        not isinstance(input_shape, (list, tuple))
        or not input_shape
        or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in input_shape)
    ):
        raise OpSpaceError(
            f"input_shape must be a non-empty list of positive integers such as [1, 3, 224, 224], "
            f"but got {input_shape!r}."
        )
    return tuple(input_shape)


def trace_calls(model: torch.nn.Module, input_shape: Sequence[int]) -> list[ModuleCall]:
    """Run ``model`` once and record every module call, outermost first.

    Args:
        model: The model. Its parameters and training flags are left as they were.
        input_shape: The input shape.

    Returns:
        All calls in the order they started; ``calls[0]`` is the model itself and
        each call lists the calls made inside it.

    Raises:
        OpSpaceError: The shape is malformed, or the model fails to run on it.
    """
    import torch

    shape = _check_shape(input_shape)
    names = {id(m): n for n, m in model.named_modules(remove_duplicate=False)}
    calls: list[ModuleCall] = []
    stack: list[ModuleCall] = []

    def pre(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        call = ModuleCall(names.get(id(module), "?"), module, _shape_of((args, kwargs)))
        if stack:
            stack[-1].children.append(call)
        stack.append(call)
        calls.append(call)

    def post(module: torch.nn.Module, args: Any, output: Any) -> None:
        if stack and stack[-1].module is module:
            stack.pop().output_shape = _shape_of(output)

    handles = []
    for m in {id(m): m for m in model.modules()}.values():
        handles.append(m.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(m.register_forward_hook(post))
    try:
        try:
            _run_meta(model, shape)
        except Exception:  # shape-only execution is an optimisation; any failure means run for real
            calls.clear()
            stack.clear()
            try:
                with torch.no_grad(), _eval_mode(model):
                    gen = torch.Generator().manual_seed(0)
                    model(torch.randn(shape, generator=gen))
            except Exception as exc:
                raise OpSpaceError(
                    f"the model failed to run on input_shape={list(shape)}: {exc!r}. "
                    "Check that the shape is what the model expects."
                ) from exc
    finally:
        for h in handles:
            h.remove()
    return calls


def _shape_preserving_types() -> tuple[type, ...]:
    """torch's own layers whose output has their input's shape (exact types, not subclasses)."""
    from torch import nn

    names = (
        "BatchNorm1d BatchNorm2d BatchNorm3d LayerNorm GroupNorm InstanceNorm1d InstanceNorm2d InstanceNorm3d "
        "ReLU ReLU6 LeakyReLU ELU SELU CELU GELU SiLU Mish Hardswish Hardsigmoid Hardtanh Sigmoid Tanh Softplus "
        "Softsign Tanhshrink Softmax LogSoftmax Dropout Dropout1d Dropout2d Dropout3d AlphaDropout Identity"
    ).split()
    return tuple(getattr(nn, n) for n in names if hasattr(nn, n))


def _run_meta(model: torch.nn.Module, shape: tuple[int, ...]) -> None:
    """Run the model on meta tensors: shapes propagate, nothing is computed.

    torch's shape-preserving layers (batch norm, activations, dropout) pass their
    input through during this run: their meta kernels are slow and their output
    shape is their input's. Their hooks still fire.
    """
    import torch
    from torch.func import functional_call

    tensors = {
        n: torch.empty_like(t, device="meta")
        for n, t in itertools.chain(
            model.named_parameters(remove_duplicate=False), model.named_buffers(remove_duplicate=False)
        )
    }
    keep_shape = _shape_preserving_types()
    patched = [m for m in model.modules() if type(m) in keep_shape and "forward" not in m.__dict__]
    try:
        for m in patched:
            m.forward = _pass_through
        with torch.no_grad():
            functional_call(model, tensors, (torch.empty(shape, device="meta"),), tie_weights=False, strict=False)
    finally:
        for m in patched:
            m.__dict__.pop("forward", None)


def _pass_through(x: Any, *args: Any, **kwargs: Any) -> Any:
    return x


def parse_model(
    model: torch.nn.Module,
    input_shape: Sequence[int],
    known: Callable[[str], bool] | None = None,
) -> list[ParsedOp]:
    """List the ops ``model`` runs, outermost known modules first.

    A module call whose key is ``known`` counts as one op and its children are
    not counted again; otherwise its child calls are examined, down to leaves.
    A leaf (a call with no module calls inside it) always counts as an op.

    Args:
        model: The model.
        input_shape: Its input shape.
        known: Whether a key is in the table. ``None`` counts leaves only.

    Returns:
        The ops, in execution order.
    """
    calls = trace_calls(model, input_shape)
    ops: list[ParsedOp] = []

    def visit(call: ModuleCall) -> None:
        if call.input_shape is None and call.children:
            for child in call.children:
                visit(child)
            return
        key = call.key()
        if not call.children or (known is not None and known(key)):
            ops.append(
                ParsedOp(
                    key,
                    type(call.module).__name__,
                    call.name,
                    call.input_shape or (),
                    call.output_shape,
                    call.module,
                )
            )
            return
        for child in call.children:
            visit(child)

    if calls:
        visit(calls[0])
    return ops


def predict_latency(
    model: torch.nn.Module,
    path: str | os.PathLike[str],
    input_shape: Sequence[int],
    verbose: bool = False,
    *,
    backend: str | None = None,
    threads: int | None = None,
    precision: str | None = None,
) -> Prediction:
    """Predict the latency of ``model`` in milliseconds from a latency table (the MMT call).

    Args:
        model: The model.
        path: The table (``meta_latency.json``) or the ops folder holding it.
        input_shape: The input shape, e.g. ``[1, 3, 224, 224]``.
        verbose: Print the per-op breakdown.
        backend: Refuse the table unless measured on this backend (default: any).
        threads: Refuse the table unless measured with this many threads (default: any).
        precision: Refuse the table unless measured with this precision (default: any).

    Returns:
        A :class:`~mmt_nas.predictor.Prediction`: a float (milliseconds) that also
        carries the per-op breakdown (``.ops``, ``.explain()``).

    Raises:
        UnknownOpError: Ops are missing from the table (each listed, with the closest keys).
        TableError: The table is unusable or measured under other settings.
    """
    from mmt_nas.predictor import LatencyPredictor

    predictor = LatencyPredictor(path, backend=backend, threads=threads, precision=precision)
    prediction = predictor.predict(model, input_shape)
    if verbose:
        print(prediction.explain())  # noqa: T201 - the caller asked for the breakdown
    return prediction
