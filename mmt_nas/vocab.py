"""The op vocabulary every module shares: op keys, shapes and the op taxonomy.

Standard library only, so the metering side (``table``, ``meter``) can use it on a device
without torch.

- Keys: :func:`op_key` builds the lookup key ``Class|repr|1x3x224x224``; :func:`parse_key`
  reads one back.
- Shapes: :func:`check_shape` is the one validation of a tensor shape.
- Taxonomy: :func:`op_family` (conv, dwconv, linear, norm, activation, pool, elementwise,
  layout, block, other) is what the fallback learns from and reports split by;
  :func:`op_category` is its coarse view (depthwise and linear layers count as ``conv``, as
  MNN runs them), and :func:`mnn_category` puts MNN's own op types in the same coarse classes.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from mmt_nas.exceptions import MmtNasError, OpSpaceError, OptionError

__all__ = [
    "check_choice",
    "close_matches",
    "did_you_mean",
    "OpKey",
    "op_key",
    "parse_key",
    "signature",
    "is_shape",
    "check_shape",
    "FUNCTIONS",
    "function_category",
    "Family",
    "FAMILIES",
    "op_family",
    "Category",
    "CATEGORIES",
    "op_category",
    "family_category",
    "mnn_category",
]

_T = TypeVar("_T", bound=str)


def check_choice(name: str, value: Any, choices: tuple[_T, ...], *, error: type[MmtNasError] = OptionError) -> _T:
    """Return ``value`` as the one of ``choices`` it equals (a ``Literal`` option), or raise ``error``.

    Every string option of mmt_nas (``composition``, ``latency``, ``on_missing``, an estimator's kind, a
    study's direction, ...) is a ``Literal`` alias with a tuple of its values, checked by this.

    Example: ``check_choice("latency", "wall", ("core", "wall"))`` returns ``"wall"``; ``"hot"`` raises
    ``OptionError: latency must be 'core' or 'wall', but got latency='hot'.``
    """
    for choice in choices:
        if value == choice:
            return choice
    quoted = [repr(c) for c in choices]
    allowed = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
    hint = did_you_mean(value, choices) if isinstance(value, str) else ""
    raise error(f"{name} must be {allowed}, but got {name}={value!r}.{hint}")


def close_matches(word: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """The candidates most like ``word``, best first (``difflib``), ignoring case: ``Conv2D`` finds ``Conv2d``.

    A candidate that equals ``word`` but for case is the only answer; otherwise up to ``n`` whose
    ``difflib`` similarity to ``word`` (both case-folded) is at least 0.6. Words longer than 200
    characters (no name is) get none, so a hostile document cannot make this slow.
    """
    if len(word) > 200:
        return []
    folded: dict[str, list[str]] = {}
    for c in candidates:
        if c != word:
            folded.setdefault(c.casefold(), []).append(c)
    same = folded.get(word.casefold())
    if same:
        return sorted(same)[:n]
    close = difflib.get_close_matches(word.casefold(), list(folded), n=n)
    return [c for f in close for c in sorted(folded[f])][:n]


def did_you_mean(word: str, candidates: Iterable[str] | Mapping[str, str]) -> str:
    """``" Did you mean 'Conv2d'?"`` (or ``'a', 'b' or 'c'``) from :func:`close_matches`, for the end of a
    message; ``""`` when nothing is close.

    ``candidates`` may map each name matched to what to show for it, e.g. ``{"nn": "torch.nn"}``.
    """
    shown = candidates if isinstance(candidates, Mapping) else {c: c for c in candidates}
    found = [repr(shown[c]) for c in close_matches(word, shown)]
    if not found:
        return ""
    return f" Did you mean {found[0] if len(found) == 1 else ', '.join(found[:-1]) + ' or ' + found[-1]}?"


# -- keys -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpKey:
    """The three parts of an op key.

    Attributes:
        class_name: The op's class name, e.g. ``"Conv2d"`` (``"Functional"`` for tensor functions).
        repr: The op's ``repr()`` (for functions, their signature such as ``Tensor.add(x, T[1x4])``).
        input_shape: The shape of its (first) input.
    """

    class_name: str
    repr: str
    input_shape: tuple[int, ...]

    def __str__(self) -> str:
        return op_key(self.class_name, self.repr, self.input_shape)


def op_key(class_name: str, repr_str: str, input_shape: Iterable[int]) -> str:
    """Return the lookup key of an op: its class, its ``repr()`` and its input shape.

    Args:
        class_name: The op's class name, e.g. ``"Conv2d"``.
        repr_str: ``repr(module)``.
        input_shape: The shape of the op's (first) input tensor.

    Returns:
        A string such as ``"ReLU|ReLU()|1x64x56x56"``.
    """
    return f"{class_name}|{repr_str}|{'x'.join(str(int(d)) for d in input_shape)}"


def parse_key(key: Any, *, what: str = "op key") -> OpKey:
    """Split an op key built by :func:`op_key` into its parts.

    The class is everything before the first ``|``, the shape everything after the last one
    (a ``repr()`` may itself hold ``|``).

    Raises:
        OpSpaceError: ``key`` is not of the form ``Class|repr|1x3x224x224``.
    """
    class_name, _, rest = key.partition("|") if isinstance(key, str) else ("", "", "")
    repr_str, bar, dims = rest.rpartition("|")
    parts = dims.split("x") if dims else []
    if not class_name or not bar or not all(d.isdigit() and int(d) > 0 for d in parts):
        raise OpSpaceError(
            f"op keys look like 'Class|repr|1x3x224x224' (see mmt_nas.vocab.op_key), but {what} is {key!r}. "
            "Build keys with op_key() or KeyBuilder."
        )
    return OpKey(class_name, repr_str, tuple(int(d) for d in parts))


def _fmt(v: Any) -> str:
    if isinstance(v, dict):
        if v.get("input"):
            return "x"
        if "tensor" in v:
            return "T[" + "x".join(str(d) for d in v["tensor"]) + "]"
        if "slice" in v:
            return ":".join("" if p is None else _fmt(p) for p in v["slice"])
        if v.get("ellipsis"):
            return "..."
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(i) for i in v) + "]"
    return repr(v)


def signature(fn: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    """The text that identifies a functional op (its ``repr()`` and the middle of its key), e.g.
    ``Tensor.add(x, T[1x64x56x56])`` for arguments encoded by :func:`mmt_nas.space.ops.encode_args`."""
    parts = [_fmt(a) for a in args] + [f"{k}={_fmt(v)}" for k, v in sorted(kwargs.items())]
    return f"{fn}({', '.join(parts)})"


# -- shapes ---------------------------------------------------------------------------------


def is_shape(value: Any, *, allow_empty: bool = False, sequence: type | tuple[type, ...] = (list, tuple)) -> bool:
    """Whether ``value`` is a shape: a list (or tuple; ``sequence`` says which) of positive integers (not bools)."""
    if not isinstance(value, sequence) or not isinstance(value, (list, tuple)):
        return False
    dims: list[Any] = list(value)
    return (allow_empty or len(dims) > 0) and all(
        isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims
    )


def check_shape(
    value: Any,
    what: str = "input_shape",
    *,
    error: type[MmtNasError] = OpSpaceError,
    allow_empty: bool = False,
) -> tuple[int, ...]:
    """Return ``value`` as a shape tuple, or raise ``error`` saying what was wrong.

    Args:
        value: The shape to check.
        what: Its name, for the message, e.g. ``"input_shape"`` or ``"ops[3].output_shape"``.
        error: The exception type to raise (the boundary's own: ``OpSpaceError`` for user input,
            ``TableError`` for a file).
        allow_empty: Accept ``[]`` (a scalar's shape).
    """
    if not is_shape(value, allow_empty=allow_empty):
        if allow_empty:
            raise error(f"{what} must be a list of positive integers, but got {value!r}.")
        raise error(
            f"{what} must be a non-empty list of positive integers such as [1, 3, 224, 224], but got {value!r}."
        )
    return tuple(value)


# -- taxonomy ---------------------------------------------------------------------------------

#: Tensor functions the tracer records (others are ignored), by category.
FUNCTIONS: dict[str, str] = {}
for _cat, _names in {
    "elementwise": "add sub mul div true_divide __add__ __radd__ __sub__ __rsub__ __mul__ __rmul__ __truediv__ "
    "__rtruediv__ clamp clip exp sqrt rsqrt pow neg abs maximum minimum where",
    "layout": "cat concat stack flatten view reshape transpose permute chunk split squeeze unsqueeze __getitem__ "
    "pad interpolate expand repeat roll",
    "activation": "relu relu6 hardtanh sigmoid hardsigmoid hardswish silu gelu tanh softmax log_softmax "
    "leaky_relu elu mish",
    "pool": "mean sum amax adaptive_avg_pool2d avg_pool2d max_pool2d adaptive_max_pool2d",
    "conv": "matmul __matmul__ bmm linear conv2d scaled_dot_product_attention",
    "norm": "layer_norm batch_norm group_norm normalize",
}.items():
    for _n in _names.split():
        FUNCTIONS[_n] = _cat


def function_category(fn: str) -> str:
    """Category of a canonical function name (``elementwise``, ``layout``, ``activation``, ...)."""
    return FUNCTIONS.get(fn.rpartition(".")[2], "other")


Family = Literal["conv", "dwconv", "linear", "norm", "activation", "pool", "elementwise", "layout", "block", "other"]
#: Every op family, in the order of the fallback's one-hot features.
FAMILIES: tuple[Family, ...] = (
    "conv", "dwconv", "linear", "norm", "activation", "pool", "elementwise", "layout", "block", "other",
)  # fmt: skip

_CLASSES: dict[Family, str] = {
    "conv": "Conv1d Conv2d Conv3d ConvTranspose1d ConvTranspose2d ConvTranspose3d",
    "linear": "Linear",
    "norm": "BatchNorm1d BatchNorm2d BatchNorm3d LayerNorm GroupNorm",
    "activation": "ReLU ReLU6 Hardtanh Sigmoid Hardsigmoid Hardswish SiLU GELU Tanh LeakyReLU ELU Softmax Mish",
    "pool": "MaxPool1d MaxPool2d AvgPool1d AvgPool2d AdaptiveAvgPool1d AdaptiveAvgPool2d AdaptiveMaxPool2d",
    "layout": "Flatten Identity Dropout Unflatten ChannelShuffle PixelShuffle",
}
# Classes only the report's split knew before the taxonomy was one; kept out of the fallback's table
# above, whose one-hot features a fitted regressor depends on.
_MORE_CLASSES: dict[Family, str] = {
    "linear": "Bilinear LazyLinear MultiheadAttention",
    "norm": "InstanceNorm1d InstanceNorm2d InstanceNorm3d LocalResponseNorm",
    "activation": "PReLU SELU CELU Softplus Softsign LogSoftmax",
    "pool": "MaxPool3d AvgPool3d AdaptiveAvgPool3d AdaptiveMaxPool1d AdaptiveMaxPool3d",
    "layout": "Dropout1d Dropout2d Dropout3d PixelUnshuffle Upsample ZeroPad2d ConstantPad2d ReflectionPad2d",
}
_FAMILY_OF_CLASS: dict[str, Family] = {n: fam for fam, names in _CLASSES.items() for n in names.split()}
_REPORT_FAMILY_OF_CLASS: dict[str, Family] = {
    **{n: fam for fam, names in _MORE_CLASSES.items() for n in names.split()},
    **_FAMILY_OF_CLASS,
}


def _function_family(fn: str) -> Family:
    cat = function_category(fn)
    if cat == "conv":
        return "linear"  # matmuls, linear and conv2d calls, attention
    for family in FAMILIES:
        if family == cat:
            return family
    return "other"


def op_family(
    class_name: str, args: Mapping[str, Any] | None = None, key: str = "", *, extended: bool = False
) -> Family:
    """The family of an op: conv, dwconv, linear, norm, activation, pool, elementwise, layout, block, other.

    Args:
        class_name: The op's class name (``"Functional"`` for tensor functions).
        args: Its constructor arguments, if known (tell depthwise convolutions apart; a function's ``fn``).
        key: Its key (a function's name is read from it).
        extended: Also know the rarer torch classes (instance norm, PReLU, upsampling, attention, ...).
            The fallback's features leave it off (its fitted regressors depend on them).
    """
    if class_name == "Functional":
        try:
            fn = parse_key(key).repr.split("(", 1)[0]  # the signature, e.g. Tensor.add(x, T[1x64x56x56])
        except OpSpaceError:  # no key: the record's arguments name the function
            fn = str((args or {}).get("fn", ""))
        return _function_family(fn)
    fam = (_REPORT_FAMILY_OF_CLASS if extended else _FAMILY_OF_CLASS).get(class_name, "block")
    if fam == "conv" and args:
        groups, cin = args.get("groups", 1), args.get("in_channels", 1)
        if isinstance(groups, int) and groups > 1 and groups == cin:
            return "dwconv"
    return fam


Category = Literal["conv", "norm", "activation", "pool", "elementwise", "layout", "block", "other"]
#: The coarse categories reports split time by.
CATEGORIES: tuple[Category, ...] = ("conv", "norm", "activation", "pool", "elementwise", "layout", "block", "other")


def family_category(family: Family) -> Category:
    """The coarse category of a family: depthwise and linear layers are ``conv`` (MNN runs them as such)."""
    return "conv" if family in ("conv", "dwconv", "linear") else family  # type: ignore[return-value]


def op_category(class_name: str, key: str = "") -> Category:
    """The coarse category of a torch op: conv (convolutions, linear layers, matmuls), norm, activation,
    pool, layout, elementwise (tensor functions such as additions), block (any other module) or other."""
    return family_category(op_family(class_name, key=key, extended=True))


_MNN_CATEGORIES: dict[Category, str] = {
    "conv": "Convolution ConvolutionDepthwise Deconvolution DeconvolutionDepthwise MatMul BatchMatMul InnerProduct "
    "Convolution3D Deconvolution3D",
    "norm": "BatchNorm Scale LayerNorm GroupNorm InstanceNorm Normalize",
    "activation": "ReLU ReLU6 PReLU ELU Selu Sigmoid TanH UnaryOp Softmax GELU",
    "pool": "Pooling Pooling3D AdaptivePooling Reduction",
    "elementwise": "BinaryOp Eltwise",
    "layout": "Raster Reshape Permute Transpose Concat Slice StridedSlice Squeeze Unsqueeze ConvertTensor Flatten "
    "Gather GatherV2 Padding Interp Shape Cast Const",
}
_MNN_INDEX: dict[str, Category] = {name: cat for cat, names in _MNN_CATEGORIES.items() for name in names.split()}


def mnn_category(op_type: str) -> Category:
    """The coarse category of an MNN op type: conv, norm, activation, pool, elementwise, layout or other."""
    return _MNN_INDEX.get(op_type, "other")
