"""Loop speed: one active-learning run on synthetic-difficulty, split into train/predict/select.

Setting (issue: core platform): pool of 4,000 samples, 20 initial labels, 10 rounds of 20,
margin sampling, the default fusion-mlp. Target: <= 15 s wall for the whole run on a 2-core
CPU, training included.

Baseline measured in the same process: the same schedule with scikit-learn's MLPClassifier
on the concatenated modalities (what a plain modAL-style loop does), so the ratio says how
mmal's loop compares with the usual way of doing it on this machine.

    python benchmarks/loop/run.py [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def mmal_run(threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    from mmal_core.config import parse_config
    from mmal_core.loop import run_experiment

    cfg = parse_config({
        "name": "loop-bench",
        "dataset": {"name": "synthetic-difficulty", "params": {"n_train": 4000, "n_test": 1000}},
        "budget": {"initial": 20, "per_round": 20, "rounds": 10},
        "strategies": ["margin"],
        "seeds": [0],
    })
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        outcome = run_experiment(cfg, str(Path(tmp) / "bench.db"))[0]
        wall = time.perf_counter() - t0
    return {"wall": wall, **{k: round(v, 3) for k, v in outcome.timings.items()}, "final_accuracy": outcome.accuracy[-1]}


def sklearn_baseline() -> dict:
    from sklearn.neural_network import MLPClassifier

    from mmal_core import load_dataset

    ds = load_dataset("synthetic-difficulty", seed=0, n_train=4000, n_test=1000)
    X = np.hstack([ds.train.features[m] for m in ds.modality_names])
    Xt = np.hstack([ds.test.features[m] for m in ds.modality_names])
    rng = np.random.default_rng(0)
    labeled = list(rng.choice(len(X), 20, replace=False))
    t0 = time.perf_counter()
    acc = 0.0
    for rnd in range(11):
        clf = MLPClassifier(hidden_layer_sizes=(64, 64), max_iter=200, random_state=rnd).fit(X[labeled], ds.train.labels[labeled])
        acc = float((clf.predict(Xt) == ds.test.labels).mean())
        if rnd == 10:
            break
        probs = clf.predict_proba(X)
        top2 = np.sort(probs, axis=1)[:, -2:]
        margin = top2[:, 1] - top2[:, 0]
        margin[labeled] = np.inf
        labeled += list(np.argsort(margin)[:20])
    return {"wall": time.perf_counter() - t0, "final_accuracy": acc}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads for mmal")
    args = parser.parse_args()
    rows = []
    for _ in range(args.repeats):
        rows.append({"mmal": mmal_run(args.threads), "sklearn_mlp": sklearn_baseline()})
    med = lambda key, field: float(np.median([r[key][field] for r in rows]))  # noqa: E731
    summary = {
        "repeats": args.repeats,
        "threads": args.threads,
        "mmal_wall_s": med("mmal", "wall"),
        "mmal_train_s": med("mmal", "train"),
        "mmal_evaluate_s": med("mmal", "evaluate"),
        "mmal_predict_s": med("mmal", "predict"),
        "mmal_select_s": med("mmal", "select"),
        "mmal_final_accuracy": med("mmal", "final_accuracy"),
        "baseline_wall_s": med("sklearn_mlp", "wall"),
        "baseline_final_accuracy": med("sklearn_mlp", "final_accuracy"),
    }
    summary["ratio_baseline_over_mmal"] = summary["baseline_wall_s"] / summary["mmal_wall_s"]
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
