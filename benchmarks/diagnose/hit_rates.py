"""Hit rates of `mmal diagnose` on the synthetic generators, whose truth is known.

    python benchmarks/diagnose/hit_rates.py [--quick]

Seeds 30+ and parameters other than the generators' defaults (the diagnosis was developed
on the defaults with seeds 0-2). Prints Markdown tables (docs/diagnose.md) and timings.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from mmal_core import load_dataset
from mmal_core.diagnose import ALPHA, diagnose, missing_profile


def interaction_cases(quick: bool):
    settings = [{"n_classes": 2, "noise": 0.6}, {"n_classes": 3, "dim": 12}, {"n_classes": 5, "noise": 0.4}]
    for kind in ("redundant", "unique", "synergy"):
        for s in settings[: 2 if quick else 3]:
            yield kind, s


def difficulty_cases(quick: bool):
    cases = [
        ({"snr": [0.5, 2.5], "mapping": "linear", "n_classes": 3}, "m0"),
        ({"snr": [2.5, 0.8], "mapping": "linear", "n_classes": 5}, "m1"),
        ({"snr": [1.5, 1.5], "n_classes": 4}, "m1"),
        ({"snr": [3.0, 1.0], "n_classes": 2, "dim": 10}, "m1"),
    ]
    return cases[:2] if quick else cases


def missing_rate(mechanism: str, trials: int, params: dict) -> tuple[float, int]:
    hits = []
    for seed in range(1000, 1000 + trials):
        prof = missing_profile(load_dataset("synthetic-missing", seed=seed, mechanism=mechanism, **params), ALPHA)
        hits += [v["class_dependent"] for v in prof.values() if v["share_missing_pool"] > 0]
    return float(np.mean(hits)), len(hits)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, nargs="+", default=[30, 31])
    args = ap.parse_args()
    torch.set_num_threads(1)
    size = {"n_train": 2000, "n_test": 600}
    rows, times = [], []
    print("| measurement | truth | setting | trials | hit rate |\n|---|---|---|---|---|")
    for kind, s in interaction_cases(args.quick):
        hits = []
        for seed in args.seeds:
            t = time.time()
            r = diagnose("synthetic-interaction", {"interaction": kind, **size, **s}, seeds=1, first_seed=seed, with_advice=False)
            times.append(time.time() - t)
            hits.append(r["interaction"]["dominant"] == kind)
            shares = {k: round(v["mean"], 2) for k, v in r["interaction"]["shares"].items()}
            rows.append(f"<!-- {kind} {s} seed {seed}: {r['interaction']['dominant']} {shares} -->")
        print(f"| interaction.dominant | {kind} | {s} | {len(hits)} | {np.mean(hits):.2f} |", flush=True)
    for s, weak in difficulty_cases(args.quick):
        hits = []
        for seed in args.seeds:
            t = time.time()
            r = diagnose("synthetic-difficulty", {**size, **s}, seeds=1, first_seed=seed, with_advice=False)
            times.append(time.time() - t)
            hits.append(r["difficulty"]["hard_modality"] == weak and r["difficulty"]["clear"])
        print(f"| difficulty.hard_modality | {weak} | {s} | {len(hits)} | {np.mean(hits):.2f} |", flush=True)
    trials = 100 if args.quick else 300
    for rate in (0.2, 0.5):
        params = {"n_train": 1000, "n_test": 300, "n_classes": 3, "missing_rate": [0.0, rate]}
        fp, n = missing_rate("mcar", trials, params)
        print(f"| missing.class_dependent (false positive) | MCAR, rate {rate} | n 1300, 3 classes | {n} | {fp:.3f} |")
        tp, n = missing_rate("class", trials // 3, params)
        print(f"| missing.class_dependent (detected) | class, rate {rate} | n 1300, 3 classes | {n} | {tp:.3f} |", flush=True)
    print("\n".join(rows))
    print(f"diagnose time per run (seeds=1, n_train 2000): median {np.median(times):.1f} s, max {np.max(times):.1f} s")


if __name__ == "__main__":
    main()
