"""Estimate ops that are not in the table: a regression fallback trained on the table's measured ops.

Features come from the op and its shapes (FLOPs, parameters, input and output sizes,
memory traffic, kernel, stride, groups, channels, op family); the target is the op's
time. The estimator follows scikit-learn's conventions (``__init__`` stores, ``fit``
returns ``self`` and sets attributes ending in ``_``, ``predict`` refuses before ``fit``)
and never pickles: ``to_dict`` stores its parameters and ``from_table`` refits from the
table, which is deterministic and takes well under a second for a few thousand ops.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, TypeVar, cast

from mmt_nas._imports import try_import
from mmt_nas.exceptions import NotFittedError, OptionError, TableError
from mmt_nas.space.describe import record_from_parsed
from mmt_nas.space.trace import ParsedOp
from mmt_nas.table.records import OpRecord
from mmt_nas.table.table import Latency, LatencyTable, TableEntry, check_latency
from mmt_nas.vocab import FAMILIES, check_choice, op_family

__all__ = [
    "FAMILIES",
    "op_family",
    "op_features",
    "FEATURE_NAMES",
    "RegressorKind",
    "REGRESSOR_KINDS",
    "LatencyRegressor",
    "compare_regressors",
    "record_from_parsed",
    "propose_samples",
]

#: The regression models :class:`LatencyRegressor` can fit.
RegressorKind = Literal["forest", "boosting", "linear"]
REGRESSOR_KINDS: tuple[RegressorKind, ...] = ("forest", "boosting", "linear")

FEATURE_NAMES = (
    "log_flops",
    "log_params",
    "log_in",
    "log_out",
    "log_traffic",
    "kernel",
    "stride",
    "groups_frac",
    "log_cin",
    "log_cout",
    "log_hw",
    "arith_intensity",
) + tuple(f"is_{f}" for f in FAMILIES)


_OP_CACHE_MAX = 100_000
#: What the fallback remembers of each op it estimated: its time, its spread and its cold ratio.
_Quantity = Literal["ms", "log_std", "cold"]
_QUANTITIES: tuple[_Quantity, ...] = ("ms", "log_std", "cold")
_CONTROLLER: Any = None
_F = TypeVar("_F", bound=Callable[..., Any])


def single_threaded(fn: _F) -> _F:
    """Run ``fn`` with scikit-learn's OpenMP and BLAS thread pools limited to one thread.

    On a small shared machine their threads oversubscribe the cores: a boosting fit ran 4x slower on the
    project's 2-core VM with one other process busy (6.2 s vs 1.6 s). The limit costs about 0.1 ms per call
    (threadpoolctl, a scikit-learn dependency; the controller is made once, after scikit-learn is imported).
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        global _CONTROLLER
        if _CONTROLLER is None:
            import sklearn.ensemble  # noqa: F401  (loads the OpenMP runtime the controller must see)
            from threadpoolctl import ThreadpoolController

            _CONTROLLER = ThreadpoolController()
        with _CONTROLLER.limit(limits=1):
            return fn(*args, **kwargs)

    return cast(_F, wrapper)


def _scalar(v: Any, default: float = 1.0) -> float:
    if isinstance(v, (list, tuple)) and v:
        v = v[0]
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else default


def op_features(op: OpRecord | TableEntry) -> list[float]:
    """The feature vector of an op (see :data:`FEATURE_NAMES`)."""
    rec = op.op if isinstance(op, TableEntry) else op
    args = dict(rec.args)
    fam = op_family(rec.class_name, args, rec.key)
    n_in = math.prod(rec.input_shape) if rec.input_shape else 1
    n_out = math.prod(rec.output_shape) if rec.output_shape else n_in
    traffic = 4 * (n_in + n_out + rec.params)
    cin = rec.input_shape[1] if len(rec.input_shape) > 1 else rec.input_shape[-1] if rec.input_shape else 1
    out_shape = rec.output_shape or rec.input_shape
    cout = out_shape[1] if len(out_shape) > 1 else out_shape[-1] if out_shape else 1
    hw = math.prod(rec.input_shape[2:]) if len(rec.input_shape) > 2 else 1
    groups = _scalar(args.get("groups"), 1.0)
    return [
        math.log1p(rec.flops),
        math.log1p(rec.params),
        math.log1p(n_in),
        math.log1p(n_out),
        math.log1p(traffic),
        _scalar(args.get("kernel_size", args.get("kernel")), 1.0),
        _scalar(args.get("stride"), 1.0),
        groups / max(cin, 1),
        math.log1p(cin),
        math.log1p(cout),
        math.log1p(hw),
        rec.flops / traffic,
    ] + [1.0 if fam == f else 0.0 for f in FAMILIES]


def check_regressor_kind(model: Any) -> RegressorKind:
    """Return ``model`` if it is a :data:`REGRESSOR_KINDS` name, else raise :class:`OptionError`."""
    return check_choice("model", model, REGRESSOR_KINDS)


def _make(kind: RegressorKind, random_state: int) -> Any:
    with try_import("fallback", "the regression fallback") as imported:
        from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor
        from sklearn.linear_model import RidgeCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
    imported.check()
    if kind == "forest":
        return RandomForestRegressor(n_estimators=200, min_samples_leaf=2, random_state=random_state, n_jobs=1)
    if kind == "boosting":
        return HistGradientBoostingRegressor(max_iter=300, learning_rate=0.05, random_state=random_state)
    return make_pipeline(StandardScaler(), RidgeCV(alphas=(0.01, 0.1, 1.0, 10.0)))


class LatencyRegressor:
    """Predict an op's latency (ms) from its features; a scikit-learn style estimator.

    The target is ``log(ms)``: op times span four orders of magnitude, and relative
    error is what matters.

    Args:
        model: ``"forest"`` (random forest, nn-Meter's choice), ``"boosting"`` (histogram
            gradient boosting) or ``"linear"`` (ridge on the log features).
        latency: Which time to learn: ``"core"`` (the op's own time, where the table has it)
            or ``"wall"`` (its end-to-end median).
        random_state: Seed, so refits are identical.
    """

    def __init__(self, model: RegressorKind = "forest", latency: Latency = "core", random_state: int = 0) -> None:
        self.model = model
        self.latency = latency
        self.random_state = random_state

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor parameters (scikit-learn convention)."""
        return {"model": self.model, "latency": self.latency, "random_state": self.random_state}

    def set_params(self, **params: Any) -> LatencyRegressor:
        """Set constructor parameters; returns ``self``."""
        for k, v in params.items():
            if k not in self.get_params():
                raise OptionError(f"LatencyRegressor has no parameter {k!r}; it has {sorted(self.get_params())}.")
            setattr(self, k, v)
        return self

    def _target(self, entry: TableEntry) -> float:
        return math.log(max(entry.time_ms(self.latency), 1e-5))

    @single_threaded
    def fit(self, table: LatencyTable | Iterable[TableEntry]) -> LatencyRegressor:
        """Fit on the measured ops of a table.

        Raises:
            OptionError: Bad parameters.
            TableError: Fewer than 5 ops to learn from.
        """
        kind = check_regressor_kind(self.model)
        check_latency(self.latency)
        entries = _enough(list(table))
        self.estimator_ = _make(kind, self.random_state)
        self.estimator_.fit([op_features(e) for e in entries], [self._target(e) for e in entries])
        self.n_samples_ = len(entries)
        self.entries_ = entries
        self.__dict__.pop("_oof_log_std", None)
        self.__dict__.pop("_op_cache", None)
        # The context feature: how much slower an op runs cold (weights from memory) than hot, learnt from the
        # entries metered both ways, so an op the table lacks moves toward its cold time in a large model too.
        both = [(e, e.cold_ms, e.core_ms) for e in entries if e.cold_ms is not None and e.core_ms]
        self.cold_estimator_: Any = None
        if len(both) >= 5:
            self.cold_estimator_ = _make(kind, self.random_state)
            self.cold_estimator_.fit(
                [op_features(e) for e, _, _ in both], [math.log(max(cold, 1e-5) / core) for _, cold, core in both]
            )
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "estimator_"):
            raise NotFittedError("this LatencyRegressor is not fitted yet; call fit(table) first.")

    @single_threaded
    def predict(self, ops: Sequence[OpRecord | TableEntry]) -> list[float]:
        """Estimated latencies in ms."""
        self._check_fitted()
        if not ops:
            return []
        return [math.exp(v) for v in self.estimator_.predict([op_features(o) for o in ops])]

    def _remember(self, ops: Sequence[ParsedOp], what: _Quantity) -> dict[tuple[str, str], Any]:
        """Estimate ``what`` of every op of ``ops`` not remembered yet, in one call, and remember it by the op's
        key until the next :meth:`fit` (a search predicts the same ops in many candidates; a key determines its
        op). Returns the memory, ``(what, key) -> value``."""
        self._check_fitted()
        cache: dict[tuple[str, str], Any] = self.__dict__.setdefault("_op_cache", {})
        todo: dict[str, OpRecord] = {}
        for op in ops:
            if op.key not in todo and (what, op.key) not in cache:
                todo[op.key] = record_from_parsed(op)
        if todo:
            if len(cache) + len(todo) > _OP_CACHE_MAX:
                cache.clear()
            compute = {"ms": self.predict, "log_std": self.log_std, "cold": self.cold_ratios}[what]
            out = compute(list(todo.values()))
            for key, value in zip(todo, out if out is not None else [None] * len(todo)):
                cache[(what, key)] = value
        return cache

    def prepare(self, ops: Sequence[ParsedOp]) -> None:
        """Estimate every op of ``ops`` not remembered yet in one call of each estimator (the predictor's optional
        protocol): a model's fallback ops then cost one forest call, not one per op and per quantity. Later
        :meth:`predict_op`, :meth:`log_std_op` and :meth:`cold_ratio_op` calls read what this remembered."""
        for what in _QUANTITIES:
            self._remember(ops, what)

    def predict_op(self, op: ParsedOp) -> float:
        """Estimate one parsed op (the predictor's fallback protocol)."""
        return float(self._remember([op], "ms")[("ms", op.key)])

    @single_threaded
    def oof_log_std(self) -> float:
        """The spread of the fallback's errors on ops it did not see: the standard deviation of
        ``log(estimate / measured)`` over the table's ops, each estimated by a model fitted without its fold
        (3-fold, seeded); computed on first use (a few seconds for 2,000 ops) and remembered."""
        self._check_fitted()
        if "_oof_log_std" not in self.__dict__:
            errors = _out_of_fold_log_errors(self.entries_, self.model, self.latency, 3, self.random_state)
            mean = sum(errors) / len(errors)
            self.__dict__["_oof_log_std"] = math.sqrt(sum((e - mean) ** 2 for e in errors) / max(len(errors) - 1, 1))
        return float(self.__dict__["_oof_log_std"])

    @single_threaded
    def log_std(self, ops: Sequence[OpRecord | TableEntry]) -> list[float]:
        """Each op's estimate's relative standard deviation (log units): :meth:`oof_log_std`, combined (in
        quadrature) for the forest with the spread of its trees' estimates of that op, which is larger where
        the table has few ops like it."""
        base = self.oof_log_std()
        if not ops:
            return []
        if self.model != "forest":
            return [base] * len(ops)
        import numpy as np

        feats = np.asarray([op_features(o) for o in ops])
        per_tree = np.stack([tree.predict(feats) for tree in self.estimator_.estimators_])
        return [math.hypot(base, float(s)) for s in per_tree.std(axis=0)]

    def log_std_op(self, op: ParsedOp) -> float:
        """:meth:`log_std` of one parsed op (the predictor's optional protocol, for intervals)."""
        return float(self._remember([op], "log_std")[("log_std", op.key)])

    @single_threaded
    def cold_ratios(self, ops: Sequence[OpRecord | TableEntry]) -> list[float] | None:
        """Estimated cold-over-hot time ratios (``cold_ms / core_ms``, see :func:`mmt_nas.device.profile.cold_core_ms`),
        or ``None`` when the table had fewer than 5 ops metered both ways."""
        self._check_fitted()
        if self.cold_estimator_ is None:
            return None
        if not ops:
            return []
        return [math.exp(v) for v in self.cold_estimator_.predict([op_features(o) for o in ops])]

    def cold_ratio_op(self, op: ParsedOp) -> float | None:
        """Estimated cold-over-hot ratio of one parsed op, or ``None`` (the predictor's optional protocol)."""
        ratio = self._remember([op], "cold")[("cold", op.key)]
        return None if ratio is None else float(ratio)

    def to_dict(self) -> dict[str, Any]:
        """Parameters as JSON; load with :meth:`from_table` (refits, never unpickles)."""
        return {"kind": "LatencyRegressor", **self.get_params()}

    @classmethod
    def from_table(cls, table: LatencyTable, params: Mapping[str, Any] | None = None) -> LatencyRegressor:
        """Rebuild a fitted regressor from :meth:`to_dict` output and the table it was fitted on."""
        p = {k: v for k, v in dict(params or {}).items() if k != "kind"}
        return cls(**p).fit(table)


def _enough(entries: list[TableEntry]) -> list[TableEntry]:
    if len(entries) < 5:
        raise TableError(
            f"the fallback needs at least 5 measured ops to learn from, but the table has "
            f"{len(entries)}. Meter more ops first."
        )
    return entries


@single_threaded
def _out_of_fold_log_errors(
    entries: Sequence[TableEntry], model: Any, latency: Latency, folds: int, random_state: int, strict: bool = False
) -> list[float]:
    """``log(estimate / measured)`` of every entry, each estimated by a ``model`` regressor fitted without its fold
    (the entries shuffled with ``random_state``, then dealt into ``folds`` folds). ``strict``: a fold with fewer than
    5 entries to fit on raises :class:`TableError`, as :meth:`LatencyRegressor.fit` does."""
    import random

    kind = check_regressor_kind(model)
    target = LatencyRegressor(kind, latency, random_state)._target
    order = list(range(len(entries)))
    random.Random(random_state).shuffle(order)
    errors: list[float] = []
    for f in range(folds):
        test = [entries[i] for i in order[f::folds]]
        train = [entries[i] for j, i in enumerate(order) if j % folds != f]
        if strict:
            _enough(train)
        est = _make(kind, random_state)
        est.fit([op_features(e) for e in train], [target(e) for e in train])
        got = est.predict([op_features(e) for e in test]) if test else []
        errors += [float(g) - target(e) for g, e in zip(got, test)]
    return errors


def compare_regressors(
    table: LatencyTable, kinds: Sequence[RegressorKind] = REGRESSOR_KINDS, folds: int = 5, random_state: int = 0
) -> dict[str, dict[str, float]]:
    """Cross-validate each regressor kind on the table: MAPE and share within ±10% per kind."""
    entries = list(table)
    out: dict[str, dict[str, float]] = {}
    for kind in kinds:
        errors = [
            abs(math.exp(d) - 1) for d in _out_of_fold_log_errors(entries, kind, "core", folds, random_state, True)
        ]
        out[kind] = {
            "mape_pct": 100 * sum(errors) / len(errors),
            "within_10_pct": 100 * sum(e <= 0.1 for e in errors) / len(errors),
        }
    return out


def propose_samples(
    table: LatencyTable, candidates: Sequence[OpRecord], budget: int, random_state: int = 0
) -> list[OpRecord]:
    """Choose which new ops to measure so that the fallback improves most where it is least sure.

    A random forest is fitted on the table; each candidate not yet in the table is scored by
    the spread of its trees' predictions (in log time, i.e. relative uncertainty), and the
    ``budget`` most uncertain candidates are picked greedily, refitting nothing but skipping
    candidates of the same family and size bucket as one already picked, so that one
    uncertain corner does not take the whole budget (nn-Meter's adaptive sampling, simplified).

    Args:
        table: The measured ops.
        candidates: Ops that could be measured (e.g. from a large op space).
        budget: How many to propose.
        random_state: Seed of the forest.

    Returns:
        At most ``budget`` candidates, most uncertain first.
    """
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise TableError(f"budget must be an integer >= 1, but got budget={budget!r}.")
    pool = [c for c in candidates if c.key not in table]
    if not pool:
        return []
    reg = LatencyRegressor("forest", random_state=random_state).fit(table)
    feats = [op_features(c) for c in pool]
    import numpy as np

    per_tree = np.stack([tree.predict(np.asarray(feats)) for tree in reg.estimator_.estimators_])
    spread = per_tree.std(axis=0)
    order = sorted(range(len(pool)), key=lambda i: -spread[i])
    chosen: list[OpRecord] = []
    buckets: set[tuple[str, int]] = set()
    for i in order:
        c = pool[i]
        bucket = (op_family(c.class_name, c.args, c.key), round(math.log2(max(c.flops, 1)) / 2))
        if bucket in buckets:
            continue
        buckets.add(bucket)
        chosen.append(c)
        if len(chosen) == budget:
            return chosen
    rest = [pool[i] for i in order if pool[i] not in chosen]
    return chosen + rest[: budget - len(chosen)]
