"""Peak memory of one lockstep round of K default fusion-mlp runs (CPU, this process's max
RSS): one ``fit_many``, then one ``predict_many`` of every field (20 MC-dropout passes) on the
1,000-row pool, all K answers held at once as a round holds them.

    python benchmarks/lockstep/memory.py [--k 256]
"""

from __future__ import annotations

import argparse
import resource
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from throughput import models, pool  # noqa: E402

from mmal_core.builtin.fusion import FusionMLP  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--k", type=int, default=256)
    args = parser.parse_args()
    split, specs = pool()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    jobs = [(split, np.random.default_rng(k).choice(len(split), 100, replace=False), k, None) for k in range(args.k)]
    ms = models(args.k, specs, "cpu")
    FusionMLP.fit_many(ms, jobs)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    want = set(ms[0].provided())
    answers = FusionMLP.predict_many(ms, [{"split": split, "want": want, "params": {"mc_samples": 20}} for _ in ms])
    assert len(answers) == args.k
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"K = {args.k}: peak RSS {after:.2f} GiB after fit_many, {peak:.2f} GiB after predict_many "
          f"(before the fit {before:.2f} GiB, torch and mmal imported)")


if __name__ == "__main__":
    main()
