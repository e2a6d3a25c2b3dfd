"""The same small experiment with everything on the GPU and everything on the CPU.

Each side runs in its own process (the CPU side with ``CUDA_VISIBLE_DEVICES=""``, so that
``device: auto`` resolves to the CPU for the model and for every strategy). Floating-point
sums differ between the devices, so the runs are not expected to be bit-identical; the
report says how far apart they end: final accuracy and AUBC per strategy, the share of
queried ids the two runs have in common, and each side's wall time.

    python benchmarks/gpu/loop_parity.py [--strategies ...] [--rounds 4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml


def config(strategies: list[str], rounds: int) -> dict:
    return {
        "name": "gpu-parity",
        "dataset": {"name": "synthetic-missing", "params": {"n_train": 2000, "n_test": 1000}},
        "model": {"name": "fusion-mlp", "params": {"fusion": "concat", "epochs": 30}},
        "budget": {"initial": 20, "per_round": 20, "rounds": rounds},
        "strategies": strategies,
        "seeds": [0],
    }


def run_side(cfg_path: Path, db: Path, cpu: bool) -> float:
    env = dict(os.environ)
    if cpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    code = (
        "import sys; from mmal_core.config import load_config; from mmal_core.loop import run_experiment; "
        "run_experiment(load_config(sys.argv[1]), sys.argv[2])"
    )
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, str(cfg_path), str(db)], check=True, env=env)
    return time.perf_counter() - t0


def summary(db: Path) -> dict[str, dict]:
    from mmal_core.cli.results import export_document
    from mmal_core.metrics import aubc
    from mmal_core.store import Store

    with Store(db, readonly=True) as store:
        doc = export_document(store, store.resolve_experiment(None))
    out = {}
    for run in doc["runs"]:
        rounds = run["rounds"]
        acc = [r["metrics"]["accuracy"] for r in rounds]
        out[run["strategy_label"]] = {
            "final": acc[-1], "aubc": aubc([r["n_labeled"] for r in rounds], acc),
            "queried": {i for r in rounds for i in r["queried_ids"]},
        }
    return out


def main() -> None:
    from mmal_core.plugins import get_plugin_manager

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", nargs="+", default=None, help="default: every installed strategy")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    strategies = args.strategies or sorted(get_plugin_manager().entries("strategy"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cfg_path = folder / "parity.yaml"
        cfg_path.write_text(yaml.safe_dump(config(strategies, args.rounds)))
        seconds = {side: run_side(cfg_path, folder / f"{side}.db", side == "cpu") for side in ("gpu", "cpu")}
        gpu, cpu = summary(folder / "gpu.db"), summary(folder / "cpu.db")
    print(f"wall time: GPU side {seconds['gpu']:.1f} s, CPU side {seconds['cpu']:.1f} s ({len(strategies)} strategies)")
    print("| strategy | final acc GPU | final acc CPU | AUBC GPU | AUBC CPU | queried ids in common |")
    print("|---|---:|---:|---:|---:|---:|")
    rows = []
    for name in strategies:
        g, c = gpu[name], cpu[name]
        common = len(g["queried"] & c["queried"]) / max(1, len(g["queried"]))
        rows.append({"strategy": name, "final_gpu": g["final"], "final_cpu": c["final"], "aubc_gpu": g["aubc"],
                     "aubc_cpu": c["aubc"], "common": common})
        print(f"| {name} | {g['final']:.3f} | {c['final']:.3f} | {g['aubc']:.3f} | {c['aubc']:.3f} | {common:.2f} |")
    gaps = [abs(r["aubc_gpu"] - r["aubc_cpu"]) for r in rows]
    print(f"largest AUBC gap between the devices: {max(gaps):.3f}; mean {sum(gaps) / len(gaps):.3f}")
    out = Path(os.environ.get("OUT", "benchmarks/out/gpu"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "loop_parity.json").write_text(json.dumps({"seconds": seconds, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
