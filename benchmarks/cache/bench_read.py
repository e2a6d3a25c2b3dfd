"""Cache read throughput: chunked HDF5 reads vs. an in-memory array, and a lazy PoolView.

    OMP_NUM_THREADS=1 python benchmarks/cache/bench_read.py --rows 1000000 --dim 512

1. Writes a synthetic cache (``--rows`` x ``--dim`` float32, seeded normal values, one
   modality, chunked + lzf-compressed + Fletcher-32, via ``mmal_core.cache.write_cache``)
   under ``benchmarks/out/bench-cache/``; its size is reported.
2. Sequential read, batch by batch (``--batch`` rows): ``LazyFeatures`` (HDF5 chunks) vs.
   slicing the same rows out of an in-memory numpy array (the baseline), in MB/s.
3. Random batches (``--random-batches`` sets of ``--batch`` sorted random positions): same
   comparison; each such batch touches nearly every chunk of a large pool.
4. PoolView on the whole pool: a FusionMLP fitted on 2,000 rows predicts ``probs`` for every
   row of the lazy pool, streaming batch by batch; run in a child process whose peak
   resident memory (VmHWM) is reported next to the size of the feature array.

Timings are ratios against the in-memory baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "out" / "bench-cache"


class SyntheticRows:
    """Item i is the row index; the encoder below turns indices into seeded random rows."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return int(i)


def make_encoder(dim: int):
    from mmal_core import Encoder

    class RowEncoder(Encoder):
        name = "synthetic-rows"
        batch_size = 16384

        def encode(self, items):
            start = items[0]
            rng = np.random.default_rng(start)  # rows depend on the batch start: reproducible
            return rng.standard_normal((len(items), dim), dtype=np.float32)

    return RowEncoder()


def build(rows: int, dim: int) -> Path:
    from mmal_core.cache import CacheRequest, RawSource, write_cache

    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"synthetic-{rows}x{dim}.h5"
    if path.exists():
        return path
    encoder = make_encoder(dim)
    labels = (np.arange(rows) % 10).astype(np.int64)
    split = np.zeros(rows, np.uint8)
    split[-min(10000, rows // 10):] = 1
    source = RawSource(np.arange(rows), labels, split, {"x": SyntheticRows(rows)}, [str(c) for c in range(10)], "synthetic")
    request = CacheRequest("synthetic", "1", {"rows": rows, "dim": dim}, "", ["x"], {"x": encoder.describe()})
    t = time.perf_counter()
    write_cache(path, request, source, {"x": encoder}, compression="lzf")
    print(f"wrote {path.name}: {path.stat().st_size / 2**20:.0f} MiB in {time.perf_counter() - t:.1f} s", flush=True)
    return path


def throughput(read, n_rows: int, dim: int, batches) -> float:
    t = time.perf_counter()
    for b in batches:
        x = read(b)
        x.sum()  # touch the data
    return n_rows * dim * 4 / (time.perf_counter() - t) / 2**20


def poolview_child(path: str, batch: int) -> None:
    import torch

    from mmal_core import ModalitySpec
    from mmal_core.cache import read_cache
    from mmal_core.builtin.fusion import FusionMLP
    from mmal_core.view import PoolView

    torch.set_num_threads(1)
    cached = read_cache(Path(path), lazy=True)
    pool = cached.train
    labeled = np.arange(0, len(pool), len(pool) // 2000)[:2000]
    small = pool.subset(labeled)
    spec = [ModalitySpec("x", pool.features["x"].shape[1])]
    model = FusionMLP(hidden=32, epochs=2, min_steps=0, eval_batch_size=batch)
    model.setup(spec, 10)
    model.fit(small, np.arange(len(small)), seed=0)
    unlabeled = np.setdiff1d(np.arange(len(pool)), labeled)
    t = time.perf_counter()
    view = PoolView.from_model(model, pool, unlabeled, labeled, {"probs"}, n_classes=10)
    seconds = time.perf_counter() - t
    hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
    print(json.dumps({"rows": len(unlabeled), "seconds": seconds, "peak_rss_mib": hwm / 1024,
                      "probs_shape": list(view.probs.shape)}))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8192)
    parser.add_argument("--random-batches", type=int, default=3)
    parser.add_argument("--poolview-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.poolview_child:
        poolview_child(args.poolview_child, args.batch)
        return
    from mmal_core.cache import read_cache

    path = build(args.rows, args.dim)
    size = path.stat().st_size
    cached = read_cache(path, lazy=True)
    lazy = cached.train.features["x"]
    n, dim = lazy.shape
    print(f"cache file: {size / 2**20:.0f} MiB for {n + len(cached.test)} x {dim} float32 "
          f"({(n + len(cached.test)) * dim * 4 / 2**20:.0f} MiB raw)")
    t = time.perf_counter()
    memory = lazy[:n]  # the baseline: the whole pool in memory (also times a full read)
    full_read = n * dim * 4 / (time.perf_counter() - t) / 2**20
    seq = [slice(s, min(s + args.batch, n)) for s in range(0, n, args.batch)]
    rng = np.random.default_rng(0)
    # Random positions all over the pool touch nearly every chunk: a few batches suffice.
    rand = [np.sort(rng.choice(n, args.batch, replace=False)) for _ in range(args.random_batches)]
    rows_rand = args.random_batches * args.batch
    results = {
        "full read into memory (MiB/s)": full_read,
        "sequential batches, HDF5 (MiB/s)": throughput(lambda b: lazy[b], n, dim, seq),
        "sequential batches, in memory (MiB/s)": throughput(lambda b: memory[b], n, dim, seq),
        "random batches, HDF5 (MiB/s)": throughput(lambda b: lazy[b], rows_rand, dim, rand),
        "random batches, in memory (MiB/s)": throughput(lambda b: memory[b], rows_rand, dim, rand),
    }
    memory = None  # free the baseline before the PoolView child starts
    cached.handle.close()
    for k, v in results.items():
        print(f"{k}: {v:,.0f}")
    print(f"ratio sequential HDF5 / memory: {results['sequential batches, HDF5 (MiB/s)'] / results['sequential batches, in memory (MiB/s)']:.3f}")
    print(f"ratio random HDF5 / memory: {results['random batches, HDF5 (MiB/s)'] / results['random batches, in memory (MiB/s)']:.3f}")
    child = subprocess.run(
        [sys.executable, __file__, "--poolview-child", str(path), "--batch", str(args.batch)],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    if child.returncode != 0:
        print(child.stderr[-2000:])
        raise SystemExit(1)
    pv = json.loads(child.stdout.strip().splitlines()[-1])
    print(f"PoolView.from_model(probs) on the lazy pool: {pv['rows']:,} rows in {pv['seconds']:.1f} s "
          f"({pv['rows'] / pv['seconds']:,.0f} rows/s), peak RSS {pv['peak_rss_mib']:.0f} MiB "
          f"vs {n * dim * 4 / 2**20:.0f} MiB of pool features")


if __name__ == "__main__":
    main()
