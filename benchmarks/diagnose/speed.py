"""Speed of `mmal diagnose DATASET --seeds 1` on the synthetic generators' default sizes.

    python benchmarks/diagnose/speed.py [--repeats 3] [--datasets synthetic-missing ...]

Each run is a fresh process (imports and interpreter exit included, as a user sees it):
wall time and CPU time (user + system of the child, all its threads). Two variants,
interleaved so that both meet the same load on a shared machine:

``now``
    the command as shipped.
``before``
    the same command with what issue 16's speed work changed undone: the whole-pool fit at
    800 steps of 128 (not 400 of 256 on pools of 2,560 or more), torch and BLAS at the
    machine's thread count (not one thread), no ``gc.freeze`` of the libraries' objects,
    scikit-learn imported before torch.

Prints a Markdown table of medians and the ratio now / before (the figure to compare across
machines), plus the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATASETS = ("synthetic-interaction", "synthetic-difficulty", "synthetic-missing")

BEFORE = """
import contextlib, sys
import sklearn.linear_model  # the old import order
import mmal_core.diagnose.profile as D
import mmal_core.cli.diagnose as C
D.LARGE_POOL = 10**12  # every pool at 800 steps of 128
D._one_thread = contextlib.nullcontext
C._freeze_libraries = lambda: None
from mmal_core.cli import main
sys.argv = ["mmal"] + sys.argv[1:]
sys.exit(main())
"""

NOW = """
import sys
from mmal_core.cli import main
sys.argv = ["mmal"] + sys.argv[1:]
sys.exit(main())
"""


def timed(code: str, args: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one child process running ``code`` with ``args``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"diagnose failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS))
    args = ap.parse_args()
    load_start = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets:
            out = str(Path(tmp) / "report.json")
            cli = ["diagnose", name, "--seeds", "1", "--format", "json", "-o", out]
            runs: dict[str, list[tuple[float, float]]] = {"now": [], "before": []}
            for _ in range(args.repeats):
                runs["now"].append(timed(NOW, cli))
                runs["before"].append(timed(BEFORE, cli))
            med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in runs.items()}
            rows.append((name, med))
            print(f"{name}: now {med['now'][0]:.1f} s wall / {med['now'][1]:.1f} s CPU, "
                  f"before {med['before'][0]:.1f} / {med['before'][1]:.1f}", file=sys.stderr, flush=True)
    load_end = os.getloadavg()
    print(f"`python benchmarks/diagnose/speed.py --repeats {args.repeats}`; medians; load average "
          f"(1 min) {load_start[0]:.1f} before, {load_end[0]:.1f} after\n")
    print("| dataset (`--seeds 1`) | now: wall | now: CPU | before: wall | before: CPU | wall now / before | CPU now / before |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, med in rows:
        (wn, cn), (wb, cb) = med["now"], med["before"]
        print(f"| {name} | {wn:.1f} s | {cn:.1f} s | {wb:.1f} s | {cb:.1f} s | {wn / wb:.2f} | {cn / cb:.2f} |")


if __name__ == "__main__":
    main()
