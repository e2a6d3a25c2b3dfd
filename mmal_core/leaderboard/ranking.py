"""Leaderboards: rank strategies on benchmarks from their learning curves.

Input is a list of :class:`Curve` (one per benchmark, strategy and seed: the labeled count
and the metrics of every round), from the local results database
(:func:`curves_from_store`) or from verified submissions on the server. Output is a plain
JSON-able dict (:func:`build_leaderboard`) that the renderers (:mod:`.render`) turn into a rich table,
Markdown, CSV, JSON or one self-contained HTML page.

Per benchmark, strategies are ranked by the normalised area under the budget curve of test
accuracy (AUBC, :func:`mmal_core.metrics.aubc`), or of any registered metric
(``build_leaderboard(..., metric=NAME)``, ``mmal leaderboard --metric NAME``) in that metric's
direction, given as the mean over seeds with a 95%
percentile-bootstrap interval (:func:`scipy.stats.bootstrap`), next to the final accuracy
and the mean rank (strategies ranked per seed by AUBC, ranks averaged over seeds).

Across benchmarks: the average of the per-benchmark ranks, and the pairwise penalty matrix of
Ash et al. (2020, "Deep Batch Active Learning by Diverse, Uncertain Gradient Lower Bounds",
section 5): for every benchmark and every round, a two-sided paired t-test over seeds
(:func:`scipy.stats.ttest_rel`, level 0.05) compares the accuracies of strategies ``i`` and
``j``; when ``i`` is significantly better, entry ``(i, j)`` gains ``1 / n_rounds`` of that
benchmark. An entry is thus the number of benchmarks' worth of rounds in which ``i`` beat
``j``; a column's sum says how often a strategy was beaten.

Modality utilisation (final-round accuracy with a single modality present and, when the
round metrics hold them, the normalised Shapley contributions) sits next to accuracy, so a
strategy that wins while ignoring a modality is visible.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from .. import stats
from ..metrics import aubc, metric_series, records_metric
from ..stats import bootstrap_interval, penalty_counts, ranks_desc

#: Significance level of the paired t-tests of the penalty matrix.
ALPHA = stats.ALPHA
#: Confidence level and resamples of the bootstrap intervals.
CONFIDENCE = stats.CONFIDENCE
N_RESAMPLES = stats.N_RESAMPLES


@dataclass
class Curve:
    """The learning curve of one run.

    n_labeled: (n_rounds,) labeled-set size per round; metrics: one dict per round.
    """

    benchmark: str
    strategy: str
    seed: int
    n_labeled: list[int]
    metrics: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def accuracy(self) -> np.ndarray:
        """(n_rounds,) test accuracy per round."""
        return np.array([float(m.get("accuracy", float("nan"))) for m in self.metrics], dtype=np.float64)

    def values(self, path: str) -> np.ndarray:
        """(n_rounds,) values of the metric ``path`` (``modality_accuracy.m0``) per round."""
        return metric_series(self.metrics, path)

    def records(self, path: str) -> bool:
        """True when every round holds a number under ``path`` (runs from before a metric existed do not)."""
        return records_metric(self.metrics, path)


# -- collecting ----------------------------------------------------------------------------------
def curves_from_store(store, benchmarks: Iterable) -> list[Curve]:
    """Curves of every finished run in ``store`` that belongs to one of ``benchmarks``.

    A run belongs to a benchmark when its setting matches (:meth:`Benchmark.matches_run`) and
    it has all the benchmark's rounds. When the same (benchmark, strategy, seed) was run more
    than once (in several experiments), the newest run counts.
    """
    benchmarks = list(benchmarks)
    latest: dict[tuple[str, str, int], Curve] = {}
    for run in store.runs():
        if run["status"] != "finished":
            continue
        for bench in benchmarks:
            if not bench.matches_run(run):
                continue
            rounds = store.rounds(run["id"])
            if [r.n_labeled for r in rounds] != bench.labeled_counts():
                continue
            latest[(bench.name, run["strategy_label"], run["seed"])] = Curve(
                bench.name, run["strategy_label"], int(run["seed"]),
                [r.n_labeled for r in rounds], [r.metrics for r in rounds],
                {"run_id": run["id"], "experiment_id": run["experiment_id"]},
            )
    return list(latest.values())


# -- statistics ----------------------------------------------------------------------------------
def _final_dict(curves: list[Curve], key: str) -> dict[str, float] | None:
    """Mean over seeds of the final round's ``metrics[key]`` (a dict modality -> value)."""
    acc: dict[str, list[float]] = {}
    for c in curves:
        value = c.metrics[-1].get(key) if c.metrics else None
        if not isinstance(value, dict):
            return None
        for m, v in value.items():
            if isinstance(v, (int, float)):
                acc.setdefault(m, []).append(float(v))
    return {m: float(np.mean(v)) for m, v in sorted(acc.items())} if acc else None


# -- the leaderboard ---------------------------------------------------------------------------------
def build_leaderboard(curves: list[Curve], benchmarks: dict[str, Any] | None = None, metric: str = "accuracy",
                      higher_is_better: bool | None = None) -> dict[str, Any]:
    """Rank the strategies of ``curves``; returns a JSON-able dict.

    benchmarks: name -> :class:`mmal_core.Benchmark`, for the hash and summary
    shown with each table (optional).
    metric: the metric path ranked by (AUBC, mean rank, penalty matrix, curves); curves whose
    rounds do not all record it are left out. higher_is_better: its direction (default: the
    registered metric's, :func:`mmal_core.plugins.higher_is_better`). ``final_accuracy`` stays
    the final test accuracy whatever the metric.

    Keys: ``benchmarks`` (list, one per benchmark with ``rows`` ranked by AUBC and ``curves``
    for the plots), ``overall`` (average rank per strategy) and ``penalty`` (strategies,
    matrix (S, S), and the number of benchmarks counted).
    """
    from ..plugins import higher_is_better as direction

    benchmarks = benchmarks or {}
    higher = direction(metric) if higher_is_better is None else bool(higher_is_better)
    if metric != "accuracy":  # runs from before the metric existed cannot be ranked by it
        curves = [c for c in curves if c.records(metric)]
    by_bench: dict[str, dict[str, dict[int, Curve]]] = {}
    for c in curves:
        by_bench.setdefault(c.benchmark, {}).setdefault(c.strategy, {})[c.seed] = c
    strategies = sorted({c.strategy for c in curves})
    index = {s: i for i, s in enumerate(strategies)}
    penalty = np.zeros((len(strategies), len(strategies)))
    bench_ranks: dict[str, list[float]] = {s: [] for s in strategies}
    tables = []
    for bname in sorted(by_bench):
        runs = by_bench[bname]
        rows, per_seed_aubc = _strategy_rows(runs, metric)
        _rank_rows(rows, per_seed_aubc, higher)
        for row in rows:
            bench_ranks[row["strategy"]].append(row["rank"])
        # pairwise penalty: round by round, paired over the seeds both strategies ran
        names = sorted(runs)
        shares = penalty_counts({s: {seed: c.values(metric) for seed, c in runs[s].items()} for s in names},
                                higher_is_better=higher)
        for (i, j), share in shares.items():
            penalty[index[i], index[j]] += share
        bench = benchmarks.get(bname)
        tables.append({
            "name": bname,
            "metric": metric,
            "hash": getattr(bench, "hash", None),
            "summary": getattr(bench, "summary", ""),
            "n_rounds": max(len(c.n_labeled) for seeds in runs.values() for c in seeds.values()),
            "rows": rows,
            "curves": {strategy: _mean_curve(runs[strategy], metric) for strategy in names},
        })
    counted = [s for s in strategies if bench_ranks[s]]
    overall_rows = sorted(
        ({"strategy": s, "average_rank": float(np.mean(bench_ranks[s])), "benchmarks": len(bench_ranks[s])}
         for s in counted),
        key=lambda r: (r["average_rank"], r["strategy"]),
    )
    return {
        "metric": metric,
        "higher_is_better": higher,
        "benchmarks": tables,
        "overall": overall_rows,
        "penalty": {"strategies": strategies, "matrix": penalty.round(6).tolist(), "n_benchmarks": len(tables),
                    "alpha": ALPHA},
    }


def _strategy_rows(runs: dict[str, dict[int, Curve]], metric: str) -> tuple[list[dict[str, Any]], dict[int, dict[str, float]]]:
    """One row per strategy of a benchmark (AUBC with its interval, final accuracy, modality
    use) and the AUBC of every (seed, strategy), for the per-seed ranks."""
    rows = []
    per_seed_aubc: dict[int, dict[str, float]] = {}
    for strategy, seeds in runs.items():
        areas = np.array([aubc(c.n_labeled, c.values(metric)) for c in seeds.values()])
        finals = np.array([c.accuracy[-1] for c in seeds.values()])
        low, high = bootstrap_interval(areas)
        for seed, c in seeds.items():
            per_seed_aubc.setdefault(seed, {})[strategy] = aubc(c.n_labeled, c.values(metric))
        ordered = [seeds[s] for s in sorted(seeds)]
        rows.append({
            "strategy": strategy,
            "seeds": sorted(seeds),
            "aubc": float(areas.mean()),
            "aubc_low": low,
            "aubc_high": high,
            "final_accuracy": float(finals.mean()),
            "final_accuracy_std": float(finals.std()),
            "modality_accuracy": _final_dict(ordered, "modality_accuracy"),
            "contribution": _final_dict(ordered, "contribution"),
            "meta": next(iter(seeds.values())).meta,
        })
    return rows, per_seed_aubc


def _rank_rows(rows: list[dict[str, Any]], per_seed_aubc: dict[int, dict[str, float]], higher: bool) -> None:
    """Add ``mean_rank`` (the strategies ranked on every seed, averaged over the seeds each ran)
    and ``rank`` (by mean AUBC) to ``rows`` and sort them by rank."""
    seed_ranks: dict[str, list[float]] = {}
    for values in per_seed_aubc.values():
        for s, r in ranks_desc(values, higher).items():
            seed_ranks.setdefault(s, []).append(r)
    for row in rows:
        row["mean_rank"] = float(np.mean(seed_ranks[row["strategy"]]))
    overall = ranks_desc({row["strategy"]: row["aubc"] for row in rows}, higher)
    for row in rows:
        row["rank"] = overall[row["strategy"]]
    rows.sort(key=lambda r: (r["rank"], r["strategy"]))


def _mean_curve(seeds: dict[int, Curve], metric: str) -> dict[str, list]:
    """Mean and standard deviation of ``metric`` over seeds at each labeled count (the plot)."""
    xs = sorted({n for c in seeds.values() for n in c.n_labeled})
    mean, std = [], []
    for n in xs:
        vals = [c.values(metric)[c.n_labeled.index(n)] for c in seeds.values() if n in c.n_labeled]
        mean.append(float(np.mean(vals)))
        std.append(float(np.std(vals)))
    return {"n_labeled": xs, "mean": mean, "std": std}
