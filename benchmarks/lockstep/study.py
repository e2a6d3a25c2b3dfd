"""Whole-study wall time: lockstep against one run at a time, measured back to back.

Runs ``mmal run`` on a study config twice into fresh databases, first with
``--no-lockstep --workers W`` (the path before lockstep), then with the default (lockstep,
``--lockstep-workers``), prints both wall times and their ratio, and checks that the two
databases hold the same rounds (metrics and queried ids of every run).

    python benchmarks/lockstep/study.py benchmarks/pitfalls.yaml [--seeds 2] [--datasets 1]
        [--baseline-workers 2] [--lockstep-workers 2] [--out benchmarks/out/lockstep]
    python benchmarks/lockstep/study.py benchmarks/pitfalls.yaml --gpu-vs-cpu   # needs a GPU

``--seeds`` / ``--datasets`` keep the first seeds / datasets of the config (a smaller study
of the same runs, for a shared machine); without them the whole study runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import yaml


def rounds(db: Path) -> dict:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT r.run_key, o.round, o.n_labeled, o.metrics, o.queried_ids FROM rounds o JOIN runs r ON r.id = o.run_id"
        ).fetchall()
    return {(k, r): (n, json.loads(m), json.loads(q)) for k, r, n, m, q in rows}


def timed_run(config: Path, db: Path, *flags: str) -> float:
    if db.exists():
        db.unlink()
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "mmal_core", "run", str(config), "--db", str(db), *flags],
                         capture_output=True, text=True, env=dict(os.environ, COLUMNS="200"))
    seconds = time.perf_counter() - start
    if res.returncode != 0:
        sys.exit(f"mmal run {' '.join(flags)} failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    return seconds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("config", type=Path)
    parser.add_argument("--seeds", type=int)
    parser.add_argument("--datasets", type=int)
    parser.add_argument("--baseline-workers", type=int, default=2)
    parser.add_argument("--lockstep-workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/lockstep"))
    parser.add_argument("--gpu-vs-cpu", action="store_true",
                        help="instead: the lockstep study with the model on the GPU against the CPU")
    args = parser.parse_args()
    cfg = yaml.safe_load(args.config.read_text())
    if args.seeds:
        seeds = cfg.get("seeds", 1)
        cfg["seeds"] = list(range(args.seeds)) if isinstance(seeds, int) else list(seeds)[: args.seeds]
    if args.datasets:
        datasets = cfg["dataset"] if isinstance(cfg["dataset"], list) else [cfg["dataset"]]
        cfg["dataset"] = datasets[: args.datasets]
    args.out.mkdir(parents=True, exist_ok=True)
    if args.gpu_vs_cpu:
        return gpu_vs_cpu(cfg, args)
    config = args.out / "study.yaml"
    config.write_text(yaml.safe_dump(cfg))
    base = timed_run(config, args.out / "baseline.db", "--no-lockstep", "--workers", str(args.baseline_workers))
    lock = timed_run(config, args.out / "lockstep.db", "--workers", str(args.lockstep_workers))
    same = rounds(args.out / "baseline.db") == rounds(args.out / "lockstep.db")
    n_runs = len(rounds(args.out / "lockstep.db")) // (cfg["budget"]["rounds"] + 1)
    print(f"| runs | --no-lockstep --workers {args.baseline_workers} | lockstep --workers {args.lockstep_workers} | ratio | same rounds |")
    print("|---|---|---|---|---|")
    print(f"| {n_runs} | {base:.1f} s | {lock:.1f} s | {base / lock:.2f}x | {'yes' if same else 'NO'} |")
    if not same:
        sys.exit(1)


def gpu_vs_cpu(cfg: dict, args) -> None:
    """Lockstep wall time of the study with ``device: cuda`` against ``device: cpu``."""
    times = {}
    for device in ("cpu", "cuda"):
        variant = dict(cfg, model={**cfg.get("model", {}), "params": {**cfg.get("model", {}).get("params", {}), "device": device}})
        config = args.out / f"study-{device}.yaml"
        config.write_text(yaml.safe_dump(variant))
        workers = str(args.lockstep_workers if device == "cpu" else 1)
        times[device] = timed_run(config, args.out / f"{device}.db", "--workers", workers)
    print(f"| study | CPU (lockstep, --workers {args.lockstep_workers}) | GPU (lockstep, 1 process) | ratio |")
    print("|---|---|---|---|")
    print(f"| {cfg['name']} | {times['cpu']:.1f} s | {times['cuda']:.1f} s | {times['cpu'] / times['cuda']:.2f}x |")


if __name__ == "__main__":
    main()
