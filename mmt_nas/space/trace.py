"""Trace a PyTorch model: the ops it runs, with their keys and input shapes.

The model is run once on the given shape with forward hooks on every module.
Where possible the run uses meta tensors (shapes only, no arithmetic); a model
that cannot run on meta tensors is run for real, without gradients.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from mmt_nas._imports import require
from mmt_nas.exceptions import OpSpaceError
from mmt_nas.vocab import check_choice, check_shape, op_key, signature

if TYPE_CHECKING:
    import torch

__all__ = [
    "Composition",
    "COMPOSITIONS",
    "check_composition",
    "ModuleCall",
    "FunctionCall",
    "FunctionSpec",
    "ParsedOp",
    "trace_calls",
    "parse_model",
    "eval_mode",
    "first_tensor",
    "shape_of",
]

#: How a model's ops are counted: ``"mnn"`` counts what MNN runs (the tensor functions a model calls
#: as ops, the ops MNN's converter fuses into the op before them as costing nothing of their own);
#: ``"modules"`` sums the model's modules only (the MMT tool's way).
Composition = Literal["mnn", "modules"]
COMPOSITIONS: tuple[Composition, ...] = ("mnn", "modules")


def check_composition(composition: Any) -> Composition:
    """Return ``composition`` if it is ``"mnn"`` or ``"modules"``, else raise :class:`OptionError`."""
    return check_choice("composition", composition, COMPOSITIONS)


@dataclass(eq=False)
class FunctionCall:
    """A recorded tensor function called by a container module's own ``forward``.

    Attributes:
        name: ``<module name>:<function>`` where it was called.
        fn: Canonical name, e.g. ``Tensor.add`` (see :mod:`mmt_nas.space.ops`).
        args: Encoded positional arguments.
        kwargs: Encoded keyword arguments.
        input_shape: Shape of its first tensor argument.
        output_shape: Shape of its first tensor output.
    """

    name: str
    fn: str
    args: list[Any]
    kwargs: dict[str, Any]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...] | None = None
    input_ref: Any = field(default=None, repr=False)
    output_ref: Any = field(default=None, repr=False)

    def key(self) -> str:
        """The op key: class ``Functional``, the call's signature, the input shape."""
        return op_key("Functional", signature(self.fn, self.args, self.kwargs), self.input_shape)


@dataclass(eq=False)
class ModuleCall:
    """One call of a module during the traced forward pass.

    Attributes:
        name: The module's qualified name in the model (``""`` for the model itself).
        module: The module object.
        input_shape: Shape of the first tensor argument (``None`` if it had none).
        output_shape: Shape of the first tensor output (``None`` if none).
        children: Module calls and recorded function calls made inside this one, in order.
    """

    name: str
    module: torch.nn.Module
    input_shape: tuple[int, ...] | None
    output_shape: tuple[int, ...] | None = None
    children: list[ModuleCall | FunctionCall] = field(default_factory=list)
    input_ref: Any = field(default=None, repr=False)
    output_ref: Any = field(default=None, repr=False)

    def key(self) -> str:
        """The op key of this call (class, ``repr()``, input shape)."""
        cls = getattr(self.module, "op_class_name", type(self.module).__name__)
        return op_key(cls, repr(self.module), self.input_shape or ())


@dataclass(frozen=True)
class FunctionSpec:
    """A recorded tensor function call, as an op: its canonical name and encoded arguments.

    Attributes:
        fn: Canonical name, e.g. ``Tensor.add`` (see :mod:`mmt_nas.space.ops`).
        args: Encoded positional arguments (see :func:`mmt_nas.space.ops.encode_args`).
        kwargs: Encoded keyword arguments.
    """

    fn: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        # ``op.function["fn"]`` (and ``["args"]``, ``["kwargs"]``) kept working from when this was a dict
        if name not in ("fn", "args", "kwargs"):
            raise KeyError(name)
        return getattr(self, name)


@dataclass(frozen=True)
class ParsedOp:
    """An op the model runs, as counted for prediction.

    Attributes:
        key: Lookup key.
        class_name: The module's class name (``Functional`` for tensor functions).
        name: Where it runs in the model: a module name, or ``module:function``.
        input_shape: Input shape.
        output_shape: Output shape (``None`` if unknown).
        module: The module object (``None`` for functions; not compared).
        fused_into: Name of the op MNN fuses this one into (its time is that op's), or ``None``.
        function: For functions: the encoded call (``None`` for modules).
    """

    key: str
    class_name: str
    name: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...] | None
    module: Any = field(default=None, compare=False, repr=False)
    fused_into: str | None = None
    function: FunctionSpec | None = field(default=None, compare=False, repr=False)


def first_tensor(obj: Any) -> Any:
    """The first tensor in a module's output (itself, or the first found in its tuples, lists and dicts)."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, (list, tuple)):
        for item in obj:
            t = first_tensor(item)
            if t is not None:
                return t
    if isinstance(obj, dict):
        return first_tensor(list(obj.values()))
    return None


def shape_of(obj: Any) -> tuple[int, ...] | None:
    """The shape of the first tensor in ``obj`` (a tensor, or nested lists, tuples and dicts), or ``None``."""
    t = first_tensor(obj)
    return None if t is None else tuple(int(d) for d in t.shape)


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode for the block, restoring each flag afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in flags:
            m.training = training


def trace_calls(
    model: torch.nn.Module,
    input_shape: Sequence[int],
    known_output: Callable[[str], tuple[int, ...] | None] | None = None,
) -> list[ModuleCall]:
    """Run ``model`` once and record every module call and the tensor functions containers call.

    Functions (additions, concatenations, reshapes, ...) are recorded when the
    innermost running module has submodules of its own: that is the model's glue
    code, which no module accounts for. Inside a leaf module they are the leaf's.

    Args:
        model: The model. Its parameters and training flags are left as they were.
        input_shape: The input shape.
        known_output: For keys the table counts whole, their output shape (else ``None``):
            such modules are not run inside, only called.

    Returns:
        All module calls in the order they started; ``calls[0]`` is the model itself and
        each call lists the calls (and functions) made inside it.

    Raises:
        OpSpaceError: The shape is malformed, or the model fails to run on it.
    """
    require("torch", "torch", "tracing a model")  # deferred, so that importing the predictor stays light
    import torch
    from torch.overrides import TorchFunctionMode

    from mmt_nas.space.ops import canonical_name, encode_args  # these need torch at import

    shape = check_shape(input_shape)
    named = list(model.named_modules(remove_duplicate=False))
    names = {id(m): n for n, m in named}
    modules = list({id(m): m for _, m in named}.values())
    containers = {id(m) for m in modules if next(iter(m.children()), None) is not None}
    calls: list[ModuleCall] = []
    stack: list[ModuleCall] = []

    def pre(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        first = first_tensor((args, kwargs))
        call = ModuleCall(names.get(id(module), "?"), module, shape_of(first), input_ref=first)
        if stack:
            stack[-1].children.append(call)
        stack.append(call)
        calls.append(call)

    def post(module: torch.nn.Module, args: Any, output: Any) -> None:
        if stack and stack[-1].module is module:
            call = stack.pop()
            call.output_ref = first_tensor(output)
            call.output_shape = shape_of(call.output_ref)

    class Recorder(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            out = _meta_broadcast(func, args, kwargs)
            if out is None:
                out = func(*args, **kwargs)
            if stack and id(stack[-1].module) in containers:
                fn = canonical_name(func)
                x = first_tensor((args, kwargs)) if fn is not None else None
                if fn is not None and x is not None and x.is_floating_point():
                    try:
                        enc_args, enc_kwargs = encode_args(args, kwargs, x)
                    except ValueError:
                        return out
                    parent = stack[-1]
                    ref = first_tensor(out)
                    parent.children.append(
                        FunctionCall(
                            f"{parent.name}:{fn}", fn, enc_args, enc_kwargs, shape_of(x) or (), shape_of(ref), x, ref
                        )
                    )
            return out

    handles = []
    for m in modules:
        handles.append(m.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(m.register_forward_hook(post))
    try:
        try:
            _run_meta(model, shape, modules, containers, Recorder, known_output)
        except Exception:  # shape-only execution is an optimisation; any failure means run for real
            calls.clear()
            stack.clear()
            try:
                with torch.no_grad(), eval_mode(model), Recorder():
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

    names = [
        "BatchNorm1d",
        "BatchNorm2d",
        "BatchNorm3d",
        "LayerNorm",
        "GroupNorm",
        "InstanceNorm1d",
        "InstanceNorm2d",
        "InstanceNorm3d",
        "ReLU",
        "ReLU6",
        "LeakyReLU",
        "ELU",
        "SELU",
        "CELU",
        "GELU",
        "SiLU",
        "Mish",
        "Hardswish",
        "Hardsigmoid",
        "Hardtanh",
        "Sigmoid",
        "Tanh",
        "Softplus",
        "Softsign",
        "Tanhshrink",
        "Softmax",
        "LogSoftmax",
        "Dropout",
        "Dropout1d",
        "Dropout2d",
        "Dropout3d",
        "AlphaDropout",
        "Identity",
    ]
    return tuple(getattr(nn, n) for n in names if hasattr(nn, n))


def _run_meta(
    model: torch.nn.Module,
    shape: tuple[int, ...],
    modules: list[torch.nn.Module],
    containers: set[int],
    recorder: Callable[[], Any],
    known_output: Callable[[str], tuple[int, ...] | None] | None = None,
) -> None:
    """Run the model on meta tensors: shapes propagate, nothing is computed.

    torch's shape-preserving layers (batch norm, activations, dropout) pass their
    input through during this run: their meta kernels are slow and their output
    shape is their input's. A container module whose key ``known_output`` knows
    returns an empty tensor of the recorded output shape without running its
    insides (the table counts it whole). Hooks still fire for every module called.
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
    patched = [m for m in modules if type(m) in keep_shape and "forward" not in m.__dict__]
    stubbed = []
    if known_output is not None:
        stubbed = [m for m in modules if "forward" not in m.__dict__ and id(m) in containers]
    try:
        for m in patched:
            m.forward = _pass_through
        for m in stubbed:
            m.forward = _known_stub(m, m.forward, known_output)  # type: ignore[arg-type]
        x = torch.empty(shape, device="meta")
        with torch.no_grad(), recorder():
            functional_call(model, tensors, (x,), tie_weights=False, strict=False)
    finally:
        for m in patched + stubbed:
            m.__dict__.pop("forward", None)


def _pass_through(x: Any, *args: Any, **kwargs: Any) -> Any:
    return x


def _known_stub(
    module: torch.nn.Module, forward: Callable[..., Any], known_output: Callable[[str], tuple[int, ...] | None]
) -> Callable[..., Any]:
    import torch

    text: list[str] = []

    def stub(*args: Any, **kwargs: Any) -> Any:
        x = first_tensor((args, kwargs))
        if x is not None and x.is_meta:
            if not text:
                text.append(repr(module))
            cls = getattr(module, "op_class_name", type(module).__name__)
            out = known_output(op_key(cls, text[0], tuple(x.shape)))
            if out is not None:
                return torch.empty(out, device="meta", dtype=x.dtype)
        return forward(*args, **kwargs)

    return stub


_BROADCASTING = {
    "add",
    "sub",
    "mul",
    "div",
    "true_divide",
    "__add__",
    "__radd__",
    "__sub__",
    "__rsub__",
    "__mul__",
    "__rmul__",
    "__truediv__",
    "__rtruediv__",
    "__iadd__",
    "__isub__",
    "__imul__",
}


def _meta_broadcast(func: Any, args: Any, kwargs: Any) -> Any:
    """The result of an elementwise binary op on meta tensors, without torch's slow meta kernel."""
    import torch

    name = getattr(func, "__name__", "")
    inplace = name.startswith("__i") or (name.endswith("_") and not name.endswith("__"))
    base = name[:-1] if inplace and not name.startswith("__") else name
    if base not in _BROADCASTING or kwargs or len(args) != 2:
        return None
    a, b = args
    if not isinstance(a, torch.Tensor) or not a.is_meta or not a.is_floating_point():
        return None
    if isinstance(b, torch.Tensor):
        if not b.is_meta or b.dtype != a.dtype:
            return None
        shape = torch.broadcast_shapes(a.shape, b.shape)
    elif isinstance(b, (int, float)) and not isinstance(b, bool):
        shape = a.shape
    else:
        return None
    if inplace:
        return a if tuple(shape) == tuple(a.shape) else None
    return torch.empty(shape, device="meta", dtype=a.dtype)


def _fusion_rules() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...]]:
    from torch import nn

    return (nn.Conv1d, nn.Conv2d, nn.Conv3d), (nn.Linear,), (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


_BINARY = {"Tensor.add", "torch.add", "Tensor.__add__", "Tensor.__radd__", "Tensor.sub", "torch.sub", "Tensor.__sub__"}
_RELU_FUNCTIONS = {"F.relu", "torch.relu", "Tensor.relu"}


def _is_fusable_activation(op: ParsedOp) -> tuple[bool, bool]:
    """(fuses after a convolution or linear layer, fuses after an addition) — what MNN's converter does."""
    from torch import nn

    m = op.module
    if op.function is not None:
        relu = op.function.fn in _RELU_FUNCTIONS
        return relu or op.function.fn == "F.relu6", relu
    if type(m) is nn.ReLU:
        return True, True
    if type(m) is nn.ReLU6 or (type(m) is nn.Hardtanh and m.min_val == 0 and m.max_val == 6):
        return True, False
    return False, False


def _is_norm(op: ParsedOp, norms: tuple[type, ...]) -> bool:
    """A batch norm, as the exported (inference) graph runs it: a ``BatchNorm*d`` module (or a subclass of one
    with no children: one that also holds an activation, as timm's ``BatchNormAct2d`` does, is not just a norm when
    counted whole), or a call of ``F.batch_norm`` (as such layers make themselves), whatever the model's train/eval
    flag was while it was traced: the export always runs in eval mode."""
    if op.function is not None:
        return op.function.fn == "F.batch_norm"
    if not isinstance(op.module, norms):
        return False
    children: Any = getattr(op.module, "children", list)
    return next(iter(children()), None) is None


def _is_pass_through(op: ParsedOp) -> bool:
    """An op that computes nothing in inference, which the exported graph leaves out: ``Identity`` or a dropout
    module (whatever its train/eval flag while traced: the export runs in eval mode)."""
    from torch import nn

    m = op.module
    return op.function is None and isinstance(m, (nn.Identity, nn.modules.dropout._DropoutNd))


def _mark_fusions(ops: list[ParsedOp], refs: list[tuple[Any, Any]]) -> list[ParsedOp]:
    """Mark the ops MNN's converter folds into the op before them, by what they compute, whatever class or
    function wrote them.

    Measured with MNN 3.6 (see tests): Conv + BatchNorm, Conv/Linear (+ BatchNorm) + ReLU/ReLU6/
    Hardtanh(0, 6), and an addition or subtraction + ReLU each run as one op; a batch norm is a ``BatchNorm*d``
    module or ``F.batch_norm`` in inference (:func:`_is_norm`); ``Identity`` and dropouts in eval mode run no op
    at all and are marked as folded into the op whose output they pass on (:func:`_is_pass_through`). The follower
    must take the previous op's output directly.
    """
    convs, linears, norms = _fusion_rules()
    anchor: list[int] = []
    last: dict[int, int] = {}
    has_bn: set[int] = set()
    has_act: set[int] = set()
    producer: dict[int, int] = {}
    out: list[ParsedOp] = []
    for i, (op, (in_ref, out_ref)) in enumerate(zip(ops, refs)):
        fused_to = None
        src = producer.get(id(in_ref)) if in_ref is not None else None
        if src is not None and _is_pass_through(op):
            a = anchor[src]
            anchor.append(a)
            if last[a] == src:
                last[a] = i  # the chain goes on through it: a norm or activation after it still folds
            out.append(dataclasses.replace(op, fused_into=ops[a].name))
            if out_ref is not None:
                producer[id(out_ref)] = i
            continue
        if src is not None:
            a = anchor[src]
            head = ops[a]
            if last[a] == src and a not in has_act:
                after_conv, after_add = _is_fusable_activation(op)
                is_conv = head.function is None and isinstance(head.module, convs)
                is_linear = head.function is None and isinstance(head.module, linears)
                is_add = head.function is not None and head.function.fn in _BINARY
                if _is_norm(op, norms) and is_conv and a not in has_bn:
                    fused_to = a
                    has_bn.add(a)
                elif (after_conv and (is_conv or is_linear)) or (after_add and is_add):
                    fused_to = a
                    has_act.add(a)
        if fused_to is None:
            anchor.append(i)
            last[i] = i
            out.append(op)
        else:
            anchor.append(fused_to)
            last[fused_to] = i
            out.append(dataclasses.replace(op, fused_into=ops[fused_to].name))
        if out_ref is not None:
            producer[id(out_ref)] = i
    return out


def parse_model(
    model: torch.nn.Module,
    input_shape: Sequence[int],
    known: Callable[[str], bool] | None = None,
    *,
    composition: Composition = "mnn",
    known_output: Callable[[str], tuple[int, ...] | None] | None = None,
) -> list[ParsedOp]:
    """List the ops ``model`` runs, outermost known modules first.

    A module call whose key is ``known`` counts as one op and its children are
    not counted again; otherwise its child calls are examined, down to leaves.
    A leaf (a call with no module calls inside it) always counts as an op.

    Args:
        model: The model.
        input_shape: Its input shape.
        known: Whether a key is in the table. ``None`` counts leaves only.
        composition: ``"mnn"`` (default) also lists the tensor functions containers call
            (additions, reshapes, ...) and marks the ops MNN fuses into the op before
            them (``fused_into``). ``"modules"`` lists modules only, none fused (the MMT tool's sum).
        known_output: Optional speed-up: the recorded output shape of a known key, so that
            known containers are not run inside (see :func:`trace_calls`).

    Returns:
        The ops, in execution order.
    """
    check_composition(composition)
    calls = trace_calls(model, input_shape, known_output)
    ops: list[ParsedOp] = []
    refs: list[tuple[Any, Any]] = []
    functions = composition == "mnn"

    def visit(call: ModuleCall | FunctionCall) -> None:
        if isinstance(call, FunctionCall):
            if functions:
                ops.append(
                    ParsedOp(
                        call.key(),
                        "Functional",
                        call.name,
                        call.input_shape,
                        call.output_shape,
                        function=FunctionSpec(call.fn, call.args, call.kwargs),
                    )
                )
                refs.append((call.input_ref, call.output_ref))
            return
        modules = [c for c in call.children if isinstance(c, ModuleCall)]
        if call.input_shape is None and modules:
            for child in call.children:
                visit(child)
            return
        key = call.key()
        if not modules or (known is not None and known(key)):
            cls = getattr(call.module, "op_class_name", type(call.module).__name__)
            ops.append(ParsedOp(key, cls, call.name, call.input_shape or (), call.output_shape, call.module))
            refs.append((call.input_ref, call.output_ref))
            return
        for child in call.children:
            visit(child)

    if calls:
        visit(calls[0])
    return _mark_fusions(ops, refs) if functions else ops
