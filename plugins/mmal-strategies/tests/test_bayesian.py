"""BALD and BatchBALD: conformance, MC dropout really on, and the joint-information greedy."""

import numpy as np
import pytest
import torch

from mmal_core import MmalError, ModalitySpec, PoolView, Split
from mmal_core.loop import view_params
from mmal_core.builtin.fusion import FusionMLP
from mmal_core.testing import parametrize_with_checks
from mmal_strategies.bayesian import BALD, BatchBALD, batchbald_picks, mutual_information
from mmal_strategies.uncertainty import entropy

torch.set_num_threads(1)


@parametrize_with_checks([(BALD, {}), (BALD, {"mc_samples": 3}), (BatchBALD, {"device": "cpu"}),
                          (BatchBALD, {"num_samples": 5, "device": "cpu"})])
def test_conformance(check):
    check()


@pytest.mark.parametrize("cls", [BALD, BatchBALD])
@pytest.mark.parametrize("bad", [0, -3, 2.5, "20", 1001, 10**9])
def test_mc_samples_must_be_a_positive_integer(cls, bad):
    with pytest.raises(MmalError, match="parameter 'mc_samples'"):
        cls(mc_samples=bad)


def test_the_loop_is_told_how_many_passes():
    assert view_params(BALD(mc_samples=7)) == {"mc_samples": 7}
    assert view_params(BatchBALD(mc_samples=5)) == {"mc_samples": 5}


def _trained_view(dropout, T=10):
    rng = np.random.default_rng(0)
    n = 90
    y = rng.integers(0, 3, n)
    a = rng.normal(size=(n, 4)) + y[:, None]
    b = rng.normal(size=(n, 5)) - 0.5 * y[:, None]
    pool = Split({"a": a, "b": b}, np.ones((n, 2), bool), y)
    model = FusionMLP(epochs=10, hidden=16, dropout=dropout, device="cpu")
    model.setup([ModalitySpec("a", 4), ModalitySpec("b", 5)], 3)
    labeled, unlabeled = np.arange(30), np.arange(30, n)
    model.fit(pool, labeled, seed=0)
    strategy = BALD(mc_samples=T)
    return PoolView.from_model(model, pool, unlabeled, labeled, strategy.requires | {"probs"},
                               params=view_params(strategy))


def test_bald_is_exactly_zero_without_dropout():
    view = _trained_view(dropout=0.0)
    assert view.mc_probs.shape == (10, 60, 3)
    scores = BALD().score(view)
    assert np.all(scores == 0.0)


def test_bald_with_dropout_is_positive_and_not_entropy():
    view = _trained_view(dropout=0.3)
    scores = BALD().score(view)
    assert np.all(scores >= 0) and scores.max() > 1e-3
    ent = entropy(view.mc_probs.mean(axis=0).astype(np.float64))
    assert not np.allclose(scores, ent)
    # the passes really differ from one another, and BALD stays below the entropy
    assert np.ptp(view.mc_probs, axis=0).max() > 1e-3
    assert np.all(scores <= ent + 1e-9)


def test_bald_prefers_disagreement_over_agreed_uncertainty():
    # sample 0: every pass says 50/50 (aleatoric); sample 1: passes disagree confidently
    mc = np.array([[[0.5, 0.5], [0.99, 0.01], [0.9, 0.1]],
                   [[0.5, 0.5], [0.01, 0.99], [0.9, 0.1]]])
    scores = mutual_information(mc)
    assert scores[0] == 0.0 and scores[2] == 0.0
    assert scores[1] == pytest.approx(np.log(2) - entropy(np.array([0.99, 0.01])), rel=1e-6)  # float32
    picks = BALD().select(PoolView(mc_probs=mc), 1, np.random.default_rng(0))
    assert picks.tolist() == [1]


def test_mutual_information_matches_a_float64_reference_and_is_exact_at_agreement():
    rng = np.random.default_rng(7)
    mc = rng.dirichlet(np.ones(10) * 0.5, size=(20, 3000)).astype(np.float32)
    mc[:, 5] = mc[0, 5]  # passes agree exactly: MI is exactly 0
    mc[:, 6, 0] = 0.0  # a class with probability 0 in every pass
    mc[:, 6] /= mc[:, 6].sum(1, keepdims=True)
    mc[1:, 7] = mc[0, 7]
    mc[1, 7, :2] = mc[0, 7, [1, 0]]  # one pass differs slightly: MI small but not 0
    p = mc.astype(np.float64)
    mean = p.mean(0)
    xlogx = lambda q: np.where(q > 0, q * np.log(np.where(q > 0, q, 1.0)), 0.0)  # noqa: E731
    ref = -xlogx(mean).sum(1) + xlogx(p).sum(2).mean(0)
    got = mutual_information(mc, chunk_bytes=20 * 10 * 4 * 512)  # several blocks
    assert got.shape == (3000,) and np.all(np.isfinite(got))
    assert np.allclose(got, ref, atol=2e-6)
    assert got[5] == 0.0 and got[7] > 0.0


def _joint_mi(mc, batch):
    """Brute-force I[y_batch; w]: the full table of all C^|batch| configurations."""
    T, _, C = mc.shape
    table = np.ones((T, 1))
    for j in batch:  # table[t, y_1..y_k] = prod_j p_t(y_j | x_j), flattened
        table = (table[:, :, None] * mc[:, j, None, :]).reshape(T, -1)
    p = table.mean(axis=0)
    H = -(p[p > 0] * np.log(p[p > 0])).sum()
    cond = -(mc * np.log(mc)).sum(2).mean(0)
    return H - cond[list(batch)].sum()


def test_batchbald_exact_greedy_matches_brute_force_joint_information():
    rng = np.random.default_rng(3)
    mc = rng.dirichlet(np.ones(3) * 0.7, size=(6, 12))  # T=6, n=12, C=3
    picks = batchbald_picks(mc, 4, np.random.default_rng(0), num_samples=10_000)
    chosen = []
    for _ in range(4):
        gains = [(-np.inf if i in chosen else _joint_mi(mc, chosen + [i])) for i in range(12)]
        chosen.append(int(np.argmax(gains)))
    assert picks.tolist() == chosen
    # first pick is plain BALD
    assert picks[0] == int(np.argmax(mutual_information(mc)))


def test_batchbald_avoids_duplicates_that_bald_takes():
    rng = np.random.default_rng(4)
    mc = rng.dirichlet(np.ones(4) * 0.3, size=(8, 6))
    top = int(np.argmax(mutual_information(mc)))
    mc = np.concatenate([mc, mc[:, [top, top, top]]], axis=1)  # three copies of the top sample
    bald = BALD().select(PoolView(mc_probs=mc), 3, np.random.default_rng(0))
    batch = BatchBALD(device="cpu").select(PoolView(mc_probs=mc), 3, np.random.default_rng(0))
    copies = {top, 6, 7, 8}
    assert set(bald.tolist()) <= copies  # BALD takes the same point three times
    assert len(set(batch.tolist()) & copies) == 1  # BatchBALD: a copy adds little information


def test_batchbald_sampled_configurations_track_the_exact_choice():
    from mmal_strategies import bayesian

    rng = np.random.default_rng(5)
    mc = rng.dirichlet(np.ones(10) * 0.5, size=(10, 30))  # T=10, n=30, C=10
    exact = batchbald_picks(mc, 4, np.random.default_rng(0), num_samples=10**6)
    # 500 configurations: exact for the first 3 picks (10^2 * 10 > 500), sampled after
    sampled = batchbald_picks(mc, 4, np.random.default_rng(0), num_samples=500)
    assert sampled[:3].tolist() == exact[:3].tolist()
    gains = np.array([_joint_mi(mc, exact[:3].tolist() + [i]) for i in range(30)])
    gains[exact[:3]] = -np.inf
    assert gains[exact[3]] == pytest.approx(gains.max())
    assert gains[sampled[3]] > gains.max() - 0.02  # near-best: top gains differ by ~0.001
    # the sampled estimate of E_y H[y_x | y_B] converges to the exact one
    p = torch.as_tensor(mc).double()
    joint = torch.ones(1, 10, dtype=torch.float64)
    for i in exact[:3]:
        joint = (joint[:, None, :] * p[:, i, :].T[None]).reshape(-1, 10)
    truth = bayesian._expected_conditional_entropy(joint / joint.sum(1, keepdim=True), joint.mean(1), p, 2**25)
    errors = []
    for m in (200, 20000):
        logp, _ = bayesian._sample_configurations(p, exact[:3], m, np.random.default_rng(1))
        est = bayesian._expected_conditional_entropy(torch.softmax(logp, 1), torch.full((m,), 1 / m, dtype=torch.float64), p, 2**25)
        errors.append(float((est - truth).abs().max()))
    assert errors[1] < 0.006 and errors[1] < errors[0]
    again = batchbald_picks(mc, 4, np.random.default_rng(0), num_samples=500)
    assert np.array_equal(sampled, again)


@pytest.mark.parametrize("bad", [0, 100_001])
def test_batchbald_num_samples_is_validated(bad):
    with pytest.raises(MmalError, match="parameter 'num_samples'"):
        BatchBALD(num_samples=bad)


def _score_every_candidate(model, weight, p, cond, picked, chunk_bytes):
    from mmal_strategies import bayesian

    score = bayesian._expected_conditional_entropy(model, weight, p, chunk_bytes) - cond
    score[picked] = -np.inf
    return score


@pytest.mark.parametrize("seed", range(6))
def test_batchbald_pruned_by_its_bound_picks_what_scoring_everything_picks(seed, monkeypatch):
    from mmal_strategies import bayesian

    torch.set_num_threads(1)
    rng = np.random.default_rng(seed)
    T, n, C = 10, 400, 4
    mc = rng.dirichlet(np.ones(C) * rng.uniform(0.2, 2.0), size=(T, n))
    # like a trained model's pool: most samples confident (a few uncertain ones are the contest)
    confident = rng.dirichlet(np.full(C, 0.5), size=(1, n)) ** 8 + rng.uniform(0, 1e-3, size=(T, n, C))
    mc[:, 100:] = (confident / confident.sum(axis=2, keepdims=True))[:, 100:]
    mc = mc.astype(np.float32)
    mc[:, 50:60] = mc[:, 40:50]  # exact copies: ties, which go to the lowest position
    scored = []
    real = bayesian._expected_conditional_entropy

    def counting(model, weight, p, chunk_bytes):
        scored.append(p.shape[1])
        return real(model, weight, p, chunk_bytes)

    monkeypatch.setattr(bayesian, "_expected_conditional_entropy", counting)
    for num_samples in (30, 200):  # exact for the first picks, then sampled configurations
        scored.clear()
        pruned = batchbald_picks(mc, 12, np.random.default_rng(seed), num_samples)
        assert sum(scored) < 0.15 * 12 * n  # most candidates are never scored exactly (about 3% here)
        with monkeypatch.context() as m:
            m.setattr(bayesian, "_pruned_scores", _score_every_candidate)
            full = batchbald_picks(mc, 12, np.random.default_rng(seed), num_samples)
        assert pruned.tolist() == full.tolist()


def test_batchbald_bound_is_never_below_the_exact_score():
    from mmal_strategies import bayesian

    rng = np.random.default_rng(9)
    p = torch.as_tensor(rng.dirichlet(np.ones(5) * 0.4, size=(8, 300)).astype(np.float32)).double()
    cond = -(torch.special.xlogy(p, p)).sum(dim=2).mean(dim=0)
    for m in (1, 5, 125):
        model = torch.softmax(torch.as_tensor(rng.normal(size=(m, 8)) * 2), dim=1)
        weight = torch.as_tensor(rng.dirichlet(np.ones(m)))
        exact = bayesian._expected_conditional_entropy(model, weight, p, 2**25) - cond
        bound = bayesian._grouped_bound(model, weight, p, 2**25) - cond
        assert bool((exact <= bound + bayesian.BOUND_SLACK).all())
        # the groups only tighten Jensen's bound on all configurations at once
        mix = torch.einsum("t,tnc->nc", weight @ model, p)
        assert bool((bound <= -torch.special.xlogy(mix, mix).sum(dim=1) - cond + 1e-12).all())
        # blocks of a few candidates give the same bound
        assert torch.allclose(bayesian._grouped_bound(model, weight, p, 8 * 8 * 5 * 7) - cond, bound, rtol=0, atol=1e-12)
    # configurations whose posterior sits on one pass each: the bound is the exact score
    model = torch.eye(8, dtype=torch.float64)[rng.integers(8, size=40)]
    weight = torch.as_tensor(rng.dirichlet(np.ones(40)))
    exact = bayesian._expected_conditional_entropy(model, weight, p, 2**25)
    assert torch.allclose(bayesian._grouped_bound(model, weight, p, 2**25), exact, rtol=0, atol=1e-9)
