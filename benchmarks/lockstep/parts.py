"""Where a lockstep study's time goes, by part, in one process on one thread.

Runs the runs of one dataset and one seed of a study config (all its strategies: one
lockstep group) with ``run_experiment`` and times each part by wrapping the functions that
do it: training (``fit_many``), the batched passes (test split: metrics and utilization;
pool: the PoolView fields), the linear probes fitted together, and the parts that still
run per run: the metrics computed from the answers, assembling each PoolView, selection
and the database writes. Prints a markdown table.

    python benchmarks/lockstep/parts.py benchmarks/pitfalls.yaml [--dataset 0] [--seed 0] [--no-lockstep]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
import yaml


def watching_selections(select_round, on_select):
    """``loop.select_round`` whose strategy's ``select`` goes through
    ``on_select(strategy, select, view, budget, rng)`` (which must call ``select``)."""

    def wrapped(strategy, *a, **k):
        inner = strategy.select
        strategy.select = lambda *sa: on_select(strategy, inner, *sa)
        try:
            return select_round(strategy, *a, **k)
        finally:
            del strategy.select

    return wrapped


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("config", type=Path)
    parser.add_argument("--dataset", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-lockstep", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from mmal_core import loop, view
    from mmal_core.config import parse_config
    from mmal_core.builtin.fusion import FusionMLP
    from mmal_core.store import Store

    cfg = yaml.safe_load(args.config.read_text())
    datasets = cfg["dataset"] if isinstance(cfg["dataset"], list) else [cfg["dataset"]]
    cfg["dataset"], cfg["seeds"] = [datasets[args.dataset]], [args.seed]
    seconds: dict[str, float] = defaultdict(float)
    depth = {"n": 0}

    def timed(part, fn, outer=True):
        def wrapper(*a, **k):
            if not outer and depth["n"]:
                return fn(*a, **k)
            depth["n"] += 1
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                depth["n"] -= 1
                seconds[part if not callable(part) else part(*a, **k)] += time.perf_counter() - t0
        return wrapper

    many = FusionMLP.predict_many.__func__

    def kind(cls, models, requests):
        return "batched pass: test split (metrics, utilization)" if requests[0].get("index") is None \
            else "batched pass: pool (PoolView fields, probe inputs)"

    FusionMLP.fit_many = classmethod(timed("training (fit_many; fit when alone)", FusionMLP.fit_many.__func__))
    FusionMLP.fit = timed("training (fit_many; fit when alone)", FusionMLP.fit, outer=False)
    FusionMLP.predict_many = classmethod(timed(kind, many))
    FusionMLP.predict = timed("per run: predict (outside metrics and PoolView)", FusionMLP.predict, outer=False)
    loop._group_probes = timed("linear probes, fitted together", loop._group_probes)
    loop.round_metrics = timed("per run: metrics (with their model passes and probes when those are not batched)",
                               loop.round_metrics)
    view.PoolView.from_model = classmethod(timed("per run: PoolView (with its model passes when not batched)",
                                                 view.PoolView.from_model.__func__))
    Store.add_round = timed("per run: database writes", Store.add_round)
    def timed_select(strategy, select, *a):
        t0 = time.perf_counter()
        try:
            return select(*a)
        finally:
            seconds["per run: selection (strategy.select)"] += time.perf_counter() - t0

    loop.select_round = watching_selections(loop.select_round, timed_select)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        outcomes = loop.run_experiment(parse_config(cfg), str(Path(tmp) / "parts.db"), lockstep=not args.no_lockstep)
        wall = time.perf_counter() - t0
    print(f"{len(outcomes)} runs, {'one at a time' if args.no_lockstep else 'lockstep'}, one thread: {wall:.1f} s wall")
    print("| part | seconds | share |")
    print("|---|---|---|")
    for part, s in sorted(seconds.items(), key=lambda kv: -kv[1]):
        if s > 0:
            print(f"| {part} | {s:.2f} | {100 * s / wall:.0f}% |")
    rest = wall - sum(seconds.values())
    print(f"| the rest (run set-up, datasets, query metrics, ...) | {rest:.2f} | {100 * rest / wall:.0f}% |")


if __name__ == "__main__":
    main()
