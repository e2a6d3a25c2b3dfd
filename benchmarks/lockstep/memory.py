"""Peak memory of one lockstep fit of K default fusion-mlp runs (CPU, this process's max RSS).

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

from mmal_core.model import FusionMLP  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--k", type=int, default=256)
    args = parser.parse_args()
    split, specs = pool()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    jobs = [(split, np.random.default_rng(k).choice(len(split), 100, replace=False), k, None) for k in range(args.k)]
    FusionMLP.fit_many(models(args.k, specs, "cpu"), jobs)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"K = {args.k}: peak RSS {after:.2f} GiB (before the fit {before:.2f} GiB, torch and mmal imported)")


if __name__ == "__main__":
    main()
