"""Multimodal strategies: conformance, behaviour on hand-built views, BMMAL parity, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmal_core import MmalError, PoolView
from mmal_core.params import construct
from mmal_core.testing import parametrize_with_checks, synthetic_view
from mmal_strategies.multimodal import (
    BMMAL,
    MissingAwareCoreset,
    ModalityDisagreement,
    ModalityUncertainty,
    SharedModalityDistances,
    StratifiedUncertainty,
    WeakModality,
    bmmal_scales,
    stratified_quotas,
)

torch.set_num_threads(1)


CONFORMANCE = [
    (BMMAL, {}),
    (ModalityUncertainty, {}),
    (ModalityUncertainty, {"aggregation": "mean", "measure": "margin"}),
    (ModalityUncertainty, {"measure": "least_confidence"}),
    (ModalityDisagreement, {}),
    (ModalityDisagreement, {"include_fused": False}),
    (WeakModality, {}),
    (WeakModality, {"metric": "modality_accuracy", "measure": "margin"}),
    (MissingAwareCoreset, {}),
    (MissingAwareCoreset, {"balance": "none"}),
    (StratifiedUncertainty, {}),
    (StratifiedUncertainty, {"measure": "entropy", "weight": 0.0}),
]
THREE_MODALITIES = synthetic_view(modalities=("a", "b", "c"), n=40, seed=3)


@parametrize_with_checks(CONFORMANCE + [(cls, params, {"view": THREE_MODALITIES}) for cls, params in CONFORMANCE])
def test_conformance(check):
    check()


def test_every_multimodal_strategy_says_so():
    assert all(cls.multimodal is True for cls, _ in CONFORMANCE)


@pytest.mark.parametrize(
    "cls, params, message",
    [
        (ModalityUncertainty, {"aggregation": "median"}, "parameter 'aggregation': expected one of max, mean"),
        (ModalityUncertainty, {"measure": "variance"}, "parameter 'measure'"),
        (ModalityDisagreement, {"include_fused": "yes"}, "parameter 'include_fused'"),
        (WeakModality, {"metric": "speed"}, "parameter 'metric'"),
        (StratifiedUncertainty, {"weight": -1}, "parameter 'weight'"),
        (MissingAwareCoreset, {"balance": "equal"}, "parameter 'balance': expected one of pool, none"),
        (BMMAL, {"k": 3}, r"strategy 'bmmal': unknown parameter 'k'; accepted: block"),
    ],
)
def test_bad_parameters_are_one_line_errors(cls, params, message):
    with pytest.raises(MmalError, match=message) as err:
        construct(cls, params, f"strategy '{cls.name}'")
    assert "\n" not in str(err.value)


def onehot_probs(rows):
    p = np.asarray(rows, dtype=np.float64)
    return p / p.sum(axis=1, keepdims=True)


# -- modality_uncertainty ----------------------------------------------------------------------
def test_modality_uncertainty_max_mean_and_missing_modalities():
    sure, unsure, half = [0.98, 0.01, 0.01], [1 / 3, 1 / 3, 1 / 3], [0.6, 0.3, 0.1]
    view = PoolView(
        modality_probs={
            "a": onehot_probs([sure, unsure, half, sure]),
            "b": onehot_probs([unsure, half, half, unsure]),
        },
        mask=np.array([[True, True], [True, True], [True, True], [True, False]]),
    )
    rng = np.random.default_rng(0)
    # max: rows 0 and 1 both have one uniform head; row 3's uniform head is missing, so it is sure
    assert set(ModalityUncertainty("max").select(view, 2, rng)) == {0, 1}
    # mean: row 1 (uniform + half) beats row 0 (uniform + sure) and row 2 (half + half)
    assert ModalityUncertainty("mean").select(view, 1, rng).tolist() == [1]
    scores = ModalityUncertainty("mean").score(view)
    assert scores[3] < scores[0] < scores[2] < scores[1]


# -- modality_disagreement --------------------------------------------------------------------------
def test_modality_disagreement_prefers_conflicting_heads():
    a = onehot_probs([[0.9, 0.1], [0.9, 0.1], [0.5, 0.5], [0.9, 0.1]])
    b = onehot_probs([[0.1, 0.9], [0.9, 0.1], [0.5, 0.5], [0.1, 0.9]])
    fused = onehot_probs([[0.5, 0.5]] * 4)
    mask = np.array([[1, 1], [1, 1], [1, 1], [1, 0]], dtype=bool)
    view = PoolView(probs=fused, modality_probs={"a": a, "b": b}, mask=mask)
    heads_only = ModalityDisagreement(include_fused=False).score(view)
    assert heads_only[0] > 0.3 and heads_only[1] == pytest.approx(0) and heads_only[2] == pytest.approx(0)
    assert heads_only[3] == pytest.approx(0)  # only one present head: nothing to disagree with
    with_fused = ModalityDisagreement().score(view)
    assert with_fused[1] > 0 and with_fused[2] == pytest.approx(0)  # fused disagrees with confident heads
    assert ModalityDisagreement(include_fused=False).select(view, 1, np.random.default_rng(0)).tolist() == [0]


# -- weak_modality ----------------------------------------------------------------------------------
def test_weak_modality_queries_the_least_contributing_modality():
    a = onehot_probs([[0.5, 0.5], [0.99, 0.01], [0.99, 0.01], [0.99, 0.01]])
    b = onehot_probs([[0.99, 0.01], [0.6, 0.4], [0.5, 0.5], [0.5, 0.5]])
    mask = np.array([[1, 1], [1, 1], [1, 1], [1, 0]], dtype=bool)
    metrics = {"shapley_accuracy": {"a": 0.30, "b": 0.05}, "modality_accuracy": {"a": 0.2, "b": 0.9}}
    view = PoolView(modality_probs={"a": a, "b": b}, mask=mask, metrics=metrics)
    rng = np.random.default_rng(0)
    # b contributes least: its most unsure head with b present is row 2 (row 3 lacks b)
    assert WeakModality().select(view, 2, rng).tolist() == [2, 1]
    # by modality_accuracy the weak one is a: row 0
    assert WeakModality(metric="modality_accuracy").select(view, 1, rng).tolist() == [0]
    # without the Shapley metrics (utilization off) it falls back to modality_accuracy
    view2 = PoolView(modality_probs={"a": a, "b": b}, mask=mask, metrics={"modality_accuracy": {"a": 0.2, "b": 0.9}})
    assert WeakModality().select(view2, 1, rng).tolist() == [0]
    with pytest.raises(MmalError, match="neither 'shapley_accuracy' nor 'modality_accuracy'"):
        WeakModality().select(PoolView(modality_probs={"a": a, "b": b}), 1, rng)


# -- missing_aware_coreset -------------------------------------------------------------------------
def test_missing_aware_coreset_uses_shared_modalities_only():
    # pool rows: A both (1,1) -> d = (1 + 1) / 2 = 1; B only m0 at 0.5 -> 0.25;
    # C only m1 at 3 -> 9; D both, m0 at 2, m1 at 0 -> (4 + 0) / 2 = 2. Missing rows are zero.
    z0 = np.array([[1.0, 0], [0.5, 0], [0, 0], [2, 0]])
    z1 = np.array([[1.0, 0], [0, 0], [3, 0], [0, 0]])
    mask = np.array([[1, 1], [1, 0], [0, 1], [1, 1]], dtype=bool)
    view = PoolView(
        modality_embeddings={"m0": z0, "m1": z1},
        labeled_modality_embeddings={"m0": np.zeros((1, 2)), "m1": np.zeros((1, 2))},
        mask=mask,
        labeled_mask=np.ones((1, 2), dtype=bool),
    )
    # after C, distances to C: A (shares m1) 4 -> keeps 1; B shares nothing -> keeps 0.25;
    # D (shares m1) 9 -> keeps 2. So C, D, A, B.
    assert MissingAwareCoreset().select(view, 4, np.random.default_rng(0)).tolist() == [2, 3, 0, 1]


def test_missing_aware_coreset_sample_sharing_nothing_with_labeled_set_comes_first():
    z = {"m0": np.array([[5.0], [0.0], [0.1]]), "m1": np.array([[5.0], [0.2], [0.0]])}
    mask = np.array([[1, 1], [0, 1], [1, 0]], dtype=bool)
    view = PoolView(
        modality_embeddings=z,
        labeled_modality_embeddings={"m0": np.zeros((1, 1)), "m1": np.zeros((1, 1))},
        mask=mask,
        labeled_mask=np.array([[True, False]]),  # the labeled sample has m0 only
    )
    # row 1 has only m1: no labeled sample to compare with -> uncovered, picked first,
    # although its embedding is the closest to the origin
    assert MissingAwareCoreset(balance="none").select(view, 2, np.random.default_rng(0)).tolist() == [1, 0]


def _half_incomplete_pool(n=40, seed=0):
    """Complete samples spread widely in both modalities, incomplete ones (m1 missing) tight in m0."""
    rng = np.random.default_rng(seed)
    z0 = np.concatenate([rng.normal(scale=5.0, size=(n // 2, 3)), rng.normal(scale=0.3, size=(n // 2, 3))])
    z1 = np.concatenate([rng.normal(scale=5.0, size=(n // 2, 3)), np.zeros((n // 2, 3))])
    mask = np.ones((n, 2), dtype=bool)
    mask[n // 2 :, 1] = False
    return PoolView(
        modality_embeddings={"m0": z0, "m1": z1},
        labeled_modality_embeddings={"m0": np.zeros((1, 3)), "m1": np.zeros((1, 3))},
        mask=mask,
        labeled_mask=np.ones((1, 2), dtype=bool),
    )


def test_missing_aware_coreset_picks_incomplete_samples_at_their_share_of_the_pool():
    view = _half_incomplete_pool()
    incomplete = ~np.asarray(view.mask)[:, 1]
    plain = MissingAwareCoreset(balance="none").select(view, 10, np.random.default_rng(0))
    balanced = MissingAwareCoreset().select(view, 10, np.random.default_rng(0))
    # shared-modality distances alone: the tight incomplete samples are covered early and
    # under-picked; with the pattern quotas, exactly half the picks are incomplete
    assert incomplete[plain].sum() <= 2
    assert incomplete[balanced].sum() == 5 and len(set(balanced.tolist())) == 10
    # within the quotas it is still k-center: the first pick is the farthest sample overall
    assert balanced[0] == plain[0]
    # and each incomplete pick is the farthest incomplete sample left at its turn
    dist = SharedModalityDistances(view.modality_embeddings, np.asarray(view.mask), view.modalities)
    best = dist.to_set(view.labeled_modality_embeddings, np.asarray(view.labeled_mask), view.modalities)
    best = np.array(best, dtype=np.float64)
    for i in balanced:
        if incomplete[i]:
            free = np.flatnonzero(incomplete & (best >= 0))
            assert best[i] == best[free].max()
        best = np.minimum(best, np.asarray(dist(int(i)), dtype=np.float64))
        best[i] = -1.0


def test_kcenter_quotas_are_checked():
    from mmal_strategies import geometry

    dist = geometry.EuclideanDistances(np.arange(6, dtype=np.float32)[:, None], device="cpu")
    groups = np.array([0, 0, 0, 1, 1, 1])
    picks = geometry.kcenter_greedy(6, 3, dist, np.random.default_rng(0), groups=groups, quotas={0: 3})
    assert sorted(picks.tolist()) == [0, 1, 2]  # group 1 has no quota: never picked
    with pytest.raises(ValueError, match="quotas"):
        geometry.kcenter_greedy(6, 3, dist, np.random.default_rng(0), groups=groups, quotas={0: 4})


# -- bmmal -------------------------------------------------------------------------------------------
def authors_rule(probs, only_m1, only_m2, none, z1, z2, budget, rng):
    """Independent re-derivation of the BMMAL selection for two modalities (Shen et al. 2023),
    written from the published rule with explicit gradient-embedding matrices."""
    n, C = probs.shape
    y = probs.argmax(axis=1)
    # per-class Shapley deltas as the authors compute them: dropping m1 leaves only m2, and
    # the empty coalition is the prediction with both modalities dropped (`none`)
    d1 = (probs - only_m2 + only_m1 - none) / 2
    d2 = (probs - only_m1 + only_m2 - none) / 2
    c1 = (np.abs(d1) / (np.abs(d1) + np.abs(d2)))[np.arange(n), y]
    c2 = (np.abs(d2) / (np.abs(d1) + np.abs(d2)))[np.arange(n), y]
    s1 = np.where(c1 > c2, 1.0, 1.0 - (c2 - c1))
    s2 = np.where(c2 >= c1, 1.0, 1.0 - (c1 - c2))
    g = probs - np.eye(C)[y]
    # class-major layout: for each class, the m1 block then the m2 block
    G = np.concatenate([np.concatenate([(s1 * g[:, c])[:, None] * z1, (s2 * g[:, c])[:, None] * z2], axis=1)
                        for c in range(C)], axis=1)
    picks = [int(np.argmax(np.linalg.norm(G, axis=1)))]
    D = np.linalg.norm(G - G[picks[0]], axis=1)
    while len(picks) < budget:
        w = D**2
        cdf = np.cumsum(w) / w.sum()
        i = int(np.searchsorted(cdf, rng.random(), side="right"))
        picks.append(i)
        D = np.minimum(D, np.linalg.norm(G - G[i], axis=1))
    return picks, np.stack([s1, s2], axis=1)


def bmmal_inputs(n=40, C=4, d=(5, 3), seed=0):
    rng = np.random.default_rng(seed)

    def probs():
        return rng.dirichlet(np.ones(C) * 0.7, size=n)

    full, only_m1, only_m2 = probs(), probs(), probs()
    none = np.tile(probs()[:1], (n, 1))  # all masked: the same prediction for every sample
    z1, z2 = rng.normal(size=(n, d[0])), rng.normal(size=(n, d[1]))
    view = PoolView(
        probs=full,
        subset_probs={(): none, ("m1",): only_m1, ("m2",): only_m2, ("m1", "m2"): full},
        modality_embeddings={"m1": z1, "m2": z2},
        modalities=["m1", "m2"],
    )
    return view, (full, only_m1, only_m2, none, z1, z2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bmmal_picks_what_the_authors_rule_picks(seed):
    view, (full, only_m1, only_m2, none, z1, z2) = bmmal_inputs(seed=seed)
    budget = 10
    ours = BMMAL(block=0).select(view, budget, np.random.default_rng(100 + seed)).tolist()
    ref, ref_scales = authors_rule(full, only_m1, only_m2, none, z1, z2, budget, np.random.default_rng(100 + seed))
    assert ours == ref
    assert np.allclose(bmmal_scales(full, view.subset_probs, ["m1", "m2"]), ref_scales)
    # valuing the empty coalition at 0 is a different rule: other scales, other picks
    zero = BMMAL(block=0, empty="zero")
    assert not np.allclose(bmmal_scales(full, view.subset_probs, ["m1", "m2"], "zero"), ref_scales)
    assert zero.select(view, budget, np.random.default_rng(100 + seed)).tolist() != ref


def test_bmmal_worked_case_empty_coalition_is_the_all_masked_prediction():
    # v(m1, m2) = 0.9, v(m1) = 0.9, v(m2) = 0.5, v(empty) = 0.5 (probability of the predicted class)
    full = onehot_probs([[0.9, 0.1]])
    subsets = {(): onehot_probs([[0.5, 0.5]]), ("a",): full, ("b",): onehot_probs([[0.5, 0.5]]), ("a", "b"): full}
    # the authors: phi_a = (0.4 + 0.4) / 2, phi_b = (0 + 0) / 2 -> contributions [1, 0] -> scales [1, 0]
    assert bmmal_scales(full, subsets, ["a", "b"])[0] == pytest.approx([1.0, 0.0])
    # v(empty) = 0: phi_a = 0.65, phi_b = 0.25 -> contributions [0.722, 0.278] -> scales [1, 0.556]
    assert bmmal_scales(full, subsets, ["a", "b"], "zero")[0] == pytest.approx([1.0, 1 - 0.4 / 0.9])
    assert 1 - 0.4 / 0.9 == pytest.approx(0.556, abs=5e-4)


def test_bmmal_needs_the_all_masked_prediction_unless_told_otherwise():
    full = onehot_probs([[0.9, 0.1]])
    subsets = {("a",): full, ("b",): full, ("a", "b"): full}
    with pytest.raises(MmalError, match=r"subset \(\) \(every modality masked\)"):
        bmmal_scales(full, subsets, ["a", "b"])
    assert bmmal_scales(full, subsets, ["a", "b"], "zero").tolist() == [[1.0, 1.0]]
    with pytest.raises(MmalError, match="empty"):
        construct(BMMAL, {"empty": "prior"}, "strategy 'bmmal'")


def test_bmmal_blocked_draws_follow_the_same_d2_distribution():
    from mmal_strategies.geometry import GradientEmbeddingDistances

    view, _ = bmmal_inputs(seed=3)
    strategy = BMMAL()  # block=64: rejection sampling from stale weights
    dist = GradientEmbeddingDistances(strategy.gradient_blocks(view))
    first = int(np.argmax(dist.sqnorms.cpu().numpy()))
    d2 = dist(first).cpu().numpy().astype(np.float64)
    expected = d2 / d2.sum()
    counts = np.zeros(len(view))
    for s in range(2000):
        picks = strategy.select(view, 2, np.random.default_rng(s))
        assert picks[0] == first
        counts[picks[1]] += 1
    from scipy.stats import chisquare

    keep = expected > 0
    result = chisquare(counts[keep], expected[keep] * counts.sum())
    assert result.pvalue > 0.001  # consistent with D^2 sampling (the seeds are fixed: not flaky)
    assert counts[~keep].sum() == 0


def test_bmmal_scales_shrink_the_weaker_modality_only():
    # row 0: m1 alone already gives the prediction, m2 alone does not -> m2 is the weak one
    full = onehot_probs([[0.9, 0.1], [0.9, 0.1]])
    only_m1 = onehot_probs([[0.9, 0.1], [0.5, 0.5]])
    only_m2 = onehot_probs([[0.5, 0.5], [0.5, 0.5]])
    s = bmmal_scales(full, {("a",): only_m1, ("b",): only_m2, ("a", "b"): full}, ["a", "b"], "zero")
    # row 0: phi_a = (0.9 - 0.5 + 0.9) / 2 = 0.65, phi_b = (0.9 - 0.9 + 0.5) / 2 = 0.25
    assert s[0].tolist() == pytest.approx([1.0, 1.0 - (0.65 - 0.25) / 0.9])
    assert s[1].tolist() == pytest.approx([1.0, 1.0])  # symmetric row: a tie leaves both at 1


def test_bmmal_first_pick_is_the_largest_gradient_and_three_modalities_work():
    view = synthetic_view(modalities=("a", "b", "c"), n=30, seed=5)
    picks = BMMAL().select(view, 5, np.random.default_rng(0))
    blocks = BMMAL().gradient_blocks(view)
    norms = sum((a * a).sum(1) * (z * z).sum(1) for a, z in blocks)
    assert picks[0] == int(np.argmax(norms))
    scales = bmmal_scales(view.probs, view.subset_probs, ["a", "b", "c"])
    assert np.allclose(scales.max(axis=1), 1.0) and (scales > 0).all()


# -- stratified_uncertainty -------------------------------------------------------------------------
def test_stratified_quotas_follow_the_pool_shares():
    patterns = np.array([3] * 60 + [1] * 30 + [2] * 10)
    assert stratified_quotas(patterns, 10) == {1: 3, 2: 1, 3: 6}
    assert sum(stratified_quotas(patterns, 7).values()) == 7
    assert stratified_quotas(np.array([1, 1, 2]), 3) == {1: 2, 2: 1}


def test_stratified_uncertainty_does_not_overpick_incomplete_samples():
    n = 20
    rng = np.random.default_rng(0)
    mask = np.ones((n, 2), dtype=bool)
    mask[:5, 1] = False  # a quarter of the pool lacks m1 ...
    fused = np.tile([0.9, 0.1], (n, 1))
    fused[:5] = [0.5, 0.5]  # ... and those are the most uncertain ones
    fused[5:] += rng.uniform(-0.05, 0.05, size=(n - 5, 1)) * np.array([1, -1])
    heads = {"m0": fused.copy(), "m1": fused.copy()}
    view = PoolView(probs=fused, modality_probs=heads, mask=mask,
                    metrics={"contribution": {"m0": 0.8, "m1": 0.2}})
    picks = StratifiedUncertainty().select(view, 8, rng)
    assert np.sum(picks < 5) == 2  # a quarter of the budget, not all of it
    # within the complete samples it takes the most uncertain ones
    complete = picks[picks >= 5]
    s = StratifiedUncertainty().score(view)
    assert set(complete) == set(5 + np.argsort(-s[5:])[:6])


def test_stratified_uncertainty_weights_the_weak_modality():
    heads = {"m0": onehot_probs([[0.5, 0.5], [0.9, 0.1]]), "m1": onehot_probs([[0.9, 0.1], [0.5, 0.5]])}
    fused = onehot_probs([[0.8, 0.2], [0.8, 0.2]])
    strong_m0 = PoolView(probs=fused, modality_probs=heads, metrics={"contribution": {"m0": 0.9, "m1": 0.1}})
    strong_m1 = PoolView(probs=fused, modality_probs=heads, metrics={"contribution": {"m0": 0.1, "m1": 0.9}})
    rng = np.random.default_rng(0)
    assert StratifiedUncertainty().select(strong_m0, 1, rng).tolist() == [1]  # m1 weak: its unsure row
    assert StratifiedUncertainty().select(strong_m1, 1, rng).tolist() == [0]
