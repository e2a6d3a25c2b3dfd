"""Statistics shared by ``mmal leaderboard`` and ``mmal report``.

Every test and interval comes from a maintained library (scipy.stats, statsmodels,
scikit-posthocs); this module only chooses them, feeds them and handles the degenerate cases
(one seed, identical values) so that callers get a number or an explicit "no test".

- :func:`bootstrap_interval`: percentile bootstrap of a mean (:func:`scipy.stats.bootstrap`).
- :func:`significantly_better`, :func:`penalty_counts`: the paired t-tests of the pairwise
  penalty matrix of Ash et al. (2020).
- :func:`paired_comparison`: paired difference of two strategies over shared seeds, with a
  paired t-test, its confidence interval and the Wilcoxon signed-rank p-value as a check.
- :func:`holm`: Holm's step-down correction (:func:`statsmodels.stats.multitest.multipletests`).
- :func:`friedman`, :func:`mean_ranks`, :func:`nemenyi`: ranks across cells, the Friedman
  test and the Nemenyi post-hoc test with its critical difference (Demšar 2006).

scipy, statsmodels and scikit-posthocs are imported inside the functions: the CLI loads this
module without them and says which package is missing when a command needs one.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

#: Default significance level.
ALPHA = 0.05
#: Confidence level and resamples of the bootstrap intervals.
CONFIDENCE = 0.95
N_RESAMPLES = 2000


def bootstrap_interval(values: np.ndarray, seed: int = 0, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile-bootstrap interval (``confidence``) of the mean of ``values`` (n,).

    Non-finite values are dropped; one value (or identical values) gives a zero-width interval
    at that value, none gives (nan, nan). Seeded: the same values give the same interval.
    """
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    if values.size == 1 or np.all(values == values[0]):
        return float(values[0]), float(values[0])
    from scipy.stats import bootstrap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = bootstrap((values,), np.mean, confidence_level=confidence, n_resamples=N_RESAMPLES,
                        method="percentile", rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def bootstrap_intervals(samples: np.ndarray, seed: int = 0, confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """Percentile-bootstrap intervals of the means of the rows of ``samples`` (k, n), in one
    :func:`scipy.stats.bootstrap` call (a report needs thousands; one call each is slow).

    Rows must be finite; a row of identical values gets a zero-width interval at its value.
    """
    samples = np.asarray(samples, dtype=np.float64)
    mean = samples.mean(axis=-1)
    if samples.shape[-1] < 2:
        return mean.copy(), mean.copy()
    from scipy.stats import bootstrap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = bootstrap((samples,), np.mean, axis=-1, confidence_level=confidence, n_resamples=N_RESAMPLES,
                        method="percentile", rng=np.random.default_rng(seed))
    low, high = np.asarray(res.confidence_interval.low), np.asarray(res.confidence_interval.high)
    constant = np.all(samples == samples[..., :1], axis=-1)
    return np.where(constant | ~np.isfinite(low), mean, low), np.where(constant | ~np.isfinite(high), mean, high)


def significantly_better(a: np.ndarray, b: np.ndarray, alpha: float = ALPHA) -> bool:
    """True when paired samples ``a`` (n,) beat ``b`` (n,) by a two-sided paired t-test.

    Needs at least two pairs; identical samples are never significant.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size < 2 or a.size != b.size:
        return False
    diff = a - b
    if np.all(diff == 0):
        return False
    if np.all(diff == diff[0]):  # constant non-zero difference: t is infinite
        return bool(diff[0] > 0)
    from scipy.stats import ttest_rel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = ttest_rel(a, b)
    return bool(np.isfinite(res.pvalue) and res.pvalue < alpha and res.statistic > 0)


def better_by_round(a: np.ndarray, b: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """:func:`significantly_better` for every column of ``a``, ``b`` (seeds x rounds) at once."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape[0] < 2 or a.shape != b.shape:
        return np.zeros(a.shape[1] if a.ndim == 2 else 0, dtype=bool)
    diff = a - b
    zero = np.all(diff == 0, axis=0)
    constant = np.all(diff == diff[0], axis=0)
    from scipy.stats import ttest_rel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = ttest_rel(a, b, axis=0)
    p, t = np.asarray(res.pvalue), np.asarray(res.statistic)
    tested = np.isfinite(p) & (p < alpha) & (t > 0)
    return np.where(zero, False, np.where(constant, diff[0] > 0, tested))


def penalty_counts(accuracy: dict[str, dict[int, np.ndarray]], alpha: float = ALPHA,
                   higher_is_better: bool = True) -> dict[tuple[str, str], float]:
    """One benchmark's (or cell's) share of the pairwise penalty matrix of Ash et al. (2020).

    accuracy: strategy -> seed -> (n_rounds,) test accuracy (or another metric) per round. For
    every ordered pair ``(i, j)`` and every round, a paired t-test over the seeds both ran; the
    entry is the fraction of rounds in which ``i`` was significantly better than ``j`` (0 to 1).
    higher_is_better: False for a metric where lower values win (better = significantly lower).
    """
    if not higher_is_better:
        accuracy = {s: {seed: -np.asarray(v, dtype=np.float64) for seed, v in seeds.items()}
                    for s, seeds in accuracy.items()}
    n_rounds = max((len(a) for seeds in accuracy.values() for a in seeds.values()), default=0)
    out: dict[tuple[str, str], float] = {}
    if n_rounds == 0:
        return out
    names = sorted(accuracy)
    for i in names:
        for j in names:
            if i == j:
                continue
            common = sorted(set(accuracy[i]) & set(accuracy[j]))
            curves = [accuracy[i][s] for s in common] + [accuracy[j][s] for s in common]
            if all(len(c) == n_rounds for c in curves):  # the usual case: every round at once
                a = np.array([accuracy[i][s] for s in common], dtype=np.float64).reshape(len(common), n_rounds)
                b = np.array([accuracy[j][s] for s in common], dtype=np.float64).reshape(len(common), n_rounds)
                wins = int(better_by_round(a, b, alpha).sum())
            else:
                wins = 0
                for r in range(n_rounds):
                    a = [accuracy[i][s][r] for s in common if r < len(accuracy[i][s])]
                    b = [accuracy[j][s][r] for s in common if r < len(accuracy[j][s])]
                    if len(a) == len(b) and significantly_better(np.array(a), np.array(b), alpha):
                        wins += 1
            out[(i, j)] = wins / n_rounds
    return out


def ranks_desc(values: dict[str, float], higher_is_better: bool = True) -> dict[str, float]:
    """Rank 1 for the largest value (the smallest when ``higher_is_better`` is False); ties
    share their average rank."""
    from scipy.stats import rankdata

    names = list(values)
    sign = -1.0 if higher_is_better else 1.0
    ranks = rankdata([sign * values[n] for n in names], method="average")
    return {n: float(r) for n, r in zip(names, ranks)}


# -- paired comparisons ---------------------------------------------------------------------------
def paired_comparison(a: np.ndarray, b: np.ndarray, confidence: float = CONFIDENCE) -> dict[str, Any]:
    """``a - b`` paired over seeds (both (n,)): mean, interval, paired t-test, Wilcoxon check.

    The verdict test is the two-sided paired t-test (:func:`scipy.stats.ttest_rel`) with its
    ``confidence`` interval of the mean difference: with the 5 to 10 seeds of a study the exact
    Wilcoxon signed-rank test cannot reach small p-values (never below ``2 / 2**n``: 0.0625
    for 5 seeds), so after a Holm correction it could never reject; the difference of two
    AUBCs is a mean over rounds, close to normal. The Wilcoxon p-value
    (:func:`scipy.stats.wilcoxon`) is reported as a distribution-free check, and decides when
    the differences are identical and non-zero (t undefined).

    Returns ``{"n", "mean", "low", "high", "statistic", "p", "wilcoxon_p", "test"}``; with
    fewer than two pairs ``p`` is None and ``test`` says why.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    diff = a - b
    n = int(diff.size)
    out: dict[str, Any] = {"n": n, "mean": float(diff.mean()) if n else float("nan"),
                           "low": float("nan"), "high": float("nan"), "statistic": None, "p": None,
                           "wilcoxon_p": None, "test": "paired t-test"}
    if n < 2:
        out["test"] = f"no test: {n} paired seed(s), at least 2 needed"
        return out
    from scipy.stats import ttest_rel, wilcoxon

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if np.any(diff != 0):
            out["wilcoxon_p"] = float(wilcoxon(diff).pvalue)
        else:
            out["wilcoxon_p"] = 1.0
        if np.all(diff == diff[0]):
            out["low"] = out["high"] = float(diff[0])
            out["p"] = out["wilcoxon_p"]
            out["test"] = "Wilcoxon signed-rank (identical differences: t undefined)"
            return out
        res = ttest_rel(a, b)
        ci = res.confidence_interval(confidence_level=confidence)
    out.update(statistic=float(res.statistic), p=float(res.pvalue), low=float(ci.low), high=float(ci.high))
    return out


def holm(pvalues: list[float | None], alpha: float = ALPHA) -> list[float | None]:
    """Holm-adjusted p-values (:func:`statsmodels.stats.multitest.multipletests`, ``holm``).

    ``None`` entries (no test) are left out of the family and stay ``None``.
    """
    idx = [i for i, p in enumerate(pvalues) if p is not None and math.isfinite(p)]
    out: list[float | None] = [None] * len(pvalues)
    if not idx:
        return out
    import gc

    from statsmodels.stats.multitest import multipletests

    # multipletests runs gc.collect() for Holm; with a large report in memory that takes most
    # of a second per call. Frozen objects are skipped by the collector: the same result, fast.
    gc.freeze()
    try:
        adjusted = multipletests([pvalues[i] for i in idx], alpha=alpha, method="holm")[1]
    finally:
        gc.unfreeze()
    for i, p in zip(idx, adjusted):
        out[i] = float(p)
    return out


def verdict(comparison: dict[str, Any], adjusted_p: float | None, alpha: float, higher_is_better: bool = True) -> str:
    """``better`` / ``worse`` / ``no detectable difference`` / ``no test``; with
    ``higher_is_better`` False a negative difference is the better one."""
    if adjusted_p is None:
        return "no test"
    if adjusted_p < alpha:
        return "better" if (comparison["mean"] > 0) == higher_is_better else "worse"
    return "no detectable difference"


# -- across cells ---------------------------------------------------------------------------------
def mean_ranks(matrix: np.ndarray, higher_is_better: bool = True) -> np.ndarray:
    """Mean rank of each column of ``matrix`` (blocks x treatments), rank 1 = largest value
    (the smallest when ``higher_is_better`` is False)."""
    from scipy.stats import rankdata

    matrix = np.asarray(matrix, dtype=np.float64)
    return rankdata(-matrix if higher_is_better else matrix, axis=1, method="average").mean(axis=0)


def friedman(matrix: np.ndarray) -> dict[str, Any]:
    """Friedman test (:func:`scipy.stats.friedmanchisquare`) over ``matrix`` (blocks x treatments).

    Needs at least 3 treatments and 2 blocks; otherwise ``p`` is None and ``test`` says why.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    blocks, k = matrix.shape if matrix.ndim == 2 else (0, 0)
    if k < 3 or blocks < 2:
        return {"statistic": None, "p": None, "blocks": int(blocks), "treatments": int(k),
                "test": f"no test: {blocks} complete cell(s) and {k} strategies; Friedman needs at least 2 and 3"}
    from scipy.stats import friedmanchisquare

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = friedmanchisquare(*matrix.T)
    p = float(res.pvalue) if np.isfinite(res.pvalue) else 1.0
    stat = float(res.statistic) if np.isfinite(res.statistic) else 0.0
    return {"statistic": stat, "p": p, "blocks": int(blocks), "treatments": int(k), "test": "Friedman"}


def nemenyi_critical_difference(k: int, blocks: int, alpha: float = ALPHA) -> float:
    """Critical difference of mean ranks for the Nemenyi test (Demšar 2006, section 3.2.2):
    ``q_alpha * sqrt(k (k + 1) / (6 N))`` with ``q_alpha`` the studentized range quantile / sqrt 2."""
    from scipy.stats import studentized_range

    q = studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)
    return float(q * math.sqrt(k * (k + 1) / (6.0 * blocks)))


def nemenyi(matrix: np.ndarray) -> np.ndarray:
    """Pairwise Nemenyi p-values after a Friedman test (scikit-posthocs
    ``posthoc_nemenyi_friedman``), (k, k) for the columns of ``matrix``."""
    import scikit_posthocs as sp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = sp.posthoc_nemenyi_friedman(np.asarray(matrix, dtype=np.float64))
    return np.asarray(res, dtype=np.float64)
