"""Tables of the real-data study (benchmarks/real.yaml) from its results database, in Markdown.

    python benchmarks/cache/summarize_real.py benchmarks/out/real.db [--experiment real]

Per dataset and strategy, over the finished seeds: final test accuracy and normalised area
under the budget curve (AUBC), mean ± std; then, on the final round, the per-modality
figures the loop records: ``modality_accuracy.<m>`` (the fused model's accuracy with only
``m`` present) and, when the store has them, ``shapley_accuracy.<m>`` (the Shapley share of
the accuracy credited to ``m``) and ``imbalance``.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np

from mmal_core.metrics import aubc, flatten
from mmal_core.store import Store


def fmt(values, digits: int = 3) -> str:
    v = np.array([x for x in values if x is not None], dtype=float)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return "-"
    return f"{v.mean():.{digits}f} ± {v.std():.{digits}f}" if v.size > 1 else f"{v.mean():.{digits}f}"


def load(db: str, experiment: str | None):
    """{dataset: {strategy: [run summary per finished seed]}} and the modality names per dataset."""
    runs: dict = defaultdict(lambda: defaultdict(list))
    with Store(db, readonly=True) as store:
        eid = store.resolve_experiment(experiment)
        for run in store.iter_finished_runs(eid):
            rounds = run["rounds"]
            n = [r["n_labeled"] for r in rounds]
            acc = [r["metrics"]["accuracy"] for r in rounds]
            last = flatten(rounds[-1]["metrics"])
            runs[run["dataset"]][run["strategy_label"]].append({"final": acc[-1], "aubc": aubc(n, acc), "last": last})
    return runs


def summarize(runs) -> str:
    lines = []
    for dataset in sorted(runs):
        by = runs[dataset]
        keys = sorted({k for rs in by.values() for r in rs for k in r["last"]})
        mods = sorted({k.split(".", 1)[1] for k in keys if k.startswith("modality_accuracy.")})
        shap = [f"shapley_accuracy.{m}" for m in mods if f"shapley_accuracy.{m}" in keys]
        cols = [f"modality_accuracy.{m}" for m in mods] + shap + (["imbalance"] if "imbalance" in keys else [])
        seeds = sorted({len(rs) for rs in by.values()})
        lines += [f"### {dataset} (seeds per strategy: {', '.join(map(str, seeds))})", "",
                  "| strategy | final accuracy | AUBC | " + " | ".join(c.replace("_accuracy", " acc") for c in cols) + " |",
                  "|---" * (3 + len(cols)) + "|"]
        order = sorted(by, key=lambda s: -np.mean([r["aubc"] for r in by[s]]))
        for s in order:
            rs = by[s]
            extra = " | ".join(fmt(r["last"].get(c) for r in rs) for c in cols)
            lines.append(f"| {s} | {fmt(r['final'] for r in rs)} | {fmt(r['aubc'] for r in rs)} | {extra} |")
        every = [r for rs in by.values() for r in rs]
        extra = " | ".join(fmt(r["last"].get(c) for r in every) for c in cols)
        lines.append(f"| **all strategies** | {fmt(r['final'] for r in every)} | {fmt(r['aubc'] for r in every)} | {extra} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db")
    parser.add_argument("--experiment", default=None)
    args = parser.parse_args(argv)
    print(summarize(load(args.db, args.experiment)))


if __name__ == "__main__":
    main()
