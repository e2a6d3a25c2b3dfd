"""Bayesian strategies on MC-dropout samples: BALD and BatchBALD.

Both read ``mc_probs`` (T, n, C), the fused class probabilities under T stochastic forward
passes with dropout on (Gal & Ghahramani, ICML 2016), and tell the loop how many passes to
compute through :meth:`view_params`.
"""

from __future__ import annotations

import math

import numpy as np

from mmal_core import MmalError, PoolView, ScoreStrategy, Strategy
from mmal_core.params import check_int

from .diversity import check_budget, check_device, torch_device
from .geometry import CHUNK_BYTES, block_bytes


#: Upper bounds of the sample counts: each MC pass is a forward pass over the whole pool
#: (the loop keeps T x n x C probabilities), and a leaderboard server replays submitted
#: parameters, so an absurd count must be a parameter error rather than a stalled run.
MAX_MC_SAMPLES = 1000
MAX_NUM_SAMPLES = 100_000


def mutual_information(mc_probs: np.ndarray, chunk_bytes: int = CHUNK_BYTES) -> np.ndarray:
    """(n,) BALD score I[y; w | x] = H[mean_t p_t] - mean_t H[p_t], in nats.

    mc_probs: (T, n, C). One pass of float32 arithmetic over blocks of samples (at most
    ``chunk_bytes`` of temporaries): log2 p (0 log 0 taken as 0), times p, summed over
    passes and classes, plus the entropy of the mean, which is only (n, C); the result is
    converted from bits to nats. Rounding leaves an error of about 1e-6 nats, so the score
    is clamped at 0 and, where it comes out below 1e-4, checked exactly: a sample whose T
    passes are identical (dropout off) scores exactly 0, as the mutual information is 0
    precisely then.
    """
    import torch

    arr = np.asarray(mc_probs)
    if arr.ndim != 3:
        raise MmalError(f"mc_probs: expected shape (T, n, C), got {arr.shape}")
    p = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    T, n, C = p.shape
    out = torch.empty(n, dtype=torch.float32)
    # One (T, b, C) float32 buffer; blocks of about 2 MiB stay in cache between the passes.
    step = max(1, min(int(chunk_bytes), 2**21) // (4 * T * C))
    buf = torch.empty((T, min(step, n), C), dtype=torch.float32)
    for start in range(0, n, step):
        block = p[:, start : start + step]
        plogp = buf[:, : block.shape[1]]
        # log2 is faster than log here; log2(0) = -inf is clamped so that 0 log 0 = 0.
        torch.log2(block, out=plogp).clamp_(min=-256.0).mul_(block)
        mean = block.sum(dim=0).div_(T)
        out[start : start + step] = plogp.sum(dim=0).sum(dim=1).div_(T) - mean.mul(mean.log2().clamp_(min=-256.0)).sum(dim=1)
    out.mul_(math.log(2.0)).clamp_(min=0.0)  # bits to nats
    low = torch.nonzero(out < 1e-4).flatten()
    for start in range(0, low.numel(), step):
        part = low[start : start + step]
        rows = p[:, part]
        out[part[(rows == rows[:1]).all(dim=2).all(dim=0)]] = 0.0
    return out.numpy()


class BALD(ScoreStrategy):
    """BALD: Bayesian Active Learning by Disagreement (Houlsby et al., arXiv 1112.5745,
    2011) with MC dropout as the posterior (Gal, Islam & Ghahramani, "Deep Bayesian Active
    Learning with Image Data", ICML 2017).

    score(x) = H[(1/T) sum_t p_t(y|x)] - (1/T) sum_t H[p_t(y|x)], the mutual information
    between the prediction and the weights, from T forward passes with dropout on.

    Parameters:
        mc_samples: T, the number of MC-dropout passes the loop computes (1 to 1000).
    """

    name = "bald"
    summary = "mutual information between prediction and weights, MC dropout (Gal et al. 2017)"
    requires = frozenset({"mc_probs"})

    def __init__(self, mc_samples: int = 20):
        self.mc_samples = check_int("mc_samples", mc_samples, 1, MAX_MC_SAMPLES)

    def view_params(self) -> dict[str, int]:
        """Settings for the loop's model pass: T MC-dropout samples."""
        return {"mc_samples": self.mc_samples}

    def score(self, view: PoolView) -> np.ndarray:
        mc = np.asarray(view.mc_probs)
        return mutual_information(mc, chunk_bytes=block_bytes(mc.size * 4))


class BatchBALD(Strategy):
    """BatchBALD (Kirsch, van Amersfoort & Gal, "BatchBALD: Efficient and Diverse Batch
    Acquisition for Deep Bayesian Active Learning", NeurIPS 2019).

    Greedily grows the batch B maximising the joint mutual information
    I[y_B, y_x; w] = H[y_B, y_x] - sum_{b in B+x} E_w H[y_b], with the posterior given by T
    MC-dropout passes. Writing the joint over the batch's label configurations y_B,
    H[y_B, y_x] = H[y_B] + sum_{y_B} P(y_B) H[y_x | y_B], and H[y_B] is the same for every
    candidate, so each step picks argmax_x sum_{y_B} P(y_B) H[y_x | y_B] - E_w H[y_x].

    The configurations y_B are enumerated exactly while C^|B| <= ``num_samples``; beyond
    that, ``num_samples`` configurations are drawn from the joint (a pass t uniformly, then
    each label from p_t), and the sum becomes their average, as in the paper.

    Cost: each pick costs at most O(m T n C) time with m = min(C^|B|, num_samples), so a
    batch costs O(budget m T n C); memory O(m T) for the configurations plus blocks of at
    most ``geometry.CHUNK_BYTES``. Only candidates whose upper bound (see
    :func:`_pruned_scores`) reaches the best score are scored, about 1% of a trained
    model's pool per pick, with the picks of scoring them all. With C = 10, T = 20, num_samples = 1000 and n = 20,000 that is
    about 4e9 multiply-adds per pick: BatchBALD is meant for small batches.

    Parameters:
        mc_samples: T, the number of MC-dropout passes (1 to 1000).
        num_samples: most label configurations kept (exact below that, sampled above;
            1 to 100,000).
        device: ``auto`` | ``cpu`` | ``cuda``.
    """

    name = "batchbald"
    summary = "greedy joint mutual information over the batch (Kirsch et al. 2019)"
    requires = frozenset({"mc_probs"})

    def __init__(self, mc_samples: int = 20, num_samples: int = 1000, device: str = "auto"):
        self.mc_samples = check_int("mc_samples", mc_samples, 1, MAX_MC_SAMPLES)
        self.num_samples = check_int("num_samples", num_samples, 1, MAX_NUM_SAMPLES)
        self.device = check_device(device)

    def view_params(self) -> dict[str, int]:
        """Settings for the loop's model pass: T MC-dropout samples."""
        return {"mc_samples": self.mc_samples}

    def select(self, view: PoolView, budget: int, rng: np.random.Generator) -> np.ndarray:
        budget = check_budget(view, budget)
        return batchbald_picks(view.mc_probs, budget, rng, self.num_samples, torch_device(self.device))


def batchbald_picks(mc_probs, budget: int, rng: np.random.Generator, num_samples: int = 1000,
                    device="cpu", chunk_bytes: int = CHUNK_BYTES) -> np.ndarray:
    """Greedy BatchBALD picks (see :class:`BatchBALD`).

    mc_probs: (T, n, C). Returns (budget,) int64 positions in pick order. Ties go to the
    lowest position; ``rng`` is used only once configurations are sampled.
    """
    import torch

    p = torch.as_tensor(np.asarray(mc_probs, dtype=np.float32), device=device).double()
    T, n, C = p.shape
    cond = -(p * torch.log(torch.where(p > 0, p, torch.ones_like(p)))).sum(dim=2).mean(dim=0)  # (n,)
    picked = torch.zeros(n, dtype=torch.bool, device=device)
    picks = np.empty(budget, dtype=np.int64)
    # Joint over the batch's label configurations: weight[y] = P(y_B) and model[y, t] =
    # p_t(y_B) / sum_t p_t(y_B) (the posterior over passes given y_B).
    weight = torch.ones(1, dtype=torch.float64, device=device)
    joint = torch.ones(1, T, dtype=torch.float64, device=device)  # p_t(y_B), exact mode
    sampled = None  # (m, T) log p_t(y_B) per sampled configuration, sampled mode
    source = None  # (m,) the pass each sampled configuration was drawn from
    for k in range(budget):
        if sampled is None:
            model = joint / joint.sum(dim=1, keepdim=True).clamp(min=1e-300)
        else:
            model = torch.softmax(sampled, dim=1)
        score = _pruned_scores(model, weight, p, cond, picked, chunk_bytes)
        i = int(torch.argmax(score))
        picks[k] = i
        picked[i] = True
        if k == budget - 1:
            break
        if sampled is None and joint.shape[0] * C <= num_samples:
            joint = (joint[:, None, :] * p[:, i, :].T[None, :, :]).reshape(-1, T)  # (m C, T)
            weight = joint.mean(dim=1)
        else:
            if sampled is None:
                sampled, source = _sample_configurations(p, picks[: k + 1], num_samples, rng)
                weight = torch.full((num_samples,), 1.0 / num_samples, dtype=torch.float64, device=device)
            else:
                y = _draw_labels(p[source, i, :], rng)
                sampled = sampled + torch.log(p[:, i, :].T[y].clamp(min=1e-300))
    return picks


#: Slack of the Jensen bound in :func:`_pruned_scores`: rounding (float32 inputs whose rows
#: sum to 1 only within 1e-7) lets an exact score exceed its bound by about 3e-8 nats.
BOUND_SLACK = 1e-6
#: Candidates scored exactly first (those of highest bound), to find a score to prune with.
FIRST_BLOCK = 8


def _pruned_scores(model, weight, p, cond, picked, chunk_bytes):
    """(n,) the greedy step's scores E_y H[y_x | y_B] - E_w H[y_x] wherever they can be
    the maximum, -inf elsewhere (and at the picked positions).

    Every candidate gets an upper bound of its score first (:func:`_grouped_bound`, a few
    passes over the pool). The candidates of highest bound are scored exactly first; every
    candidate whose bound reaches the best score found (less ``BOUND_SLACK``) is then
    scored too, and the rest cannot win. On the pitfall datasets about 10 candidates of a
    pool of 1,400 are scored per pick. A candidate's exact score does not depend on which other candidates
    share its block (same bits, one thread), so the pick, ties to the lowest position
    included, is that of scoring every candidate.
    """
    import torch

    T, n, C = p.shape
    bound = _grouped_bound(model, weight, p, chunk_bytes) - cond
    bound[picked] = -math.inf
    score = torch.full((n,), -math.inf, dtype=torch.float64, device=p.device)
    order = torch.argsort(bound, descending=True, stable=True)
    first = order[: min(FIRST_BLOCK, int((~picked).sum()))]
    first = first.sort().values
    score[first] = _expected_conditional_entropy(model, weight, p[:, first, :], chunk_bytes) - cond[first]
    best = score[first].max()
    rest = torch.nonzero(bound >= best - BOUND_SLACK).squeeze(1)
    rest = rest[score[rest] == -math.inf]
    if rest.numel():
        score[rest] = _expected_conditional_entropy(model, weight, p[:, rest, :], chunk_bytes) - cond[rest]
    return score


def _grouped_bound(model, weight, p, chunk_bytes):
    """(n,) an upper bound of sum_y weight[y] H[sum_t model[y, t] p_t(.|x)] for every x.

    Entropy is concave, so within any group g of configurations (total weight W_g) Jensen
    gives sum_{y in g} weight[y] H[q_y] <= W_g H[mean of q_y weighted in g]. Grouping the
    configurations by their most likely pass (the largest entry of their ``model`` row)
    keeps the bound close: a configuration's posterior over passes is usually concentrated,
    so the conditionals of a group are alike. The bound is then the exact sum over at most
    T group means, T passes over the pool where scoring a candidate exactly costs m.
    """
    import torch

    T = p.shape[0]
    # (T, m) membership of each configuration in the group of its most likely pass (a product,
    # not an index_add_, whose atomic additions on a GPU would sum in any order)
    member = torch.nn.functional.one_hot(model.argmax(dim=1), T).T.to(model.dtype)
    totals = member @ weight
    means = (member @ (weight[:, None] * model)) / totals.clamp(min=1e-300)[:, None]  # an empty group's row is 0
    return _mixture_entropies(means, totals, p, chunk_bytes)


def _expected_conditional_entropy(model, weight, p, chunk_bytes):
    """(n,) the exact score's first term for every candidate x (see :func:`_mixture_entropies`)."""
    return _mixture_entropies(model, weight, p, chunk_bytes)


def _mixture_entropies(model, weight, p, chunk_bytes):
    """(n,) sum_y weight[y] H[ sum_t model[y, t] p_t(.|x) ] for every candidate x.

    model: (m, T); weight: (m,); p: (T, n, C). Candidates go in blocks so that the (m, b C)
    conditional table stays within ``chunk_bytes``.
    """
    import torch

    m = model.shape[0]
    T, n, C = p.shape
    out = torch.empty(n, dtype=torch.float64, device=p.device)
    step = max(1, int(chunk_bytes) // (8 * m * C))
    for start in range(0, n, step):
        block = p[:, start : start + step, :]
        b = block.shape[1]
        r = model @ block.reshape(T, b * C)  # (m, b C): P(y_x = c | y_B = y)
        # xlogy: 0 log 0 = 0; weight the configurations, then sum over classes
        out[start : start + b] = -(weight @ torch.special.xlogy(r, r)).reshape(b, C).sum(dim=1)
    return out


def _draw_labels(probs, rng: np.random.Generator):
    """One label per row of probs (m, C), by inverse CDF with uniforms from ``rng``."""
    import torch

    cdf = torch.cumsum(probs, dim=1)
    u = torch.as_tensor(rng.random(probs.shape[0]), dtype=cdf.dtype, device=cdf.device) * cdf[:, -1]
    y = torch.searchsorted(cdf, u[:, None], right=True).squeeze(1)
    return y.clamp_(max=probs.shape[1] - 1)


def _sample_configurations(p, batch, m, rng):
    """m configurations of the labels of ``batch`` drawn from the joint: (log p_t(y), source)."""
    import torch

    T = p.shape[0]
    source = torch.as_tensor(rng.integers(T, size=m), device=p.device)
    logp = torch.zeros(m, T, dtype=torch.float64, device=p.device)
    for j in batch:
        y = _draw_labels(p[source, int(j), :], rng)
        logp += torch.log(p[:, int(j), :].T[y].clamp(min=1e-300))
    return logp, source
