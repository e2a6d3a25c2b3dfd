"""From the runs of one experiment to the report's numbers (a JSON-able dict).

A *cell* is one dataset with its parameter values; inside a cell every strategy ran on the
same seeds, and the same seed means the same dataset draw and the same initial labeled set,
so strategies are compared paired by seed. Only finished runs enter the statistics; runs
still pending, running or failed are listed per cell as missing seeds.
"""

from __future__ import annotations

import json
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import stats
from ..errors import MmalError, did_you_mean
from ..metrics import aubc, metric_series, records_metric


@dataclass
class Run:
    strategy: str  # the label (unique per configured strategy)
    name: str  # the registered strategy name
    seed: int
    status: str
    n_labeled: list[int] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)

    @property
    def accuracy(self) -> np.ndarray:
        return np.array([float(m.get("accuracy", float("nan"))) for m in self.metrics], dtype=np.float64)

    def values(self, path: str) -> np.ndarray:
        """(n_rounds,) values of the metric ``path`` per round (``accuracy`` as :attr:`accuracy`)."""
        return self.accuracy if path == "accuracy" else metric_series(self.metrics, path)


@dataclass
class Cell:
    dataset: str
    params: dict[str, Any]
    runs: list[Run] = field(default_factory=list)

    @property
    def key(self) -> str:
        return self.dataset + json.dumps(self.params, sort_keys=True)

    @property
    def label(self) -> str:
        if not self.params:
            return self.dataset
        return f"{self.dataset} (" + ", ".join(f"{k}={_value_text(v)}" for k, v in sorted(self.params.items())) + ")"

    def finished(self, metric: str = "accuracy") -> dict[str, dict[int, Run]]:
        """Finished runs by strategy and seed; for a metric other than accuracy, only the runs
        that record it in every round (older runs may not)."""
        out: dict[str, dict[int, Run]] = defaultdict(dict)
        for r in self.runs:
            if r.status == "finished" and r.metrics and (metric == "accuracy" or records_metric(r.metrics, metric)):
                out[r.strategy][r.seed] = r
        return out


def _value_text(v: Any) -> str:
    return json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else str(v)


def load_cells(store, experiment_id: int) -> tuple[list[Cell], dict[str, str]]:
    """The experiment's cells in config order, and strategy label -> registered name."""
    cells: dict[str, Cell] = {}
    names: dict[str, str] = {}
    for run in store.runs(experiment_id):
        cell = Cell(run["dataset"], run["dataset_params"])
        cell = cells.setdefault(cell.key, cell)
        names.setdefault(run["strategy_label"], run["strategy"])
        r = Run(run["strategy_label"], run["strategy"], int(run["seed"]), run["status"])
        if run["status"] == "finished":
            rounds = store.rounds(run["id"])
            r.n_labeled = [x.n_labeled for x in rounds]
            r.metrics = [x.metrics for x in rounds]
        cell.runs.append(r)
    return list(cells.values()), names


def is_multimodal(name: str) -> bool | None:
    """The strategy class's ``multimodal`` attribute; None when the strategy is not installed
    here (the report then puts it in neither group and says so)."""
    from ..plugins import get_plugin_manager

    try:
        return bool(getattr(get_plugin_manager().get("strategy", name), "multimodal", False))
    except Exception:  # noqa: BLE001 - a plugin that is not installed, or fails to load
        return None


class _Bootstrap:
    """Collects the report's bootstrap intervals and computes them in a few batched calls.

    :meth:`interval` and :meth:`band` return their dicts at once with the means; the bounds
    are filled in by :meth:`resolve` (samples of one size go to one scipy call).
    """

    CHUNK = 256

    def __init__(self, confidence: float = stats.CONFIDENCE):
        self.confidence = confidence
        self.pending: list[tuple[np.ndarray, Any]] = []

    def interval(self, values) -> dict[str, float]:
        values = np.asarray([v for v in values if v is not None], dtype=np.float64)
        values = values[np.isfinite(values)]
        if values.size == 0:
            return {"mean": float("nan"), "low": float("nan"), "high": float("nan"), "n": 0}
        mean = float(values.mean())
        out = {"mean": mean, "low": mean, "high": mean, "n": int(values.size)}
        if values.size > 1 and np.any(values != values[0]):
            self.pending.append((values, lambda lo, hi: out.update(low=lo, high=hi)))
        return out

    def band(self, matrix: np.ndarray) -> dict[str, list[float]]:
        """Mean and interval over seeds (rows) of every column of ``matrix``."""
        matrix = np.asarray(matrix, dtype=np.float64)
        mean = matrix.mean(axis=0).tolist()
        out = {"mean": mean, "low": list(mean), "high": list(mean)}
        for j in range(matrix.shape[1]):
            col = matrix[:, j]
            if col.size > 1 and np.any(col != col[0]):
                def put(lo, hi, j=j):
                    out["low"][j], out["high"][j] = lo, hi
                self.pending.append((col, put))
        return out

    def resolve(self) -> None:
        by_size: dict[int, list[tuple[np.ndarray, Any]]] = defaultdict(list)
        for values, put in self.pending:
            by_size[values.size].append((values, put))
        for group in by_size.values():
            for start in range(0, len(group), self.CHUNK):
                chunk = group[start:start + self.CHUNK]
                low, high = stats.bootstrap_intervals(np.stack([v for v, _ in chunk]), confidence=self.confidence)
                for (_, put), lo, hi in zip(chunk, low, high):
                    put(float(lo), float(hi))
        self.pending = []


def _curve_bands(boot: _Bootstrap, seeds: dict[int, Run], values) -> dict[str, Any] | None:
    """Band of ``values(run) -> (n_rounds,)`` over the seeds that share the longest schedule."""
    if not seeds:
        return None
    longest = max((r.n_labeled for r in seeds.values()), key=len)
    rows = [values(r) for r in seeds.values() if r.n_labeled == longest]
    matrix = np.array(rows, dtype=np.float64)
    if matrix.size == 0 or not np.all(np.isfinite(matrix)):
        return None
    return {"n_labeled": list(longest), **boot.band(matrix), "seeds": len(rows)}


def _metric(m: dict[str, Any], *path: str) -> Any:
    for p in path:
        if not isinstance(m, dict) or p not in m:
            return None
        m = m[p]
    return m


def _pool_facts(cell: Cell, seed: int) -> tuple[dict[str, Any] | None, str | None]:
    """Missing share per modality, mean difficulty and class shares of the cell's pool."""
    from ..plugins import load_dataset

    try:
        pool = load_dataset(cell.dataset, seed=seed, **cell.params).train
    except Exception as err:  # noqa: BLE001 - a plugin that is not installed here: the report says so
        return None, f"pool shares unavailable: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
    n = max(len(pool.labels), 1)
    counts = np.bincount(np.asarray(pool.labels, dtype=np.int64))
    return {
        "missing": {m: float(np.mean(~pool.mask[:, j])) for j, m in enumerate(pool.modalities)},
        "difficulty": float(np.mean(pool.difficulty)) if pool.difficulty is not None else None,
        "classes": {str(c): float(k / n) for c, k in enumerate(counts)},
        "seed": seed,
    }, None


def _queries(cell: Cell, finished: dict[str, dict[int, Run]], strategies: list[str], pool_info: bool) -> dict[str, Any]:
    rows = []
    modalities: set[str] = set()
    classes: set[str] = set()
    for s in strategies:
        missing: dict[str, list[float]] = defaultdict(list)
        weights: list[float] = []
        difficulty: list[tuple[float, float]] = []
        hist: dict[str, float] = defaultdict(float)
        for run in finished.get(s, {}).values():
            for m in run.metrics:
                q = m.get("query")
                if not isinstance(q, dict):
                    continue
                h = q.get("class_histogram") or {}
                size = float(sum(v for v in h.values() if isinstance(v, (int, float))))
                for c, v in h.items():
                    hist[c] += float(v)
                for mod, v in (q.get("missing_fraction") or {}).items():
                    if isinstance(v, (int, float)) and np.isfinite(v):
                        missing[mod].append(float(v) * size)
                if isinstance(q.get("difficulty"), (int, float)):
                    difficulty.append((float(q["difficulty"]), size))
                weights.append(size)
        total = sum(hist.values())
        picked = sum(weights)
        modalities.update(missing)
        classes.update(hist)
        shares = {c: v / total for c, v in sorted(hist.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else 0)} if total else {}
        balance = None
        if len(shares) > 1:
            from scipy.stats import entropy

            balance = float(entropy(list(shares.values())) / np.log(len(shares)))
        rows.append({
            "strategy": s,
            "picks": int(picked),
            "missing": {m: (sum(v) / picked if picked else None) for m, v in sorted(missing.items())},
            "difficulty": (sum(d * w for d, w in difficulty) / sum(w for _, w in difficulty))
            if difficulty and sum(w for _, w in difficulty) else None,
            "classes": shares,
            "balance": balance,
        })
    seeds = sorted({r.seed for r in cell.runs})
    pool, note = _pool_facts(cell, seeds[0]) if (pool_info and seeds) else (None, None if pool_info else "pool shares not computed")
    return {"modalities": sorted(modalities), "classes": sorted(classes, key=lambda c: int(c) if c.isdigit() else 0),
            "rows": rows, "pool": pool, "pool_note": note}


def _utilization(boot: _Bootstrap, finished: dict[str, dict[int, Run]], strategies: list[str]) -> dict[str, Any]:
    rows, over_rounds = [], {}
    modalities: set[str] = set()
    for s in strategies:
        seeds = finished.get(s, {})
        if not seeds:
            continue
        last = [r.metrics[-1] for r in seeds.values()]
        mods = sorted({k for m in last for k in (m.get("modality_accuracy") or {})})
        modalities.update(mods)
        row = {
            "strategy": s,
            "modality_accuracy": {k: boot.interval(_metric(m, "modality_accuracy", k) for m in last) for k in mods},
            "contribution": {k: boot.interval(_metric(m, "contribution", k) for m in last) for k in mods
                             if any(_metric(m, "contribution", k) is not None for m in last)},
            "imbalance": boot.interval(_metric(m, "imbalance") for m in last)
            if any(_metric(m, "imbalance") is not None for m in last) else None,
        }
        rows.append(row)
        band = _curve_bands(boot, seeds, lambda r: [_metric(m, "imbalance") if _metric(m, "imbalance") is not None
                                             else float("nan") for m in r.metrics])
        if band is not None:
            over_rounds[s] = {"imbalance": band}
            for k in mods:
                b = _curve_bands(boot, seeds, lambda r, k=k: [_metric(m, "contribution", k) if _metric(m, "contribution", k)
                                                        is not None else float("nan") for m in r.metrics])
                if b is not None:
                    over_rounds[s].setdefault("contribution", {})[k] = b
    return {"modalities": sorted(modalities), "rows": rows, "over_rounds": over_rounds}


def _cell_report(boot: _Bootstrap, cell: Cell, order: list[str], baseline: str, alpha: float, expected_seeds: list[int],
                 pool_info: bool, metric: str = "accuracy", higher: bool = True) -> dict[str, Any]:
    finished = cell.finished(metric)
    strategies = [s for s in order if s in {r.strategy for r in cell.runs}]
    missing = []
    for s in strategies:
        have = set(finished.get(s, {}))
        lacking = [seed for seed in expected_seeds if seed not in have]
        if lacking:
            states = {r.status for r in cell.runs if r.strategy == s and r.seed in lacking}
            if any(not any(r.strategy == s and r.seed == k for r in cell.runs) for k in lacking):
                states.add("not started")
            states = sorted(states)
            missing.append({"strategy": s, "seeds": lacking, "status": states})
    rows = []
    for s in strategies:
        seeds = finished.get(s, {})
        areas = {seed: aubc(r.n_labeled, r.values(metric)) for seed, r in seeds.items()}
        finals = {seed: float(r.accuracy[-1]) for seed, r in seeds.items()}
        rows.append({"strategy": s, "seeds": sorted(seeds),
                     "aubc": boot.interval(areas.values()), "final_accuracy": boot.interval(finals.values()),
                     "_aubc": areas})
    n_seeds = max((len(r["seeds"]) for r in rows), default=0)
    base = next((r for r in rows if r["strategy"] == baseline), None)
    note = None
    if base is None:
        note = f"the baseline '{baseline}' has no runs in this cell: no paired tests"
    elif n_seeds == 0:
        note = "no finished runs yet: no tests"
    elif n_seeds < 2:
        note = "one seed only: no tests (a paired test needs at least two seeds)"
    comparisons: list[dict[str, Any] | None] = []
    for row in rows:
        if base is None or row is base or note:
            comparisons.append(None)
            continue
        common = sorted(set(row["_aubc"]) & set(base["_aubc"]))
        comparisons.append(stats.paired_comparison(np.array([row["_aubc"][k] for k in common]),
                                                   np.array([base["_aubc"][k] for k in common]),
                                                   confidence=1 - alpha))
    adjusted = stats.holm([c["p"] if c else None for c in comparisons], alpha)
    for row, comp, p in zip(rows, comparisons, adjusted):
        if comp is not None:
            comp["p_holm"] = p
            comp["verdict"] = stats.verdict(comp, p, alpha, higher)
        row["difference"] = comp
    curves = {}
    for s in strategies:
        band = _curve_bands(boot, finished.get(s, {}), lambda r: r.values(metric))
        if band is not None:
            curves[s] = band
    ranks_by_seed: dict[str, list[float]] = defaultdict(list)
    for seed in sorted({k for r in rows for k in r["_aubc"]}):
        values = {r["strategy"]: r["_aubc"][seed] for r in rows if seed in r["_aubc"]}
        for s, rank in stats.ranks_desc(values, higher).items():
            ranks_by_seed[s].append(rank)
    for row in rows:
        row["mean_rank"] = float(np.mean(ranks_by_seed[row["strategy"]])) if ranks_by_seed[row["strategy"]] else None
    return {
        "key": cell.key, "dataset": cell.dataset, "params": cell.params, "label": cell.label,
        "strategies": strategies, "seeds": n_seeds, "missing": missing, "note": note,
        "rows": rows, "curves": curves,
        "queries": _queries(cell, finished, strategies, pool_info),
        "utilization": _utilization(boot, finished, strategies),
        "_accuracy": {s: {seed: r.values(metric) for seed, r in finished.get(s, {}).items()} for s in strategies},
    }


# -- across cells -------------------------------------------------------------------------------------
def _ranks_across(cells: list[dict[str, Any]], strategies: list[str], alpha: float, higher: bool = True) -> dict[str, Any]:
    """Mean AUBC per (cell, strategy); ranks, Friedman and Nemenyi over the complete cells."""
    used = [c for c in cells if all(s in {r["strategy"] for r in c["rows"] if r["seeds"]} for s in strategies)]
    matrix = np.array([[next(r["aubc"]["mean"] for r in c["rows"] if r["strategy"] == s) for s in strategies]
                       for c in used], dtype=np.float64).reshape(len(used), len(strategies))
    out: dict[str, Any] = {"strategies": strategies, "cells": [c["label"] for c in used],
                           "left_out": [c["label"] for c in cells if c not in used],
                           "matrix": matrix.tolist()}
    out["mean_ranks"] = dict(zip(strategies, stats.mean_ranks(matrix, higher).tolist())) if len(used) else {}
    out["friedman"] = stats.friedman(matrix)
    if out["friedman"]["p"] is not None:
        out["critical_difference"] = stats.nemenyi_critical_difference(len(strategies), len(used), alpha)
        out["nemenyi_p"] = stats.nemenyi(matrix).tolist()
    else:
        out["critical_difference"] = None
        out["nemenyi_p"] = None
    return out


def _penalty(cells: list[dict[str, Any]], strategies: list[str], alpha: float, higher: bool = True) -> dict[str, Any]:
    index = {s: i for i, s in enumerate(strategies)}
    matrix = np.zeros((len(strategies), len(strategies)))
    counted = 0
    for c in cells:
        acc = {s: seeds for s, seeds in c["_accuracy"].items() if seeds}
        if len(acc) < 2:
            continue
        counted += 1
        for (i, j), share in stats.penalty_counts(acc, alpha, higher).items():
            matrix[index[i], index[j]] += share
    return {"strategies": strategies, "matrix": matrix.round(6).tolist(), "n_cells": counted, "alpha": alpha}


def _groups(cells: list[dict[str, Any]], kinds: dict[str, bool | None], baseline: str, alpha: float,
            higher: bool = True) -> dict[str, Any]:
    """Multimodal minus unimodal strategies (the baseline left out): per cell the difference of
    the group means of AUBC, paired by seed; across cells a Wilcoxon test over the cells."""
    multi = sorted(s for s, k in kinds.items() if k is True and s != baseline)
    uni = sorted(s for s, k in kinds.items() if k is False and s != baseline)
    per_cell = []
    for c in cells:
        areas = {r["strategy"]: r["_aubc"] for r in c["rows"]}
        seeds = sorted(set.intersection(*[set(areas[s]) for s in multi + uni if s in areas])) \
            if multi and uni and any(s in areas for s in multi) and any(s in areas for s in uni) else []
        m = [np.mean([areas[s][k] for s in multi if s in areas]) for k in seeds]
        u = [np.mean([areas[s][k] for s in uni if s in areas]) for k in seeds]
        comp = stats.paired_comparison(np.array(m), np.array(u), confidence=1 - alpha) if seeds else None
        per_cell.append({"cell": c["label"], "difference": comp})
    adjusted = stats.holm([p["difference"]["p"] if p["difference"] else None for p in per_cell], alpha)
    for p, adj in zip(per_cell, adjusted):
        if p["difference"] is not None:
            p["difference"]["p_holm"] = adj
            p["difference"]["verdict"] = stats.verdict(p["difference"], adj, alpha, higher)
    means = [p["difference"]["mean"] for p in per_cell if p["difference"] and p["difference"]["n"] > 0]
    overall: dict[str, Any] = {"n_cells": len(means), "mean": float(np.mean(means)) if means else None, "p": None,
                               "test": "Wilcoxon signed-rank over cells"}
    if len(means) >= 2 and any(v != 0 for v in means):
        from scipy.stats import wilcoxon

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            overall["p"] = float(wilcoxon(means).pvalue)
        overall["low"], overall["high"] = stats.bootstrap_interval(np.array(means), confidence=1 - alpha)
        overall["verdict"] = stats.verdict({"mean": overall["mean"]}, overall["p"], alpha, higher)
    else:
        overall["test"] = "no test: fewer than two cells with both groups"
    return {"multimodal": multi, "unimodal": uni, "cells": per_cell, "overall": overall}


def _utilization_across(boot: _Bootstrap, cells: list[dict[str, Any]], strategies: list[str]) -> list[dict[str, Any]]:
    """Per strategy, the final imbalance degree averaged over the cells it ran in, with an interval
    over those cells."""
    out = []
    for s in strategies:
        values = [r["imbalance"]["mean"] for c in cells for r in c["utilization"]["rows"]
                  if r["strategy"] == s and r.get("imbalance")]
        if values:
            out.append({"strategy": s, "imbalance": boot.interval(values)})
    return out


def _severity(cells: list[dict[str, Any]], strategies: list[str], baseline: str) -> list[dict[str, Any]]:
    """For every dataset parameter that takes several values among one dataset's cells (the other
    parameters held fixed): each strategy's AUBC difference to the baseline against the value."""
    out = []
    by_dataset: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for c in cells:
        by_dataset[c["dataset"]].append(c)
    for dataset, group in by_dataset.items():
        keys = sorted({k for c in group for k in c["params"]})
        for key in keys:
            series: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for c in group:
                if key not in c["params"]:
                    continue
                fixed = json.dumps({k: v for k, v in c["params"].items() if k != key}, sort_keys=True)
                series[fixed].append(c)
            for fixed, members in series.items():
                values = [c["params"][key] for c in members]
                if len({json.dumps(v, sort_keys=True) for v in values}) < 2:
                    continue
                axis = _severity_axis(values)
                numeric = axis is not None
                order = {id(c): (axis[i] if numeric else _value_text(values[i])) for i, c in enumerate(members)}
                members = sorted(members, key=lambda c: order[id(c)])
                lines = {}
                for s in strategies:
                    if s == baseline:
                        continue
                    points = []
                    for c in members:
                        row = next((r for r in c["rows"] if r["strategy"] == s), None)
                        d = row["difference"] if row else None
                        if d is not None:
                            points.append({"value": order[id(c)] if numeric else c["params"][key],
                                           "mean": d["mean"], "low": d["low"],
                                           "high": d["high"], "verdict": d.get("verdict")})
                    if points:
                        lines[s] = points
                if lines:
                    out.append({"dataset": dataset, "param": key, "fixed": json.loads(fixed), "numeric": numeric,
                                "values": [order[id(c)] if numeric else c["params"][key] for c in members],
                                "series": lines})
    return out


def _severity_axis(values: list[Any]) -> list[float] | None:
    """Numbers to plot ``values`` against: the values themselves when they are numbers, or the one
    element that varies when they are equal-length lists of numbers (a per-modality parameter such
    as ``missing_rate: [0.0, r]``); None when the values are not numeric."""
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if all(number(v) for v in values):
        return [float(v) for v in values]
    if not all(isinstance(v, list) and v and all(number(x) for x in v) for v in values):
        return None
    if len({len(v) for v in values}) != 1:
        return None
    varying = [i for i in range(len(values[0])) if len({v[i] for v in values}) > 1]
    return [float(v[varying[0]]) for v in values] if len(varying) == 1 else None


# -- findings ---------------------------------------------------------------------------------------
def _num(v: float) -> str:
    return f"{v:.3f}"


def _findings(report: dict[str, Any]) -> list[str]:
    """Sentences that each restate a test result; nothing that the tests do not support."""
    alpha, base = report["alpha"], report["baseline"]
    out = []
    total, done = sum(report["runs"].values()), report["runs"]["finished"]
    if done < total:
        out.append(f"{total - done} of {total} runs are not finished (still running, pending or failed); "
                   "every number below uses the finished runs only.")
    for c in report["cells"]:
        if c["note"]:
            out.append(f"On {c['label']}: {c['note']}.")
            continue
        tested = [r for r in c["rows"] if r["difference"] and r["difference"]["p_holm"] is not None]
        wins = [r for r in tested if r["difference"]["verdict"] == "better"]
        losses = [r for r in tested if r["difference"]["verdict"] == "worse"]

        def say(rows, word):
            # "worse by 0.03 [0.02, 0.04]": the size of the difference and its interval, both positive
            def size(d):
                sign = 1.0 if d["mean"] > 0 else -1.0
                low, high = sorted((sign * d["low"], sign * d["high"]))
                return f"{_num(sign * d['mean'])} AUBC [{_num(low)}, {_num(high)}]"

            return "; ".join(f"{r['strategy']} is {word} than {base} by {size(r['difference'])} "
                             f"(Holm-adjusted p = {r['difference']['p_holm']:.3g})" for r in rows)

        head = f"On {c['label']} ({c['seeds']} seeds, {len(tested)} comparisons with {base}, alpha {alpha}, Holm)"
        if not wins and not losses:
            out.append(f"{head}: no strategy differs detectably from {base}.")
        else:
            parts = []
            if wins:
                parts.append(say(wins, "better"))
            if losses:
                parts.append(say(losses, "worse"))
            rest = len(tested) - len(wins) - len(losses)
            tail = f"; the other {rest} show no detectable difference" if rest else ""
            out.append(f"{head}: " + "; ".join(parts) + tail + ".")
        if c["missing"]:
            out.append(f"On {c['label']}: {sum(len(m['seeds']) for m in c['missing'])} run(s) are not finished "
                       "and are left out.")
    ranks = report["across"]["ranks"]
    fr = ranks["friedman"]
    if fr["p"] is None:
        out.append(f"Across cells: {fr['test']}.")
    else:
        best = min(ranks["mean_ranks"], key=ranks["mean_ranks"].get)
        if fr["p"] < alpha:
            cd = ranks["critical_difference"]
            out.append(f"Across {fr['blocks']} cells the strategies' AUBC ranks differ (Friedman chi2 = "
                       f"{fr['statistic']:.2f}, p = {fr['p']:.3g}); the best mean rank is {best}'s "
                       f"({ranks['mean_ranks'][best]:.2f}); mean ranks further apart than {cd:.2f} differ "
                       f"(Nemenyi, alpha {alpha}).")
        else:
            out.append(f"Across {fr['blocks']} cells the Friedman test detects no difference between the "
                       f"strategies' AUBC ranks (chi2 = {fr['statistic']:.2f}, p = {fr['p']:.3g}); the mean ranks "
                       "are not evidence of an ordering.")
    g = report["across"]["groups"]
    o = g["overall"]
    if o.get("p") is not None:
        word = ("higher" if o["mean"] > 0 else "lower") if o["verdict"] in ("better", "worse") else None
        if word:
            out.append(f"Multimodal strategies have a {word} AUBC than unimodal ones across {o['n_cells']} cells "
                       f"(mean difference of group means {o['mean']:+.3f}, Wilcoxon p = {o['p']:.3g}).")
        else:
            out.append(f"Across {o['n_cells']} cells, no detectable difference between multimodal and unimodal "
                       f"strategies (mean difference of group means {o['mean']:+.3f}, Wilcoxon p = {o['p']:.3g}).")
    elif g["multimodal"] and g["unimodal"]:
        out.append(f"Multimodal against unimodal strategies: {o['test']}.")
    return out


# -- the report ---------------------------------------------------------------------------------------
def build_report(store, experiment_id: int, baseline: str = "random", alpha: float = stats.ALPHA,
                 pool_info: bool = True, metric: str = "accuracy", higher_is_better: bool | None = None) -> dict[str, Any]:
    """Every number of the report of experiment ``experiment_id`` (a JSON-able dict).

    metric: the metric path whose AUBC the report compares (curves, tests, ranks, penalty); its
    direction ``higher_is_better`` defaults to the registered metric's. Runs that do not record
    it in every round are left out as unfinished. ``final_accuracy`` is always test accuracy.
    Raises :class:`MmalError` when the experiment has no runs or ``baseline`` is not one of
    its strategy labels.
    """
    from ..plugins import higher_is_better as direction

    higher = direction(metric) if higher_is_better is None else bool(higher_is_better)
    exp = store.experiment_row(experiment_id)
    cells, names = load_cells(store, experiment_id)
    if not cells:
        raise MmalError(f"--experiment {exp['name']}: the experiment has no runs yet")
    order = list(dict.fromkeys(names))
    if baseline not in names:
        raise MmalError(f"--baseline {baseline}: not a strategy of experiment '{exp['name']}'"
                        f"{did_you_mean(baseline, order)}; its strategies: {', '.join(order)}")
    configured = exp["config"].get("seeds") if isinstance(exp["config"], dict) else None
    all_seeds = sorted({r.seed for c in cells for r in c.runs})
    expected = sorted(configured) if isinstance(configured, list) and configured else all_seeds
    kinds = {s: is_multimodal(names[s]) for s in order}
    boot = _Bootstrap()
    cell_reports = [_cell_report(boot, c, order, baseline, alpha, expected, pool_info, metric, higher) for c in cells]
    boot.resolve()
    report: dict[str, Any] = {
        "experiment": {"id": exp["id"], "name": exp["name"], "config_hash": exp["config_hash"]},
        "baseline": baseline, "alpha": alpha, "confidence": stats.CONFIDENCE,
        "metric": metric, "higher_is_better": higher,
        "strategies": [{"label": s, "name": names[s], "multimodal": kinds[s]} for s in order],
        "seeds": expected,
        "runs": {status: sum(1 for c in cells for r in c.runs if r.status == status)
                 for status in ("finished", "running", "pending", "failed")},
        "methods": {
            "aubc": ("normalised area under the test-accuracy budget curve (trapezoid area / labeled range)"
                     if metric == "accuracy" else
                     f"normalised area under the budget curve of {metric} (trapezoid area / labeled range); "
                     f"{'higher' if higher else 'lower'} is better"),
            "intervals": f"{stats.CONFIDENCE:.0%} percentile bootstrap of the mean over seeds "
                         f"(scipy.stats.bootstrap, {stats.N_RESAMPLES} resamples)",
            "paired_test": "two-sided paired t-test over the seeds both strategies finished (scipy.stats.ttest_rel) "
                           f"with its {1 - alpha:.0%} interval; with few seeds the exact Wilcoxon signed-rank test "
                           "cannot reach small p-values (never below 2/2^n), so its p-value is given as a check only",
            "correction": "Holm step-down over the strategies compared with the baseline in one cell "
                          "(statsmodels multipletests)",
            "ranks": "Friedman test over the cells every strategy finished (scipy.stats.friedmanchisquare), "
                     "Nemenyi post-hoc test and critical difference (scikit-posthocs; Demsar 2006)",
            "penalty": "Ash et al. 2020: per cell and round, a paired t-test over seeds; entry (i, j) gains "
                       "1/rounds each time i is significantly better than j, so it counts cells' worth of rounds",
            "groups": "per cell, mean AUBC of the multimodal strategies minus that of the unimodal ones, paired by "
                      "seed (baseline left out); across cells a Wilcoxon signed-rank test over the cells",
        },
    }
    strategies_all = order
    report["cells"] = cell_reports
    report["across"] = {
        "ranks": _ranks_across(cell_reports, [s for s in order if any(s in c["strategies"] for c in cell_reports)],
                               alpha, higher),
        "penalty": _penalty(cell_reports, strategies_all, alpha, higher),
        "groups": _groups(cell_reports, kinds, baseline, alpha, higher),
        "utilization": _utilization_across(boot, cell_reports, strategies_all),
        "severity": _severity(cell_reports, strategies_all, baseline),
    }
    boot.resolve()
    report["findings"] = _findings(report)
    for c in cell_reports:  # working data, not part of the report
        c.pop("_accuracy")
        for r in c["rows"]:
            r["aubc_per_seed"] = {str(k): v for k, v in sorted(r.pop("_aubc").items())}
    return report
