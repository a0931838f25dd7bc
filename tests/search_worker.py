"""A search worker process for tests/test_distributed.py.

It joins one latency-constrained study through :func:`mmt_nas.integrations.optuna.create_study`,
runs trials whose models are ``chain(blocks)`` (deeper is slower) predicted from a real table, and
prints one JSON line: its pid and the numbers of the trials it finished.

    python search_worker.py --storage URL --study NAME --table OPS --budget MS --trials N
        [--seed S] [--heartbeat 1 --grace 3] [--until-complete N] [--block-marker FILE] [--log FILE]

``--block-marker FILE``: the worker's first trial writes FILE (its trial number) once its prediction is
stored, then sleeps until it is killed: the test's way of killing a worker mid-trial.
``--until-complete N``: stop once the study holds N complete trials (whichever worker ran them).
``--start-after FILE``: import everything, then wait for FILE before joining the study.
``--log FILE``: a SearchLog callback rewrites FILE after every trial; at the end FILE is rewritten
from the whole study (``SearchLog.from_study``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from tinymods import TinyBlock  # noqa: E402
from torch import nn  # noqa: E402

SHAPE = [1, 3, 16, 16]
DIRECTIONS = ["maximize", "minimize"]


def chain(blocks: int) -> nn.Module:
    """A net made of the tiny table's ops only: deeper is slower.

    No pooling head: tracing adaptive pooling imports torch's compiler stack (about 3 s per process).
    """
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), *[TinyBlock(8) for _ in range(blocks)]).eval()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--storage", required=True)
    ap.add_argument("--study", required=True)
    ap.add_argument("--table", required=True)
    ap.add_argument("--budget", type=float, required=True)
    ap.add_argument("--trials", type=int, required=True, help="at most this many trials in this process")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--heartbeat", type=int, default=60)
    ap.add_argument("--grace", type=int, default=None)
    ap.add_argument("--until-complete", type=int, default=None)
    ap.add_argument("--block-marker", type=Path, default=None)
    ap.add_argument("--log", type=Path, default=None)
    ap.add_argument("--enqueue", type=int, action="append", default=[], help="queue a trial with these blocks")
    ap.add_argument("--start-after", type=Path, default=None, help="wait for this file before joining the study")
    args = ap.parse_args(argv)

    import optuna

    from mmt_nas.integrations.optuna import LatencyConstraint, SearchLog, create_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    while args.start_after is not None and not args.start_after.exists():  # imports done, wait for the test's go
        time.sleep(0.05)
    study = create_study(
        args.storage,
        study_name=args.study,
        directions=DIRECTIONS,
        sampler=optuna.samplers.TPESampler(seed=args.seed, n_startup_trials=3),
        heartbeat_interval=args.heartbeat,
        grace_period=args.grace,
    )
    for blocks in args.enqueue:  # run by whichever worker asks next
        study.enqueue_trial({"blocks": blocks})
    constraint = LatencyConstraint(args.table, args.budget)
    ran: list[int] = []

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        blocks = trial.suggest_int("blocks", 0, 4)
        trial.set_user_attr("pid", os.getpid())
        latency = constraint(trial, chain(blocks), SHAPE)  # stored on the trial before any "training"
        if args.block_marker is not None:
            args.block_marker.write_text(str(trial.number))
            while True:  # a long training step; the test kills this process here
                time.sleep(1)
        return float(blocks), float(latency)

    callbacks: list = [lambda study, trial: ran.append(trial.number)]
    if args.log is not None:
        callbacks.append(SearchLog(args.log))
    if args.until_complete is not None:
        complete = (optuna.trial.TrialState.COMPLETE,)
        callbacks.append(optuna.study.MaxTrialsCallback(args.until_complete, states=complete))
    study.optimize(objective, n_trials=args.trials, callbacks=callbacks)
    if args.log is not None:
        SearchLog.from_study(study).write(args.log)
    print(json.dumps({"pid": os.getpid(), "trials": ran}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
