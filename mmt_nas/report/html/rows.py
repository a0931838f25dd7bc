"""What the report page shows: each op's share of a model's error (:class:`OpRow`), per op family
(:class:`FamilyRow`), and the page's data (:class:`PageData`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmt_nas.vocab import op_family

__all__ = ["UNATTRIBUTED", "OpRow", "FamilyRow", "PageData", "op_rows", "family_rows"]

#: The pseudo-family of the in-context time no counted op accounts for (MNN's layout conversions and the
#: ops it runs outside any module).
UNATTRIBUTED = "outside the ops"


@dataclass(frozen=True)
class OpRow:
    """One distinct op of a model's prediction, next to its time inside the model.

    Attributes:
        key: The op's key (``""`` for the row of time outside the ops).
        class_name: Its class name.
        family: Its op family (:func:`mmt_nas.vocab.op_family`), or :data:`UNATTRIBUTED`.
        source: ``"table"``, ``"fallback"``, ``"fused"``, or ``""`` for the time outside the ops.
        names: The module names that run it.
        count: How many times the model runs it.
        predicted_ms: Its predicted total (``count`` runs, each timed alone, calibrated when ``ratio != 1``).
        in_context_ms: Its runs' time inside the model (MNN's profile, scaled to the measured time); ``None``
            when none of its runs was profiled by name (tensor functions, fused ops).
        share: Its share of the predicted total.
        ratio: The in-context calibration factor of the prediction (1: none).
        contribution_pct: ``(predicted_ms - in_context_ms) / measured``, in percentage points of the model's
            error (``None`` without a measurement or profile): the rows' contributions add up to the error.
    """

    key: str
    class_name: str
    family: str
    source: str
    names: tuple[str, ...]
    count: int
    predicted_ms: float
    in_context_ms: float | None
    share: float
    ratio: float = 1.0
    contribution_pct: float | None = None


def _profiled(model: Mapping[str, Any]) -> bool:
    """Whether MNN profiled the model op by op (the split of its measured time is known)."""
    return bool(model.get("ops_in_context")) or any(
        v.get("in_context_ms", 0) > 0 for v in (model.get("by_category") or {}).values()
    )


def op_rows(model: Mapping[str, Any]) -> list[OpRow]:
    """The rows of a model's drill-down, from one entry of a report dict's ``models``.

    One row per distinct op of the prediction, with its runs' in-context time summed; when the model was
    profiled and measured, a last row holds the measured time that none of the ops accounts for (family
    :data:`UNATTRIBUTED`), so that the contributions add up to the model's error exactly.
    """
    prediction = model.get("prediction") or {}
    measured = model.get("measured_ms")
    profiled = _profiled(model) and measured is not None and measured > 0
    ctx = {o["name"]: o for o in model.get("ops_in_context") or []}
    rows: list[OpRow] = []
    attributed = 0.0
    for o in prediction.get("ops") or []:
        names = tuple(o.get("names") or ())
        runs = [ctx[n] for n in names if n in ctx]
        in_ctx = sum(float(r["in_context_ms"]) for r in runs) if runs else None
        attributed += in_ctx or 0.0
        family = runs[0]["family"] if runs else op_family(o["class_name"], key=o["key"], extended=True)
        total = float(o["total_ms"])
        rows.append(
            OpRow(
                key=o["key"],
                class_name=o["class_name"],
                family=str(family),
                source=o["source"],
                names=names,
                count=int(o["count"]),
                predicted_ms=total,
                in_context_ms=in_ctx,
                share=float(o["share"]),
                ratio=float(o.get("ratio", 1.0)),
                contribution_pct=100 * (total - (in_ctx or 0.0)) / measured if profiled and measured else None,
            )
        )
    if profiled and measured and prediction:
        rest = float(measured) - attributed
        rows.append(OpRow("", "", UNATTRIBUTED, "", (), 0, 0.0, rest, 0.0, 1.0, -100 * rest / float(measured)))
    return rows


@dataclass
class FamilyRow:
    """One op family's rows, summed over the models that were measured, predicted and profiled.

    Attributes:
        family: The family.
        ops: Distinct ops (by key) of the family over the models.
        runs: Their runs, summed.
        predicted_ms: Predicted time, summed.
        in_context_ms: In-context time of its profiled runs, summed.
        profiled: Whether any of its runs was profiled by name (or it is :data:`UNATTRIBUTED`).
        profiled_predicted_ms: Predicted time of the ops with profiled runs (``in_context_ms`` is theirs).
        table_ms, fallback_ms: Predicted time from the table and from the fallback.
        fused: Runs that MNN fuses into another op.
        contributions: Each model's contribution of the family to its error (percentage points).
    """

    family: str
    ops: set[str] = field(default_factory=set)
    runs: int = 0
    predicted_ms: float = 0.0
    in_context_ms: float = 0.0
    profiled: bool = False
    profiled_predicted_ms: float = 0.0
    table_ms: float = 0.0
    fallback_ms: float = 0.0
    fused: int = 0
    contributions: list[float] = field(default_factory=list)

    @property
    def mean_contribution_pct(self) -> float:
        """The family's contribution to the error, averaged over the models (a model without it counts 0)."""
        return sum(self.contributions) / len(self.contributions) if self.contributions else 0.0


def family_rows(models: Iterable[Mapping[str, Any]]) -> list[FamilyRow]:
    """Per op family, the drill-down rows of the measured, predicted and profiled models summed, largest
    mean contribution to the error (in absolute value) first. The mean contributions add up to the mean
    signed error of those models."""
    fams: dict[str, FamilyRow] = {}
    used = [m for m in models if m.get("status") == "ok" and _profiled(m)]
    per_model: list[dict[str, float]] = []
    for m in used:
        mine: dict[str, float] = {}
        for r in op_rows(m):
            f = fams.setdefault(r.family, FamilyRow(r.family))
            if r.key:
                f.ops.add(r.key)
            f.runs += r.count
            f.predicted_ms += r.predicted_ms
            if r.in_context_ms is not None:
                f.in_context_ms += r.in_context_ms
                f.profiled = True
                f.profiled_predicted_ms += r.predicted_ms
            f.table_ms += r.predicted_ms if r.source == "table" else 0.0
            f.fallback_ms += r.predicted_ms if r.source == "fallback" else 0.0
            f.fused += r.count if r.source == "fused" else 0
            mine[r.family] = mine.get(r.family, 0.0) + (r.contribution_pct or 0.0)
        per_model.append(mine)
    for f in fams.values():
        f.contributions = [mine.get(f.family, 0.0) for mine in per_model]  # a model without the family: 0
    return sorted(fams.values(), key=lambda f: -abs(f.mean_contribution_pct))


@dataclass(frozen=True)
class PageData:
    """One report dict as the page's sections read it, with plotly's modules (``go``, ``pio``).

    Attributes:
        doc: The report's dict (:meth:`mmt_nas.report.document.Report.to_dict`).
        images: PNG plots to embed, by name.
        go: ``plotly.graph_objects``.
        pio: ``plotly.io``.
        metrics: The report's metrics.
        models: Every model of the report.
        ok: The models that were measured and predicted.
        families: The op-family rows (:func:`family_rows`).
        floor_pct: The median model's noise floor, in percent (``None``: unknown).
    """

    doc: Mapping[str, Any]
    images: Mapping[str, Path]
    go: Any
    pio: Any
    metrics: Mapping[str, Any]
    models: list[Mapping[str, Any]]
    ok: list[Mapping[str, Any]]
    families: list[FamilyRow]
    floor_pct: float | None

    @classmethod
    def of(cls, doc: Mapping[str, Any], images: Mapping[str, Path], go: Any, pio: Any) -> PageData:
        """The page's data of report dict ``doc``."""
        models: list[Mapping[str, Any]] = list(doc.get("models") or [])
        ok = [m for m in models if m.get("status") == "ok"]
        floors = sorted(f for m in ok if (f := m.get("noise_floor_pct")) is not None)
        return cls(
            doc=doc,
            images=images,
            go=go,
            pio=pio,
            metrics=doc.get("metrics") or {},
            models=models,
            ok=ok,
            families=family_rows(models),
            floor_pct=floors[len(floors) // 2] if floors else None,  # the median model's
        )
