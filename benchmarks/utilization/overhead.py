"""Per-round cost of the modality-utilization metrics, as a ratio to the loop without them.

Runs the same experiment twice in this process, in alternation: a 4,000-sample
synthetic-difficulty pool, 11 rounds (20 initial labels + 10 rounds of 20), the default
fusion-mlp, the random strategy, once with ``metrics: {utilization: false}`` and once with
``utilization: true``. Reports the median wall time of each over ``--repeats`` repetitions,
the ratio, and the time the ``evaluate`` step took per round.

    OMP_NUM_THREADS=1 python benchmarks/utilization/overhead.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from mmal_core.config import parse_config
from mmal_core.loop import run_experiment


def config(utilization: bool, n_train: int) -> dict:
    return {
        "name": f"overhead-{utilization}",
        "dataset": {"name": "synthetic-difficulty", "params": {"n_train": n_train, "n_test": 1000}},
        "budget": {"initial": 20, "per_round": 20, "rounds": 10},
        "strategies": ["random"],
        "seeds": [0],
        "metrics": {"utilization": utilization},
    }


def one_run(utilization: bool, n_train: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        outcomes = run_experiment(parse_config(config(utilization, n_train)), str(Path(tmp) / "r.db"))
        wall = time.perf_counter() - t0
    return wall, outcomes[0].timings.get("evaluate", 0.0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-train", type=int, default=4000)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    one_run(False, args.n_train)  # warm-up: imports, first optimiser use
    walls = {False: [], True: []}
    evals = {False: [], True: []}
    for _ in range(args.repeats):
        for util in (False, True):
            w, e = one_run(util, args.n_train)
            walls[util].append(w)
            evals[util].append(e)
    out = {
        "pool": args.n_train, "rounds": 11, "repeats": args.repeats,
        "without_s": statistics.median(walls[False]), "with_s": statistics.median(walls[True]),
        "evaluate_per_round_without_s": statistics.median(evals[False]) / 11,
        "evaluate_per_round_with_s": statistics.median(evals[True]) / 11,
    }
    out["ratio"] = out["with_s"] / out["without_s"]
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
