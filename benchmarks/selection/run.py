"""Selection benchmark: wall time and peak extra memory of mmal's strategies vs peers.

Every case (strategy x implementation x pool size) runs in its own subprocess, so that peak
memory is that case's alone: the worker builds the inputs, resets the kernel's peak-RSS
counter (``/proc/self/clear_refs``), runs the selection once, and reports

* ``seconds``: wall time of the selection only (inputs already in memory);
* ``peak_extra``: peak resident memory during the selection minus the resident memory
  just before it (bytes), compared with the pool's feature array (N x d float32);
* on CUDA, the peak of ``torch.cuda.max_memory_allocated`` as well.

Implementations: ``mmal`` (this repository), ``skactiveml`` (scikit-activeml's query
strategy, where it has one), ``reference`` (a straightforward implementation: full distance
matrix / full gradient-embedding matrix) and ``sklearn`` (scikit-learn's KMeans, for
k-means sampling). Ratios are taken against the fastest peer measured in the same run.

    python benchmarks/selection/run.py                       # the N = 20,000 table
    python benchmarks/selection/run.py --scaling             # + coreset/badge at 10k, 100k, 1M
    python benchmarks/selection/run.py --strategies coreset badge --impls mmal reference

Adding a strategy (e.g. a multimodal one): write ``def case_<name>_<impl>(data, budget)``
returning picks, and list the needed inputs in ``NEEDS[<name>]``; the driver finds it.
Results go to ``benchmarks/out/selection.json`` and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "benchmarks" / "out"

# -- inputs --------------------------------------------------------------------------------------
#: PoolView-like inputs each strategy needs (the worker builds only these).
NEEDS = {
    "coreset": {"embeddings", "labeled_embeddings"},
    "kmeans": {"embeddings"},
    "badge": {"probs", "embeddings"},
    "typiclust": {"embeddings", "labeled_embeddings"},
    "bald": {"mc_probs"},
    "bmmal": {"probs", "modality_embeddings", "subset_probs"},
}


def make_inputs(n, d, n_classes, n_labeled, mc_samples, need, seed=0):
    """Synthetic fused-model outputs with class structure, float32.

    Embeddings: a mixture of ``n_classes`` Gaussian clusters in d dimensions (centres and
    within-class noise both N(0, 1) per coordinate), the way a trained network's
    penultimate layer groups classes. Probabilities: softmax of a noisy linear read-out of
    the embeddings. MC samples: the same logits plus per-pass Gaussian noise (dropout-like
    disagreement). For bmmal the embedding is split into two modalities of d / 2 each.
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_classes, d), dtype=np.float32)

    def cloud(m):
        y = rng.integers(0, n_classes, m)
        x = rng.standard_normal((m, d), dtype=np.float32)
        x += centres[y]
        return x

    x = cloud(n)
    out = {}
    if need & {"embeddings"}:
        out["embeddings"] = x
    if "labeled_embeddings" in need:
        out["labeled_embeddings"] = cloud(n_labeled)
    if need & {"probs", "mc_probs", "subset_probs"}:
        readout = (centres / np.linalg.norm(centres, axis=1, keepdims=True)).T  # (d, C)
        logits = (x @ readout) * np.float32(0.3) + rng.standard_normal((n, n_classes), dtype=np.float32)
        if "probs" in need:
            out["probs"] = _softmax(logits)
        if "mc_probs" in need:
            out["mc_probs"] = np.stack([_softmax(logits + rng.standard_normal(logits.shape, dtype=np.float32))
                                        for _ in range(mc_samples)])
        if "subset_probs" in need:
            out["subset_probs"] = {(): _softmax(logits * 0.0), ("a",): _softmax(logits * 0.7),
                                   ("b",): _softmax(logits * 0.3), ("a", "b"): _softmax(logits)}
    if "modality_embeddings" in need:
        half = d // 2
        out["modality_embeddings"] = {"a": np.ascontiguousarray(x[:, :half]), "b": np.ascontiguousarray(x[:, half:])}
        out["modalities"] = ["a", "b"]
    return out


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def feature_bytes(data):
    """Bytes of the pool's feature array(s): what the memory target is measured against."""
    if "embeddings" in data:
        return data["embeddings"].nbytes
    if "modality_embeddings" in data:
        return sum(v.nbytes for v in data["modality_embeddings"].values())
    return data["mc_probs"].nbytes


# -- implementations -----------------------------------------------------------------------------
def _view(data):
    from mmal_core import PoolView

    return PoolView(**{k: v for k, v in data.items()})


def case_coreset_mmal(data, budget):
    from mmal_strategies.diversity import CoreSet

    return CoreSet().select(_view(data), budget, np.random.default_rng(0))


def case_coreset_skactiveml(data, budget):
    from skactiveml.pool import CoreSet as SkCoreSet

    pool, lab = data["embeddings"], data["labeled_embeddings"]
    X = np.concatenate([pool, lab])
    y = np.concatenate([np.full(len(pool), np.nan), np.zeros(len(lab))])
    return np.asarray(SkCoreSet(random_state=0).query(X, y, batch_size=budget))


def case_coreset_reference(data, budget):
    """Full pool x pool distance matrix, then the greedy loop on its rows."""
    pool, lab = data["embeddings"], data["labeled_embeddings"]
    sq = (pool * pool).sum(1)
    full = pool @ pool.T  # (n, n), then in place: ||x_i||^2 + ||x_j||^2 - 2 x_i.x_j
    full *= -2.0
    full += sq[:, None]
    full += sq[None, :]
    to_lab = sq[:, None] + (lab * lab).sum(1)[None, :] - 2.0 * (pool @ lab.T)
    best = to_lab.min(1)
    picks = []
    for _ in range(budget):
        i = int(best.argmax())
        picks.append(i)
        np.minimum(best, full[i], out=best)
        best[i] = -1
    return np.asarray(picks)


def case_kmeans_mmal(data, budget):
    from mmal_strategies.diversity import KMeansSampling

    return KMeansSampling().select(_view(data), budget, np.random.default_rng(0))


def case_kmeans_sklearn(data, budget):
    """scikit-learn KMeans (k-means++, one init, its default tolerance), nearest member per centroid."""
    from sklearn.cluster import KMeans

    x = data["embeddings"]
    km = KMeans(n_clusters=budget, n_init=1, random_state=0).fit(x)
    sq = ((x - km.cluster_centers_[km.labels_]) ** 2).sum(1)
    from mmal_strategies.diversity import nearest_per_cluster

    return nearest_per_cluster(km.labels_, sq, budget)


def case_kmeans_sklearn20(data, budget):
    """The same, capped at 20 Lloyd iterations like mmal's default ``max_iter``."""
    from sklearn.cluster import KMeans

    x = data["embeddings"]
    km = KMeans(n_clusters=budget, n_init=1, max_iter=20, random_state=0).fit(x)
    sq = ((x - km.cluster_centers_[km.labels_]) ** 2).sum(1)
    from mmal_strategies.diversity import nearest_per_cluster

    return nearest_per_cluster(km.labels_, sq, budget)


def case_badge_mmal(data, budget):
    from mmal_strategies.diversity import Badge

    return Badge().select(_view(data), budget, np.random.default_rng(0))


def case_badge_skactiveml(data, budget):
    from skactiveml.base import SkactivemlClassifier
    from skactiveml.pool import Badge as SkBadge

    probs, emb = data["probs"], data["embeddings"]

    class Fixed(SkactivemlClassifier):
        def __init__(self, classes=None, missing_label=np.nan):
            super().__init__(classes=classes, missing_label=missing_label)

        def fit(self, X, y, sample_weight=None):
            return self

        def predict_proba(self, X, return_embeddings=False):
            rows = np.asarray(X)[:, 0].astype(int)
            return (probs[rows], emb[rows]) if return_embeddings else probs[rows]

    n = len(probs)
    X = np.arange(n, dtype=float)[:, None]
    y = np.full(n, np.nan)
    clf = Fixed(classes=list(range(probs.shape[1])))
    return np.asarray(SkBadge(clf_embedding_flag_name="return_embeddings", random_state=0).query(
        X, y, clf, fit_clf=False, batch_size=budget))


def case_badge_reference(data, budget):
    """The explicit (n, C d) gradient-embedding matrix, k-means++ with row distances."""
    probs, emb = data["probs"], data["embeddings"]
    a = probs.copy()
    a[np.arange(len(a)), a.argmax(1)] -= 1.0
    g = (a[:, :, None] * emb[:, None, :]).reshape(len(a), -1)  # (n, C d)
    _kmeanspp_on_rows.budget = budget
    return _kmeanspp_on_rows(g)


def _kmeanspp_on_rows(g):
    """BADGE's k-means++ on explicit rows: one matrix-vector product over g per pick."""
    budget = _kmeanspp_on_rows.budget
    rng = np.random.default_rng(0)
    sq = (g * g).sum(1)
    best = None
    picks = [int(sq.argmax())]
    for _ in range(budget - 1):
        i = picks[-1]
        d = sq + sq[i] - 2.0 * (g @ g[i])
        best = d if best is None else np.minimum(best, d)
        w = np.clip(best, 0, None).astype(np.float64)
        w[picks] = 0
        picks.append(int(rng.choice(len(w), p=w / w.sum())))
    return np.asarray(picks)


def case_typiclust_mmal(data, budget):
    from mmal_strategies.diversity import TypiClust

    k = len(data["labeled_embeddings"]) + budget  # as scikit-activeml: n_labeled + budget clusters
    return TypiClust(max_clusters=k).select(_view(data), budget, np.random.default_rng(0))


def case_typiclust_skactiveml(data, budget):
    from skactiveml.pool import TypiClust as SkTypiClust

    pool, lab = data["embeddings"], data["labeled_embeddings"]
    X = np.concatenate([pool, lab])
    y = np.concatenate([np.full(len(pool), np.nan), np.zeros(len(lab))])
    return np.asarray(SkTypiClust(random_state=0, k=20).query(X, y, batch_size=budget))


def case_bald_mmal(data, budget):
    from mmal_strategies.bayesian import BALD

    return BALD().select(_view(data), budget, np.random.default_rng(0))


def case_bald_skactiveml(data, budget):
    from skactiveml.pool._bald import batch_bald

    util = batch_bald(data["mc_probs"].copy(), batch_size=1)[0]  # GreedyBALD's utilities
    return np.argsort(-util, kind="stable")[:budget]


def case_bald_reference(data, budget):
    p = data["mc_probs"].astype(np.float64)
    mean = p.mean(0)
    h_mean = -(mean * np.log(np.clip(mean, 1e-12, None))).sum(1)
    h_each = -(p * np.log(np.clip(p, 1e-12, None))).sum(2).mean(0)
    return np.argsort(-(h_mean - h_each), kind="stable")[:budget]


def case_bmmal_mmal(data, budget):
    from mmal_strategies import BMMAL

    return BMMAL().select(_view(data), budget, np.random.default_rng(0))


def case_bmmal_reference(data, budget):
    """BMMAL with the explicit concatenated per-modality gradient-embedding matrix."""
    from mmal_strategies.multimodal import bmmal_scales

    probs = data["probs"]
    scales = bmmal_scales(probs, data["subset_probs"], data["modalities"])
    a = probs.copy()
    a[np.arange(len(a)), a.argmax(1)] -= 1.0
    blocks = [(a[:, :, None] * (data["modality_embeddings"][m] * scales[:, [j]])[:, None, :]).reshape(len(a), -1)
              for j, m in enumerate(data["modalities"])]
    g = np.concatenate(blocks, axis=1)
    del blocks
    _kmeanspp_on_rows.budget = budget
    return _kmeanspp_on_rows(g)


def scaling_coreset(data, budget):
    """mmal's core-set with the labeled-set distances timed apart from the picks."""
    from mmal_strategies import geometry

    pool, lab = data["embeddings"], data["labeled_embeddings"]
    chunk = geometry.block_bytes(pool.nbytes)
    t0 = time.perf_counter()
    start = geometry.min_sqdist(pool, lab, chunk_bytes=chunk)
    t1 = time.perf_counter()
    picks = geometry.kcenter_greedy_points(pool, budget, np.random.default_rng(0), min_sqdist=start, chunk_bytes=chunk)
    return picks, {"init_seconds": t1 - t0, "pick_seconds": time.perf_counter() - t1}


def scaling_badge(data, budget):
    """mmal's BADGE (no labeled-set step: every second is spent on picks)."""
    t0 = time.perf_counter()
    picks = case_badge_mmal(data, budget)
    return picks, {"init_seconds": 0.0, "pick_seconds": time.perf_counter() - t0}


def implementations(strategy):
    """Implementations available for ``strategy``: ``{impl: function}`` (mmal first)."""
    found = {}
    for key, fn in sorted(globals().items()):
        prefix = f"case_{strategy}_"
        if key.startswith(prefix) and callable(fn):
            found[key[len(prefix):]] = fn
    return dict(sorted(found.items(), key=lambda kv: kv[0] != "mmal"))


# -- one case in a subprocess ---------------------------------------------------------------------
def _status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def worker(args):
    import torch

    torch.set_num_threads(args.threads)
    need = NEEDS[args.strategy]
    data = make_inputs(args.n, args.d, args.classes, args.labeled, args.mc_samples, need, seed=args.seed)
    fn = globals()[f"scaling_{args.strategy}"] if args.impl == "scaling" else implementations(args.strategy)[args.impl]
    # Warm up imports and lazy initialisation on a tiny problem, outside the measurement.
    small = make_inputs(200, 8, 3, 20, 4, need, seed=1)
    fn(small, 5)
    import gc

    gc.collect()
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base_gpu = torch.cuda.memory_allocated()
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset the peak-RSS counter (VmHWM) to the current RSS
    base = _status("VmRSS")
    # Short cases are repeated (best of up to --repeat runs, within about 2 s in all) so
    # that a millisecond-scale selection is not judged on one noisy sample; long ones run once.
    times, split = [], {}
    while not times or (len(times) < args.repeat and sum(times) < 2.0):
        t0 = time.perf_counter()
        picks = fn(data, args.budget)
        parts = {}
        if isinstance(picks, tuple):
            picks, parts = picks
        picks = np.asarray(picks)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        if times[-1] == min(times):
            split = parts  # the phases of the best run
    seconds = min(times)
    peak = _status("VmHWM")
    result = {
        "strategy": args.strategy, "impl": args.impl, "n": args.n, "d": args.d, "budget": args.budget,
        "seconds": seconds, "runs": len(times), "peak_extra": peak - base, "peak_total": peak, "feature_bytes": feature_bytes(data),
        "unique_picks": int(len(np.unique(picks))), "device": "cuda" if cuda else "cpu", **split,
    }
    if cuda:
        result["gpu_peak_extra"] = torch.cuda.max_memory_allocated() - base_gpu
    print("RESULT " + json.dumps(result), flush=True)


def run_case(strategy, impl, n, budget, args):
    cmd = [sys.executable, __file__, "--worker", "--strategy", strategy, "--impl", impl, "--n", str(n),
           "--budget", str(budget), "--d", str(args.d), "--classes", str(args.classes), "--labeled",
           str(args.labeled), "--mc-samples", str(args.mc_samples), "--threads", str(args.threads),
           "--seed", str(args.seed), "--repeat", str(args.repeat)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               OPENBLAS_NUM_THREADS=str(args.threads))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"strategy": strategy, "impl": impl, "n": n, "budget": budget, "error": f"timeout {args.timeout}s"}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    return {"strategy": strategy, "impl": impl, "n": n, "budget": budget, "error": tail[0][:200]}


# -- driver ---------------------------------------------------------------------------------------
def _mib(b):
    return f"{b / 2**20:,.0f}"


def table(rows):
    out = ["| strategy | implementation | seconds | peak extra MiB | extra / features | mmal speed-up |",
           "|---|---|---:|---:|---:|---:|"]
    for strategy in dict.fromkeys(r["strategy"] for r in rows):
        group = [r for r in rows if r["strategy"] == strategy]
        ok = [r for r in group if "error" not in r]
        mine = next((r for r in ok if r["impl"] == "mmal"), None)
        for r in group:
            if "error" in r:
                out.append(f"| {strategy} | {r['impl']} | — | — | — | {r['error']} |")
                continue
            speed = f"{r['seconds'] / mine['seconds']:.1f}x" if mine and r is not mine else ""
            out.append(f"| {strategy} | {r['impl']} | {r['seconds']:.2f} | {_mib(r['peak_extra'])} | "
                       f"{r['peak_extra'] / r['feature_bytes']:.2f} | {speed} |")
    return "\n".join(out)


def scaling_table(rows):
    out = ["| strategy | N | picks | total s | labeled-set s | ms / pick | per-pick growth vs previous N | "
           "peak extra MiB | extra / features | process peak GiB |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    previous = {}
    for r in rows:
        if "error" in r:
            out.append(f"| {r['strategy']} | {r['n']:,} | {r['budget']} | {r['error']} | | | | | | |")
            continue
        per_pick = r.get("pick_seconds", r["seconds"]) / r["budget"]
        prev = previous.get(r["strategy"])
        growth = f"{per_pick / prev[1]:.1f}x for {r['n'] / prev[0]:.0f}x N" if prev else ""
        previous[r["strategy"]] = (r["n"], per_pick)
        out.append(f"| {r['strategy']} | {r['n']:,} | {r['budget']} | {r['seconds']:.2f} | "
                   f"{r.get('init_seconds', 0.0):.2f} | {1000 * per_pick:.1f} | {growth} | {_mib(r['peak_extra'])} | "
                   f"{r['peak_extra'] / r['feature_bytes']:.2f} | {r.get('peak_total', 0) / 2**30:.2f} |")
    return "\n".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", nargs="+", default=["coreset", "kmeans", "badge", "typiclust", "bald"],
                        help=f"any of {', '.join(NEEDS)}")
    parser.add_argument("--impls", nargs="+", default=None, help="restrict to these implementations")
    parser.add_argument("--skip", nargs="+", default=[], metavar="STRATEGY:IMPL",
                        help="leave out single cases, e.g. badge:skactiveml (about 10 minutes on its own)")
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--labeled", type=int, default=1000)
    parser.add_argument("--budget", type=int, default=500)
    parser.add_argument("--mc-samples", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="BLAS/torch threads of every case")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=5,
                        help="best of up to this many runs for cases that take well under 2 s (1: single run)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per case")
    parser.add_argument("--scaling", action="store_true", help="also the coreset/badge scaling table")
    parser.add_argument("--scaling-only", action="store_true")
    parser.add_argument("--scaling-n", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--scaling-budget", type=int, default=20)
    parser.add_argument("--out", default=str(OUT / "selection.json"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--strategy", help=argparse.SUPPRESS)
    parser.add_argument("--impl", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    for s in args.strategies:
        if s not in NEEDS:
            parser.error(f"--strategies: unknown strategy '{s}'; known: {', '.join(NEEDS)}")
    results = {"machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.python_version()}",
               "threads": args.threads, "n": args.n, "d": args.d, "budget": args.budget, "main": [], "scaling": []}
    if not args.scaling_only:
        for strategy in args.strategies:
            for impl in implementations(strategy):
                if (args.impls and impl not in args.impls) or f"{strategy}:{impl}" in args.skip:
                    continue
                r = run_case(strategy, impl, args.n, args.budget, args)
                print(json.dumps(r), file=sys.stderr, flush=True)
                results["main"].append(r)
        print(f"\nN = {args.n:,}, d = {args.d}, C = {args.classes}, {args.labeled:,} labeled, budget {args.budget}, "
              f"{args.threads} thread(s)\n")
        print(table(results["main"]))
    if args.scaling or args.scaling_only:
        for strategy in ("coreset", "badge"):
            for n in args.scaling_n:
                r = run_case(strategy, "scaling", n, args.scaling_budget, args)
                print(json.dumps(r), file=sys.stderr, flush=True)
                results["scaling"].append(r)
        print(f"\nScaling (mmal, d = {args.d}, float32, {args.scaling_budget} picks, {args.threads} thread(s))\n")
        print(scaling_table(results["scaling"]))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
