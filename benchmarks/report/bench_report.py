"""Time `mmal report` on a synthetic study of 2,000 finished runs.

    python benchmarks/report/bench_report.py [--cells 20] [--strategies 10] [--seeds 10] [--rounds 8]

The database is written through Store (no active learning is run): 20 cells (synthetic-missing,
two mechanisms x ten missing rates) x 10 strategies x 10 seeds, 8 rounds each, with the
per-round metrics the loop records (modality accuracy, Shapley contributions, imbalance,
query facts). Then `mmal report` writes the HTML page, the Markdown report with its PNGs
and the JSON, each timed as a separate command. The baseline measured in the same run is
`mmal export --format json` of the same experiment (reading every run and round), so the
ratio report / export says how much the statistics and plots add to reading the data.
The target: under a minute for the HTML report.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mmal_core.report.synthetic import synthetic_study

STRATEGIES = [("random", "random"), ("entropy", "entropy"), ("margin", "margin"),
              ("least_confidence", "least_confidence"), ("coreset", "coreset"), ("badge", "badge"),
              ("bmmal", "bmmal"), ("modality_uncertainty", "modality_uncertainty"),
              ("weak_modality", "weak_modality"), ("missing_aware_coreset", "missing_aware_coreset"),
              ("kmeans", "kmeans"), ("typiclust", "typiclust")]


def timed(*args: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one `mmal` command in a fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mmal_core", *args], capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"mmal {' '.join(args)} failed: {proc.stderr.strip()}")
    return elapsed, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=20)
    parser.add_argument("--strategies", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "study.db"
        t0 = time.perf_counter()
        n = synthetic_study(db, cells=args.cells, strategies=STRATEGIES[: args.strategies], seeds=args.seeds,
                            rounds=args.rounds)
        print(f"wrote {n} runs in {time.perf_counter() - t0:.1f} s")
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        export, export_cpu = timed("export", "--db", str(db), "--format", "json", "-o", str(Path(tmp) / "export.json"))
        print(f"mmal export (baseline)   wall {export:6.1f} s  cpu {export_cpu:6.1f} s")
        for fmt, name in (("html", "report.html"), ("md", "report.md"), ("json", "report.json")):
            wall, cpu = timed("report", "--db", str(db), "--format", fmt, "-o", str(Path(tmp) / name))
            print(f"mmal report --format {fmt:<4} wall {wall:6.1f} s  cpu {cpu:6.1f} s  "
                  f"({wall / export:.1f} x export wall, {cpu / export_cpu:.1f} x export cpu)")


if __name__ == "__main__":
    main()
