"""Multimodal query strategies: they look at each modality, not only at the fused prediction.

* :class:`BMMAL` — Balanced Multimodal Active Learning (Shen et al., ACM MM 2023).
* :class:`ModalityUncertainty` — uncertainty of each unimodal head, aggregated.
* :class:`ModalityDisagreement` — Jensen–Shannon divergence among the unimodal heads.
* :class:`WeakModality` — uncertainty of the modality that contributes least this round.
* :class:`MissingAwareCoreset` — k-center greedy on distances over shared modalities.
* :class:`StratifiedUncertainty` — mmal's own design for the three pitfalls.

Every strategy here sets ``multimodal = True``. Those that read ``modality_probs`` need the
model's unimodal heads: with ``unimodal_heads: false`` the run is refused before it starts.
"""

from __future__ import annotations

import numpy as np

from mmal_core import MmalError, PoolView, ScoreStrategy, Strategy, top_k
from mmal_core.params import check_choice, check_float, check_int
from mmal_core.utilization import coalition_masks, shapley_from_coalitions

from .geometry import GradientBlocks, GradientEmbeddingDistances, block_bytes, kcenter_greedy, kmeanspp, kmeanspp_blocked
from .uncertainty import entropy

MEASURES = ("entropy", "margin", "least_confidence")
AGGREGATIONS = ("max", "mean")


def uncertainty(probs: np.ndarray, measure: str) -> np.ndarray:
    """(n,) uncertainty of (n, C) class probabilities; higher means less sure.

    entropy: ``-sum p log p``; margin: ``1 - (p_1 - p_2)`` (top-2 gap); least_confidence:
    ``1 - max p``.
    """
    p = np.asarray(probs, dtype=np.float64)
    if measure == "entropy":
        return entropy(p)
    if measure == "least_confidence":
        return 1.0 - p.max(axis=1)
    top2 = np.partition(p, p.shape[1] - 2, axis=1)[:, -2:]
    return 1.0 - (top2[:, 1] - top2[:, 0])


def _head_matrix(view: PoolView, measure: str) -> np.ndarray:
    """(n, M) uncertainty of every unimodal head, columns in ``view.modalities`` order."""
    return np.stack([uncertainty(view.modality_probs[m], measure) for m in view.modalities], axis=1)


def _present(view: PoolView) -> np.ndarray:
    mask = np.asarray(view.mask, dtype=bool)
    if mask.shape != (len(view), len(view.modalities)):
        raise MmalError(f"PoolView: mask has shape {mask.shape}, expected {(len(view), len(view.modalities))}")
    return mask


def _check_budget(view: PoolView, budget: int) -> None:
    if not 0 <= budget <= len(view):
        raise MmalError(f"budget: expected between 0 and {len(view)} (the unlabeled pool), got {budget}")


def _patterns(mask: np.ndarray) -> np.ndarray:
    """(n,) missingness pattern of every sample: the bit set of its present modalities."""
    return mask.astype(np.int64) @ (1 << np.arange(mask.shape[1], dtype=np.int64))


# -- BMMAL ---------------------------------------------------------------------------------------
#: How BMMAL values the empty coalition: ``masked`` = the fused prediction with every modality
#: masked (the authors' code), ``zero`` = 0 (mmal before 0.2, kept for comparison).
BMMAL_EMPTY = ("masked", "zero")


def bmmal_scales(probs: np.ndarray, subset_probs: dict, modalities: list[str], empty: str = "masked") -> np.ndarray:
    """(n, M) gradient-block scales of BMMAL (Shen et al., 2023, Sec. 3).

    For every sample, with ``y_hat = argmax probs``, the value of a coalition ``S`` of
    modalities is the fused softmax probability of the predicted class ``y_hat`` when only
    ``S`` is present (``subset_probs[S]``). The empty coalition is, as in the authors' code,
    the same fused prediction with every modality masked (``subset_probs[()]``), not 0:
    ``exp/exp_pl.py`` (``predict_step``) of github.com/MengShen0709/bmmal runs the model on
    zeroed features of m1, of m2 and of both, takes the softmax, and forms per class
    ``delta_m1 = (p - p_drop_m1 + p_drop_m2 - p_drop_both) / 2`` (the two-player Shapley
    value with ``v(empty) = p_drop_both``) and ``contribution_m1 = |delta_m1| / (|delta_m1| +
    |delta_m2|)``; ``run/runner.py`` then reads the contributions at ``argmax`` of the fused
    probabilities and sets ``scale_weak = 1 - (c_strong - c_weak)``, a tie leaving both at 1.
    mmal's masked modality (encoder output removed before fusion) stands in for their zeroed
    features. ``empty="zero"`` values the empty coalition at 0 instead (what mmal did
    before following the authors): each ``phi_m`` then grows by ``v(empty) / M`` and the scales differ.

    The per-sample Shapley values ``phi_m`` give contributions ``c_m = |phi_m| / sum_k |phi_k|``
    (uniform when all are 0, where the authors' code divides 0 by 0); the strongest modality
    keeps scale 1 and every other is scaled by ``1 - (c_max - c_m)``. For two modalities this
    is exactly the authors' rule.

    probs: (n, C) fused probabilities; subset_probs: {tuple of modality names: (n, C)} for
    every coalition (the empty tuple only needed with ``empty="masked"``); modalities: the M
    names in mask order.
    """
    empty = check_choice("empty", empty, BMMAL_EMPTY)
    probs = np.asarray(probs, dtype=np.float64)
    n = probs.shape[0]
    M = len(modalities)
    y_hat = probs.argmax(axis=1)
    rows = np.arange(n)
    masks = coalition_masks(M)
    values = np.zeros((2**M, n))
    for s in range(0 if empty == "masked" else 1, 2**M):
        key = tuple(m for m, keep in zip(modalities, masks[s]) if keep)
        if key not in subset_probs:
            what = "() (every modality masked)" if not key else str(key)
            raise MmalError(f"bmmal: subset_probs has no entry for the modality subset {what}")
        values[s] = np.asarray(subset_probs[key], dtype=np.float64)[rows, y_hat]
    phi = np.abs(shapley_from_coalitions(values)).T  # (n, M)
    total = phi.sum(axis=1, keepdims=True)
    contrib = np.divide(phi, total, out=np.full_like(phi, 1.0 / M), where=total > 0)
    return 1.0 - (contrib.max(axis=1, keepdims=True) - contrib)


class BMMAL(Strategy):
    """Balanced Multimodal Active Learning (Shen, Xie, Li, Chen, "Towards Balanced Active
    Learning for Multimodal Classification", ACM MM 2023; arXiv 2306.08306).

    BADGE (Ash et al., 2020) on per-modality gradient embeddings, with the weaker modality's
    block shrunk so that samples dominated by the strong modality look less diverse:

    1. per sample, modality contributions from Shapley values of the fused prediction under
       modality ablation, the empty coalition being the all-masked prediction as in the
       authors' code (:func:`bmmal_scales`), giving a scale ``s_m`` per modality;
    2. gradient block of modality m: ``s_m (p - onehot(y_hat)) (x) z_m``, with ``p`` the fused
       probabilities and ``z_m`` the modality's encoder output (``modality_embeddings``);
       for mmal's FusionMLP this is the authors' choice too (they pass the fused
       probabilities for every block);
    3. k-means++ seeding on the concatenated blocks: first the largest gradient norm, then
       draws proportional to D^2. Distances come from the factors (never an n x (C sum d_m)
       matrix): ``||g_i - g_j||^2 = sum_m ||g_i^m||^2 + ||g_j^m||^2 - 2 s_im s_jm (a_i.a_j)
       (z_im.z_jm)``.

    Deviations from the authors' code, on purpose: the draws use the run's ``rng`` (an
    inverse-CDF lookup per pick) instead of numpy's global state; when every remaining D is
    0 the draw is uniform instead of an error; the pool is never split into GPU-sized
    mini-batches (their split changes the picks only when memory runs out); more than two
    modalities use exact M-player Shapley values and ``1 - (c_max - c_m)``; with ``block`` > 0
    (default 64) the D^2 weights are refreshed every ``block`` picks and draws are made by
    rejection from the stale weights (the same k-means++ distribution, a different random
    stream; ``block: 0`` reproduces the per-pick stream of the authors' rule).

    Parameters:
        block: picks between two refreshes of the D^2 vector (0: after every pick).
        empty: value of the empty coalition in the Shapley values: ``masked`` (default, as
            the authors: the fused prediction with every modality masked) or ``zero``.
    """

    name = "bmmal"
    summary = "BADGE on per-modality gradient blocks scaled by Shapley contribution gaps (Shen et al. 2023)"
    requires = frozenset({"probs", "subset_probs", "modality_embeddings"})
    multimodal = True

    def __init__(self, block: int = 64, empty: str = "masked"):
        self.block = check_int("block", block, 0)
        self.empty = check_choice("empty", empty, BMMAL_EMPTY)

    def gradient_blocks(self, view: PoolView) -> list[tuple[np.ndarray, np.ndarray]]:
        """[(s_m * (p - onehot(y_hat)) (n, C), z_m (n, d_m)) for each modality m]."""
        probs = np.asarray(view.probs, dtype=np.float64)
        a = probs.copy()
        a[np.arange(len(a)), probs.argmax(axis=1)] -= 1.0
        scales = bmmal_scales(probs, view.subset_probs, view.modalities, self.empty)
        # Embeddings stay float32 (the distance kernel computes in float32 anyway): a float64
        # copy would double the peak memory of the selection for nothing.
        return [(a * scales[:, [j]], np.asarray(view.modality_embeddings[m], dtype=np.float32))
                for j, m in enumerate(view.modalities)]

    def select(self, view: PoolView, budget: int, rng: np.random.Generator) -> np.ndarray:
        blocks = self.gradient_blocks(view)
        dist = GradientEmbeddingDistances(blocks)
        first = int(np.argmax(dist.sqnorms.cpu().numpy()))
        if self.block == 0:  # one D^2 update per pick: the authors' random stream, draw for draw
            return kmeanspp(len(view), budget, rng, dist, first=first)
        # Same D^2 distribution, refreshed every `block` picks with blocked products (as BADGE).
        feature_bytes = sum(np.asarray(e).nbytes for _, e in blocks)
        return kmeanspp_blocked(len(view), budget, rng, GradientBlocks(dist), first=first,
                                block=self.block, chunk_bytes=block_bytes(feature_bytes))


# -- uncertainty of the unimodal heads -------------------------------------------------------------
class ModalityUncertainty(ScoreStrategy):
    """Uncertainty of each unimodal head, aggregated over the modalities a sample has.

    The unimodal (auxiliary) heads are trained jointly with the fused head; a sample on which
    the heads are unsure is informative for the encoders. ``aggregation``: ``max`` (the most
    unsure present modality) or ``mean``; ``measure``: ``entropy``, ``margin`` or
    ``least_confidence``. Modalities missing from a sample do not count (their head saw
    nothing). Follows the per-modality uncertainty baselines of multimodal AL studies
    (e.g. Das et al., "Multimodal active learning ..."; the framework of "Mind the Gap",
    arXiv 2603.29677).
    """

    name = "modality_uncertainty"
    summary = "uncertainty of each unimodal head (present modalities only), max or mean"
    requires = frozenset({"modality_probs"})
    multimodal = True

    def __init__(self, aggregation: str = "max", measure: str = "entropy"):
        self.aggregation = check_choice("aggregation", aggregation, AGGREGATIONS)
        self.measure = check_choice("measure", measure, MEASURES)

    def score(self, view: PoolView) -> np.ndarray:
        u = _head_matrix(view, self.measure)
        mask = _present(view)
        count = mask.sum(axis=1)
        if self.aggregation == "max":
            s = np.where(mask, u, -np.inf).max(axis=1)
        else:
            s = np.where(mask, u, 0.0).sum(axis=1) / np.maximum(count, 1)
        return np.where(count > 0, s, -1.0)


class ModalityDisagreement(ScoreStrategy):
    """Jensen–Shannon divergence among the unimodal heads (and the fused head).

    ``JSD = H(mean_k p_k) - mean_k H(p_k)`` over the present modalities' heads, plus the fused
    head when ``include_fused`` (Lin, 1991, "Divergence measures based on the Shannon
    entropy"; disagreement of views as in co-testing, Muslea et al., 2006). High when the
    modalities tell different stories. A sample with a single present modality and no fused
    head has nothing to disagree with and scores 0.
    """

    name = "modality_disagreement"
    summary = "Jensen-Shannon divergence among unimodal heads (and the fused head)"
    requires = frozenset({"modality_probs", "probs"})
    multimodal = True

    def __init__(self, include_fused: bool = True):
        if not isinstance(include_fused, bool):
            raise MmalError(f"parameter 'include_fused': expected true or false, got {include_fused!r}")
        self.include_fused = include_fused

    def score(self, view: PoolView) -> np.ndarray:
        mask = _present(view).astype(np.float64)
        heads = [np.asarray(view.modality_probs[m], dtype=np.float64) for m in view.modalities]
        weights = [mask[:, j] for j in range(len(heads))]
        if self.include_fused:
            heads.append(np.asarray(view.probs, dtype=np.float64))
            weights.append(np.ones(len(view)))
        w = np.stack(weights, axis=1)  # (n, K)
        count = w.sum(axis=1)
        p = np.stack(heads, axis=1)  # (n, K, C)
        mean = (p * w[:, :, None]).sum(axis=1) / np.maximum(count, 1)[:, None]
        mean_h = (entropy(p, axis=2) * w).sum(axis=1) / np.maximum(count, 1)
        return np.maximum(entropy(mean) - mean_h, 0.0)


def weakest_modality(metrics: dict, modalities: list[str], metric: str) -> tuple[str, str]:
    """(name of the modality with the smallest value of ``metrics[metric]``, metric used).

    Falls back to ``modality_accuracy`` (always recorded) when ``metric`` is absent, e.g. with
    utilization metrics turned off. Ties go to the first modality in mask order.
    """
    for key in (metric, "modality_accuracy"):
        values = metrics.get(key) if isinstance(metrics, dict) else None
        if isinstance(values, dict) and all(isinstance(values.get(m), (int, float)) for m in modalities):
            v = np.array([values[m] for m in modalities], dtype=np.float64)
            v = np.where(np.isnan(v), np.inf, v)
            return modalities[int(np.argmin(v))], key
    raise MmalError(
        f"weak_modality: the round's metrics have neither '{metric}' nor 'modality_accuracy' for modalities {modalities}"
    )


class WeakModality(ScoreStrategy):
    """Uncertainty of the modality that currently contributes least (modality imbalance).

    Fused models lean on the easy modality and leave the other under-trained ("modality
    imbalance": Peng et al., "Balanced Multimodal Learning via On-the-fly Gradient
    Modulation", CVPR 2022; Wang et al., "What Makes Training Multi-Modal Classification
    Networks Hard?", CVPR 2020). Each round this strategy reads the utilization metric
    ``metric`` (default the Shapley value for test accuracy), takes the modality with the
    smallest value, and queries the samples on which that modality's unimodal head is most
    uncertain (``measure``). Samples that lack the weak modality come last: labeling them
    cannot teach its encoder.
    """

    name = "weak_modality"
    summary = "uncertainty of the unimodal head of the least-contributing modality"
    requires = frozenset({"modality_probs"})
    multimodal = True

    METRICS = ("shapley_accuracy", "shapley_log_likelihood", "contribution", "head_accuracy",
               "probe_accuracy", "modality_accuracy")

    def __init__(self, measure: str = "entropy", metric: str = "shapley_accuracy"):
        self.measure = check_choice("measure", measure, MEASURES)
        self.metric = check_choice("metric", metric, self.METRICS)

    def score(self, view: PoolView) -> np.ndarray:
        weak, _ = weakest_modality(view.metrics, view.modalities, self.metric)
        j = view.modalities.index(weak)
        u = uncertainty(view.modality_probs[weak], self.measure)
        return np.where(_present(view)[:, j], u, -1.0)


# -- missing-aware core-set ------------------------------------------------------------------
class SharedModalityDistances:
    """Squared distances over the modalities two samples share, averaged per shared modality.

    ``d(i, j) = sum_{m in A_i & A_j} ||z_im - z_jm||^2 / |A_i & A_j|`` where ``A_i`` is the set
    of modalities sample i has; +inf when they share none (nothing to compare: neither covers
    the other). ``self(i)`` returns the (n,) float32 distances from pool row i: one
    matrix-vector product per modality, O(n sum_m d_m), no copy of the embeddings.

    embeddings: {modality: (n, d_m)}; mask: (n, M) bool; modalities: names in mask order.
    """

    def __init__(self, embeddings: dict, mask: np.ndarray, modalities: list[str]):
        self.z = [np.asarray(embeddings[m], dtype=np.float32) for m in modalities]
        self.mask = np.asarray(mask, dtype=bool)
        self.sq = [np.einsum("nd,nd->n", z, z) for z in self.z]
        self.n = len(self.mask)

    def __call__(self, i: int) -> np.ndarray:
        total = np.zeros(self.n, dtype=np.float32)
        shared = np.zeros(self.n, dtype=np.float32)
        for j, z in enumerate(self.z):
            if not self.mask[i, j]:
                continue
            d = self.sq[j] + self.sq[j][i] - 2.0 * (z @ z[i])
            has = self.mask[:, j]
            total += np.where(has, np.maximum(d, 0.0), 0.0)
            shared += has
        out = np.divide(total, shared, out=np.full(self.n, np.inf, dtype=np.float32), where=shared > 0)
        out[i] = 0.0
        return out

    def to_set(self, embeddings: dict, mask: np.ndarray, modalities: list[str], chunk: int = 2**20) -> np.ndarray:
        """(n,) distance from each pool row to its nearest point of another set (labeled set).

        Computed in row blocks of at most ``chunk`` pairs; +inf when the set is empty.
        """
        z_o = [np.asarray(embeddings[m], dtype=np.float32) for m in modalities]
        mask_o = np.asarray(mask, dtype=bool)
        sq_o = [np.einsum("nd,nd->n", z, z) for z in z_o]
        out = np.full(self.n, np.inf, dtype=np.float32)
        if len(mask_o) == 0:
            return out
        step = max(1, chunk // len(mask_o))
        shared_cols = mask_o.T.astype(np.float32)
        for start in range(0, self.n, step):
            rows = slice(start, min(start + step, self.n))
            total = np.zeros((rows.stop - start, len(mask_o)), dtype=np.float32)
            for j, z in enumerate(self.z):
                both = self.mask[rows, j][:, None] & mask_o[None, :, j]
                d = self.sq[j][rows][:, None] + sq_o[j][None, :] - 2.0 * (z[rows] @ z_o[j].T)
                total += np.where(both, np.maximum(d, 0.0), 0.0)
            shared = self.mask[rows].astype(np.float32) @ shared_cols
            dist = np.divide(total, shared, out=np.full_like(total, np.inf), where=shared > 0)
            out[rows] = dist.min(axis=1)
        return out


class MissingAwareCoreset(Strategy):
    """Core-set (k-center greedy, Sener & Savarese, ICLR 2018) for incomplete multimodal data.

    Plain core-set on a fused embedding treats a missing modality as a zero vector, so
    incomplete samples look far from everything and are over-picked (or, with mean fusion,
    collapse onto each other and are under-picked). Here the distance between two samples
    uses only the modalities both have, averaged per shared modality
    (:class:`SharedModalityDistances`), over the per-modality encoder outputs. Starting from
    the labeled set, each pick is the sample farthest from every labeled or picked sample; a
    single (n,) min-distance vector is updated per pick, the labeled set is processed in
    blocks: never an n x n matrix. A sample that shares no modality with any labeled sample
    is uncovered (infinitely far) and comes first.

    Shared-modality distances alone do not balance the picks: an incomplete sample lives in
    a projection of the space (fewer modalities), which every center covers, so it is
    closer to its nearest center than a complete one and k-center under-picks it. In mmal's
    pitfall study (synthetic-missing, half the pool lacking one modality) distances alone
    gave 22 % incomplete picks (plain core-set 14 %). So by default (``balance: pool``) the
    budget is split over missingness patterns in proportion to their share of the unlabeled
    pool (largest remainders) and each pick is the farthest sample among the patterns with
    quota left: incomplete samples are then neither over- nor under-picked.
    ``balance: none`` keeps the plain k-center order on the shared-modality distances.

    Parameters:
        balance: ``pool`` (budget per missingness pattern, proportional to the pool) or
            ``none``.
    """

    name = "missing_aware_coreset"
    summary = "k-center greedy on per-modality embeddings, distances over shared modalities only"
    requires = frozenset({"modality_embeddings", "labeled_modality_embeddings"})
    multimodal = True

    def __init__(self, balance: str = "pool"):
        self.balance = check_choice("balance", balance, ("pool", "none"))

    def select(self, view: PoolView, budget: int, rng: np.random.Generator) -> np.ndarray:
        mask = _present(view)
        _check_budget(view, budget)
        dist = SharedModalityDistances(view.modality_embeddings, mask, view.modalities)
        labeled_mask = np.asarray(view.labeled_mask, dtype=bool)
        start = dist.to_set(view.labeled_modality_embeddings, labeled_mask, view.modalities)
        if len(labeled_mask) == 0:
            start = None
        if self.balance == "none":
            return kcenter_greedy(len(view), budget, dist, rng, min_sqdist=start)
        patterns = _patterns(mask)
        return kcenter_greedy(len(view), budget, dist, rng, min_sqdist=start, groups=patterns,
                              quotas=stratified_quotas(patterns, budget))


# -- mmal's own: pattern-stratified, contribution-weighted uncertainty ---------------------------
def stratified_quotas(patterns: np.ndarray, budget: int) -> dict[int, int]:
    """Budget per missingness pattern, proportional to its share of the pool.

    patterns: (n,) pattern index of every sample. Largest-remainder rounding (ties to the
    larger pattern, then the smaller index); a quota never exceeds its pattern's size.
    """
    groups, counts = np.unique(patterns, return_counts=True)
    exact = budget * counts / counts.sum()
    quota = np.floor(exact).astype(np.int64)
    order = np.lexsort((groups, -counts, -(exact - quota)))
    left = budget - quota.sum()
    for k in order:
        if left == 0:
            break
        if quota[k] < counts[k]:
            quota[k] += 1
            left -= 1
    return {int(g): int(q) for g, q in zip(groups, quota)}


class StratifiedUncertainty(ScoreStrategy):
    """mmal's own design for the three pitfalls: stratified, contribution-weighted uncertainty.

    Idea, one remedy per pitfall of "Mind the Gap" (arXiv 2603.29677):

    * missing modalities — uncertainty scores are inflated on incomplete samples, so plain
      uncertainty sampling over-picks them. The budget is split across missingness patterns
      in proportion to their share of the unlabeled pool, and samples compete only within
      their pattern.
    * modalities of different difficulty (imbalance) — the fused model leans on the easy
      modality. The score adds the unimodal heads' uncertainties weighted towards the
      modalities that contribute least: ``w_m = (1 - c_m)`` with ``c_m`` the round's
      normalised Shapley contribution (``metrics.contribution``; from ``modality_accuracy``
      when utilization metrics are off), over the present modalities.
    * interaction structure (synergy needs both modalities) — the fused uncertainty stays in
      the score: it is the only signal for samples no single modality can label.

    ``score = u_fused + weight * sum_{m present} w_m u_m / sum_{m present} w_m`` with ``u`` the
    chosen ``measure``; then top-k inside each pattern's quota.
    """

    name = "stratified_uncertainty"
    summary = "fused + weak-modality-weighted head uncertainty, budget stratified by missingness pattern"
    requires = frozenset({"probs", "modality_probs"})
    multimodal = True

    def __init__(self, measure: str = "margin", weight: float = 1.0):
        self.measure = check_choice("measure", measure, MEASURES)
        self.weight = check_float("weight", weight, 0.0)

    def modality_weights(self, view: PoolView) -> np.ndarray:
        """(M,) weights ``1 - c_m`` of the modalities (uniform when nothing is known)."""
        names = view.modalities
        metrics = view.metrics if isinstance(view.metrics, dict) else {}
        c = metrics.get("contribution")
        if isinstance(c, dict) and all(isinstance(c.get(m), (int, float)) for m in names):
            share = np.array([c[m] for m in names], dtype=np.float64)
        else:
            acc = metrics.get("modality_accuracy")
            if isinstance(acc, dict) and all(isinstance(acc.get(m), (int, float)) for m in names):
                a = np.maximum(np.array([acc[m] for m in names], dtype=np.float64), 0.0)
                share = a / a.sum() if a.sum() > 0 else np.full(len(names), 1.0 / len(names))
            else:
                share = np.full(len(names), 1.0 / len(names))
        share = np.where(np.isfinite(share), share, 1.0 / len(names))
        return np.clip(1.0 - share, 1e-6, None)

    def score(self, view: PoolView) -> np.ndarray:
        mask = _present(view)
        w = self.modality_weights(view)[None, :] * mask
        heads = (_head_matrix(view, self.measure) * w).sum(axis=1) / np.maximum(w.sum(axis=1), 1e-12)
        return uncertainty(view.probs, self.measure) + self.weight * heads

    def select(self, view: PoolView, budget: int, rng: np.random.Generator) -> np.ndarray:
        _check_budget(view, budget)
        scores = self.score(view)
        patterns = _patterns(_present(view))
        picks = []
        for pattern, quota in stratified_quotas(patterns, budget).items():
            if quota == 0:
                continue
            members = np.flatnonzero(patterns == pattern)
            picks.append(members[top_k(scores[members], quota, rng)])
        if not picks:
            return np.empty(0, dtype=np.int64)
        chosen = np.concatenate(picks)
        return chosen[np.argsort(-scores[chosen], kind="stable")].astype(np.int64)


MULTIMODAL_STRATEGIES = [BMMAL, ModalityUncertainty, ModalityDisagreement, WeakModality, MissingAwareCoreset,
                         StratifiedUncertainty]
