"""Results databases written directly through :class:`~mmal_core.store.Store`, without running
active learning: handmade fixtures for the report's tests and large studies for its benchmark.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..store import RoundRecord, Store


def add_run(store: Store, experiment_id: int, *, dataset: str, params: dict[str, Any], strategy: str, label: str,
            seed: int, n_labeled: Sequence[int], accuracy: Sequence[float], status: str = "finished",
            extra: Sequence[dict[str, Any]] | None = None) -> int:
    """Store one run with the given learning curve; ``extra`` adds metrics per round."""
    key = f"{dataset}|{sorted(params.items())}|{label}|{seed}"
    fields = {"dataset": dataset, "dataset_params": params, "strategy": strategy, "strategy_params": {},
              "strategy_label": label, "seed": seed, "model": {}, "budget": {}, "initial_ids": []}
    run_id, _ = store.run(experiment_id, key, fields)
    for r, (n, acc) in enumerate(zip(n_labeled, accuracy)):
        metrics = {"accuracy": float(acc), **(extra[r] if extra else {})}
        store.add_round(run_id, RoundRecord(r, int(n), metrics, [], {}))
    if status != "running":
        store.set_status(run_id, status)
    return run_id


def synthetic_study(path: str | Path, *, cells: int = 20, strategies: Sequence[tuple[str, str]] = (),
                    seeds: int = 10, rounds: int = 8, name: str = "study", seed: int = 0) -> int:
    """A study of ``cells x strategies x seeds`` finished runs with plausible metrics.

    strategies: (label, registered name) pairs. Cells are ``synthetic-missing`` with
    ``missing_rate`` varying (a severity grid) and two mechanisms. Returns the number of runs.
    """
    rng = np.random.default_rng(seed)
    n_labeled = [20 + 20 * r for r in range(rounds)]
    rates = [round(x, 3) for x in np.linspace(0.0, 0.9, max(cells // 2, 1))]
    grid = [{"n_train": 300, "n_test": 150, "missing_rate": r, "mechanism": m}
            for m in ("mcar", "class") for r in rates][:cells]
    count = 0
    with Store(path) as store:
        eid = store.experiment(name, f"synthetic-{seed}", {"seeds": list(range(seeds))}, {})
        for c, params in enumerate(grid):
            for k, (label, registered) in enumerate(strategies):
                skill = 0.01 * k - 0.02 * params["missing_rate"]
                for s in range(seeds):
                    base = 0.5 + 0.3 * (1 - np.exp(-np.arange(rounds) / 3)) + skill
                    acc = np.clip(base + rng.normal(0, 0.01, rounds), 0, 1)
                    share = float(np.clip(0.5 + rng.normal(0.15, 0.05), 0, 1))
                    extra = [{
                        "modality_accuracy": {"m0": float(a - 0.05), "m1": float(a - 0.15)},
                        "contribution": {"m0": share, "m1": 1 - share},
                        "imbalance": abs(2 * share - 1),
                        "query": {"class_histogram": {str(j): int(v) for j, v in enumerate(rng.multinomial(20, [0.25] * 4))},
                                  "missing_fraction": {"m0": float(rng.uniform(0, params["missing_rate"])),
                                                       "m1": float(rng.uniform(0, params["missing_rate"]))},
                                  "difficulty": float(rng.uniform(0, 1))} if r < rounds - 1 else {},
                    } for r, a in enumerate(acc)]
                    for e in extra:
                        if not e["query"]:
                            del e["query"]
                    add_run(store, eid, dataset="synthetic-missing", params=params, strategy=registered, label=label,
                            seed=s, n_labeled=n_labeled, accuracy=acc, extra=extra)
                    count += 1
    return count
