"""The linear probes of lockstep rounds: one loop for problems of every size against a loop
per size, on the probe problems of a real study.

Runs one seed of one setting of a study config (one lockstep group) and records the probe
problems of each round (``utilization.fit_linear_probes``). Under missing modalities every
run's labeled set has its own count of samples with a modality, so a round's problems come
in many sizes. Times fitting them as the loop does now (problems of one width in one padded
loop) against one loop per sample count (the way before: a call per size), one thread,
interleaved, best of ``--repeat``, and checks that the weights are the same.

    python benchmarks/lockstep/probes.py [--config benchmarks/lockstep/pitfalls240.yaml] [--dataset 0] [--repeat 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml


def collect(config: Path, dataset: int) -> list:
    """(problems, n_classes) of every probe fit of seed 0 of setting ``dataset``."""
    from mmal_core import loop, utilization
    from mmal_core.config import parse_config

    cfg = yaml.safe_load(config.read_text())
    datasets = cfg["dataset"] if isinstance(cfg["dataset"], list) else [cfg["dataset"]]
    cfg["dataset"], cfg["seeds"] = [datasets[dataset]], [0]
    calls = []
    real = utilization.fit_linear_probes

    def record(problems, n_classes, *args, **kwargs):
        calls.append(([(np.array(x), np.array(y)) for x, y in problems], n_classes))
        return real(problems, n_classes, *args, **kwargs)

    utilization.fit_linear_probes = record
    try:
        with tempfile.TemporaryDirectory() as tmp:
            loop.run_experiment(parse_config(cfg), str(Path(tmp) / "probes.db"))
    finally:
        utilization.fit_linear_probes = real
    return calls


def by_size(problems, n_classes):
    """One fit per sample count (and width), as the descent ran before problems of different
    sizes shared a loop."""
    from mmal_core.utilization import fit_linear_probes

    fitted = [None] * len(problems)
    shapes: dict[tuple, list[int]] = {}
    for i, (x, _) in enumerate(problems):
        shapes.setdefault(np.shape(x), []).append(i)
    for members in shapes.values():
        for i, probe in zip(members, fit_linear_probes([problems[i] for i in members], n_classes)):
            fitted[i] = probe
    return fitted


def weights(probe):
    return [c.cell_contents for c in probe.__closure__ or () if isinstance(c.cell_contents, np.ndarray)]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=Path, default=Path("benchmarks/lockstep/pitfalls240.yaml"))
    parser.add_argument("--dataset", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from mmal_core.utilization import fit_linear_probes

    calls = collect(args.config, args.dataset)
    ways = {"one loop per sample count": by_size, "one loop per width (now)": fit_linear_probes}
    best: dict[str, float] = {}
    fitted: dict[str, list] = {}
    for _ in range(args.repeat):
        for name, fit in ways.items():
            t0 = time.perf_counter()
            fitted[name] = [fit(problems, C) for problems, C in calls]
            best[name] = min(best.get(name, np.inf), time.perf_counter() - t0)
    same = all(all(np.array_equal(a, b) for a, b in zip(weights(p), weights(q)))
               for ps, qs in zip(*fitted.values()) for p, q in zip(ps, qs))
    sizes = [len({np.shape(x) for x, _ in problems}) for problems, _ in calls]
    print(f"{len(calls)} rounds, {sum(len(p) for p, _ in calls)} problems, {min(sizes)} to {max(sizes)} sizes a round")
    print("| way | seconds (all rounds) | ratio |")
    print("|---|---|---|")
    base = best["one loop per sample count"]
    for name, seconds in best.items():
        print(f"| {name} | {seconds:.3f} | {base / seconds:.2f}x |")
    print(f"same weights: {'yes' if same else 'NO'}")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
