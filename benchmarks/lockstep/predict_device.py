"""Batched prediction on a device: ``FusionMLP.predict_many`` of K fitted runs against each
run's own ``predict``, the fields a lockstep round asks for (probabilities, embeddings,
per-modality outputs, every modality subset, MC-dropout passes) on a 1,000-row pool.

Prints the wall time of both, their ratio and the largest difference between the answers:
0 on the CPU (the same bits), small on a GPU, where a batched product rounds differently
(the MC-dropout passes are each model's own there, so they agree exactly).

    python benchmarks/lockstep/predict_device.py [--device cpu|cuda] [--k 64] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from mmal_core.builtin.fusion import FusionMLP

from throughput import models, pool

WANT = {"probs", "embeddings", "modality_probs", "modality_embeddings", "subset_probs", "mc_probs"}


def largest_difference(a: dict, b: dict) -> float:
    worst = 0.0
    for key, value in a.items():
        pairs = [(value[m], b[key][m]) for m in value] if isinstance(value, dict) else [(value, b[key])]
        for x, y in pairs:
            worst = max(worst, float(np.max(np.abs(np.asarray(x, dtype=np.float64) - np.asarray(y)))))
    return worst


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    split, specs = pool()
    ms = models(args.k, specs, args.device)
    jobs = [(split, np.random.default_rng(k).choice(len(split), 100, replace=False), k, None) for k in range(args.k)]
    FusionMLP.fit_many(ms, jobs)
    requests = [{"split": split, "index": None, "want": WANT & m.provided(), "params": {"mc_samples": 10}} for m in ms]
    best = {"own": float("inf"), "batched": float("inf")}
    for _ in range(args.repeat):
        for case in best:
            start = time.perf_counter()
            if case == "own":
                own = [m.predict(**r) for m, r in zip(ms, requests)]
            else:
                batched = FusionMLP.predict_many(ms, requests)
            if args.device == "cuda":
                torch.cuda.synchronize()
            best[case] = min(best[case], time.perf_counter() - start)
    worst = max(largest_difference(a, b) for a, b in zip(own, batched))
    print("| device | K | each model's predict | predict_many | ratio | largest difference |")
    print("|---|---|---|---|---|---|")
    print(f"| {args.device} | {args.k} | {best['own']:.3f} s | {best['batched']:.3f} s | "
          f"{best['own'] / best['batched']:.2f}x | {worst:.2e} |")


if __name__ == "__main__":
    main()
