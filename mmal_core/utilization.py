"""Modality-utilization metrics: how much the fused model uses each modality.

Computed every round on the test split (:func:`utilization`) and, after selection, on the
queried batch (:func:`query_metrics`). All results are plain nested dicts of floats keyed by
modality name, stored in the round's metrics:

``shapley_accuracy.{m}``, ``shapley_log_likelihood.{m}``
    Exact Shapley value of modality ``m`` (Shapley, 1953) for the cooperative game whose
    players are the modalities and whose value ``v(S)`` is the test accuracy (or mean test
    log-likelihood ``mean_i log p(y_i | x_i restricted to S)``) of the fused model when only the
    modalities in ``S`` are present (the others masked as missing). The empty coalition
    predicts the label prior: the class frequencies of the labeled set, add-one smoothed so
    that its log-likelihood is finite. Exact enumeration of the ``2^M`` coalitions, hence
    ``M <= 8`` (:data:`mmal_core.coalitions.MAX_SHAPLEY_MODALITIES`). Efficiency holds: the values sum to
    ``v(all) - v(empty)``.
``contribution.{m}``
    Normalised contribution ``c_m = max(phi_m, 0) / sum_k max(phi_k, 0)`` from the accuracy
    Shapley values ``phi`` (a modality that hurts gets 0; uniform ``1/M`` when no modality
    helps). The ``c_m`` sum to 1.
``imbalance``
    Imbalance degree ``(M * max_m c_m - 1) / (M - 1)`` in [0, 1]: 0 when every modality
    contributes equally, 1 when a single modality carries everything (0 when ``M = 1``).
``drop_accuracy.{m}``
    Test accuracy of the fused model with modality ``m`` masked out everywhere.
``head_accuracy.{m}``
    Accuracy of the unimodal (auxiliary) head of ``m`` on the test samples that have ``m``
    (only for models that provide ``modality_probs``).
``probe_accuracy.{m}``
    Accuracy, on test samples that have ``m``, of a linear probe (L2-regularised multinomial
    logistic regression, :func:`fit_linear_probe`) trained on the encoder output of ``m``
    for the labeled samples that have ``m`` (only for models that provide
    ``modality_embeddings``).
``query.class_histogram.{c}``, ``query.missing_fraction.{m}``, ``query.difficulty``
    Of the batch queried this round: label counts per class, fraction of samples missing each
    modality, and the mean of the generator's per-sample ``Split.difficulty`` when the dataset
    provides one.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any

import numpy as np

from .coalitions import (  # noqa: F401 (the names the utilization metrics are made of, used here and re-exported)
    MAX_SHAPLEY_MODALITIES,
    check_modality_count,
    coalition_masks,
    coalition_probs,
    label_prior,
    shapley_from_coalitions,
)
from .metrics import CONTEXT_NEEDS, Metric, MetricContext, compute_metrics, log_likelihood


def normalised_contributions(phi: dict[str, float]) -> dict[str, float]:
    """``max(phi_m, 0) / sum_k max(phi_k, 0)``; uniform when no modality has a positive value."""
    names = list(phi)
    pos = np.maximum(np.array([phi[m] for m in names], dtype=np.float64), 0.0)
    pos = np.where(np.isfinite(pos), pos, 0.0)
    share = pos / pos.sum() if pos.sum() > 0 else np.full(len(names), 1.0 / max(len(names), 1))
    return {m: float(c) for m, c in zip(names, share)}


def imbalance_degree(contributions: dict[str, float]) -> float:
    """``(M * max_m c_m - 1) / (M - 1)``: 0 balanced, 1 when one modality carries everything."""
    c = np.array(list(contributions.values()), dtype=np.float64)
    M = len(c)
    if M <= 1:
        return 0.0
    return float(np.clip((M * c.max() - 1.0) / (M - 1.0), 0.0, 1.0))


def fit_linear_probe(x: np.ndarray, y: np.ndarray, n_classes: int, l2: float = 1e-2, max_iter: int = 200):
    """Multinomial logistic regression on standardised features, deterministic and fast.

    x: (n, d) features; y: (n,) labels in ``[0, n_classes)``.
    Minimises ``mean cross-entropy + l2 / 2 * ||W||^2`` (the bias is not penalised) by
    Nesterov-accelerated gradient descent with step ``1 / L`` from the bound
    ``L = ||X||_2^2 / (2 n) + l2`` on the curvature (strongly convex: converges linearly);
    stops after ``max_iter`` steps or when the gradient is tiny. Pure numpy, O(max_iter n d C).
    Returns a function mapping (m, d) features to (m,) predicted labels. With a single class
    in ``y`` the probe predicts that class. Inside :func:`shared_probes` a probe fitted there
    ahead (the same ``x``, ``y`` and settings) is returned as it is.
    """
    if _SHARED is not None:
        fitted = _SHARED.get(_probe_key(x, y, n_classes, l2, max_iter))
        if fitted is not None:
            return fitted
    return fit_linear_probes([(x, y)], n_classes, l2, max_iter)[0]


def fit_linear_probes(problems: list[tuple[np.ndarray, np.ndarray]], n_classes: int, l2: float = 1e-2,
                      max_iter: int = 200) -> list[Any]:
    """:func:`fit_linear_probe` of every ``(x, y)`` in ``problems``, bit for bit: problems of
    equal width descend together (numpy's stacked products and elementwise operations give
    every slice the bits of its own), each stopping where it would alone."""
    fitted: list[Any] = [None] * len(problems)
    stacks: dict[tuple[int, int], list[tuple[int, Any, Any, Any, Any, Any]]] = {}
    for i, (x, y) in enumerate(problems):
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.int64)
        classes = np.unique(y)
        if len(classes) == 1:
            fitted[i] = _constant_probe(int(classes[0]))
            continue
        n, d = x.shape
        mu = x.mean(axis=0)
        sd = x.std(axis=0)
        sd = np.where(sd > 1e-8, sd, 1.0)
        xs = np.hstack([(x - mu) / sd, np.ones((n, 1))])  # last column: the bias
        onehot = np.zeros((n, n_classes))
        onehot[np.arange(n), y] = 1.0
        step = 1.0 / (np.linalg.norm(xs, 2) ** 2 / (2.0 * n) + l2)
        stacks.setdefault((n, d), []).append((i, mu, sd, xs, onehot, step))
    widths: dict[int, list[list[tuple[int, Any, Any, Any, Any, Any]]]] = {}
    for (_, d), members in stacks.items():
        widths.setdefault(d, []).append(members)
    for d, same_width in widths.items():
        penalty = np.full((d + 1, 1), l2)
        penalty[-1] = 0.0
        members = [m for stack in same_width for m in stack]
        weights = _descend([(np.stack([m[3] for m in stack]), np.stack([m[4] for m in stack])) for stack in same_width],
                           penalty, np.array([m[5] for m in members]).reshape(-1, 1, 1), max_iter)
        for (i, mu, sd, *_), w in zip(members, weights):
            fitted[i] = _linear_probe(mu, sd, w)
    return fitted


def _descend(stacks, penalty, step, max_iter):
    """Nesterov descent of stacked probes (see :func:`fit_linear_probe`): weights of each.

    stacks: (xs (K, n, d + 1), onehot (K, n, C)) of each sample count n. Stacks of
    different n share one loop, padded to the largest n with rows that no product reads:
    each stack's two products (logits and gradient) run on its own rows, one numpy call for
    the stack, and the elementwise steps run once over all of them. Where problems differ
    in size (the probes of runs whose labeled sets miss modalities differently) that is a
    few calls per iteration instead of a dozen per size.
    """
    spans, first = [], 0  # (first problem, end, n) of each stack in the padded arrays
    for xs, _ in stacks:
        spans.append((first, first + len(xs), xs.shape[1]))
        first += len(xs)
    if len(stacks) == 1:
        xs, onehot = stacks[0]
    else:
        rows = max(n for _, _, n in spans)
        xs = np.zeros((first, rows, stacks[0][0].shape[2]))
        onehot = np.zeros((first, rows, stacks[0][1].shape[2]))
        for (a, b, n), (x, o) in zip(spans, stacks):
            xs[a:b, :n], onehot[a:b, :n] = x, o
    K, d1, C = xs.shape[0], xs.shape[2], onehot.shape[2]
    counts = np.array([float(n) for a, b, n in spans for _ in range(b - a)]).reshape(-1, 1, 1)
    w = np.zeros((K, d1, C))
    look = w.copy()
    t = 1.0
    stopped: list[Any] = [None] * K
    xt = np.swapaxes(xs, 1, 2)
    logits = np.zeros((K, xs.shape[1], C))
    products = np.empty((K, d1, C))
    # a large stack goes class by class (fewer, longer loops); a small one through numpy's
    # reductions, whose calls cost less there: the same bits either way
    by_class = K * xs.shape[1] >= BY_CLASS_ROWS
    for _ in range(max_iter):
        for a, b, n in spans:
            np.matmul(xs[a:b, :n], look[a:b], out=logits[a:b, :n])
        if by_class:
            _by_class(np.subtract, logits, _class_max(logits))
            p = np.exp(logits)
            _by_class(np.divide, p, _class_sum(p))
        else:
            logits -= logits.max(axis=2, keepdims=True)
            p = np.exp(logits)
            p /= p.sum(axis=2, keepdims=True)
        p -= onehot
        for a, b, n in spans:
            np.matmul(xt[a:b, :, :n], p[a:b, :n], out=products[a:b])
        grad = products / counts + penalty * look
        for k in np.flatnonzero(np.abs(grad).max(axis=(1, 2)) < 1e-6):
            if stopped[k] is None:
                stopped[k] = look[k].copy()
        if all(s is not None for s in stopped):
            break
        w_next = look - step * grad
        t_next = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
        look = w_next + ((t - 1.0) / t_next) * (w_next - w)
        w, t = w_next, t_next
    return [s if s is not None else w[k] for k, s in enumerate(stopped)]


#: Rows (problems x samples) from which the stacked descent normalises class by class.
BY_CLASS_ROWS = 2048


def _by_class(op, a, column) -> None:
    """``op(a, column, out=a)`` with ``column`` (K, n, 1) broadcast over the classes, one class
    at a time: the same elementwise operation per entry, without numpy's slow inner loop over
    a short last axis."""
    for j in range(a.shape[2]):
        op(a[..., j], column[..., 0], out=a[..., j])


def _class_max(a):
    """``a.max(axis=2, keepdims=True)`` for a (K, n, C) array, as C - 1 elementwise maxima:
    numpy reduces a short last axis row by row, about ten times slower (the maximum is exact,
    so the result is the same)."""
    out = a[..., 0].copy()
    for j in range(1, a.shape[2]):
        np.maximum(out, a[..., j], out=out)
    return out[..., None]


def _class_sum(a):
    """``a.sum(axis=2, keepdims=True)`` for a (K, n, C) array with the same bits: numpy adds
    fewer than 8 terms of a last axis one after the other, which C - 1 elementwise additions
    repeat (checked once per C against numpy's own sum, which is used otherwise)."""
    C = a.shape[2]
    if C not in _SEQUENTIAL_SUM:
        _SEQUENTIAL_SUM[C] = _sums_in_order(C)
    if not _SEQUENTIAL_SUM[C]:
        return a.sum(axis=2, keepdims=True)
    return _ordered_sum(a)[..., None]


def _ordered_sum(a):
    """(K, n): the classes of a (K, n, C) array added from the first to the last."""
    out = a[..., 0].copy()
    for j in range(1, a.shape[2]):
        out += a[..., j]
    return out


def _sums_in_order(C: int) -> bool:
    """Whether this numpy sums a last axis of C terms from the first to the last."""
    if C >= 8:
        return False
    probe = np.exp(np.random.default_rng(C).normal(size=(2, 256, C)) * 8.0)
    return bool(np.array_equal(_ordered_sum(probe), probe.sum(axis=2)))


#: Per class count: does ``_class_sum``'s ordered addition give numpy's bits (see there).
_SEQUENTIAL_SUM: dict[int, bool] = {}


def _linear_probe(mu, sd, w):
    return lambda z: (((np.asarray(z, dtype=np.float64) - mu) / sd) @ w[:-1] + w[-1]).argmax(axis=1)


def _constant_probe(only: int):
    return lambda z: np.full(len(z), only, dtype=np.int64)


#: Probes fitted ahead by :func:`shared_probes`, by :func:`_probe_key` (None outside).
_SHARED: dict[tuple, Any] | None = None


def _probe_key(x, y, n_classes: int, l2: float, max_iter: int) -> tuple:
    x, y = np.ascontiguousarray(x), np.ascontiguousarray(y)
    digest = hashlib.blake2b(x.tobytes(), digest_size=16)
    digest.update(y.tobytes())
    return (x.shape, x.dtype.str, y.dtype.str, n_classes, l2, max_iter, digest.digest())


@contextlib.contextmanager
def shared_probes(problems: list[tuple[np.ndarray, np.ndarray]], fitted: list[Any], n_classes: int):
    """Within the block :func:`fit_linear_probe` (default settings) of any of ``problems``
    returns its probe in ``fitted`` (from :func:`fit_linear_probes`: lockstep fits the probe
    metrics of a group's runs in one stacked descent)."""
    global _SHARED
    previous = _SHARED
    _SHARED = {**(previous or {}), **{_probe_key(x, y, n_classes, 1e-2, 200): f for (x, y), f in zip(problems, fitted)}}
    try:
        yield
    finally:
        _SHARED = previous


def probe_sets(pool: Any, labeled: np.ndarray, lab_emb: dict[str, np.ndarray], test_mask: np.ndarray,
               names: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(features, labels) of the labeled samples that have ``m``, for every modality ``m``
    that the labeled set and the test split both have: what :class:`ProbeAccuracy` fits."""
    out = {}
    for j, m in enumerate(names):
        have_l = pool.mask[labeled, j]
        if have_l.any() and test_mask[:, j].any():
            out[m] = (lab_emb[m][have_l], pool.labels[labeled][have_l])
    return out


def _accuracy(labels: np.ndarray, probs: np.ndarray) -> float:
    return float(np.mean(probs.argmax(axis=1) == labels)) if len(labels) else float("nan")


# -- the utilization metrics, as registered metrics (see mmal_core.metrics.Metric) ---------------
def _coalition_values(ctx: MetricContext, which: str) -> np.ndarray:
    """(2^M,) test accuracy or log-likelihood of every coalition, once per round."""
    score = _accuracy if which == "accuracy" else log_likelihood
    return ctx.cached(("coalition_values", which),
                      lambda: np.array([score(ctx.labels, p) for p in ctx.coalition_probs()]))


def _shapley(ctx: MetricContext, which: str) -> dict[str, float]:
    phi = ctx.cached(("shapley", which), lambda: shapley_from_coalitions(_coalition_values(ctx, which)))
    return {m: float(v) for m, v in zip(ctx.modality_names, phi)}


class _Utilization(Metric):
    needs = frozenset({"probs", "coalitions", "labeled"})
    utilization = True


class ShapleyAccuracy(_Utilization):
    name = "shapley_accuracy"
    summary = "exact Shapley value of each modality for test accuracy"

    def compute(self, ctx: MetricContext) -> dict[str, float]:
        return _shapley(ctx, "accuracy")


class ShapleyLogLikelihood(_Utilization):
    name = "shapley_log_likelihood"
    summary = "exact Shapley value of each modality for the mean test log-likelihood"

    def compute(self, ctx: MetricContext) -> dict[str, float]:
        return _shapley(ctx, "log_likelihood")


class Contribution(_Utilization):
    name = "contribution"
    summary = "normalised positive accuracy Shapley share of each modality (sums to 1)"

    def compute(self, ctx: MetricContext) -> dict[str, float]:
        return normalised_contributions(_shapley(ctx, "accuracy"))


class Imbalance(_Utilization):
    name = "imbalance"
    summary = "imbalance degree of the contributions: 0 balanced, 1 one modality carries all"
    higher_is_better = False

    def compute(self, ctx: MetricContext) -> float:
        return imbalance_degree(normalised_contributions(_shapley(ctx, "accuracy")))


class DropAccuracy(_Utilization):
    name = "drop_accuracy"
    summary = "test accuracy with modality m masked out, per modality"

    def compute(self, ctx: MetricContext) -> dict[str, float]:
        acc = _coalition_values(ctx, "accuracy")
        full = 2 ** len(ctx.modality_names) - 1
        return {m: float(acc[full & ~(1 << j)]) for j, m in enumerate(ctx.modality_names)}


class HeadAccuracy(_Utilization):
    name = "head_accuracy"
    summary = "accuracy of each modality's unimodal head on the test samples that have it"
    needs = frozenset({"modality_probs"})

    def compute(self, ctx: MetricContext) -> dict[str, float]:
        y, mask, heads = ctx.labels, ctx.test.mask, ctx.output("modality_probs")
        return {m: _accuracy(y[mask[:, j]], heads[m][mask[:, j]]) for j, m in enumerate(ctx.modality_names)}


class ProbeAccuracy(_Utilization):
    name = "probe_accuracy"
    summary = "accuracy of a linear probe on each modality's encoder output"
    needs = frozenset({"modality_embeddings", "labeled"})

    def compute(self, ctx: MetricContext) -> dict[str, float]:
        test = ctx.test
        test_emb = ctx.output("modality_embeddings")
        sets = probe_sets(ctx.dataset.train, ctx.labeled, ctx.labeled_output("modality_embeddings"), test.mask,
                          ctx.modality_names)
        probe: dict[str, float] = {}
        for j, m in enumerate(ctx.modality_names):
            if m not in sets:
                probe[m] = float("nan")
                continue
            have_t = test.mask[:, j]
            predict = fit_linear_probe(*sets[m], ctx.n_classes)
            probe[m] = float(np.mean(predict(test_emb[m][have_t]) == ctx.labels[have_t]))
        return probe


#: The utilization metrics, in the order they are stored.
UTILIZATION_METRICS: tuple[type[Metric], ...] = (
    ShapleyAccuracy, ShapleyLogLikelihood, Contribution, Imbalance, DropAccuracy, HeadAccuracy, ProbeAccuracy,
)


def utilization(model: Any, dataset: Any, labeled: np.ndarray) -> dict[str, Any]:
    """Modality-utilization metrics of a fitted model (see the module docstring).

    model: a fitted :class:`mmal_core.model.Model`.
    dataset: the :class:`~mmal_core.data.MultimodalDataset`; metrics use ``dataset.test``.
    labeled: positions of the labeled set in ``dataset.train`` (label prior, linear probes).
    """
    check_modality_count(len(dataset.modality_names), f"dataset '{dataset.name}'")
    available = frozenset(model.provided()) | CONTEXT_NEEDS
    metrics = [cls() for cls in UTILIZATION_METRICS if cls.needs <= available]
    ctx = MetricContext(model, dataset, labeled, prefetch={f for m in metrics for f in m.needs})
    return compute_metrics([(m, f"metric '{m.name}'") for m in metrics], ctx)


def query_metrics(pool: Any, chosen: np.ndarray, n_classes: int) -> dict[str, Any]:
    """Facts about the batch queried this round.

    pool: the train :class:`~mmal_core.data.Split`; chosen: positions of the queried samples.
    Returns ``{"class_histogram": {"0": count, ...}, "missing_fraction": {m: frac},
    "difficulty": mean}`` (``difficulty`` only when ``pool.difficulty`` exists).
    """
    chosen = np.asarray(chosen, dtype=np.int64)
    counts = np.bincount(pool.labels[chosen], minlength=n_classes)
    out: dict[str, Any] = {
        "class_histogram": {str(c): int(k) for c, k in enumerate(counts)},
        "missing_fraction": {
            m: float(np.mean(~pool.mask[chosen, j])) if len(chosen) else float("nan")
            for j, m in enumerate(pool.modalities)
        },
    }
    if pool.difficulty is not None and len(chosen):
        out["difficulty"] = float(np.mean(pool.difficulty[chosen]))
    return out
