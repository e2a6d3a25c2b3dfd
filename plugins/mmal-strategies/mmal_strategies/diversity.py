"""Diversity and hybrid strategies on the fused embedding: core-set, k-means, BADGE, TypiClust.

All four run their geometry through :mod:`mmal_strategies.geometry`: float32 torch, on CUDA
when torch sees a GPU (``device="auto"``), in blocks, never an n x n matrix nor BADGE's
n x (C d) gradient-embedding matrix.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mmal_core import MmalError, PoolView, Strategy
from mmal_core.params import check_int

from . import geometry

DEVICES = ("auto", "cpu", "cuda")


def check_device(device: Any) -> str:
    """Validate a ``device`` strategy parameter (``auto`` | ``cpu`` | ``cuda``)."""
    from mmal_core.params import check_choice

    return check_choice("device", device, DEVICES)


def torch_device(device: str):
    """The torch device for a validated ``device`` parameter; a one-line error without a GPU."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise MmalError("parameter 'device': cuda was asked for but torch sees no GPU")
    return geometry.resolve_device(device)


def check_budget(view: PoolView, budget: int) -> int:
    """The budget as int, or a one-line error when it is outside [1, len(view)]."""
    n = len(view)
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or not 1 <= budget <= n:
        raise MmalError(f"budget: expected an integer between 1 and {n} (the unlabeled pool), got {budget!r}")
    return int(budget)


class CoreSet(Strategy):
    """Core-set by greedy k-center (Sener & Savarese, "Active Learning for Convolutional
    Neural Networks: A Core-Set Approach", ICLR 2018).

    Starting from the labeled set as centers, repeatedly picks the unlabeled sample farthest
    (Euclidean, fused embedding) from its nearest center and makes it a center. One (n,)
    min-distance vector is kept; new centers are applied to it in blocks of 128 with one
    matrix product, and between two blocks a pick re-checks only the top of the stale
    vector against the pending centers (see :func:`geometry.kcenter_greedy_points`): the
    textbook picks, O((n_l + budget) n d) time in matrix products, O(n) extra memory plus
    bounded blocks, never an n x n matrix. With no labeled sample the first pick is drawn
    from the rng.

    Parameters:
        device: ``auto`` (CUDA when torch sees a GPU), ``cpu`` or ``cuda``.
    """

    name = "coreset"
    summary = "greedy k-center on the fused embeddings, from the labeled set (Sener & Savarese 2018)"
    requires = frozenset({"embeddings", "labeled_embeddings"})

    def __init__(self, device: str = "auto"):
        self.device = check_device(device)

    def select(self, view: PoolView, budget: int, rng: np.random.Generator) -> np.ndarray:
        budget = check_budget(view, budget)
        labeled = np.asarray(view.labeled_embeddings)
        pool = np.asarray(view.embeddings)
        return geometry.kcenter_greedy_points(pool, budget, rng, labeled=labeled if labeled.size else None,
                                              chunk_bytes=geometry.block_bytes(pool.nbytes),
                                              device=torch_device(self.device))


class KMeansSampling(Strategy):
    """k-means sampling: cluster the unlabeled fused embeddings into k = budget clusters and
    take the sample nearest each centroid (the "k-means" baseline of Zhdanov, "Diverse
    mini-batch Active Learning", arXiv 1901.05954, 2019, without the uncertainty
    pre-filter; see also Nguyen & Smeulders, ICML 2004).

    Clustering is Lloyd's algorithm with k-means++ seeding from the rng, computed in row
    blocks in float32 (at most ``geometry.CHUNK_BYTES`` of distances at once). Its
    assignments are Lloyd's, but after the first steps only the centers that moved are
    compared with the pool (``geometry.NearestCenters``), so a step costs O(n k_moved d)
    instead of O(n k d). Each pick is the member of its cluster nearest to the centroid, so
    the picks are distinct.

    Parameters:
        max_iter: at most this many Lloyd iterations (>= 1; stops earlier at convergence).
        device: ``auto`` | ``cpu`` | ``cuda``.
    """

    name = "kmeans"
    summary = "k-means (k = budget) on the fused embeddings, sample nearest each centroid"
    requires = frozenset({"embeddings"})

    def __init__(self, max_iter: int = 20, device: str = "auto"):
        self.max_iter = check_int("max_iter", max_iter, 1)
        self.device = check_device(device)

    def select(self, view: PoolView, budget: int, rng: np.random.Generator) -> np.ndarray:
        budget = check_budget(view, budget)
        x = geometry.as_float_tensor(view.embeddings, torch_device(self.device))
        _, labels, sqd = geometry.kmeans(x, budget, rng, max_iter=self.max_iter,
                                         chunk_bytes=geometry.block_bytes(x.numel() * 4))
        return nearest_per_cluster(labels.cpu().numpy(), sqd.cpu().numpy(), budget)


def nearest_per_cluster(labels: np.ndarray, sqdist: np.ndarray, k: int) -> np.ndarray:
    """One position per cluster: the member nearest its center (ties: lowest position).

    labels: (n,) cluster of each point in [0, k); sqdist: (n,) squared distance to its
    center. Clusters left empty are filled with the points farthest from their centers
    that are not picked yet, so exactly ``k`` distinct positions come back, in cluster order.
    """
    order = np.lexsort((np.arange(len(labels)), sqdist, labels))
    first = np.ones(len(order), dtype=bool)
    first[1:] = labels[order][1:] != labels[order][:-1]
    picks = order[first].astype(np.int64)
    if len(picks) < k:
        taken = np.zeros(len(labels), dtype=bool)
        taken[picks] = True
        spare = [i for i in np.argsort(-sqdist, kind="stable") if not taken[i]]
        picks = np.concatenate([picks, np.asarray(spare[: k - len(picks)], dtype=np.int64)])
    return picks


class Badge(Strategy):
    """BADGE (Ash et al., "Deep Batch Active Learning by Diverse, Uncertain Gradient Lower
    Bounds", ICLR 2020).

    The gradient embedding of a sample is the gradient of the cross-entropy at the
    predicted label y_hat with respect to the fused classifier's weights,
    g = (p - onehot(y_hat)) (x) e, with p the fused probabilities (n, C) and e the fused
    embedding (n, d). The batch is k-means++ seeding on the g's, the first pick being the
    largest gradient norm. Distances use the factorisation
    ||g_i - g_j||^2 = ||a_i||^2 ||e_i||^2 + ||a_j||^2 ||e_j||^2 - 2 (a_i.a_j)(e_i.e_j),
    so the n x (C d) matrix is never built. With ``block`` > 0 (default 64) the D^2
    vector is refreshed every ``block`` picks with blocked matrix products and each draw is
    made by rejection from the stale weights (exactly the k-means++ distribution, see
    :func:`geometry.kmeanspp_blocked`); ``block: 0`` updates it after every pick, one
    uniform per draw (the random stream scikit-activeml's BADGE uses).

    Parameters:
        block: picks between two refreshes of the D^2 vector (0: after every pick).
        device: ``auto`` | ``cpu`` | ``cuda``.
    """

    name = "badge"
    summary = "k-means++ on last-layer gradient embeddings (Ash et al. 2020)"
    requires = frozenset({"probs", "embeddings"})

    def __init__(self, block: int = 64, device: str = "auto"):
        self.block = check_int("block", block, 0)
        self.device = check_device(device)

    def select(self, view: PoolView, budget: int, rng: np.random.Generator) -> np.ndarray:
        import torch

        budget = check_budget(view, budget)
        emb = np.asarray(view.embeddings)
        dist = geometry.GradientEmbeddingDistances(
            [(gradient_factor(view.probs), emb)], device=torch_device(self.device)
        )
        first = int(torch.argmax(dist.sqnorms))
        if self.block == 0:
            return geometry.kmeanspp(dist.n, budget, rng, dist, first=first)
        return geometry.kmeanspp_blocked(dist.n, budget, rng, geometry.GradientBlocks(dist), first=first,
                                         block=self.block, chunk_bytes=geometry.block_bytes(emb.nbytes))


def gradient_factor(probs: Any) -> np.ndarray:
    """(n, C) float32 factor a = p - onehot(argmax p) of the last-layer gradient embedding.

    probs: (n, C) class probabilities. Ties in argmax go to the lowest class index.
    """
    p = np.asarray(probs, dtype=np.float32)
    a = p.copy()
    a[np.arange(len(p)), p.argmax(axis=1)] -= 1.0
    return a


class TypiClust(Strategy):
    """TypiClust (Hacohen, Dekel & Weinshall, "Active Learning on a Budget: Opposite
    Strategies Suit High and Low Budgets", ICML 2022), for low budgets.

    Clusters the labeled and unlabeled fused embeddings together with k-means into
    min(n_labeled + budget, max_clusters) clusters. Each pick goes to the cluster with the
    fewest labeled-or-picked samples (ties: the larger cluster, then the lower id; clusters
    smaller than ``min_cluster_size`` only when no other cluster has candidates) and takes
    its most typical unlabeled sample, typicality being the inverse mean Euclidean
    distance to its ``k_neighbors`` nearest neighbours within the cluster.

    Parameters:
        max_clusters: upper bound on the number of clusters (the paper uses 500).
        k_neighbors: neighbours for typicality (the paper uses 20).
        min_cluster_size: clusters smaller than this are used last (the paper uses 5).
        max_iter: Lloyd iterations of the clustering.
        device: ``auto`` | ``cpu`` | ``cuda``.
    """

    name = "typiclust"
    summary = "most typical sample of the largest uncovered k-means clusters (Hacohen et al. 2022)"
    requires = frozenset({"embeddings", "labeled_embeddings"})

    def __init__(self, max_clusters: int = 500, k_neighbors: int = 20, min_cluster_size: int = 5,
                 max_iter: int = 20, device: str = "auto"):
        self.max_clusters = check_int("max_clusters", max_clusters, 1)
        self.k_neighbors = check_int("k_neighbors", k_neighbors, 1)
        self.min_cluster_size = check_int("min_cluster_size", min_cluster_size, 1)
        self.max_iter = check_int("max_iter", max_iter, 1)
        self.device = check_device(device)

    def select(self, view: PoolView, budget: int, rng: np.random.Generator) -> np.ndarray:
        import torch

        budget = check_budget(view, budget)
        device = torch_device(self.device)
        pool = np.asarray(view.embeddings, dtype=np.float32)
        labeled = np.asarray(view.labeled_embeddings, dtype=np.float32).reshape(-1, pool.shape[1])
        x = geometry.as_float_tensor(np.concatenate([pool, labeled]) if len(labeled) else pool, device)
        k = min(len(labeled) + budget, self.max_clusters, x.shape[0])
        chunk = geometry.block_bytes(pool.nbytes) // 4  # the joint copy above takes most of the budget
        _, labels, _ = geometry.kmeans(x, k, rng, max_iter=self.max_iter, chunk_bytes=chunk)
        is_labeled = torch.zeros(x.shape[0], dtype=torch.bool, device=device)
        is_labeled[len(pool):] = True
        return typiclust_picks(x, labels, is_labeled, budget, self.k_neighbors, self.min_cluster_size, chunk)


def typiclust_picks(points: Any, labels: Any, is_labeled: Any, budget: int, k_neighbors: int = 20,
                    min_cluster_size: int = 5, chunk_bytes: int = geometry.CHUNK_BYTES) -> np.ndarray:
    """TypiClust's selection step on a given clustering.

    points: (N, d) all embeddings (candidates and labeled); labels: (N,) cluster ids;
    is_labeled: (N,) bool. Returns (budget,) int64 positions among the unlabeled rows,
    numbered in the order they appear in ``points`` (with the unlabeled rows first, as the
    strategy lays them out, these are pool positions).
    """
    import torch

    x = geometry.as_float_tensor(points, "cpu") if not isinstance(points, torch.Tensor) else points
    labels = torch.as_tensor(labels, device=x.device).to(torch.int64)
    is_labeled = torch.as_tensor(is_labeled, device=x.device).to(torch.bool)
    candidates = torch.nonzero(~is_labeled).squeeze(1)
    if not 1 <= budget <= len(candidates):
        raise MmalError(f"budget: expected between 1 and {len(candidates)} (the unlabeled pool), got {budget}")
    n_clusters = int(labels.max()) + 1
    size = torch.bincount(labels, minlength=n_clusters).cpu().numpy()
    covered = torch.bincount(labels[is_labeled], minlength=n_clusters).cpu().numpy()
    open_left = torch.bincount(labels[~is_labeled], minlength=n_clusters).cpu().numpy()
    pool_position = torch.full((x.shape[0],), -1, dtype=torch.int64, device=x.device)
    pool_position[candidates] = torch.arange(len(candidates), device=x.device)
    ranked: dict[int, list[int]] = {}  # cluster -> its unlabeled members, most typical first
    picks = []
    for _ in range(budget):
        alive = np.flatnonzero(open_left > 0)
        key = np.lexsort((alive, -size[alive], covered[alive], size[alive] < min_cluster_size))
        c = int(alive[key[0]])
        if c not in ranked:
            members = torch.nonzero(labels == c).squeeze(1)
            typicality = 1.0 / (geometry.knn_mean_distance(x[members], k_neighbors, chunk_bytes=chunk_bytes) + 1e-7)
            if len(members) == 1:
                typicality = torch.ones(1, device=x.device)
            free = ~is_labeled[members]
            members, typicality = members[free], typicality[free]
            order = np.lexsort((members.cpu().numpy(), -typicality.double().cpu().numpy()))
            ranked[c] = pool_position[members].cpu().numpy()[order].tolist()
        picks.append(ranked[c].pop(0))
        open_left[c] -= 1
        covered[c] += 1
    return np.asarray(picks, dtype=np.int64)
