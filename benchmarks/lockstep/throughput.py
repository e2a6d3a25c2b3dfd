"""Training throughput of fusion-mlp: time per model-step, K runs one after the other
(``fit``) against the same K runs as one stacked network (``fit_many``), one CPU thread.

Default options, 2 modalities, 100 labeled samples (so 2 batches of 64 / 36 per epoch and
100 optimiser steps per fit). Prints one table row per K and the ratio against K = 1
measured in the same run (cases interleaved, best of ``--repeat``).

    python benchmarks/lockstep/throughput.py [--ks 1,16,64] [--device cpu|cuda] [--threads 1] [--repeat 3]
    python benchmarks/lockstep/throughput.py --stacks 16,32,64 [--k 64] [--hidden 64]   # members per CPU stack

``--stacks`` instead times ``fit_many`` of K members trained in stacks of at most each given
size (even stacks), against the size ``FusionMLP`` chooses (``CPU_STACK_FLOATS``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from mmal_core import ModalitySpec, Split
from mmal_core.builtin.fusion import FusionMLP


def pool(n=1000, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    a = rng.normal(size=(n, 16)) + y[:, None]
    b = rng.normal(size=(n, 32)) - y[:, None]
    mask = np.ones((n, 2), bool)
    mask[rng.random(n) < 0.2, 1] = False
    return Split({"a": a, "b": b}, mask, y), [ModalitySpec("a", 16), ModalitySpec("b", 32)]


def models(K, specs, device, **params):
    out = []
    for _ in range(K):
        m = FusionMLP(device=device, **params)
        m.setup(specs, 4)
        out.append(m)
    return out


def steps_per_fit(m, n):
    batches = -(-n // m.batch_size)
    return batches * max(m.epochs, -(-m.min_steps // batches))


def measure(K, split, specs, device, separate, **params):
    jobs = [(split, np.random.default_rng(k).choice(len(split), 100, replace=False), k, None) for k in range(K)]
    ms = models(K, specs, device, **params)
    start = time.perf_counter()
    if separate:
        for m, job in zip(ms, jobs):
            m.fit(*job[:3])
    else:
        FusionMLP.fit_many(ms, jobs)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return seconds / (K * steps_per_fit(ms[0], 100))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ks", default="1,16,64")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--separate", type=int, default=16, help="runs fitted one after the other for the K=1 baseline")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved repetitions; the best of each case counts")
    parser.add_argument("--stacks", help="members per CPU stack to compare (e.g. 16,32,64)")
    parser.add_argument("--k", type=int, default=64, help="members, with --stacks")
    parser.add_argument("--hidden", type=int, default=64, help="hidden units, with --stacks")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    split, specs = pool()
    if args.stacks:
        return compare_stacks(args, split, specs)
    measure(2, split, specs, args.device, False)  # warm-up (the first optimiser imports torch._dynamo)
    measure(1, split, specs, args.device, True)
    ks = [int(k) for k in args.ks.split(",")]
    # cases interleaved, best of --repeat: on a shared machine the load changes by the minute
    best: dict = {}
    for _ in range(args.repeat):
        for case in [0] + ks:
            t = measure(args.separate, split, specs, args.device, True) if case == 0 else \
                measure(case, split, specs, args.device, False)
            best[case] = min(best.get(case, t), t)
    base = best[0]
    print("| K | ms per model-step | model-steps/s | vs one at a time |")
    print("|---|---|---|---|")
    print(f"| 1 (fit, {args.separate} one after the other) | {base * 1e3:.3f} | {1 / base:.0f} | 1.0x |")
    for K in ks:
        t = best[K]
        print(f"| {K} (fit_many) | {t * 1e3:.3f} | {1 / t:.0f} | {base / t:.1f}x |")


def compare_stacks(args, split, specs):
    chosen = FusionMLP._cpu_stack
    sizes = [int(s) for s in args.stacks.split(",")]
    measure(2, split, specs, "cpu", False, hidden=args.hidden)  # warm-up
    best: dict = {}
    for _ in range(args.repeat):
        for size in [None] + sizes:
            FusionMLP._cpu_stack = chosen if size is None else (lambda self, size=size: size)
            try:
                t = measure(args.k, split, specs, "cpu", False, hidden=args.hidden)
            finally:
                FusionMLP._cpu_stack = chosen
            best[size] = min(best.get(size, t), t)
    auto = FusionMLP(hidden=args.hidden)._cpu_stack()
    print(f"| members per stack (K = {args.k}, hidden {args.hidden}) | ms per model-step | vs chosen |")
    print("|---|---|---|")
    print(f"| chosen: at most {auto} | {best[None] * 1e3:.3f} | 1.00x |")
    for size in sizes:
        print(f"| at most {size} | {best[size] * 1e3:.3f} | {best[size] / best[None]:.2f}x |")


if __name__ == "__main__":
    main()
