"""Distance kernels shared by the diversity strategies: k-center greedy, k-means++, k-means.

Every kernel works on torch tensors in float32 (on CUDA when torch sees a GPU, on the CPU
otherwise), never materialises an n x n matrix, and keeps its temporary blocks below
``chunk_bytes`` (default :data:`CHUNK_BYTES`), so that the peak extra memory of a selection
stays within about twice the pool's feature array.

The two greedy kernels take the geometry as a callable, so that one implementation serves
plain Euclidean embeddings, BADGE's factorised gradient embeddings and the block-wise
(per-modality) gradient embeddings of multimodal strategies::

    sqdist_from(i) -> (n,) tensor or array of squared distances from pool point i to every
                      pool point (0 at i itself)

Two ready-made providers implement it: :class:`EuclideanDistances` (rows of an (n, d)
array) and :class:`GradientEmbeddingDistances` (gradient embeddings g_i = a_i (x) e_i,
optionally in several blocks, from their factors only). Randomness comes only from the
numpy ``rng`` passed in, so a seed reproduces the picks.

The generic kernels touch the whole pool once per pick (a matrix-vector product, bound by
memory bandwidth). The blocked variants batch that work into matrix products:
:func:`kcenter_greedy_points` (Euclidean k-center, the same picks) and
:func:`kmeanspp_blocked` (k-means++ by rejection sampling, the same distribution, with
block providers ``block_sqdist(rows, cols) -> (r, b)``: :class:`EuclideanBlocks`,
:class:`GradientBlocks`).

References: Sener & Savarese, "Active Learning for Convolutional Neural Networks: A Core-Set
Approach", ICLR 2018 (k-center greedy); Arthur & Vassilvitskii, "k-means++: The Advantages
of Careful Seeding", SODA 2007; Ash et al., "Deep Batch Active Learning by Diverse,
Uncertain Gradient Lower Bounds" (BADGE), ICLR 2020; Lloyd (1982) for k-means.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

#: Default cap, in bytes, of any temporary block a kernel allocates (distance blocks etc.).
CHUNK_BYTES = 16 * 2**20


def block_bytes(feature_bytes: int) -> int:
    """Temporary-block budget for a pool whose feature array has ``feature_bytes`` bytes.

    At most :data:`CHUNK_BYTES`, at most half the feature array (so that a selection's extra
    memory stays within about twice the features), and at least 1 MiB.
    """
    return int(max(2**20, min(CHUNK_BYTES, int(feature_bytes) // 2)))


def resolve_device(device: Any = "auto"):
    """A ``torch.device``: ``"auto"`` means CUDA when torch sees a GPU, else the CPU."""
    import torch

    if isinstance(device, torch.device):
        return device
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def as_float_tensor(x: Any, device: Any = "auto"):
    """``x`` as a float32 torch tensor on ``device`` (no copy for a float32 CPU array on CPU)."""
    import torch

    device = resolve_device(device)
    if isinstance(x, torch.Tensor):
        return x.to(device=device, dtype=torch.float32)
    arr = np.asarray(x)
    if arr.dtype != np.float32 or not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr, dtype=np.float32)
    return torch.from_numpy(arr).to(device)


def sqnorms(x):
    """(n,) squared Euclidean norm of each row of a tensor, without an (n, d) temporary."""
    import torch

    return torch.linalg.vector_norm(x, dim=1).square_()


def _rows_per_block(n_cols: int, chunk_bytes: int) -> int:
    return max(1, int(chunk_bytes) // (4 * max(1, n_cols)))


class EuclideanDistances:
    """Squared Euclidean distances from one row of ``points`` to all rows.

    points: (n, d) array or tensor. ``self(i)`` returns an (n,) float32 tensor
    ``||x_i - x_j||^2`` computed as ``||x_i||^2 + ||x_j||^2 - 2 x_i.x_j`` (one matrix-vector
    product, O(n d) time, O(n) memory), clamped at 0.
    """

    def __init__(self, points: Any, device: Any = "auto"):
        self.points = as_float_tensor(points, device)
        if self.points.ndim != 2:
            raise ValueError(f"points: expected an (n, d) array, got shape {tuple(self.points.shape)}")
        self.sqnorms = sqnorms(self.points)
        self.n = int(self.points.shape[0])

    def __call__(self, i: int):
        d = self.sqnorms + self.sqnorms[i] - 2.0 * (self.points @ self.points[i])
        d.clamp_(min=0.0)
        d[i] = 0.0
        return d

    def to_rows(self, others: Any, chunk_bytes: int = CHUNK_BYTES):
        """(n,) squared distance from each point to its nearest row of ``others`` (m, d).

        Returns +inf everywhere when ``others`` has no rows. Works block-wise on ``others``,
        so at most ``chunk_bytes`` of distances exist at once.
        """
        return min_sqdist(self.points, others, chunk_bytes=chunk_bytes, device=self.points.device)


def min_sqdist(points: Any, centers: Any, *, chunk_bytes: int = CHUNK_BYTES, device: Any = "auto"):
    """(n,) float32 tensor: squared Euclidean distance from each point to its nearest center.

    points: (n, d); centers: (m, d). +inf everywhere when m == 0. The (n, m) distance matrix
    is computed in column blocks of at most ``chunk_bytes``.
    """
    import torch

    x = as_float_tensor(points, device)
    out = torch.full((x.shape[0],), float("inf"), dtype=torch.float32, device=x.device)
    if centers is None or len(centers) == 0:
        return out
    c = as_float_tensor(centers, x.device)
    if c.ndim != 2 or c.shape[1] != x.shape[1]:
        raise ValueError(f"centers: expected shape (m, {x.shape[1]}), got {tuple(c.shape)}")
    step = _rows_per_block(x.shape[0], chunk_bytes)
    for start in range(0, c.shape[0], step):
        block = c[start : start + step]
        # ||c||^2 - 2 x.c in one fused GEMM; ||x||^2 is the same along a row, added after the min
        d = torch.addmm(sqnorms(block)[None, :], x, block.T, alpha=-2.0)
        torch.minimum(out, d.min(dim=1).values, out=out)
        del d
    out.add_(sqnorms(x)).clamp_(min=0.0)
    return out


_nearest_sqdist = min_sqdist  # for functions whose ``min_sqdist`` parameter shadows the name


class GradientEmbeddingDistances:
    """Squared distances between gradient embeddings known only through their factors.

    A gradient embedding is the outer product g_i = a_i (x) e_i (for BADGE, a_i = p_i -
    onehot(y_hat_i) of length C and e_i the penultimate-layer embedding of length d), and
    optionally a concatenation of several such blocks ``g_i = [a_i^1 (x) e_i^1, ...,
    a_i^B (x) e_i^B]`` (per-modality blocks; scale a block by s_i by multiplying its e_i by
    s_i). The distance uses

        ||g_i - g_j||^2 = sum_b ||a_i^b||^2 ||e_i^b||^2 + ||a_j^b||^2 ||e_j^b||^2
                          - 2 (a_i^b . a_j^b)(e_i^b . e_j^b)

    so ``self(i)`` costs O(n (C + d)) per block and the n x (C d) matrix is never built.

    blocks: sequence of (a, e) pairs, a: (n, C_b), e: (n, d_b). A single pair may be given
    as ``GradientEmbeddingDistances([(a, e)])``.
    """

    def __init__(self, blocks: Sequence[tuple[Any, Any]], device: Any = "auto"):
        dev = resolve_device(device)
        self.blocks = []
        self.sqnorms = None
        for a, e in blocks:
            a_t, e_t = as_float_tensor(a, dev), as_float_tensor(e, dev)
            if a_t.ndim != 2 or e_t.ndim != 2 or a_t.shape[0] != e_t.shape[0]:
                raise ValueError("blocks: each block needs a: (n, C) and e: (n, d) with the same n")
            an, en = sqnorms(a_t), sqnorms(e_t)
            self.blocks.append((a_t, e_t))
            self.sqnorms = an * en if self.sqnorms is None else self.sqnorms + an * en
        if not self.blocks:
            raise ValueError("blocks: give at least one (a, e) pair")
        self.n = int(self.sqnorms.shape[0])

    def __call__(self, i: int):
        d = self.sqnorms + self.sqnorms[i]
        for a, e in self.blocks:
            d = d - 2.0 * (a @ a[i]) * (e @ e[i])
        d.clamp_(min=0.0)
        d[i] = 0.0
        return d


def kcenter_greedy(
    n: int,
    budget: int,
    sqdist_from: Callable[[int], Any],
    rng: np.random.Generator,
    *,
    min_sqdist: Any = None,
    groups: Any = None,
    quotas: dict[int, int] | None = None,
) -> np.ndarray:
    """Greedy k-center selection (Sener & Savarese, 2018): ``budget`` pool positions.

    n: pool size; sqdist_from: see the module docstring; min_sqdist: optional (n,) squared
    distance from each pool point to the already-labeled set (+inf or None when nothing is
    labeled, e.g. from :func:`min_sqdist`). Each step picks the point farthest from every
    center so far (first maximum on ties) and updates the one (n,) min-distance vector with
    that point's distances: O(budget * cost(sqdist_from)) time, O(n) extra memory. When no
    distance is finite yet (no labeled set), the first pick is drawn uniformly from ``rng``.

    groups, quotas: optional (n,) group of every point and the number of picks each group
    may take (summing to ``budget``, none above its group's size). Then each step picks the
    farthest point among the groups with quota left: k-center greedy under a quota per
    group; every pick still counts as a center for all points.
    Returns (budget,) int64 positions in pick order.
    """
    import torch

    _check_budget(n, budget)
    picks = np.empty(budget, dtype=np.int64)
    if budget == 0:
        return picks
    left = None
    if groups is not None:
        groups = np.asarray(groups).reshape(-1)
        left = {int(g): int(q) for g, q in (quotas or {}).items()}
        sizes = dict(zip(*np.unique(groups, return_counts=True)))
        if len(groups) != n or sum(left.values()) != budget or any(q > sizes.get(g, 0) or q < 0 for g, q in left.items()):
            raise ValueError("quotas: expected one count per group, within the group's size, summing to the budget")
        for g in sizes:
            left.setdefault(int(g), 0)  # a group without a quota takes no pick
        group_t = torch.as_tensor(groups)
    best = None
    if min_sqdist is not None:
        best = torch.as_tensor(min_sqdist).to(torch.float32).clone()
        if not torch.isfinite(best).any():
            best = None

    def close_full_groups():  # points of groups without quota left can no longer be picked
        for g in [g for g, q in left.items() if q == 0]:
            best[(group_t == g).to(best.device)] = -math.inf
            del left[g]

    for k in range(budget):
        if best is None:
            free = np.arange(n) if left is None else np.flatnonzero(np.isin(groups, [g for g, q in left.items() if q > 0]))
            i = int(free[rng.integers(len(free))])
        else:
            if left is not None:
                close_full_groups()
            i = int(torch.argmax(best))
        picks[k] = i
        if left is not None:
            left[int(groups[i])] -= 1
        d = torch.as_tensor(sqdist_from(i))
        if best is None:
            best = d.to(torch.float32).clone()
        else:
            torch.minimum(best, d.to(best.device, torch.float32), out=best)
        best[i] = -1.0  # never again: a chosen point is a center
    return picks


def kmeanspp(
    n: int,
    budget: int,
    rng: np.random.Generator,
    sqdist_from: Callable[[int], Any],
    *,
    first: int | None = None,
    min_sqdist: Any = None,
) -> np.ndarray:
    """k-means++ seeding (Arthur & Vassilvitskii, 2007): ``budget`` distinct pool positions.

    n: pool size; sqdist_from: see the module docstring. first: position of the first
    center (BADGE passes the largest gradient norm), or None to draw it from ``rng``
    (uniformly, or proportionally to ``min_sqdist`` when given). min_sqdist: optional (n,)
    squared distance to existing centers (e.g. the labeled set) that seeds the D^2 weights.
    Every next center is drawn with probability D(x)^2 / sum D^2, where D is the distance
    to the nearest center so far; when every remaining D is 0 (duplicates) the draw is
    uniform over the points not yet picked. One draw uses one ``rng.random()`` and an
    inverse-CDF lookup. O(budget * cost(sqdist_from)) time, O(n) extra memory.
    Returns (budget,) int64 positions in pick order.
    """
    import torch

    _check_budget(n, budget)
    picks = np.empty(budget, dtype=np.int64)
    if budget == 0:
        return picks
    chosen = np.zeros(n, dtype=bool)
    best = None
    if min_sqdist is not None:
        best = torch.as_tensor(min_sqdist).to(torch.float32).clone()
        if not torch.isfinite(best).all():
            best = None
    for k in range(budget):
        if k == 0 and first is not None:
            i = int(first)
            if not 0 <= i < n:
                raise ValueError(f"first: expected a position in [0, {n}), got {i}")
        elif best is None:
            i = int(rng.integers(n))
        else:
            i = _draw_d2(best, chosen, rng)
        picks[k] = i
        chosen[i] = True
        d = torch.as_tensor(sqdist_from(i)).to(torch.float32)
        if best is None:
            best = d.clone()
        else:
            torch.minimum(best, d.to(best.device), out=best)
        best[i] = 0.0
    return picks


def _draw_d2(best, chosen: np.ndarray, rng: np.random.Generator) -> int:
    """One position drawn with probability proportional to ``best`` (D^2), never a chosen one."""
    w = best.double().cpu().numpy()
    w[chosen] = 0.0
    total = w.sum()
    if not np.isfinite(total) or total <= 0.0:
        free = np.flatnonzero(~chosen)
        return int(free[rng.integers(len(free))])
    cdf = np.cumsum(w)
    cdf /= cdf[-1]
    i = int(np.searchsorted(cdf, rng.random(), side="right"))
    i = min(i, len(w) - 1)
    while chosen[i] or w[i] == 0.0:  # float round-off at a zero-width step: take the next real one
        i = (i + 1) % len(w)
    return i


def _sqdist_block(x, sq, cols, out_rows=None):
    """(r, b) squared distances between rows ``out_rows`` of x (all when None) and rows ``cols``."""
    rows = x if out_rows is None else x[out_rows]
    rsq = sq if out_rows is None else sq[out_rows]
    d = rows @ x[cols].T
    d.mul_(-2.0).add_(rsq[:, None]).add_(sq[cols][None, :])
    return d.clamp_(min=0.0)


def _apply_centers(x, sq, best, cols, chunk_bytes):
    """best <- min(best, squared distance to the centers ``cols``), in row blocks (one GEMM each)."""
    import torch

    step = _rows_per_block(len(cols), chunk_bytes)
    for start in range(0, x.shape[0], step):
        sl = slice(start, start + step)
        d = torch.addmm(sq[cols][None, :], x[sl], x[cols].T, alpha=-2.0)
        v = d.min(dim=1).values.add_(sq[sl]).clamp_(min=0.0)
        torch.minimum(best[sl], v, out=best[sl])
        del d


def kcenter_greedy_points(
    points: Any,
    budget: int,
    rng: np.random.Generator,
    *,
    labeled: Any = None,
    min_sqdist: Any = None,
    block: int = 128,
    chunk_bytes: int = CHUNK_BYTES,
    device: Any = "auto",
) -> np.ndarray:
    """Greedy k-center on Euclidean rows, with the picks of :func:`kcenter_greedy`, faster.

    points: (n, d) pool; labeled: (n_l, d) initial centers (or None); or instead
    min_sqdist: (n,) precomputed squared distance to the initial centers (e.g. from
    :func:`min_sqdist`, or a distance over shared modalities). Same result as the
    textbook loop (farthest point from all centers, first maximum on ties; first pick from
    the rng when nothing is labeled), up to float32 rounding, but the min-distance vector
    is updated lazily: new centers wait in a pending list of at most ``block`` and are
    applied to the whole pool in one matrix product (fast, compute-bound), while each pick
    only re-checks the top candidates of the stale vector against the pending centers. A
    stale value is an upper bound of the true one, so once the best re-checked candidate
    beats the next stale value, it is the true farthest point. Time O((n_l + budget) n d)
    in GEMMs; extra memory O(n) plus blocks of at most ``chunk_bytes``.
    Returns (budget,) int64 positions in pick order.
    """
    import torch

    x = as_float_tensor(points, device)
    n = int(x.shape[0])
    _check_budget(n, budget)
    picks = np.empty(budget, dtype=np.int64)
    if budget == 0:
        return picks
    sq = sqnorms(x)
    have_centers = labeled is not None and len(labeled) > 0
    if min_sqdist is not None:
        best = torch.as_tensor(min_sqdist).to(device=x.device, dtype=torch.float32).clone()
        have_centers = bool(torch.isfinite(best).any())
    elif have_centers:
        best = _nearest_sqdist(x, as_float_tensor(labeled, x.device), chunk_bytes=chunk_bytes, device=x.device)
    else:
        best = torch.full((n,), float("inf"), dtype=torch.float32, device=x.device)
    pending: list[int] = []
    cache = None  # top candidates of the stale vector, with their values under the pending centers
    for k in range(budget):
        if not have_centers:  # nothing labeled: a random first center, applied at once
            i = int(rng.integers(n))
            _apply_centers(x, sq, best, torch.as_tensor([i], device=x.device), chunk_bytes)
            have_centers = True
        else:
            width = 4 * block + 16
            while True:
                if cache is None:
                    cache = _candidates(x, sq, best, pending, width)
                cand, rows, true, bound = cache
                top = true.max()
                if bool(top > bound) or len(cand) >= n:
                    i = int(cand[true == top].min())  # lowest position among the maxima
                    break
                width, cache = 4 * width, None  # not conclusive: look further down the stale order
        picks[k] = i
        best[i] = -1.0  # chosen: never again
        pending.append(i)
        if len(pending) >= block:
            _apply_centers(x, sq, best, torch.as_tensor(pending, device=x.device), chunk_bytes)
            best[torch.as_tensor(picks[: k + 1], device=x.device)] = -1.0
            pending, cache = [], None
        elif cache is not None:
            cand, rows, true, bound = cache
            d = torch.addmv(sq[cand], rows, x[i], alpha=-2.0).add_(sq[i]).clamp_(min=0.0)
            torch.minimum(true, d, out=true)
            true[cand == i] = -1.0
    return picks


def _candidates(x, sq, best, pending, width):
    """The ``width`` largest stale values, re-checked against the pending centers.

    Returns (positions, their rows of x, true values, the next stale value: an upper bound
    for all the others).
    """
    import torch

    n = best.shape[0]
    vals, idx = torch.topk(best, min(width + 1, n))
    cand, true = idx[:width], vals[:width].clone()
    bound = float(vals[width]) if width < n else -math.inf
    if pending:
        cols = torch.as_tensor(pending, dtype=torch.int64, device=x.device)
        true = torch.minimum(true, _sqdist_block(x, sq, cols, cand).min(dim=1).values)
        true[torch.isin(cand, cols)] = -1.0
    return cand, x[cand], true, bound


def kmeanspp_points(
    points: Any,
    k: int,
    rng: np.random.Generator,
    *,
    block: int = 64,
    chunk_bytes: int = CHUNK_BYTES,
    device: Any = "auto",
    nearest: bool = False,
):
    """k-means++ seeding on Euclidean rows, drawing from the exact D^2 distribution, faster.

    points: (n, d). The first center is uniform; every next one is drawn with probability
    proportional to D^2 (squared distance to the nearest center so far), as in
    :func:`kmeanspp`, but blocked: see :func:`kmeanspp_blocked`. Returns (k,) int64
    positions in pick order (with ``nearest``, also each point's nearest center: see there).
    """
    x = as_float_tensor(points, device)
    return kmeanspp_blocked(int(x.shape[0]), k, rng, EuclideanBlocks(x), block=block, chunk_bytes=chunk_bytes,
                            nearest=nearest)


class EuclideanBlocks:
    """Block provider for :func:`kmeanspp_blocked`: squared Euclidean distances of rows of x."""

    def __init__(self, x):
        self.x, self.sq = x, sqnorms(x)
        self.device = x.device
        self._cols = self._c = None

    def __call__(self, rows, cols):
        """(r, b) squared distances between rows ``rows`` (a slice or index tensor) and ``cols``.

        The gathered columns are kept for the next call with the same ``cols`` tensor (the
        rejection draws of :func:`kmeanspp_blocked` test many single rows against one set)."""
        import torch

        if cols is not self._cols:
            self._cols, self._c = cols, (self.sq[cols][None, :], self.x[cols].T)
        sqc, ct = self._c
        d = torch.addmm(sqc, self.x[rows], ct, alpha=-2.0)
        return d.add_(self.sq[rows][:, None]).clamp_(min=0.0)


class GradientBlocks:
    """Block provider for :func:`kmeanspp_blocked` on factorised gradient embeddings.

    dist: a :class:`GradientEmbeddingDistances`; a block of distances costs two small
    matrix products per (a, e) block, (A_r A_c^T) * (E_r E_c^T), never the n x (C d) rows.
    """

    def __init__(self, dist: "GradientEmbeddingDistances"):
        self.dist = dist
        self.device = dist.sqnorms.device
        self._cols = self._c = None

    def __call__(self, rows, cols):
        s = self.dist.sqnorms
        if cols is not self._cols:  # kept for the next call with the same cols (see EuclideanBlocks)
            self._cols, self._c = cols, (s[cols][None, :], [(a[cols].T, e[cols].T) for a, e in self.dist.blocks])
        sc, blocks = self._c
        d = s[rows][:, None] + sc
        for (a, e), (act, ect) in zip(self.dist.blocks, blocks):
            d -= 2.0 * (a[rows] @ act) * (e[rows] @ ect)
        return d.clamp_(min=0.0)


def kmeanspp_blocked(
    n: int,
    k: int,
    rng: np.random.Generator,
    block_sqdist: Callable[[Any, Any], Any],
    *,
    first: int | None = None,
    block: int = 64,
    chunk_bytes: int = CHUNK_BYTES,
    nearest: bool = False,
):
    """k-means++ seeding that draws from the exact D^2 distribution, with blocked updates.

    n: pool size; block_sqdist(rows, cols) -> (r, b) squared distances between pool rows
    ``rows`` (a slice or an index tensor) and ``cols`` (an index tensor), e.g.
    :class:`EuclideanBlocks` or :class:`GradientBlocks`; it needs a ``device`` attribute.
    first: the first center (BADGE: the largest gradient norm), or None for a uniform one.

    Instead of updating the (n,) D^2 vector after every center (one pass over the pool per
    pick), new centers wait in a pending list of at most ``block`` and are applied in one
    blocked product. Meanwhile a candidate is drawn from the stale D^2 weights (an upper
    bound of the true ones) and accepted with probability true D^2 / stale D^2, the true
    value needing only its distances to the pending centers: rejection sampling, so every
    pick follows exactly the k-means++ distribution (not the same random stream as
    :func:`kmeanspp`). When every remaining D^2 is 0 (duplicates) the draw is uniform over
    the unpicked. Time O(k n cost-per-distance) in blocked products; extra memory O(n) plus
    blocks of at most ``chunk_bytes``. Returns (k,) int64 positions in pick order.

    With ``nearest``, returns (picks, owner, sqdist) instead: owner (n,) int64 tensor, the
    pick order (0 .. k-1) of each point's nearest center (the earliest on ties), and sqdist
    (n,) float32 tensor, the squared distance to it: k-means' first assignment, for the
    price of one last blocked update.
    """
    import torch

    _check_budget(n, k)
    picks = np.empty(k, dtype=np.int64)
    device = block_sqdist.device
    best = torch.full((n,), float("inf"), dtype=torch.float32, device=device)
    owner = torch.zeros(n, dtype=torch.int64, device=device) if nearest else None
    if k == 0:
        return (picks, owner, best) if nearest else picks
    chosen = np.zeros(n, dtype=bool)
    first_pick = 0  # pick order of pending[0]
    pending: list[int] = [int(rng.integers(n)) if first is None else int(first)]
    if not 0 <= pending[0] < n:
        raise ValueError(f"first: expected a position in [0, {n}), got {pending[0]}")
    picks[0] = pending[0]
    chosen[pending[0]] = True
    stale = cdf = None
    tries = 0
    pending_t = None  # the pending centers as a tensor, made again after each change

    def refresh():
        nonlocal pending, stale, cdf, tries, first_pick
        if pending:
            cols = torch.as_tensor(pending, device=device)
            step = _rows_per_block(len(pending), chunk_bytes)
            for start in range(0, n, step):
                sl = slice(start, min(start + step, n))
                v, j = block_sqdist(sl, cols).min(dim=1)
                if owner is not None:
                    owner[sl] = torch.where(v < best[sl], j + first_pick, owner[sl])
                torch.minimum(best[sl], v, out=best[sl])
            first_pick += len(pending)
            pending = []
        stale = best.double().cpu().numpy()
        stale[chosen] = 0.0
        total = stale.sum()
        cdf = np.cumsum(stale) / total if total > 0 else None
        tries = 0

    refresh()
    for m in range(1, k):
        i = None
        while i is None:
            if cdf is None:  # every remaining D^2 is 0: uniform over the unpicked
                free = np.flatnonzero(~chosen)
                i = int(free[rng.integers(len(free))])
                break
            if tries >= 8 * block:  # stale weights too far from the truth: refresh them
                refresh()
                continue
            j = min(int(np.searchsorted(cdf, rng.random(), side="right")), n - 1)
            tries += 1
            if chosen[j] or stale[j] <= 0.0:
                continue
            true = stale[j]
            if pending:
                if pending_t is None:
                    pending_t = torch.as_tensor(pending, device=device)
                true = min(true, float(block_sqdist(slice(j, j + 1), pending_t).min()))
            if rng.random() * stale[j] < true:
                i = j
        picks[m] = i
        chosen[i] = True
        pending.append(i)
        pending_t = None
        if len(pending) >= block:
            refresh()
    if nearest:
        refresh()
        return picks, owner, best
    return picks


def kmeans(
    points: Any,
    k: int,
    rng: np.random.Generator,
    *,
    max_iter: int = 20,
    tol: float = 1e-4,
    chunk_bytes: int = CHUNK_BYTES,
    device: Any = "auto",
    cache: int = 4,
):
    """k-means (Lloyd) with k-means++ seeding, computed in row blocks.

    points: (n, d); k: number of clusters, 1 <= k <= n. Stops after ``max_iter`` Lloyd steps
    or when no assignment changes or the centers move by less than ``tol`` times the mean
    squared norm. An empty cluster is re-seeded at the point farthest from its center.

    The assignments are Lloyd's (up to float rounding), but a step pays only for what
    changed: a center is recomputed only when its cluster gained or lost a member, and only
    the centers that moved are compared with the pool (:class:`NearestCenters`, which
    remembers ``cache`` near centers per point). The first step costs O(n k d), later ones
    O(n k_moved d) plus a full row for the few points whose remembered centers no longer
    settle their nearest one; in practice few centers move after the first steps.
    Temporary blocks hold at most ``chunk_bytes``; the cache adds 12 ``cache`` bytes per
    point. Returns (centers (k, d) float32 tensor, labels (n,) int64 tensor, sqdist (n,)
    float32 tensor: squared distance of each point to its own center).
    """
    import torch

    x = as_float_tensor(points, device)
    n = int(x.shape[0])
    _check_budget(n, k)
    if k < 1:
        raise ValueError("k: expected at least 1 cluster")
    seeds, owner, seed_sqd = kmeanspp_points(x, k, rng, chunk_bytes=chunk_bytes, nearest=True)
    centers = x[torch.as_tensor(seeds, device=x.device)].clone()
    near = NearestCenters(x, k, cache=cache, chunk_bytes=chunk_bytes, labels=owner, sqdist=seed_sqd)
    scale = float(near.x_sqnorms.mean()) + 1e-12
    labels = near.labels.clone()
    # Cluster sums in float64, updated with the points that changed cluster only.
    sums = torch.zeros((k, x.shape[1]), dtype=torch.float64, device=x.device)
    rows = _rows_per_block(3 * x.shape[1], chunk_bytes)  # a row block copied, then in float64
    for start in range(0, n, rows):
        sums.index_add_(0, labels[start : start + rows], x[start : start + rows].double())
    counts = torch.bincount(labels, minlength=k)
    moved = torch.ones(k, dtype=torch.bool, device=x.device)
    for _ in range(max_iter):
        # Update step, only for the clusters whose membership changed: the others keep
        # their center bit for bit, so every distance to them stays valid.
        new_centers = centers.clone()
        step = max(1, rows // 4)  # clusters per block of the float64 means
        which = torch.nonzero(moved).flatten()
        for start in range(0, which.numel(), step):
            j = which[start : start + step]
            new_centers[j] = (sums[j] / counts[j].clamp(min=1)[:, None]).to(x.dtype)
        empty = counts == 0
        if bool(empty.any()):
            # Re-seed empty clusters at the points worst served by their centers.
            far = torch.argsort(near.sqdist(), descending=True)[: int(empty.sum())]
            new_centers[empty] = x[far]
            moved |= empty
        moved &= (new_centers != centers).any(dim=1)  # e.g. a singleton keeps its center
        which, shift = torch.nonzero(moved).flatten(), 0.0
        for start in range(0, which.numel(), step):
            j = which[start : start + step]
            shift = max(shift, float(sqnorms(new_centers[j] - centers[j]).max()))
        centers = new_centers
        # Assignment step.
        new_labels = near.update(centers, torch.nonzero(moved).flatten()).clone()
        changed = torch.nonzero(new_labels != labels).flatten()
        if changed.numel() == 0 or shift <= tol * scale:
            labels = new_labels
            break
        moved = torch.zeros(k, dtype=torch.bool, device=x.device)
        for start in range(0, changed.numel(), rows):
            part = changed[start : start + rows]
            xs = x[part].double()
            sums.index_add_(0, new_labels[part], xs)
            sums.index_add_(0, labels[part], xs, alpha=-1)
            moved[new_labels[part]] = True
            moved[labels[part]] = True
        labels = new_labels
        counts = torch.bincount(labels, minlength=k)
    # The expanded form ||x||^2 + ||c||^2 - 2 x.c loses precision for points near their
    # center, which is where "nearest to the centroid" is decided: recompute those directly.
    sqd = torch.empty(n, dtype=torch.float32, device=x.device)
    rows = _rows_per_block(2 * x.shape[1], chunk_bytes)  # two (rows, d) temporaries
    for start in range(0, n, rows):
        sl = slice(start, start + rows)
        sqd[sl] = sqnorms(x[sl] - centers[labels[sl]])
    return centers, labels, sqd


class NearestCenters:
    """The nearest of k moving centers for every point, updated from the centers that moved.

    Keeps, per point, the ``cache`` nearest centers found at its last full comparison with
    their current partial distances ``||c||^2 - 2 x.c`` (the point's own ``||x||^2`` left
    out: it does not change the order), and a threshold below which no other center lies.
    After some centers move, only they are compared with the pool (one (n, k_moved) product
    in row blocks): a point's nearest center is the best of its remembered ones and the
    moved ones whenever that best is below its threshold, which then drops to the nearest
    moved center it does not remember. Only the points where this fails get a full row of k
    distances (and a fresh cache). The result is exactly the nearest center under the new
    centers, up to float rounding.
    """

    def __init__(self, x, k: int, *, cache: int = 4, chunk_bytes: int = CHUNK_BYTES, centers=None,
                 labels=None, sqdist=None):
        import torch

        self.x, self.chunk_bytes = x, int(chunk_bytes)
        self.x_sqnorms = sqnorms(x)
        n, k = int(x.shape[0]), int(k)
        self.k, self.m = k, max(1, min(int(cache), k))
        dev = x.device
        self.idx = torch.empty((n, self.m), dtype=torch.int64, device=dev)
        self.val = torch.empty((n, self.m), dtype=torch.float32, device=dev)
        self.thr = torch.empty(n, dtype=torch.float32, device=dev)
        self.labels = torch.empty(n, dtype=torch.int64, device=dev)
        self.best = torch.empty(n, dtype=torch.float32, device=dev)
        self.cached = False  # the first comparison keeps only the nearest center
        if labels is not None:  # known already (k-means++ found them)
            self.labels.copy_(labels)
            torch.sub(sqdist, self.x_sqnorms, out=self.best)
        else:
            self._full(centers, sqnorms(centers), None)

    def sqdist(self):
        """(n,) squared distance of each point to its nearest center (clamped at 0)."""
        return (self.best + self.x_sqnorms).clamp_(min=0.0)

    def _full(self, centers, cn, rows):
        """Compare ``rows`` (an index tensor, or None for all) with every center."""
        import torch

        n = self.x.shape[0] if rows is None else rows.numel()
        take = min(self.m + 1, self.k)
        step = _rows_per_block(3 * self.k, self.chunk_bytes)  # the block, and topk's int64 scratch
        for start in range(0, n, step):
            part = slice(start, min(start + step, n)) if rows is None else rows[start : start + step]
            d = torch.addmm(cn[None, :], self.x[part], centers.T, alpha=-2.0)
            if not self.cached:
                self.best[part], self.labels[part] = d.min(dim=1)
                continue
            v, j = torch.topk(d, take, dim=1, largest=False, sorted=True)
            self.idx[part], self.val[part] = j[:, : self.m], v[:, : self.m]
            self.thr[part] = v[:, self.m] if take > self.m else float("inf")
            self.labels[part], self.best[part] = j[:, 0], v[:, 0]

    def update(self, centers, moved):
        """New nearest centers after the centers in ``moved`` (index tensor) changed.

        centers: (k, d) current centers. Returns the (n,) labels (this object's own tensor,
        overwritten by the next call).
        """
        import torch

        if moved.numel() == 0:
            return self.labels
        dev, n, mm = self.x.device, self.x.shape[0], moved.numel()
        cn = sqnorms(centers)
        if not self.cached or 2 * mm > self.k:  # cheaper to compare everything afresh
            self.cached = True
            self._full(centers, cn, None)
            return self.labels
        # The moved centers plus one sentinel column that is +inf for every point.
        cm = torch.cat([centers[moved], torch.zeros((1, centers.shape[1]), dtype=centers.dtype, device=dev)])
        bias = torch.cat([cn[moved], torch.full((1,), float("inf"), device=dev)])
        slot = torch.full((self.k,), mm, dtype=torch.int64, device=dev)
        slot[moved] = torch.arange(mm, device=dev)
        failed = []
        step = _rows_per_block(2 * (mm + 1) + 4 * self.m, self.chunk_bytes)  # the block and its reductions
        for start in range(0, n, step):
            sl = slice(start, min(start + step, n))
            d = torch.addmm(bias[None, :], self.x[sl], cm.T, alpha=-2.0)  # (r, mm + 1)
            s = slot[self.idx[sl]]  # (r, m): column of each remembered center, mm if it did not move
            val = torch.where(s < mm, d.gather(1, s), self.val[sl])
            self.val[sl] = val
            d.scatter_(1, s, float("inf"))  # keep only the moved centers not remembered
            out_v, out_j = d.min(dim=1)
            in_v, in_j = val.min(dim=1)
            thr = torch.minimum(self.thr[sl], out_v)
            self.thr[sl] = thr
            use_out = out_v < in_v
            best = torch.where(use_out, out_v, in_v)
            self.best[sl] = best
            self.labels[sl] = torch.where(use_out, moved[out_j.clamp(max=mm - 1)], self.idx[sl].gather(1, in_j[:, None])[:, 0])
            bad = torch.nonzero(best > thr).flatten()
            if bad.numel():
                failed.append(bad + start)
        if failed:
            self._full(centers, cn, torch.cat(failed))
        return self.labels


def assign(points: Any, centers: Any, *, chunk_bytes: int = CHUNK_BYTES, x_sqnorms: Any = None):
    """Nearest center of every point, in row blocks of at most ``chunk_bytes`` of distances.

    points: (n, d) tensor; centers: (k, d) tensor on the same device.
    Returns (labels (n,) int64 tensor, sqdist (n,) float32 tensor, clamped at 0).
    """
    import torch

    x = points
    xn = sqnorms(x) if x_sqnorms is None else x_sqnorms
    cn = sqnorms(centers)
    labels = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
    sqd = torch.empty(x.shape[0], dtype=torch.float32, device=x.device)
    step = _rows_per_block(centers.shape[0], chunk_bytes)
    for start in range(0, x.shape[0], step):
        sl = slice(start, start + step)
        d = torch.addmm(cn[None, :], x[sl], centers.T, alpha=-2.0)  # ||c||^2 - 2 x.c, fused
        v, j = d.min(dim=1)
        labels[sl] = j
        sqd[sl] = v.add_(xn[sl]).clamp_(min=0.0)
    return labels, sqd


def knn_mean_distance(points: Any, k: int, *, chunk_bytes: int = CHUNK_BYTES):
    """(m,) mean Euclidean distance from each row to its ``k`` nearest other rows.

    points: (m, d) tensor (one cluster); k is clipped to m - 1; a single row gets 0.
    Blocks of rows keep at most ``chunk_bytes`` of distances at once.
    """
    import torch

    m = int(points.shape[0])
    out = torch.zeros(m, dtype=torch.float32, device=points.device)
    k = min(int(k), m - 1)
    if k <= 0:
        return out
    sq = sqnorms(points)
    step = _rows_per_block(m, chunk_bytes)
    for start in range(0, m, step):
        sl = slice(start, start + step)
        d = points[sl] @ points.T
        d.mul_(-2.0).add_(sq[sl, None]).add_(sq[None, :]).clamp_(min=0.0)
        rows = torch.arange(d.shape[0], device=d.device)
        d[rows, rows + start] = float("inf")  # not one's own neighbour
        out[sl] = d.topk(k, dim=1, largest=False).values.sqrt_().mean(dim=1)
    return out


def _check_budget(n: int, budget: int) -> None:
    if not 0 <= int(budget) <= int(n):
        raise ValueError(f"budget: expected between 0 and {n} (the pool size), got {budget}")
