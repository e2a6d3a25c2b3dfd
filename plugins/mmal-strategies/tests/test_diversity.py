"""Core-set, k-means, BADGE and TypiClust, and the geometry kernels under them."""

import numpy as np
import pytest
import torch

from mmal_core import MmalError, PoolView
from mmal_core.testing import parametrize_with_checks
from mmal_strategies import geometry
from mmal_strategies.diversity import Badge, CoreSet, KMeansSampling, TypiClust, gradient_factor, typiclust_picks

torch.set_num_threads(1)


@parametrize_with_checks([(cls, {"device": "cpu"}) for cls in (CoreSet, KMeansSampling, Badge, TypiClust)])
def test_conformance(check):
    check()


def _blobs(centers, per, spread=0.05, seed=0):
    rng = np.random.default_rng(seed)
    centers = np.asarray(centers, dtype=np.float32)
    pts = np.concatenate([c + spread * rng.normal(size=(per, centers.shape[1])) for c in centers])
    return pts.astype(np.float32), np.repeat(np.arange(len(centers)), per)


# -- geometry kernels ----------------------------------------------------------------------

def test_euclidean_distances_match_brute_force():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 7)).astype(np.float32)
    dist = geometry.EuclideanDistances(x, device="cpu")
    brute = ((x - x[13]) ** 2).sum(1)
    assert np.allclose(dist(13).numpy(), brute, atol=1e-4)
    c = rng.normal(size=(33, 7)).astype(np.float32)
    brute_min = ((x[:, None, :] - c[None]) ** 2).sum(2).min(1)
    # A tiny chunk forces many blocks: the result must not depend on the blocking.
    assert np.allclose(geometry.min_sqdist(x, c, chunk_bytes=4 * 200 * 5, device="cpu").numpy(), brute_min, atol=1e-4)
    assert torch.isinf(geometry.min_sqdist(x, np.zeros((0, 7)), device="cpu")).all()


def test_factorised_gradient_distances_match_the_explicit_embeddings():
    rng = np.random.default_rng(1)
    n, C, d = 50, 4, 6
    a1, e1 = rng.normal(size=(n, C)), rng.normal(size=(n, d))
    a2, e2 = rng.normal(size=(n, C)), rng.normal(size=(n, 3))
    g = np.concatenate([(a1[:, :, None] * e1[:, None]).reshape(n, -1), (a2[:, :, None] * e2[:, None]).reshape(n, -1)], 1)
    dist = geometry.GradientEmbeddingDistances([(a1, e1), (a2, e2)], device="cpu")
    for i in (0, 17, 49):
        assert np.allclose(dist(i).numpy(), ((g - g[i]) ** 2).sum(1), rtol=1e-4, atol=1e-3)
    assert np.allclose(dist.sqnorms.numpy(), (g**2).sum(1), rtol=1e-5)


def test_kcenter_greedy_equals_the_textbook_loop():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 5)).astype(np.float32)
    lab = rng.normal(size=(20, 5)).astype(np.float32)
    dist = geometry.EuclideanDistances(x, device="cpu")
    picks = geometry.kcenter_greedy(300, 15, dist, np.random.default_rng(0), min_sqdist=dist.to_rows(lab))
    # textbook: full distance matrix in float64
    centers = list(lab.astype(np.float64))
    ref = []
    for _ in range(15):
        d = ((x[:, None, :].astype(np.float64) - np.array(centers)[None]) ** 2).sum(2).min(1)
        d[ref] = -1
        ref.append(int(d.argmax()))
        centers.append(x[ref[-1]])
    assert picks.tolist() == ref
    # the lazy, blocked version used by the coreset strategy picks the same
    for block in (1, 4, 64):
        lazy = geometry.kcenter_greedy_points(x, 15, np.random.default_rng(0), labeled=lab, block=block, device="cpu")
        assert lazy.tolist() == ref
    # a precomputed initial vector gives the same picks
    start = geometry.min_sqdist(x, lab, device="cpu")
    given = geometry.kcenter_greedy_points(x, 15, np.random.default_rng(0), min_sqdist=start, device="cpu")
    assert given.tolist() == ref
    # with nothing labeled, the first pick is random and the rest follows
    free = geometry.kcenter_greedy_points(x, 6, np.random.default_rng(5), block=4, device="cpu")
    eager = geometry.kcenter_greedy(300, 6, dist, np.random.default_rng(5))
    assert free.tolist() == eager.tolist()


def test_blocked_kmeanspp_draws_from_the_exact_d2_distribution():
    x = np.array([[0.0], [1.0], [3.0], [3.0]], np.float32)
    counts = np.zeros((4, 4))
    for seed in range(1500):
        p = geometry.kmeanspp_points(x, 2, np.random.default_rng(seed), block=8, device="cpu")
        counts[p[0], p[1]] += 1
    # given the first center 0, D^2 = 1, 9, 9: the second is point 1 with probability 1/19
    assert counts[0, 1] / counts[0].sum() == pytest.approx(1 / 19, abs=0.03)
    # given the first center 2, D^2 = 9, 4, 0 (its duplicate is never drawn)
    assert counts[2, 3] == 0 and counts[2, 0] / counts[2].sum() == pytest.approx(9 / 13, abs=0.06)
    # the third pick is drawn by rejection against a pending center: still exact D^2
    y = np.array([[0.0], [1.0], [3.0], [3.0], [6.0]], np.float32)
    blocks = geometry.EuclideanBlocks(torch.from_numpy(y))
    third = []
    for seed in range(1500):
        p = geometry.kmeanspp_blocked(5, 3, np.random.default_rng(seed), blocks, first=0, block=8)
        if p[1] == 4:  # D^2 from {0, 6}: 1, 9, 9 for points 1, 2, 3
            third.append(p[2])
    assert len(third) > 500
    assert np.mean(np.array(third) == 1) == pytest.approx(1 / 19, abs=0.025)
    # duplicates only: after one pick per group, uniform over the rest
    dup = np.repeat(np.array([[0.0], [1.0]], np.float32), 3, axis=0)
    assert sorted(geometry.kmeanspp_points(dup, 6, np.random.default_rng(0), device="cpu").tolist()) == list(range(6))


def test_kmeanspp_never_repeats_and_handles_duplicates():
    x = np.zeros((10, 3), np.float32)
    x[5:] = 1.0  # two groups of identical points
    dist = geometry.EuclideanDistances(x, device="cpu")
    picks = geometry.kmeanspp(10, 10, np.random.default_rng(0), dist)
    assert sorted(picks.tolist()) == list(range(10))
    # after one pick in each group all D^2 are 0: the rest is uniform over the unpicked
    two = geometry.kmeanspp(10, 2, np.random.default_rng(3), dist, first=0)
    assert two[0] == 0 and two[1] >= 5


def test_kmeanspp_draws_proportionally_to_d2():
    x = np.array([[0.0], [1.0], [3.0]], np.float32)  # D^2 from point 0: 1 and 9
    dist = geometry.EuclideanDistances(x, device="cpu")
    rng = np.random.default_rng(0)
    second = [geometry.kmeanspp(3, 2, rng, dist, first=0)[1] for _ in range(1000)]
    share = np.mean(np.array(second) == 2)
    assert 0.87 < share < 0.93


def test_kmeans_recovers_separated_blobs():
    x, truth = _blobs([[0, 0], [10, 0], [0, 10], [10, 10]], 40)
    centers, labels, sqd = geometry.kmeans(x, 4, np.random.default_rng(0), device="cpu")
    labels = labels.numpy()
    # each blob is exactly one cluster
    assert all(len(set(labels[truth == b])) == 1 for b in range(4))
    assert len(set(labels)) == 4
    assert np.allclose(sqd.numpy(), ((x - centers.numpy()[labels]) ** 2).sum(1), atol=1e-3)


def _textbook_kmeans(x, seeds, max_iter=20):
    """Lloyd's algorithm as written in textbooks: every point against every center each step."""
    c = x[seeds].astype(np.float64)
    labels = None
    for _ in range(max_iter):
        d = ((x[:, None, :] - c[None, :, :]) ** 2).sum(2)
        new = d.argmin(1)
        if labels is not None and (new == labels).all():
            break
        labels = new
        for j in range(len(c)):
            if (labels == j).any():
                c[j] = x[labels == j].mean(0)
    return labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kmeans_assignments_are_lloyds(seed):
    # Many overlapping clusters, so that centers keep moving for several steps and the
    # partial updates (only moved centers, remembered near centers) are really exercised.
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(1500, 12)) + rng.normal(scale=2.0, size=(8, 12))[rng.integers(0, 8, 1500)]).astype(np.float32)
    seeds = geometry.kmeanspp_points(x, 40, np.random.default_rng(seed), device="cpu")
    centers, labels, _ = geometry.kmeans(x, 40, np.random.default_rng(seed), device="cpu", tol=0.0, max_iter=50)
    truth = _textbook_kmeans(x.astype(np.float64), seeds, max_iter=50)
    assert labels.numpy().tolist() == truth.tolist()
    means = np.stack([x[truth == j].mean(0) for j in range(40)])
    assert np.allclose(centers.numpy(), means, atol=1e-5)


@pytest.mark.parametrize("cache", [1, 3, 40])
def test_nearest_centers_follow_moving_centers_exactly(cache):
    rng = np.random.default_rng(cache)
    x = torch.from_numpy(rng.normal(size=(700, 6)).astype(np.float32))
    centers = torch.from_numpy(rng.normal(size=(25, 6)).astype(np.float32))
    near = geometry.NearestCenters(x, 25, cache=cache, centers=centers, chunk_bytes=4096)
    for step in range(12):
        moved = torch.from_numpy(np.sort(rng.choice(25, size=int(rng.integers(1, 25)), replace=False)))
        centers = centers.clone()
        # small and large moves: large ones make remembered centers stale and force full rows
        centers[moved] += torch.from_numpy(rng.normal(scale=0.05 if step % 2 else 1.0, size=(len(moved), 6)).astype(np.float32))
        labels = near.update(centers, moved)
        d = torch.cdist(x.double(), centers.double())
        assert labels.tolist() == d.argmin(1).tolist()
        assert torch.allclose(near.sqdist(), d.min(1).values.float() ** 2, rtol=1e-4, atol=1e-4)


def test_kmeanspp_reports_each_points_nearest_seed():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    picks, owner, sqd = geometry.kmeanspp_points(x, 20, np.random.default_rng(0), block=6, device="cpu", nearest=True)
    assert picks.tolist() == geometry.kmeanspp_points(x, 20, np.random.default_rng(0), block=6, device="cpu").tolist()
    d = ((x[:, None, :] - x[picks][None, :, :]) ** 2).sum(2)
    assert owner.numpy().tolist() == d.argmin(1).tolist()
    assert np.allclose(sqd.numpy(), d.min(1), atol=1e-4)


# -- strategies ------------------------------------------------------------------------------

def test_coreset_first_pick_is_farthest_from_the_labeled_set():
    pool = np.array([[0.0, 0.1], [5.0, 5.0], [0.2, 0.0], [-3.0, 0.0], [1.0, 1.0]], np.float32)
    labeled = np.array([[0.0, 0.0], [4.0, 4.0]], np.float32)
    view = PoolView(embeddings=pool, labeled_embeddings=labeled)
    picks = CoreSet(device="cpu").select(view, 3, np.random.default_rng(0))
    # distances to the labeled set: 0.01, 2, 0.04, 9, 2 -> -3,0 first; then (5,5) and (1,1)
    # tie at 2 against the labeled set, and (-3,0) is nearer (1,1) (17) than (5,5) (89).
    assert picks.tolist() == [3, 1, 4]


def test_coreset_covers_every_blob_before_repeating_one():
    x, truth = _blobs([[0, 0], [20, 0], [0, 20], [20, 20], [10, 10]], 30)
    labeled = x[truth == 4][:3] + 0.01
    view = PoolView(embeddings=x, labeled_embeddings=labeled)
    picks = CoreSet(device="cpu").select(view, 4, np.random.default_rng(0))
    assert sorted(truth[picks].tolist()) == [0, 1, 2, 3]


def test_kmeans_picks_one_per_separated_blob_near_its_centre():
    x, truth = _blobs([[0, 0], [10, 0], [0, 10], [10, 10], [5, 20]], 25, seed=4)
    picks = KMeansSampling(device="cpu").select(PoolView(embeddings=x), 5, np.random.default_rng(0))
    assert sorted(truth[picks].tolist()) == [0, 1, 2, 3, 4]
    for p in picks:
        members = x[truth == truth[p]]
        centre = members.mean(0)
        assert ((x[p] - centre) ** 2).sum() == pytest.approx(((members - centre) ** 2).sum(1).min(), abs=1e-5)


def test_badge_first_pick_has_the_largest_gradient_norm():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.5, 0.5], [0.99, 0.01]], np.float32)
    emb = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 1.0], [10.0, 10.0]], np.float32)
    a = gradient_factor(probs)
    norms = (a**2).sum(1) * (emb**2).sum(1)  # 0.02, 2.88, 0.5, 0.02
    picks = Badge(device="cpu").select(PoolView(probs=probs, embeddings=emb), 2, np.random.default_rng(0))
    assert picks[0] == int(np.argmax(norms)) == 1
    assert np.allclose(a[2], [-0.5, 0.5]) and np.allclose(a[1], [-0.4, 0.4])


def test_badge_block_zero_is_the_eager_kernel_and_blocked_draws_the_same_distribution():
    rng = np.random.default_rng(8)
    probs = rng.dirichlet(np.ones(3), size=40).astype(np.float32)
    emb = rng.normal(size=(40, 5)).astype(np.float32)
    view = PoolView(probs=probs, embeddings=emb)
    dist = geometry.GradientEmbeddingDistances([(gradient_factor(probs), emb)], device="cpu")
    first = int(torch.argmax(dist.sqnorms))
    eager = geometry.kmeanspp(40, 6, np.random.default_rng(1), dist, first=first)
    assert Badge(block=0, device="cpu").select(view, 6, np.random.default_rng(1)).tolist() == eager.tolist()
    # blocked: the second pick follows D^2 from the first, exactly
    d2 = dist(first).numpy().astype(np.float64)
    counts = np.zeros(40)
    for seed in range(1500):
        counts[Badge(block=4, device="cpu").select(view, 2, np.random.default_rng(seed))[1]] += 1
    expected = d2 / d2.sum() * 1500
    assert counts[first] == 0
    assert np.abs(counts - expected).max() < 5 * np.sqrt(expected.max()) + 3
    blocks = geometry.GradientBlocks(dist)
    assert np.allclose(blocks(slice(0, 40), torch.tensor([3, 7])).numpy()[:, 1], dist(7).numpy(), atol=1e-4)


def test_block_providers_keep_columns_only_for_the_same_tensor():
    # the providers keep the gathered columns between calls with the same cols tensor: a new
    # tensor (even of the same length) must be gathered afresh, and single rows given as a
    # slice must get the bits of rows given as an index tensor
    rng = np.random.default_rng(2)
    x = torch.from_numpy(rng.normal(size=(30, 4)).astype(np.float32))
    probs = rng.dirichlet(np.ones(3), size=30).astype(np.float32)
    dist = geometry.GradientEmbeddingDistances([(gradient_factor(probs), x.numpy())], device="cpu")
    for make in (lambda: geometry.EuclideanBlocks(x), lambda: geometry.GradientBlocks(dist)):
        kept, fresh = make(), make
        for cols in ([1, 2, 3], [4, 5, 6], [4, 5, 6], [7, 8], [1, 2, 3]):
            cols = torch.tensor(cols)
            for j in (0, 9, 29):
                got = kept(slice(j, j + 1), cols)
                assert torch.equal(got, fresh()(torch.tensor([j]), cols))
                assert torch.equal(got, kept(slice(j, j + 1), cols))
            assert torch.equal(kept(slice(0, 30), cols), fresh()(slice(0, 30), cols))


def test_badge_spreads_over_gradient_directions():
    # two tight blobs with the same uncertain prediction: their gradient embeddings are far
    # apart, points within a blob nearly identical, so k-means++ takes one from each.
    x, truth = _blobs([[10, 0], [0, 10]], 25, spread=0.01, seed=5)
    probs = np.full((50, 2), 0.5, np.float32)
    for seed in range(5):
        picks = Badge(device="cpu").select(PoolView(probs=probs, embeddings=x), 2, np.random.default_rng(seed))
        assert sorted(truth[picks].tolist()) == [0, 1]


def test_badge_never_picks_a_second_zero_gradient_sample_while_others_remain():
    # one-hot predictions have a zero gradient: after one such pick, the others have D^2 = 0
    probs = np.array([[1.0, 0.0]] * 5 + [[0.5, 0.5]] * 3, np.float32)
    emb = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    picks = Badge(device="cpu").select(PoolView(probs=probs, embeddings=emb), 4, np.random.default_rng(1))
    assert (picks < 5).sum() == 1


def test_typiclust_takes_the_densest_point_of_the_largest_uncovered_clusters():
    # 3 blobs; the labeled sample covers blob 0; blob 1 is larger than blob 2.
    x0, _ = _blobs([[0, 0]], 10, seed=1)
    x1, _ = _blobs([[10, 0]], 14, seed=2)
    x2, _ = _blobs([[0, 10]], 8, seed=3)
    pool = np.concatenate([x0, x1, x2])
    labeled = np.array([[0.0, 0.0]], np.float32)
    view = PoolView(embeddings=pool, labeled_embeddings=labeled)
    picks = TypiClust(max_clusters=3, k_neighbors=3, device="cpu").select(view, 2, np.random.default_rng(0))
    assert 10 <= picks[0] < 24 and picks[1] >= 24
    # and the pick is the most typical member of its blob
    members = pool[10:24]
    d = np.sqrt(((members[:, None] - members[None]) ** 2).sum(2))
    np.fill_diagonal(d, np.inf)
    typical = 1 / np.sort(d, 1)[:, :3].mean(1)
    assert picks[0] == 10 + int(np.argmax(typical))


def test_typiclust_fills_a_budget_larger_than_the_clusters():
    rng = np.random.default_rng(0)
    pool = rng.normal(size=(40, 3)).astype(np.float32)
    labels = np.arange(43) % 3
    is_labeled = np.zeros(43, bool)
    is_labeled[40:] = True
    picks = typiclust_picks(pool.tolist() + [[0, 0, 0]] * 3, labels, is_labeled, 40, k_neighbors=2)
    assert sorted(picks.tolist()) == list(range(40))


@pytest.mark.parametrize(
    "cls, params, key",
    [
        (CoreSet, {"device": "gpu"}, "device"),
        (KMeansSampling, {"max_iter": 0}, "max_iter"),
        (TypiClust, {"k_neighbors": 0}, "k_neighbors"),
        (TypiClust, {"max_clusters": "many"}, "max_clusters"),
        (Badge, {"device": 1}, "device"),
        (Badge, {"block": -1}, "block"),
    ],
)
def test_bad_parameters_name_the_parameter(cls, params, key):
    with pytest.raises(MmalError, match=f"parameter '{key}'"):
        cls(**params)


@pytest.mark.parametrize("cls", [CoreSet, KMeansSampling, Badge, TypiClust])
def test_budget_larger_than_the_pool_is_a_one_line_error(cls):
    rng = np.random.default_rng(0)
    view = PoolView(probs=np.full((5, 2), 0.5), embeddings=rng.normal(size=(5, 3)), labeled_embeddings=np.zeros((1, 3)))
    with pytest.raises(MmalError, match="budget: expected an integer between 1 and 5"):
        cls(device="cpu").select(view, 6, rng)


def test_cuda_without_a_gpu_is_a_one_line_error():
    if torch.cuda.is_available():
        pytest.skip("torch sees a GPU here")
    view = PoolView(embeddings=np.zeros((3, 2), np.float32), labeled_embeddings=np.zeros((0, 2), np.float32))
    with pytest.raises(MmalError, match="parameter 'device': cuda"):
        CoreSet(device="cuda").select(view, 1, np.random.default_rng(0))


def test_registered_under_their_names():
    from mmal_core import get_plugin_manager
    from mmal_strategies.bayesian import BALD, BatchBALD

    pm = get_plugin_manager()
    for cls in (CoreSet, KMeansSampling, Badge, TypiClust, BALD, BatchBALD):
        assert pm.get("strategy", cls.name) is cls
