"""Selection time of the slowest strategies on the pool views of a real study, with and
without the two shortcuts that keep their picks: BatchBALD's Jensen-bound pruning
(``bayesian._pruned_scores``) and the column cache of the k-means++ distance providers
(``geometry.EuclideanBlocks`` / ``GradientBlocks``).

Runs one seed of the 240-run pitfall study (``benchmarks/lockstep/pitfalls240.yaml``, all
three datasets, 7 rounds) to collect every PoolView its strategies select from, then times
each strategy's selections on those views both ways (one thread, interleaved, best of
``--repeat``) and checks that the picks are identical.

    python benchmarks/lockstep/selection.py [--config benchmarks/lockstep/pitfalls240.yaml] [--repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from parts import watching_selections

STRATEGIES = ["batchbald", "typiclust", "bmmal", "badge", "kmeans"]


def collect(config: Path) -> list:
    """(strategy, view, budget, rng state) of every selection of seed 0 of the study."""
    from mmal_core import loop
    from mmal_core.config import parse_config

    cfg = yaml.safe_load(config.read_text())
    cfg["strategies"] = [s for s in cfg["strategies"] if (s if isinstance(s, str) else s["name"]) in STRATEGIES]
    cfg["seeds"] = [0]
    cases = []
    real = loop.select_round

    def record(strategy, select, view, budget, rng):
        cases.append((strategy, view, budget, copy.deepcopy(rng.bit_generator.state)))
        return select(view, budget, rng)

    loop.select_round = watching_selections(real, record)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            loop.run_experiment(parse_config(cfg), str(Path(tmp) / "views.db"))
    finally:
        loop.select_round = real
    return cases


@contextlib.contextmanager
def without_shortcuts():
    """Score every BatchBALD candidate and gather the k-means++ columns on every call."""
    from mmal_strategies import bayesian, geometry

    def every_candidate(model, weight, p, cond, picked, chunk_bytes):
        score = bayesian._expected_conditional_entropy(model, weight, p, chunk_bytes) - cond
        score[picked] = -np.inf
        return score

    saved = bayesian._pruned_scores, geometry.EuclideanBlocks.__call__, geometry.GradientBlocks.__call__

    def uncached(call):
        def wrapper(self, rows, cols):
            self._cols = None
            return call(self, rows, cols)
        return wrapper

    bayesian._pruned_scores = every_candidate
    geometry.EuclideanBlocks.__call__ = uncached(saved[1])
    geometry.GradientBlocks.__call__ = uncached(saved[2])
    try:
        yield
    finally:
        bayesian._pruned_scores, geometry.EuclideanBlocks.__call__, geometry.GradientBlocks.__call__ = saved


def run_all(cases) -> tuple[dict, list]:
    seconds: dict[str, float] = {}
    picks = []
    for strategy, view, budget, state in cases:
        rng = np.random.default_rng()
        rng.bit_generator.state = state
        t0 = time.perf_counter()
        picks.append(strategy.select(view, budget, rng))
        seconds[strategy.name] = seconds.get(strategy.name, 0.0) + time.perf_counter() - t0
    return seconds, picks


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=Path, default=Path("benchmarks/lockstep/pitfalls240.yaml"))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cases = collect(args.config)
    counts: dict[str, int] = {}
    for strategy, *_ in cases:
        counts[strategy.name] = counts.get(strategy.name, 0) + 1
    best: dict[str, dict[str, float]] = {"before": {}, "now": {}}
    same = True
    for _ in range(args.repeat):
        with without_shortcuts():
            before, old = run_all(cases)
        now, new = run_all(cases)
        same &= all(np.array_equal(a, b) for a, b in zip(old, new))
        for case, got in (("before", before), ("now", now)):
            for name, s in got.items():
                best[case][name] = min(best[case].get(name, s), s)
    print("| strategy | selections | ms per selection, without | with the shortcuts | ratio |")
    print("|---|---|---|---|---|")
    for name in counts:
        b, n = best["before"][name] / counts[name] * 1e3, best["now"][name] / counts[name] * 1e3
        print(f"| {name} | {counts[name]} | {b:.1f} | {n:.1f} | {b / n:.2f}x |")
    print(f"same picks: {'yes' if same else 'NO'}")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
