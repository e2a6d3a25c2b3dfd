"""Tables of the pitfall study from its results database (Markdown on standard output).

    python benchmarks/study/summarize.py benchmarks/out/pitfalls.db [--experiment pitfalls]

Per pitfall (dataset) and strategy, over seeds: final test accuracy and normalised area
under the budget curve (AUBC), mean ± std; the mean rank of the strategy by AUBC (rank 1 is
best; within each (dataset, seed) the strategies are ranked, ties share the average rank);
the mean rank over all pitfalls; and the same ranks grouped into unimodal and multimodal
strategies. Then what each strategy queried: the mean fraction of queried samples missing a
modality (synthetic-missing), the mean generator difficulty of its queries, and the
imbalance degree of the final model. Only finished runs count.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict

import numpy as np

from mmal_core import MmalError, get_plugin_manager
from mmal_core.metrics import aubc, get_metric
from mmal_core.store import Store


def average_ranks(values: list[float]) -> list[float]:
    """Ranks of ``values`` (1 = largest), ties sharing the mean of their ranks."""
    order = sorted(range(len(values)), key=lambda i: -values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def load(db: str, experiment: str | None):
    """{dataset: {strategy: {seed: run summary}}} of the finished runs, and the experiment name."""
    with Store(db, readonly=True) as store:
        eid = store.resolve_experiment(experiment)
        name = store.experiment_row(eid)["name"]
        runs: dict = defaultdict(lambda: defaultdict(dict))
        for run in store.iter_finished_runs(eid):
            rounds = run["rounds"]
            n = [r["n_labeled"] for r in rounds]
            acc = [r["metrics"]["accuracy"] for r in rounds]
            queried = [r["metrics"].get("query", {}) for r in rounds if r["metrics"].get("query")]
            missing = [np.mean(list(q["missing_fraction"].values())) for q in queried if q.get("missing_fraction")]
            difficulty = [q["difficulty"] for q in queried if "difficulty" in q]
            runs[run["dataset"]][run["strategy_label"]][run["seed"]] = {
                "strategy": run["strategy"],
                "final": acc[-1],
                "aubc": aubc(n, acc),
                "missing": float(np.mean(missing)) if missing else float("nan"),
                "difficulty": float(np.mean(difficulty)) if difficulty else float("nan"),
                "imbalance": get_metric(rounds[-1]["metrics"], "imbalance"),
            }
    return runs, name


def is_multimodal(strategy: str) -> bool:
    try:
        return bool(get_plugin_manager().get("strategy", strategy).multimodal)
    except MmalError:
        return False


def fmt(values, digits=3) -> str:
    v = np.array([x for x in values if x is not None], dtype=float)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return "-"
    return f"{v.mean():.{digits}f} ± {v.std():.{digits}f}" if v.size > 1 else f"{v.mean():.{digits}f}"


def paired_difference(by_strategy, strategy: str, seeds, baseline: str = "random") -> str:
    """Mean AUBC difference to ``baseline`` over the shared seeds, ± its standard error."""
    if baseline not in by_strategy or strategy == baseline:
        return "-"
    d = np.array([by_strategy[strategy][s]["aubc"] - by_strategy[baseline][s]["aubc"] for s in seeds])
    if d.size < 2:
        return f"{d.mean():+.3f}" if d.size else "-"
    return f"{d.mean():+.3f} ± {d.std(ddof=1) / np.sqrt(d.size):.3f}"


def summarize(runs) -> str:
    lines: list[str] = []
    overall: dict[str, list[float]] = defaultdict(list)
    kind: dict[str, bool] = {}
    for dataset in sorted(runs):
        by_strategy = runs[dataset]
        strategies = sorted(by_strategy)
        for s in strategies:
            kind[s] = is_multimodal(next(iter(by_strategy[s].values()))["strategy"])
        seeds = sorted(set.intersection(*(set(by_strategy[s]) for s in strategies)))
        ranks: dict[str, list[float]] = defaultdict(list)
        for seed in seeds:
            for s, r in zip(strategies, average_ranks([by_strategy[s][seed]["aubc"] for s in strategies])):
                ranks[s].append(r)
        for s in strategies:
            overall[s].extend(ranks[s])
        lines += [f"### {dataset} ({len(seeds)} seeds ranked)", "",
                  "| strategy | kind | final accuracy | AUBC | AUBC − random (paired, ± s.e.) | mean rank (AUBC) |",
                  "|---|---|---|---|---|---|"]
        for s in sorted(strategies, key=lambda s: np.mean(ranks[s]) if ranks[s] else np.inf):
            rows = by_strategy[s].values()
            lines.append(
                f"| {s} | {'multimodal' if kind[s] else 'unimodal'} | {fmt(r['final'] for r in rows)} | "
                f"{fmt(r['aubc'] for r in rows)} | {paired_difference(by_strategy, s, seeds)} | "
                f"{np.mean(ranks[s]) if ranks[s] else float('nan'):.2f} |"
            )
        lines.append("")
    lines += ["### Mean rank over all pitfalls (by AUBC)", "", "| strategy | kind | mean rank |", "|---|---|---|"]
    for s in sorted(overall, key=lambda s: np.mean(overall[s])):
        lines.append(f"| {s} | {'multimodal' if kind[s] else 'unimodal'} | {np.mean(overall[s]):.2f} |")
    lines += ["", "### Unimodal vs multimodal strategies (mean rank by AUBC, lower is better)", "",
              "| pitfall | unimodal | multimodal |", "|---|---|---|"]
    for dataset in sorted(runs):
        groups = {True: [], False: []}
        strategies = sorted(runs[dataset])
        seeds = sorted(set.intersection(*(set(runs[dataset][s]) for s in strategies)))
        for seed in seeds:
            for s, r in zip(strategies, average_ranks([runs[dataset][s][seed]["aubc"] for s in strategies])):
                groups[kind[s]].append(r)
        cell = {k: f"{np.mean(v):.2f}" if v else "-" for k, v in groups.items()}
        lines.append(f"| {dataset} | {cell[False]} | {cell[True]} |")
    lines += ["", "### What the strategies queried", "",
              "Mean over rounds and seeds: fraction of queried samples missing a modality (averaged over "
              "modalities), mean generator difficulty of the queried samples, imbalance degree of the final model.", "",
              "| pitfall | strategy | missing fraction | difficulty | final imbalance |", "|---|---|---|---|---|"]
    for dataset in sorted(runs):
        for s in sorted(runs[dataset]):
            rows = runs[dataset][s].values()
            lines.append(f"| {dataset} | {s} | {fmt((r['missing'] for r in rows), 2)} | "
                         f"{fmt((r['difficulty'] for r in rows), 2)} | {fmt((r['imbalance'] for r in rows), 2)} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Tables of the pitfall study (Markdown).")
    parser.add_argument("db", help="results database written by `mmal run benchmarks/pitfalls.yaml --db ...`")
    parser.add_argument("--experiment", default=None, help="experiment name or id (default: the newest)")
    args = parser.parse_args(argv)
    try:
        runs, name = load(args.db, args.experiment)
    except MmalError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not runs:
        print(f"error: experiment '{name}' in {args.db} has no finished runs yet", file=sys.stderr)
        return 2
    sys.stdout.write(f"## {name}\n\n" + summarize(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
