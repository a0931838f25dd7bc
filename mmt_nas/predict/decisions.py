"""Which ops to measure next for a decision: those that would narrow the intervals of the models nearest a budget.

A search asks one question of each candidate model: is it within budget? A model predicted far from the budget
is decided whatever its interval; one near it is not. Measuring an op the table lacks replaces the fallback's
spread on it (``OpContribution.sigma``) by a measurement's (the table's median entry spread), which removes
``(share * sigma_fallback) ** 2 - (share * sigma_measured) ** 2`` of its model's log variance.
:func:`propose_for_budget` weighs that by how undecided the model is, the normal density of
``log(budget / T) / s`` (``s``: the model's whole log spread, its interval's), summed over the models, and ranks
the ops by it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mmt_nas.exceptions import OptionError
from mmt_nas.predict.intervals import log_sd
from mmt_nas.progress import progress
from mmt_nas.space.describe import record_from_parsed
from mmt_nas.table.records import OpRecord

if TYPE_CHECKING:
    import torch

    from mmt_nas.predict.predictor import LatencyPredictor

__all__ = ["Proposal", "propose_for_budget"]


@dataclass(frozen=True)
class Proposal:
    """One op worth measuring.

    Attributes:
        record: The op (for :func:`mmt_nas.space.opspace.space_of`).
        score: Its weighted share of the undecided models' log variance that measuring it removes.
        models: The models it appears in, most undecided first.
    """

    record: OpRecord
    score: float
    models: tuple[str, ...]


def propose_for_budget(
    predictor: LatencyPredictor,
    models: Sequence[tuple[str, torch.nn.Module, Sequence[int]]],
    budget_ms: float,
    n: int = 100,
    *,
    show_progress: bool | None = None,
) -> list[Proposal]:
    """Rank the ops the table lacks by how much measuring them would settle whether ``models`` fit ``budget_ms``.

    Args:
        predictor: A predictor with a fallback (``on_missing="fallback"``): the ops it estimates are the
            candidates.
        models: ``(name, model, input shape)``, e.g. a search's candidate architectures.
        budget_ms: The latency budget.
        n: How many ops to propose at most.
        show_progress: A progress bar with its ETA over the models (:func:`mmt_nas.progress.bar`); ``None`` shows
            it on a terminal only.

    Returns:
        At most ``n`` proposals, highest score first (ops no undecided model has score about 0 and come last).

    Raises:
        OptionError: ``budget_ms`` or ``n`` out of range, or the predictor has no fallback.
    """
    if isinstance(budget_ms, bool) or not isinstance(budget_ms, (int, float)) or not 0 < budget_ms < math.inf:
        raise OptionError(f"budget_ms must be a finite number > 0 (ms), but got budget_ms={budget_ms!r}.")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise OptionError(f"n must be an integer >= 1, but got n={n!r}.")
    if predictor.on_missing != "fallback":
        raise OptionError(
            "propose_for_budget ranks the ops the fallback estimates, but this predictor has none; build it with "
            "on_missing='fallback', fallback=LatencyRegressor().fit(table)."
        )
    sigma_measured = predictor.table_sigma()
    scores: dict[str, float] = {}
    weights: dict[str, list[tuple[float, str]]] = {}
    records: dict[str, OpRecord] = {}
    for name, model, shape in progress(models, len(models), "predict", show_progress, unit="model"):
        ops = predictor.parse(model, shape)
        pred = predictor.predict_ops(ops)
        spread = log_sd(pred.intervals, pred.sigma)
        if not spread > 0 or float(pred) <= 0:
            continue
        z = math.log(budget_ms / float(pred)) / spread
        undecided = math.exp(-0.5 * z * z)
        by_key = {op.key: op for op in ops}
        for o in pred.ops:
            if o.source != "fallback":
                continue
            gain = (o.share**2) * max(o.sigma**2 - sigma_measured**2, 0.0) / spread**2
            scores[o.key] = scores.get(o.key, 0.0) + undecided * gain
            weights.setdefault(o.key, []).append((undecided, str(name)))
            if o.key not in records:
                records[o.key] = record_from_parsed(by_key[o.key])
    ranked = sorted(scores, key=lambda k: -scores[k])[:n]
    return [
        Proposal(records[k], scores[k], tuple(m for _, m in sorted(weights[k], key=lambda wm: -wm[0]))) for k in ranked
    ]
