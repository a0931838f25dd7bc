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
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))  # nas_space, also for the op space's imports

import optuna  # noqa: E402

from nas_space import SPACES, build_table, digits, train  # noqa: E402

from mmt_nas.integrations.keys import KeyBuilder  # noqa: E402
from mmt_nas.integrations.optuna import LatencyConstraint, SearchLog  # noqa: E402
from mmt_nas.predictor import LatencyPredictor  # noqa: E402

SPACE = SPACES["digits"]


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=8)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=10)
    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=8)


def plot(study: optuna.Study, budget_ms: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    front = sorted(study.best_trials, key=lambda t: t.values[1])
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for feasible, color, label in ((True, "tab:blue", "feasible"), (False, "tab:orange", "over budget")):
        pts = [t for t in done if (t.constraints.get("latency_ms", 0) <= 0) == feasible]
        ax.scatter([t.values[1] for t in pts], [t.values[0] for t in pts], c=color, s=22, label=label)
    if front:
        ax.step([t.values[1] for t in front], [t.values[0] for t in front], where="post", c="tab:red",
                label="Pareto front")
    if pruned:
        ax.scatter([t.user_attrs["predicted_latency_ms"] for t in pruned], [0.03] * len(pruned), marker="|",
                   c="gray", s=120, label="pruned before training", transform=ax.get_xaxis_transform())
    ax.axvline(budget_ms, ls="--", c="k", lw=1, label=f"budget {budget_ms:.3f} ms")
    ax.set_xlabel("predicted latency (ms, MNN CPU, this machine)")
    ax.set_ylabel("validation accuracy (digits)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a few trials, one epoch each (smoke test)")
    ap.add_argument("--trials", type=int, default=None, help="number of trials (default 30; quick: 5)")
    ap.add_argument("--epochs", type=int, default=None, help="training epochs per trial (default 3; quick: 1)")
    ap.add_argument("--sampler", choices=("tpe", "nsga2", "gp"), default="tpe")
    ap.add_argument("--work-dir", type=Path, default=Path("optuna_search_work"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    trials = args.trials or (5 if args.quick else 30)
    epochs = args.epochs or (1 if args.quick else 3)
    work: Path = args.work_dir
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t0 = time.perf_counter()

    ops = build_table(SPACE, work / "table", times=10 if args.quick else 30)
    predictor = LatencyPredictor(ops)
    print(f"latency table: {len(predictor.table)} blocks metered on this machine ({time.perf_counter() - t0:.0f} s)")

    builder, rng = KeyBuilder(), random.Random(args.seed)
    sampled = sorted(float(builder.predict(predictor, SPACE.describe(SPACE.sample(rng)))) for _ in range(500))
    budget = sampled[len(sampled) // 2]
    print(f"500 random architectures, predicted from their descriptions: {sampled[0]:.4f} .. {sampled[-1]:.4f} ms; "
          f"budget = median = {budget:.4f} ms")

    constraint = LatencyConstraint(predictor, budget, prune_factor=1.25)
    data = digits(SPACE.resolution, seed=args.seed)

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        arch = SPACE.suggest(trial)
        model = SPACE.build(arch)
        latency = constraint(trial, model, SPACE.input_shape)  # before training; may prune
        return train(model, data, epochs, seed=trial.number), float(latency)

    log = SearchLog(work / "search.json")
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=make_sampler(args.sampler, args.seed))
    study.optimize(objective, n_trials=trials, callbacks=[log])

    states = [t.state.name for t in study.trials]
    print(f"\n{trials} trials ({args.sampler}): {states.count('COMPLETE')} trained, "
          f"{states.count('PRUNED')} pruned before training (predicted > 1.25 x budget)")
    front = sorted(study.best_trials, key=lambda t: t.values[1])
    print("\nfeasible Pareto front (accuracy vs predicted latency):")
    print(f"{'trial':>5} {'accuracy':>9} {'pred ms':>9}  depths  kernels  expansions")
    for t in front:
        arch = SPACE.suggest(optuna.trial.FixedTrial(t.params))
        print(f"{t.number:5d} {t.values[0]:9.3f} {t.values[1]:9.4f}  {arch['depths']}  {arch['kernels']}  "
              f"{arch['expansions']}")

    def to_model(params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return f"{HERE / 'nas_space.py'}:build_net", SPACE.suggest(optuna.trial.FixedTrial(params))

    plot(study, budget, work / "pareto.png")
    written = [work / "pareto.png", work / "search.json"]
    if front:
        written.append(log.write_models(work / "pareto_models.yaml", to_model, SPACE.input_shape))
    print("\nwrote " + ", ".join(str(p) for p in written))
    if front:
        print(f"measure the front:  mmt-nas report --table {ops} --models {work / 'pareto_models.yaml'} "
              f"--out {work / 'report'}")
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
