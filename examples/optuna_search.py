"""Multi-objective architecture search with Optuna: accuracy vs predicted latency, under a latency budget.

1. Meters every block of a MobileNetV2-style search space on this machine (``nas_space.py``; ~40 blocks, seconds).
2. Sets the budget to the median predicted latency of random architectures (predicted from their
   descriptions, without building them: ``KeyBuilder``).
3. Searches with Optuna (``directions=["maximize", "minimize"]``): each trial's model is predicted
   first (``LatencyConstraint`` sets the trial's constraint, and prunes it before training when it is
   far over budget), then trained briefly on scikit-learn's digits (8x8, upscaled to 16x16).
4. Prints the feasible Pareto front, writes ``pareto.png``, the search log (``search.json``) and a
   model list for ``mmt-nas report`` to measure the front and see how right the predictions were.

Run:  python examples/optuna_search.py [--quick] [--trials 30] [--sampler tpe|nsga2|gp] [--work-dir DIR]
(about 3 minutes on 2 cores; --quick: a few trials, under a minute)

Many workers, one study: give every copy the same database and study name,

    python examples/optuna_search.py --storage postgresql://USER@HOST/DB --study-name mbv2 --trials 60 &
    python examples/optuna_search.py --storage postgresql://USER@HOST/DB --study-name mbv2 --trials 60 &

In a database the search can be watched live in optuna-dashboard (pip install -c constraints.txt -e ".[dashboard]"):

    python examples/optuna_search.py --storage sqlite:///search.db
    optuna-dashboard sqlite:///search.db          # then open http://127.0.0.1:8080

Each trial lists its predicted latency, 90% interval, budget and feasibility; the study's note says what the
budget and the table were; its figure "mmt-nas-latency" plots accuracy against predicted latency with the
intervals (redrawn every 5 trials of a worker, and when it stops).

--trials is then the study's total: each worker stops once the study holds that many finished trials.
The first worker stores the latency budget in the study; the others use it. Workers sharing a --work-dir
meter the table once (the first one; the others wait for it). A killed worker's trial is marked FAIL by
another worker after the heartbeat's grace period and run again. Every worker prints and plots the whole
study (all workers' trials) when it stops; --collect does only that.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib.util
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))  # nas_space, also for the op space's imports

import optuna  # noqa: E402
from nas_space import SPACES, build_table, digits, train  # noqa: E402

from mmt_nas.integrations.keys import KeyBuilder  # noqa: E402
from mmt_nas.integrations.optuna import (  # noqa: E402
    LOWER_ATTR,
    UPPER_ATTR,
    LatencyConstraint,
    SearchLog,
    create_study,
    make_storage,
    prepare_dashboard,
    save_latency_plot,
)
from mmt_nas.predict.predictor import LatencyPredictor  # noqa: E402

SPACE = SPACES["digits"]
BUDGET_ATTR = "latency_budget_ms"  # the study's budget, set by its first worker
DIRECTIONS = ["maximize", "minimize"]


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (workers sharing a work dir meter the table one at a time)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def make_sampler(name: str, seed: int | None) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=8)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=10)
    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=8)


def plot(study: optuna.Study, budget_ms: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trials = study.get_trials(deepcopy=False)  # every worker's
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    front = sorted(study.best_trials, key=lambda t: t.values[1])
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for feasible, color, label in ((True, "tab:blue", "feasible"), (False, "tab:orange", "over budget")):
        pts = [t for t in done if (t.constraints.get("latency_ms", 0) <= 0) == feasible]
        ax.scatter([t.values[1] for t in pts], [t.values[0] for t in pts], c=color, s=22, label=label)
        lo = [t.values[1] - t.user_attrs.get(LOWER_ATTR, t.values[1]) for t in pts]
        hi = [t.user_attrs.get(UPPER_ATTR, t.values[1]) - t.values[1] for t in pts]
        if any(lo) or any(hi):  # the predictions' 90% intervals
            ax.errorbar(
                [t.values[1] for t in pts], [t.values[0] for t in pts], xerr=[lo, hi], fmt="none",
                ecolor=color, alpha=0.35, lw=0.8,
            )  # fmt: skip
    if front:
        ax.step(
            [t.values[1] for t in front], [t.values[0] for t in front], where="post", c="tab:red", label="Pareto front"
        )
    if pruned:
        ax.scatter(
            [t.user_attrs["predicted_latency_ms"] for t in pruned],
            [0.03] * len(pruned),
            marker="|",
            c="gray",
            s=120,
            label="pruned before training",
            transform=ax.get_xaxis_transform(),
        )
    ax.axvline(budget_ms, ls="--", c="k", lw=1, label=f"budget {budget_ms:.3f} ms")
    ax.set_xlabel("predicted latency (ms, MNN CPU, this machine)")
    ax.set_ylabel("validation accuracy (digits)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def summarize(study: optuna.Study, budget: float, work: Path, ops: Path | None) -> None:
    """Print the whole study's feasible Pareto front; write the plot, the search log and the front's model list."""
    trials = study.get_trials(deepcopy=False)  # every worker's trials, not only this process's
    states = [t.state.name for t in trials]
    print(
        f"\n{len(trials)} trials: {states.count('COMPLETE')} trained, "
        f"{states.count('PRUNED')} pruned before training (predicted > 1.25 x budget)"
        + (f", {states.count('FAIL')} failed" if "FAIL" in states else "")
        + (f", {states.count('RUNNING')} still running" if "RUNNING" in states else "")
    )
    front = sorted(study.best_trials, key=lambda t: t.values[1])
    print("\nfeasible Pareto front (accuracy vs predicted latency):")
    print(f"{'trial':>5} {'accuracy':>9} {'pred ms':>9}  depths  kernels  expansions")
    for t in front:
        arch = SPACE.suggest(optuna.trial.FixedTrial(t.params))
        print(
            f"{t.number:5d} {t.values[0]:9.3f} {t.values[1]:9.4f}  {arch['depths']}  {arch['kernels']}  "
            f"{arch['expansions']}"
        )

    def to_model(params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return f"{HERE / 'nas_space.py'}:build_net", SPACE.suggest(optuna.trial.FixedTrial(params))

    work.mkdir(parents=True, exist_ok=True)
    plot(study, budget, work / "pareto.png")
    log = SearchLog.from_study(study)  # the finished trials of every worker
    written = [work / "pareto.png", log.write(work / "search.json")]
    if front:
        written.append(log.write_models(work / "pareto_models.yaml", to_model, SPACE.input_shape))
    print("\nwrote " + ", ".join(str(p) for p in written))
    if front:
        table = ops if ops is not None else work / "table" / "ops"
        table = table if table.exists() else "WORKERS_WORK_DIR/table/ops"  # type: ignore[assignment]
        print(
            f"measure the front:  mmt-nas report --table {table} --models {work / 'pareto_models.yaml'} "
            f"--out {work / 'report'}"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a few trials, one epoch each (smoke test)")
    ap.add_argument(
        "--trials",
        type=int,
        default=None,
        help="number of trials (default 30; quick: 5); with --storage, the study's total",
    )
    ap.add_argument("--epochs", type=int, default=None, help="training epochs per trial (default 3; quick: 1)")
    ap.add_argument("--sampler", choices=("tpe", "nsga2", "gp"), default="tpe")
    ap.add_argument(
        "--confidence", type=float, default=None,
        help="a chance constraint: feasible when P[latency <= budget] >= this (e.g. 0.9); default: the point",
    )  # fmt: skip
    ap.add_argument("--work-dir", type=Path, default=Path("optuna_search_work"))
    ap.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the data split, the budget's sample and the sampler (with --storage the sampler "
        "of each worker is seeded afresh, so workers explore different trials)",
    )
    ap.add_argument(
        "--storage",
        default=None,
        help="database URL of a study shared by many workers, e.g. postgresql://USER@HOST/DB or "
        "sqlite:///search.db (default: in memory, this process only)",
    )
    ap.add_argument("--study-name", default="optuna_search", help="the shared study's name (with --storage)")
    ap.add_argument(
        "--collect", action="store_true", help="run no trial: print and write the results of the study in --storage"
    )
    args = ap.parse_args(argv)
    if args.collect and args.storage is None:
        ap.error("--collect reads a shared study: give its --storage URL")
    trials = args.trials or (5 if args.quick else 30)
    epochs = args.epochs or (1 if args.quick else 3)
    work: Path = args.work_dir
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t0 = time.perf_counter()

    if args.collect:
        try:
            study = optuna.load_study(study_name=args.study_name, storage=make_storage(args.storage))
        except KeyError:
            ap.error(f"there is no study {args.study_name!r} in {args.storage.split('@')[-1]}")
        if BUDGET_ATTR not in study.user_attrs:
            ap.error(f"study {args.study_name!r} has no trials from this example yet (no {BUDGET_ATTR} stored)")
        summarize(study, float(study.user_attrs[BUDGET_ATTR]), work, None)
        return 0

    with locked(work / "table.lock"):  # workers sharing this work dir: the first meters, the others reuse
        ops = build_table(SPACE, work / "table", times=10 if args.quick else 30)
    predictor = LatencyPredictor(ops)
    print(f"latency table: {len(predictor.table)} blocks metered on this machine ({time.perf_counter() - t0:.0f} s)")

    builder, rng = KeyBuilder(), random.Random(args.seed)
    sampled = sorted(float(builder.predict(predictor, SPACE.describe(SPACE.sample(rng)))) for _ in range(500))
    budget = sampled[len(sampled) // 2]
    print(
        f"500 random architectures, predicted from their descriptions: {sampled[0]:.4f} .. {sampled[-1]:.4f} ms; "
        f"budget = median = {budget:.4f} ms"
    )

    sampler = make_sampler(args.sampler, args.seed if args.storage is None else None)
    study = create_study(
        args.storage, study_name=args.study_name if args.storage else None, directions=DIRECTIONS, sampler=sampler
    )
    if args.storage is not None:
        if BUDGET_ATTR not in study.user_attrs:
            study.set_user_attr(BUDGET_ATTR, budget)
        budget = float(study.user_attrs[BUDGET_ATTR])
        print(
            f"study {args.study_name!r} in {args.storage.split('@')[-1]}: budget {budget:.4f} ms, "
            f"{len(study.trials)} trials so far"
        )

    constraint = LatencyConstraint(predictor, budget, prune_factor=1.25, confidence=args.confidence)
    if args.storage is not None:  # what optuna-dashboard shows: the objectives' names and the study's note
        prepare_dashboard(study, constraint, objective_names=["accuracy", "latency_ms"])
    data = digits(SPACE.resolution, seed=args.seed)

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        arch = SPACE.suggest(trial)
        model = SPACE.build(arch)
        latency = constraint(trial, model, SPACE.input_shape)  # before training; may prune
        return train(model, data, epochs, seed=trial.number), float(latency)

    ran: list[int] = []
    callbacks: list[Any] = [lambda study, trial: ran.append(trial.number)]
    # optuna-dashboard (and plotly, its figure's): the latency figure is redrawn every 5 trials of this worker
    dashboard = args.storage is not None and all(importlib.util.find_spec(m) for m in ("optuna_dashboard", "plotly"))

    def redraw(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if len(ran) % 5 == 0 and any(t.values for t in study.get_trials(deepcopy=False)):
            save_latency_plot(study, objective="accuracy")

    if dashboard:
        callbacks.append(redraw)
    if args.storage is None:
        callbacks.append(SearchLog(work / "search.json"))  # rewritten after every trial
    else:  # --trials is the study's total, whichever worker runs them
        finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        callbacks.append(optuna.study.MaxTrialsCallback(trials, states=finished))
        trials = max(0, trials - len(study.get_trials(deepcopy=False, states=finished)))
    if trials:
        study.optimize(objective, n_trials=trials, callbacks=callbacks)
    if args.storage is not None:
        print(f"\nthis worker ran {len(ran)} trials ({args.sampler})")
    summarize(study, budget, work, ops)
    if dashboard:
        if any(t.values for t in study.get_trials(deepcopy=False)):
            save_latency_plot(study, objective="accuracy")  # the study's completed trials, all workers'
        print(f"watch the study:  optuna-dashboard {args.storage}")
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
