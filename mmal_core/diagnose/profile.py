"""``mmal diagnose``: the pitfall profile of a multimodal dataset and what the study says to do.

:func:`diagnose` loads a registered dataset (a cached one reads its HDF5 features) and
measures, with intervals over ``seeds`` where it samples:

``missing``
    Per modality the share of samples missing it in pool and test; whether missingness
    depends on the class (Pearson's chi-square test of independence on the class x
    present/missing table, ``scipy.stats.chi2_contingency``, with Cramér's V from
    ``scipy.stats.contingency.association``) and on each other modality's presence (the same
    test on the 2 x 2 table of the two presence indicators).
``difficulty``
    Per modality the learning curve of a linear probe (standardised features, scikit-learn's
    ``LogisticRegression``) and of the default model's unimodal head (``fusion-mlp``) at a
    few label budgets, geometrically spaced up to the whole pool; the labels each modality
    needs to reach ``share`` of its full-pool gain over chance; the hard modality (smallest
    area under its probe learning curve, on a log-label axis).
``interaction``
    A partial-information decomposition of the label information into redundant, unique
    and synergistic parts. Mutual informations are estimated from held-out cross-entropies
    of the best of two probes (linear, and the default network) after temperature scaling:
    ``I(X_S; Y) >= H(Y) - CE_S`` for any classifier (the variational bound of Barber &
    Agakov, 2003). The parts follow the minimum-mutual-information PID (Barrett, 2015):
    redundancy ``min_m I_m``, unique ``I_m - R``, synergy ``I_all - max_m I_m``. See
    docs/diagnose.md for why this approximates the PID estimators of Liang et al. (NeurIPS
    2023) and which bounds of theirs it sits between.
``reliance``
    After a small random-sampling budget, the default network's Shapley share per modality
    (:func:`mmal_core.utilization.utilization`) against the share the unimodal probes at the
    same budget predict from their accuracy above chance.
``advice``
    The cells of the shipped reference study (``mmal_core/study/pitfall_study.json``) closest to
    the profile, their strategies significantly better or worse than random, and the
    warnings the study supports, each naming its cell.
"""

from __future__ import annotations

import contextlib
import json
import math
from importlib import resources
from typing import Any, Callable

import numpy as np

from ..errors import MmalError

#: Smallest number of pool samples per class the probes need (a class with fewer is an error).
MIN_PER_CLASS = 5
#: Significance level of the missingness tests.
ALPHA = 0.05
#: Share of the full-pool gain over chance that "labels to reach" refers to.
SHARE = 0.9
#: Learning-curve points (label budgets, the last one the whole pool).
N_BUDGETS = 5
#: The default model as diagnose trains it: fusion-mlp's defaults, but at most this many
#: optimiser steps per fit (the full pool at 40 epochs would take thousands of steps) ...
MAX_STEPS = 100
#: ... except on the whole pool, whose fit also estimates the joint information: there it
#: gets more steps (synergy mixed with other structure needs about 600 to be learnt) and
#: batches of 128 ...
MAX_STEPS_FULL = 800
BATCH_FULL = 128
#: ... and a pool of at least this many samples (ten batches of 256, so that 400 steps stay
#: within 40 epochs) takes batches of twice the size and half the steps: the same passes
#: over the pool, and the same interaction shares, in 0.8 times the time.
LARGE_POOL = 2560
#: A modality whose Shapley share falls this far below its probe share is "under-used".
UNDERUSE = 0.1
#: Dominant interaction: the part holding at least this share of the joint information.
DOMINANT_SHARE = 0.5
PARTS = ("redundant", "unique", "synergy")
#: Advice: the study's warnings about incomplete samples apply from this missing share on ...
MISSING_RELEVANT = 0.05
#: ... and a closest cell farther than this (profile distance) is flagged as weak evidence.
FAR_CELL = 0.4


# --- small helpers -------------------------------------------------------------------------
def _interval(values: list[float], level: float = 0.95) -> dict[str, Any]:
    """Mean and a t-interval over seeds (None bounds with one seed)."""
    from scipy import stats

    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return {"mean": None, "low": None, "high": None, "n": 0}
    mean = float(v.mean())
    if v.size < 2 or float(v.std(ddof=1)) == 0.0:
        low = high = mean if v.size >= 2 else None
        return {"mean": mean, "low": low, "high": high, "n": int(v.size)}
    low, high = stats.t.interval(level, v.size - 1, loc=mean, scale=stats.sem(v))
    return {"mean": mean, "low": float(low), "high": float(high), "n": int(v.size)}


def _entropy_bits(labels: np.ndarray, n_classes: int) -> float:
    from scipy import stats

    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    return float(stats.entropy(counts, base=2)) if counts.sum() else 0.0


def _chance(labels: np.ndarray, n_classes: int) -> float:
    """Accuracy of always predicting the most frequent class."""
    counts = np.bincount(labels, minlength=n_classes)
    return float(counts.max() / max(counts.sum(), 1))


def _noise_floor(chance: float, n: int) -> float:
    """Two binomial standard errors of a chance-level accuracy on ``n`` test samples."""
    return 2.0 * math.sqrt(chance * (1.0 - chance) / max(n, 1))


def _calibrated_ce_bits(probs: np.ndarray, labels: np.ndarray) -> float:
    """Held-out cross-entropy (bits) after temperature scaling, cross-fitted on two halves.

    The temperature of each half is fitted on the other half (Guo et al., 2017), so an
    over-confident probe is not charged for its confidence and no half sees its own fit.
    """
    from scipy.optimize import minimize_scalar

    logp = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, None))
    n = len(labels)
    if n < 4:
        return float(-np.mean(logp[np.arange(n), labels]) / math.log(2)) if n else float("nan")
    halves = [np.arange(n) % 2 == 0, np.arange(n) % 2 == 1]

    def nll(inv_t: float, rows: np.ndarray) -> float:
        z = logp[rows] * inv_t
        z -= z.max(axis=1, keepdims=True)
        lse = np.log(np.exp(z).sum(axis=1))
        return float(np.mean(lse - z[np.arange(len(z)), labels[rows]]))

    total = 0.0
    for fit_rows, eval_rows in ((halves[0], halves[1]), (halves[1], halves[0])):
        best = minimize_scalar(lambda a: nll(a, fit_rows), bounds=(0.0, 10.0), method="bounded")
        total += nll(best.x, eval_rows) * eval_rows.sum()
    return total / n / math.log(2)


def _lr_probe(x_train, y_train, x_test, n_classes: int) -> np.ndarray:
    """(n_test, C) probabilities of a logistic regression on standardised features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    classes = np.unique(y_train)
    out = np.full((len(x_test), n_classes), 1.0 / n_classes)
    if len(classes) < 2 or len(x_test) == 0:
        if len(classes) == 1:
            out[:] = 0.0
            out[:, classes[0]] = 1.0
        return out
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300))
    probe.fit(np.asarray(x_train, dtype=np.float64), y_train)
    out[:] = 0.0
    out[:, classes] = probe.predict_proba(np.asarray(x_test, dtype=np.float64))
    return out


def _budgets(n_pool: int, n_classes: int, reliance: int) -> list[int]:
    """Geometric label budgets from a few per class up to the whole pool; the inner point
    closest to ``reliance`` (on the log axis) is replaced by it, so no extra model is trained."""
    first = min(n_pool, max(4 * n_classes, 20))
    grid = [int(round(b)) for b in np.geomspace(first, n_pool, N_BUDGETS)] if n_pool > first else [n_pool]
    if reliance not in grid:
        inner = range(1, len(grid) - 1)
        if inner:
            i = min(inner, key=lambda k: abs(math.log(grid[k]) - math.log(reliance)))
            grid[i] = reliance
        else:
            grid.append(reliance)
    return sorted(set(grid))


def _label_order(labels: np.ndarray, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """A random order of the pool with one sample of every class first (nested budgets)."""
    order = rng.permutation(len(labels))
    first = [order[labels[order] == c][0] for c in range(n_classes) if np.any(labels == c)]
    rest = order[~np.isin(order, first)]
    return np.concatenate([np.asarray(first, dtype=np.int64), rest])


@contextlib.contextmanager
def _one_thread():
    """Torch and the BLAS / OpenMP libraries (numpy's, scipy's, scikit-learn's) on one thread.

    Their results depend on the thread count (a product split over two threads sums in
    another order), so one fixed count makes a seed give the same report on every CPU
    whatever the caller or ``OMP_NUM_THREADS`` set. One is also the fastest count here:
    diagnose's networks and probes are too small to gain from more, and on a busy machine
    threads waiting for each other made a diagnosis several times slower.
    """
    import torch
    import torch._dynamo  # noqa: F401  (the optimisers load it anyway: its start-up scans the
    #                       loaded modules, so before scikit-learn's and scipy's it is quicker)
    import sklearn.linear_model  # noqa: F401  (loads the OpenMP runtime the limit must cover)
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(before)


# --- validation ----------------------------------------------------------------------------
def load_checked(name: str, params: dict[str, Any], seed: int):
    """Load ``name`` for ``seed`` and refuse datasets diagnose cannot measure (one line)."""
    from ..plugins import load_dataset

    ds = load_dataset(name, seed=seed, **params)
    names = ds.modality_names
    if len(names) < 2:
        raise MmalError(
            f"dataset '{name}': diagnose compares modalities and needs at least two, the dataset has "
            f"{len(names)} ({', '.join(names)})"
        )
    pool = ds.train
    counts = np.bincount(pool.labels, minlength=ds.n_classes)
    if np.count_nonzero(counts) < 2:
        raise MmalError(f"dataset '{name}': the pool has {np.count_nonzero(counts)} class(es), diagnose needs at least two")
    few = [c for c in range(ds.n_classes) if counts[c] < MIN_PER_CLASS]
    if few:
        c = few[0]
        raise MmalError(
            f"dataset '{name}': class {c} has {counts[c]} sample(s) in the pool, the probes need at least "
            f"{MIN_PER_CLASS} per class ({len(few)} class(es) too small)"
        )
    return ds


# --- missing modalities ----------------------------------------------------------------------
def _independence(table: np.ndarray) -> tuple[float, float]:
    """(p-value, Cramér's V) of a contingency table; (1, 0) when a margin is constant."""
    from scipy.stats import chi2_contingency
    from scipy.stats.contingency import association

    table = np.asarray(table, dtype=np.int64)
    table = table[table.sum(axis=1) > 0][:, table.sum(axis=0) > 0]
    if table.shape[0] < 2 or table.shape[1] < 2:
        return 1.0, 0.0
    p = float(chi2_contingency(table, correction=False).pvalue)
    return p, float(association(table, method="cramer", correction=False))


def missing_profile(ds, alpha: float = ALPHA) -> dict[str, Any]:
    """Per modality: missing shares, class dependence and dependence on the other modalities."""
    names = ds.modality_names
    mask = np.concatenate([ds.train.mask, ds.test.mask])
    labels = np.concatenate([ds.train.labels, ds.test.labels])
    out: dict[str, Any] = {}
    for j, m in enumerate(names):
        missing = ~mask[:, j]
        table = np.stack([np.bincount(labels[~missing], minlength=ds.n_classes),
                          np.bincount(labels[missing], minlength=ds.n_classes)], axis=1)
        p, v = _independence(table)
        per_class = {
            str(c): float(missing[labels == c].mean()) for c in range(ds.n_classes) if np.any(labels == c)
        }
        others: dict[str, Any] = {}
        for k, other in enumerate(names):
            if k == j:
                continue
            both = np.zeros((2, 2), np.int64)
            np.add.at(both, (missing.astype(int), (~mask[:, k]).astype(int)), 1)
            pk, vk = _independence(both)
            others[other] = {"p_value": pk, "cramers_v": vk, "dependent": bool(pk < alpha)}
        out[m] = {
            "share_missing_pool": float(np.mean(~ds.train.mask[:, j])),
            "share_missing_test": float(np.mean(~ds.test.mask[:, j])),
            "class_dependent": bool(p < alpha),
            "p_value": p,
            "cramers_v": v,
            "missing_by_class": per_class,
            "depends_on_presence_of": others,
        }
    return out


# --- one seed's measurements ---------------------------------------------------------------------
def _net(ds):
    from ..builtin.fusion import FusionMLP

    model = FusionMLP(device="cpu")
    model.setup(ds.modalities, ds.n_classes)
    return model


def _fit_net(model, ds, labeled: np.ndarray, seed: int) -> None:
    full = len(labeled) == len(ds.train)
    steps = MAX_STEPS_FULL if full else MAX_STEPS
    model.batch_size = BATCH_FULL if full else 64
    if full and len(labeled) >= LARGE_POOL:
        steps, model.batch_size = steps // 2, 2 * BATCH_FULL
    batches = -(-len(labeled) // model.batch_size)
    model.epochs = max(1, min(40, -(-steps // batches)))
    model.min_steps = min(100, steps)
    model.fit(ds.train, labeled, seed)


def _features(split, names: list[str], rows=None) -> np.ndarray:
    """Zero-filled features of every modality plus the mask, side by side (joint probe input)."""
    rows = np.arange(len(split)) if rows is None else rows
    parts = [np.asarray(split.features[m][rows], dtype=np.float64) for m in names]
    return np.hstack(parts + [split.mask[rows].astype(np.float64)])


def measure_seed(ds, seed: int, reliance_budget: int) -> dict[str, Any]:
    """Learning curves, information estimates and reliance for one seed (plain floats)."""
    from ..utilization import utilization

    names = ds.modality_names
    C = ds.n_classes
    pool, test = ds.train, ds.test
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 1606]))
    order = _label_order(pool.labels, C, rng)
    budgets = _budgets(len(pool), C, reliance_budget)
    yt = test.labels
    complete = test.mask.all(axis=1)
    info_rows = complete if complete.sum() >= 4 * C else np.ones(len(test), bool)
    curves: dict[str, Any] = {"budgets": budgets, "probe": {m: [] for m in names}, "head": {m: [] for m in names}}
    info: dict[str, Any] = {}
    reliance: dict[str, Any] = {}
    net = _net(ds)
    for b in budgets:
        labeled = np.sort(order[:b])
        full = b == len(pool)
        probe_probs = {}
        for j, m in enumerate(names):
            have = labeled[pool.mask[labeled, j]]
            present = test.mask[:, j]
            x_test = np.asarray(test.features[m], dtype=np.float64)
            probs = _lr_probe(np.asarray(pool.features[m][have]), pool.labels[have], x_test, C)
            probe_probs[m] = probs
            acc = float(np.mean(probs[present].argmax(1) == yt[present])) if present.any() else float("nan")
            curves["probe"][m].append(acc)
        _fit_net(net, ds, labeled, seed)
        out = net.predict(test, want={"probs", "modality_probs"})
        for j, m in enumerate(names):
            present = test.mask[:, j]
            acc = float(np.mean(out["modality_probs"][m][present].argmax(1) == yt[present])) if present.any() else float("nan")
            curves["head"][m].append(acc)
        if b == reliance_budget:
            util = utilization(net, ds, labeled)
            chance = _chance(yt, C)
            floor = _noise_floor(chance, len(yt))
            gain = {m: max(curves["probe"][m][-1] - chance - floor, 0.0) for m in names}
            total = sum(gain.values())
            expected = {m: (g / total if total > 0 else 1.0 / len(names)) for m, g in gain.items()}
            reliance = {
                "budget": int(b),
                "shapley_share": dict(util["contribution"]),
                "shapley_accuracy": dict(util["shapley_accuracy"]),
                "probe_share": expected,
                "probe_accuracy": {m: curves["probe"][m][-1] for m in names},
                "fused_accuracy": float(np.mean(out["probs"].argmax(1) == yt)),
                "imbalance": float(util["imbalance"]),
            }
        if full:
            rows = info_rows
            y_rows = yt[rows]
            h = _entropy_bits(y_rows, C)
            joint_lr = _lr_probe(_features(pool, names, labeled), pool.labels[labeled], _features(test, names), C)
            single = {}
            for m in names:
                ce = min(_calibrated_ce_bits(probe_probs[m][rows], y_rows),
                         _calibrated_ce_bits(out["modality_probs"][m][rows], y_rows))
                single[m] = max(h - ce, 0.0)
            ce_joint = min(_calibrated_ce_bits(joint_lr[rows], y_rows), _calibrated_ce_bits(out["probs"][rows], y_rows))
            joint = max(h - ce_joint, max(single.values()))
            info = {"label_entropy": h, "single": single, "joint": joint}
    return {"curves": curves, "info": info, "reliance": reliance}


# --- summaries over seeds --------------------------------------------------------------------
def decompose(single: dict[str, float], joint: float) -> dict[str, Any]:
    """Minimum-mutual-information PID of ``joint`` bits into redundant, unique, synergy parts."""
    redundant = min(single.values())
    unique = {m: v - redundant for m, v in single.items()}
    synergy = max(joint - max(single.values()), 0.0)
    return {"redundant": redundant, "unique": unique, "synergy": synergy}


def _interaction(seeds: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    per_seed = []
    for s in seeds:
        parts = decompose(s["info"]["single"], s["info"]["joint"])
        total = parts["redundant"] + sum(parts["unique"].values()) + parts["synergy"]
        shares = {
            "redundant": parts["redundant"] / total if total > 0 else 0.0,
            "unique": sum(parts["unique"].values()) / total if total > 0 else 0.0,
            "synergy": parts["synergy"] / total if total > 0 else 0.0,
        }
        per_seed.append((s["info"], parts, shares))
    shares = {k: _interval([p[2][k] for p in per_seed]) for k in PARTS}
    best = max(PARTS, key=lambda k: shares[k]["mean"] or 0.0)
    dominant = best if (shares[best]["mean"] or 0.0) >= DOMINANT_SHARE else "mixture"
    return {
        "dominant": dominant,
        "shares": shares,
        "bits": {
            "label_entropy": _interval([p[0]["label_entropy"] for p in per_seed]),
            "joint": _interval([p[0]["joint"] for p in per_seed]),
            "single": {m: _interval([p[0]["single"][m] for p in per_seed]) for m in names},
            "redundant": _interval([p[1]["redundant"] for p in per_seed]),
            "unique": {m: _interval([p[1]["unique"][m] for p in per_seed]) for m in names},
            "synergy": _interval([p[1]["synergy"] for p in per_seed]),
            # Every PID obeys S - R = I(all) - sum I_m (two modalities), so S >= this:
            "synergy_lower_bound": _interval(
                [max(p[0]["joint"] - sum(p[0]["single"].values()), 0.0) for p in per_seed]
            ),
        },
        "method": "minimum-mutual-information PID (Barrett 2015) of probe-based information estimates; "
        "see docs/diagnose.md (Liang et al., NeurIPS 2023)",
    }


def _labels_to_share(budgets: list[int], curve: list[float], chance: float, share: float, floor: float) -> int | None:
    """Smallest budget (linear interpolation on the log-label axis) reaching ``share`` of the
    full-pool gain over chance; None when that gain is within ``floor`` (no label information)."""
    target_gain = curve[-1] - chance
    if not np.isfinite(target_gain) or target_gain <= floor:
        return None
    target = chance + share * target_gain
    for i, acc in enumerate(curve):
        if acc >= target:
            if i == 0:
                return int(budgets[0])
            lo, hi = np.log(budgets[i - 1]), np.log(budgets[i])
            t = (target - curve[i - 1]) / max(acc - curve[i - 1], 1e-12)
            return int(math.ceil(math.exp(lo + t * (hi - lo))))
    return int(budgets[-1])


def _log_area(budgets: list[int], curve: list[float]) -> float:
    x = np.log(np.asarray(budgets, dtype=np.float64))
    y = np.asarray(curve, dtype=np.float64)
    if len(x) < 2:
        return float(y.mean())
    return float(np.trapezoid(y, x) / (x[-1] - x[0]))


def _difficulty(seeds: list[dict[str, Any]], names: list[str], chance: float, share: float, n_test: int) -> dict[str, Any]:
    budgets = seeds[0]["curves"]["budgets"]
    floor = _noise_floor(chance, n_test)
    per_modality: dict[str, Any] = {}
    for m in names:
        probe = [s["curves"]["probe"][m] for s in seeds]
        head = [s["curves"]["head"][m] for s in seeds]
        per_modality[m] = {
            "probe_curve": [_interval([c[i] for c in probe]) for i in range(len(budgets))],
            "head_curve": [_interval([c[i] for c in head]) for i in range(len(budgets))],
            "full_accuracy": _interval([c[-1] for c in probe]),
            "probe_area": _interval([_log_area(budgets, c) for c in probe]),
            "labels_to_share": _interval(
                [v for v in (_labels_to_share(budgets, c, chance, share, floor) for c in probe) if v is not None]
            ),
        }
    areas = {m: per_modality[m]["probe_area"]["mean"] for m in names}
    hard = min(names, key=lambda m: areas[m])
    easy = max(names, key=lambda m: areas[m])
    gaps = [_log_area(budgets, s["curves"]["probe"][easy]) - _log_area(budgets, s["curves"]["probe"][hard]) for s in seeds]
    gap = _interval(gaps)
    clear = gap["mean"] > floor / 2 and (gap["low"] is None or gap["low"] > 0)
    return {
        "budgets": budgets,
        "share": share,
        "chance": chance,
        "modalities": per_modality,
        "hard_modality": hard,
        "easy_modality": easy,
        "area_gap": gap,
        "clear": bool(clear),
    }


def _reliance(seeds: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    rel = [s["reliance"] for s in seeds]
    per_modality = {}
    for m in names:
        gap = _interval([r["shapley_share"][m] - r["probe_share"][m] for r in rel])
        per_modality[m] = {
            "shapley_share": _interval([r["shapley_share"][m] for r in rel]),
            "probe_share": _interval([r["probe_share"][m] for r in rel]),
            "probe_accuracy": _interval([r["probe_accuracy"][m] for r in rel]),
            "gap": gap,
            "under_used": bool(gap["mean"] < -UNDERUSE and (gap["high"] is None or gap["high"] < 0)),
        }
    return {
        "budget": rel[0]["budget"],
        "model": f"fusion-mlp (defaults, at most {MAX_STEPS} optimiser steps)",
        "fused_accuracy": _interval([r["fused_accuracy"] for r in rel]),
        "imbalance": _interval([r["imbalance"] for r in rel]),
        "modalities": per_modality,
        "under_used": [m for m in names if per_modality[m]["under_used"]],
    }


# --- advice ------------------------------------------------------------------------------------
def load_study() -> dict[str, Any]:
    """The shipped summary of the reference study (package data)."""
    try:
        text = resources.files("mmal_core").joinpath("study", "pitfall_study.json").read_text(encoding="utf-8")
    except (FileNotFoundError, OSError) as err:  # a broken install
        raise MmalError(f"mmal_core/study/pitfall_study.json: the shipped study summary is missing ({err})") from None
    return json.loads(text)


def profile_vector(report: dict[str, Any]) -> dict[str, float]:
    """The few numbers that place a profile among the study's cells (each in [0, 1])."""
    missing = report["missing"]
    diff = report["difficulty"]
    shares = report["interaction"]["shares"]
    full = [diff["modalities"][m]["full_accuracy"]["mean"] for m in diff["modalities"]]
    chance = diff["chance"]
    gains = [max(a - chance, 0.0) for a in full]
    return {
        "missing": max(max(v["share_missing_pool"], v["share_missing_test"]) for v in missing.values()),
        "class_dependence": max((v["cramers_v"] if v["class_dependent"] else 0.0) for v in missing.values()),
        "difficulty_gap": (max(gains) - min(gains)) / max(max(gains), 1e-9),
        "redundant": shares["redundant"]["mean"],
        "unique": shares["unique"]["mean"],
        "synergy": shares["synergy"]["mean"],
    }


def advise(report: dict[str, Any], study: dict[str, Any] | None = None, n_cells: int = 2) -> dict[str, Any]:
    """Closest study cells to ``report``'s profile, their significant strategies and warnings."""
    study = load_study() if study is None else study
    profile = profile_vector(report)
    keys = list(profile)
    ranked = sorted(
        study["cells"],
        key=lambda c: float(np.linalg.norm([profile[k] - c["profile"].get(k, 0.0) for k in keys])),
    )
    cells = []
    for cell in ranked[:n_cells]:
        distance = float(np.linalg.norm([profile[k] - cell["profile"].get(k, 0.0) for k in keys]))
        cells.append({
            "cell": cell["cell"],
            "distance": distance,
            "profile": cell["profile"],
            "better_than_random": [s for s in cell["strategies"] if s["significant"] and s["diff"] > 0],
            "worse_than_random": [s for s in cell["strategies"] if s["significant"] and s["diff"] < 0],
            "warnings": cell.get("warnings", []),
        })
    # Warnings about incomplete samples only matter where samples are incomplete.
    has_missing = profile["missing"] >= MISSING_RELEVANT
    warnings = [
        f"{w['text']} [cell {c['cell']}]"
        for c in cells
        for w in c["warnings"]
        if w.get("kind") != "missing" or has_missing
    ]
    note = ("Evidence from the named cells of the reference study (synthetic data, small budgets); "
            "it describes what happened there, not a guarantee for this dataset.")
    if cells and cells[0]["distance"] > FAR_CELL:
        note += (f" No cell of the study is close to this profile (nearest at distance {cells[0]['distance']:.2f}): "
                 "weak evidence.")
    return {"study": study["study"], "profile": profile, "closest_cells": cells, "warnings": warnings, "note": note}


# --- the whole diagnosis -------------------------------------------------------------------------
def diagnose(
    name: str,
    params: dict[str, Any] | None = None,
    seeds: int = 3,
    *,
    first_seed: int = 0,
    share: float = SHARE,
    alpha: float = ALPHA,
    study: dict[str, Any] | None = None,
    with_advice: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The full report (JSON-ready dict) for dataset ``name`` with ``params``.

    The sampled measurements are repeated for seeds ``first_seed .. first_seed + seeds - 1``
    (each seed loads the dataset with that seed: a generator draws new data, a real dataset
    is the same) and reported as mean and 95% t-interval; the missingness tests use the
    first seed's dataset.
    """
    from ..extras import require_extra

    require_extra("diagnose", what="mmal diagnose")
    params = dict(params or {})
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise MmalError(f"--seeds: expected a positive integer, got {seeds!r}")
    say = progress or (lambda _msg: None)
    with _one_thread():
        return _diagnose(name, params, seeds, first_seed, share, alpha, study, with_advice, say)


def _diagnose(name, params, seeds, first_seed, share, alpha, study, with_advice, say) -> dict[str, Any]:
    first = load_checked(name, params, first_seed)
    names = first.modality_names
    C = first.n_classes
    reliance_budget = min(len(first.train), max(10 * C, 100))
    runs = []
    for s in range(first_seed, first_seed + seeds):
        ds = first if s == first_seed else load_checked(name, params, s)
        say(f"seed {s}: probes and default model at {len(_budgets(len(ds.train), C, reliance_budget))} label budgets")
        runs.append(measure_seed(ds, s, reliance_budget))
    report: dict[str, Any] = {
        "dataset": {
            "name": name,
            "params": params,
            "modalities": {m.name: {"dim": int(m.dim), "encoder": m.encoder} for m in first.modalities},
            "n_classes": int(C),
            "n_pool": int(len(first.train)),
            "n_test": int(len(first.test)),
            "seeds": int(seeds),
            "first_seed": int(first_seed),
        },
        "missing": missing_profile(first, alpha),
        "difficulty": _difficulty(runs, names, _chance(first.test.labels, C), share, len(first.test)),
        "interaction": _interaction(runs, names),
        "reliance": _reliance(runs, names),
    }
    report["advice"] = advise(report, study) if with_advice else {}
    return report


# --- rendering ---------------------------------------------------------------------------------
FORMATS = ("table", "md", "json", "html")


def json_safe(value: Any) -> Any:
    """``value`` with NaN/inf turned into None and numpy scalars into Python ones."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else "-"
    return str(value)


def _ci(iv: dict[str, Any], digits: int = 3) -> str:
    """``mean [low, high]`` (just the mean with one seed)."""
    if iv.get("mean") is None:
        return "-"
    if iv.get("low") is None:
        return _num(iv["mean"], digits)
    return f"{_num(iv['mean'], digits)} [{_num(iv['low'], digits)}, {_num(iv['high'], digits)}]"


def sections(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The report as titled tables with notes, shared by the table, md and html formats."""
    ds = report["dataset"]
    names = list(ds["modalities"])
    params = ", ".join(f"{k}={v}" for k, v in ds["params"].items()) or "defaults"
    mods = ", ".join(f"{m}: {v['dim']} dims, {v['encoder']}" for m, v in ds["modalities"].items())
    out = [{
        "title": f"mmal diagnose: {ds['name']} ({params})",
        "notes": [
            f"{len(names)} modalities ({mods}), "
            f"{ds['n_classes']} classes, pool {ds['n_pool']}, test {ds['n_test']}; intervals: 95% t-intervals over {ds['seeds']} seed(s)."
        ],
    }]
    rows = []
    for m, v in report["missing"].items():
        deps = ", ".join(
            f"{k} (p={_num(d['p_value'], 3)}, V={_num(d['cramers_v'], 2)})" for k, d in v["depends_on_presence_of"].items() if d["dependent"]
        ) or "none"
        rows.append([m, _num(v["share_missing_pool"], 3), _num(v["share_missing_test"], 3),
                     "yes" if v["class_dependent"] else "no", _num(v["p_value"], 4), _num(v["cramers_v"], 3), deps])
    out.append({
        "title": "Missing modalities",
        "headers": ["modality", "missing (pool)", "missing (test)", "class-dependent", "chi-square p", "Cramér's V", "depends on presence of"],
        "rows": rows,
        "notes": ["Chi-square test of independence of class and missingness (pool and test together), alpha 0.05."],
    })
    diff = report["difficulty"]
    budgets = diff["budgets"]
    for kind, label in (("probe_curve", "linear probe"), ("head_curve", "fusion-mlp unimodal head")):
        out.append({
            "title": f"Difficulty: {label} accuracy by labels",
            "headers": ["modality"] + [str(b) for b in budgets],
            "rows": [[m] + [_ci(iv, 3) for iv in v[kind]] for m, v in diff["modalities"].items()],
        })
    out.append({
        "title": "Difficulty: summary",
        "headers": ["modality", "full-pool probe accuracy", "area under probe curve (log labels)", f"labels to {int(diff['share'] * 100)}% of the gain"],
        "rows": [[m, _ci(v["full_accuracy"]), _ci(v["probe_area"]), _ci(v["labels_to_share"], 0)] for m, v in diff["modalities"].items()],
        "notes": [
            f"Hard modality: {diff['hard_modality']} (area gap to {diff['easy_modality']}: {_ci(diff['area_gap'])}"
            f"{'' if diff['clear'] else '; within noise'}). Chance (majority class): {_num(diff['chance'])}."
        ],
    })
    inter = report["interaction"]
    bits = inter["bits"]
    rows = [["redundant", _ci(bits["redundant"]), _ci(inter["shares"]["redundant"])]]
    rows += [[f"unique to {m}", _ci(bits["unique"][m]), ""] for m in names]
    rows += [["unique (all)", "", _ci(inter["shares"]["unique"])], ["synergy", _ci(bits["synergy"]), _ci(inter["shares"]["synergy"])]]
    rows += [[f"I({m}; Y)", _ci(bits["single"][m]), ""] for m in names]
    rows += [["I(all; Y)", _ci(bits["joint"]), ""], ["H(Y)", _ci(bits["label_entropy"]), ""]]
    out.append({
        "title": "Interaction structure",
        "headers": ["part", "bits", "share of I(all; Y)"],
        "rows": rows,
        "notes": [f"Dominant: {inter['dominant']}. {inter['method']}."],
    })
    rel = report["reliance"]
    out.append({
        "title": f"Reliance after {rel['budget']} random labels",
        "headers": ["modality", "Shapley share (fused model)", "probe share", "gap", "probe accuracy", "under-used"],
        "rows": [[m, _ci(v["shapley_share"]), _ci(v["probe_share"]), _ci(v["gap"]), _ci(v["probe_accuracy"]), "yes" if v["under_used"] else "no"]
                 for m, v in rel["modalities"].items()],
        "notes": [f"Model: {rel['model']}; fused accuracy {_ci(rel['fused_accuracy'])}, imbalance {_ci(rel['imbalance'])}. "
                  f"Probe share: each modality's probe accuracy above chance (less two standard errors), normalised."],
    })
    adv = report.get("advice") or {}
    if adv:
        study = adv["study"]
        out.append({
            "title": "Advice from the reference study",
            "notes": [f"Study: {study['name']} ({study['seeds']} seeds; {study['source']}). {adv['note']}"],
        })
        for cell in adv["closest_cells"]:
            rows = [[s["strategy"], "better" if s["diff"] > 0 else "worse", f"{_num(s['diff'], 3)} [{_num(s['low'], 3)}, {_num(s['high'], 3)}]",
                     _num(s["p_holm"], 4)] for s in cell["better_than_random"] + cell["worse_than_random"]]
            out.append({
                "title": f"Cell {cell['cell']} (profile distance {_num(cell['distance'], 2)})",
                "headers": ["strategy", "vs random", "AUBC − random [95% CI]", "p (paired t, Holm)"],
                "rows": rows or [["(no strategy differs significantly from random here)", "", "", ""]],
            })
        if adv["warnings"]:
            out.append({"title": "Warnings the study supports", "notes": list(adv["warnings"])})
    return out


def render_markdown(report: dict[str, Any]) -> str:
    lines: list[str] = []
    for i, sec in enumerate(sections(report)):
        lines.append(("# " if i == 0 else "## ") + sec["title"])
        lines.append("")
        if sec.get("headers"):
            lines.append("| " + " | ".join(sec["headers"]) + " |")
            lines.append("|" + "---|" * len(sec["headers"]))
            lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in sec["rows"]]
            lines.append("")
        for note in sec.get("notes", []):
            lines.append(("- " if sec["title"].startswith("Warnings") else "") + note)
        if sec.get("notes"):
            lines.append("")
    return "\n".join(lines)


def render_html(report: dict[str, Any]) -> str:
    from html import escape

    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{escape(sections(report)[0]['title'])}</title>",
             "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto}table{border-collapse:collapse;margin:.5em 0}"
             "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}th{background:#f3f3f3}</style></head><body>"]
    for i, sec in enumerate(sections(report)):
        tag = "h1" if i == 0 else "h2"
        parts.append(f"<{tag}>{escape(sec['title'])}</{tag}>")
        if sec.get("headers"):
            parts.append("<table><tr>" + "".join(f"<th>{escape(h)}</th>" for h in sec["headers"]) + "</tr>")
            parts += ["<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in sec["rows"]]
            parts.append("</table>")
        parts += [f"<p>{escape(n)}</p>" for n in sec.get("notes", [])]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def render(report: dict[str, Any], fmt: str) -> str:
    """``md``, ``json`` or ``html`` text of a report."""
    if fmt == "json":
        return json.dumps(json_safe(report), indent=2, allow_nan=False) + "\n"
    if fmt == "md":
        return render_markdown(report)
    if fmt == "html":
        return render_html(report)
    raise MmalError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
