"""Sweep executors: 2 local worker processes against 1, and Ray against local, in one run.

    OMP_NUM_THREADS=1 python benchmarks/sweeps/run.py                 # reduced pitfall study
    OMP_NUM_THREADS=1 python benchmarks/sweeps/run.py --strategies all --seeds 5   # every strategy

The sweep is benchmarks/pitfalls.yaml (the first setting of each of the three synthetic
pitfalls, its model and budget), reduced by default to a few strategies and one seed so that the three timings fit in a few
minutes on 2 cores. Each executor writes a fresh database under benchmarks/out/sweeps/; the
script checks that all of them hold exactly the same rounds, then prints wall-clock times
and their ratios (figures taken on a shared machine are noisy: compare the ratios).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import time
from pathlib import Path

import torch
import yaml

from mmal_core.config import parse_config
from mmal_core.runtime.executors import LocalExecutor, RayExecutor, start_local_ray
from mmal_core.loop import run_experiment, run_specs

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "benchmarks" / "out" / "sweeps"
DEFAULT_STRATEGIES = "random,margin,entropy,badge"


def sweep_config(strategies: str, seeds: int) -> dict:
    cfg = yaml.safe_load((ROOT / "benchmarks" / "pitfalls.yaml").read_text())
    # pitfalls.yaml is a severity grid (16 settings): the sweep keeps the first setting of
    # each pitfall, three datasets as when the figures below were taken
    names = [d["name"] for d in cfg["dataset"]]
    cfg["dataset"] = [d for i, d in enumerate(cfg["dataset"]) if d["name"] not in names[:i]]
    if strategies != "all":
        wanted = strategies.split(",")
        cfg["strategies"] = [s for s in cfg["strategies"] if (s if isinstance(s, str) else s["name"]) in wanted]
    cfg["seeds"] = seeds
    cfg["name"] = f"sweep-bench-{len(cfg['strategies'])}x{seeds}"
    return cfg


def rounds(db: Path) -> dict:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT r.run_key, o.round, o.n_labeled, o.metrics, o.queried_ids FROM rounds o"
                            " JOIN runs r ON r.id = o.run_id").fetchall()
    return {(k, r): (n, json.loads(m)["accuracy"], q) for k, r, n, m, q in rows}


def _noop() -> None:
    pass


def _spin(n: int = 20_000_000) -> float:
    t0 = time.perf_counter()
    total = 0
    for i in range(n):
        total += i
    return time.perf_counter() - t0


def free_cores() -> float:
    """How many cores' worth of CPU two busy processes get right now (2.0 on an idle 2-core machine)."""
    import multiprocessing

    alone = _spin()
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool.map(_noop_arg, [0, 0])  # start both workers before timing
        t0 = time.perf_counter()
        pool.map(_spin, [20_000_000] * 2)
        both = time.perf_counter() - t0
    return 2 * alone / both


def _noop_arg(_: int) -> None:
    pass


def start_fork_server(executor: LocalExecutor) -> float:
    """Seconds until the worker fork server (it imports torch once) has forked a first process."""
    t0 = time.perf_counter()
    process = executor._context.Process(target=_noop)
    process.start()
    process.join()
    return time.perf_counter() - t0


def timed(label: str, cfg, executor) -> tuple[float, dict]:
    db = OUT / f"{label}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    t0 = time.perf_counter()
    outcomes = run_experiment(cfg, str(db), executor=executor)
    seconds = time.perf_counter() - t0
    failed = [o for o in outcomes if o.status != "finished"]
    if failed:
        sys.exit(f"{label}: {len(failed)} run(s) failed: {failed[0].error}")
    busy = sum(sum(o.timings.values()) for o in outcomes)
    print(f"{label}: {seconds:.1f} s wall, {busy:.1f} s inside the runs (parallelism {busy / seconds:.2f})", flush=True)
    return seconds, rounds(db)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strategies", default=DEFAULT_STRATEGIES, help="comma-separated names, or 'all'")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray executor")
    args = parser.parse_args()
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    cfg = parse_config(sweep_config(args.strategies, args.seeds), "benchmarks/pitfalls.yaml (reduced)")
    n_runs = len(run_specs(cfg))
    print(f"{cfg.name}: {n_runs} runs on {os.cpu_count()} cores", flush=True)

    capacity = free_cores()
    print(f"CPU available to two busy processes right now: {capacity:.2f} cores", flush=True)
    times, results = {}, {}
    times["local, 1 worker"], results["local1"] = timed("local1", cfg, LocalExecutor(workers=1))
    local2 = LocalExecutor(workers=2)
    times["fork server start (once per `mmal run`)"] = start_fork_server(local2)
    times["local, 2 workers"], results["local2"] = timed("local2", cfg, local2)
    if not args.no_ray:
        t0 = time.perf_counter()
        ray = start_local_ray(num_cpus=2)
        times["ray start (local, 127.0.0.1)"] = time.perf_counter() - t0
        try:
            times["ray, 2 tasks at a time"], results["ray2"] = timed("ray2", cfg, RayExecutor(workers=2))
        finally:
            ray.shutdown()
    reference = results["local1"]
    for label, got in results.items():
        if got != reference:
            sys.exit(f"{label}: the rounds differ from the one-worker run")
    print(f"\nall executors recorded the same {len(reference)} rounds")
    print(f"CPU available to two busy processes after the runs: {free_cores():.2f} cores\n")
    print("| executor | wall-clock (s) | ratio |")
    print("|---|---:|---:|")
    base = times["local, 1 worker"]
    for label, seconds in times.items():
        ratio = "" if "start" in label else f"{seconds / base:.2f}"
        print(f"| {label} | {seconds:.1f} | {ratio} |")
    start = times["fork server start (once per `mmal run`)"]
    print(f"\nspeed-up of 2 workers over 1: {base / times['local, 2 workers']:.2f}x "
          f"({base / (times['local, 2 workers'] + start):.2f}x counting the fork server start)")
    if "ray, 2 tasks at a time" in times:
        print(f"Ray against local (2 at a time, start excluded): {times['ray, 2 tasks at a time'] / times['local, 2 workers']:.2f}x")


if __name__ == "__main__":
    main()
