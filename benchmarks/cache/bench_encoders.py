"""Encoding throughput of every encoder on this machine, and the sizes of the real caches.

    OMP_NUM_THREADS=1 python benchmarks/cache/bench_encoders.py [--threads 1]

Items are the real ones: av-digits images (8x8) and FSDD MFCC sequences, clip-art rasters
(128 px) and titles; plus 0.5 s waveforms at 8 kHz for MFCCs from raw audio. Each encoder is
loaded (timed apart) and warmed on one batch, then timed on ``--repeat`` passes; the table
gives items/s and the time per item relative to the identity encoder on 8x8 images,
measured in the same run (the baseline). Then the cache files of av-digits and clipart
(default encoders) with their size against the raw float32 size of their features.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def items_for_benchmark():
    from mmal_datasets.avdigits import load_fsdd
    from mmal_datasets.clipart import Clipart, rasterise
    from sklearn.datasets import load_digits

    digits = list((load_digits().images[:2048] / 16.0).astype(np.float32))
    sounds, _ = load_fsdd()
    source = Clipart().read_source()
    paths = source.items["image"].keys[:64]
    rasters = [rasterise(p, 128) for p in paths]
    titles = [t for t in source.items["text"] if t][:512]
    t = np.arange(4000) / 8000.0
    waves = [((0.3 * np.sin(2 * np.pi * (200 + 10 * k) * t)).astype(np.float32), 8000) for k in range(128)]
    return digits, sounds[:1024], rasters, titles, waves


def bench(encoder, items, repeat: int) -> tuple[float, float]:
    t = time.perf_counter()
    encoder.encode(items[: min(len(items), 8)])  # loads the model, warms up
    load = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(repeat):
        out = encoder.encode(items)
    seconds = (time.perf_counter() - t) / repeat
    assert out.shape[0] == len(items)
    return len(items) / seconds, load


def main(argv=None) -> None:
    import torch

    from mmal_core.cache import list_caches, make_encoder

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    digits, mfccs, rasters, titles, waves = items_for_benchmark()
    cases = [
        ("identity", {}, "8x8 digit images", digits),
        ("mfcc-stats", {}, "FSDD MFCC sequences", mfccs),
        ("mfcc-stats", {}, "0.5 s waveforms, 8 kHz", waves),
        ("text-hash", {}, "clip-art titles", titles),
        ("minilm", {}, "clip-art titles", titles),
        ("efficientnet-lite0", {"input_size": 128}, "clip-art rasters, 128 px input", rasters),
        ("efficientnet-lite0", {"input_size": 224}, "clip-art rasters, 224 px input", rasters),
    ]
    rows = []
    for name, params, what, items in cases:
        rate, load = bench(make_encoder(name, params), items, args.repeat)
        rows.append((name, params, what, len(items), rate, load))
    base = rows[0][4]
    print(f"torch threads: {args.threads}, device: {'cuda' if torch.cuda.is_available() else 'cpu'}\n")
    print("| encoder | items | n | items/s | time per item vs identity | load + first batch (s) |")
    print("|---|---|---|---|---|---|")
    for name, params, what, n, rate, load in rows:
        label = name + (f" ({', '.join(f'{k}={v}' for k, v in params.items())})" if params else "")
        print(f"| {label} | {what} | {n} | {rate:,.1f} | {base / rate:,.0f}x | {load:.1f} |")
    print("\n| cache file | samples | modalities (encoder, dim) | file size | raw float32 features | ratio |")
    print("|---|---|---|---|---|---|")
    for info in list_caches():
        a = info.attrs
        if not info.ok or a.get("dataset") not in ("av-digits", "clipart"):
            continue
        raw = info.n * sum(info.dims.values()) * 4
        mods = ", ".join(f"{m} ({a['encoders'][m]['name']}, {d})" for m, d in info.dims.items())
        print(f"| {info.path.name} | {info.n} | {mods} | {info.size / 2**20:.2f} MiB | {raw / 2**20:.2f} MiB | {info.size / raw:.2f} |")


if __name__ == "__main__":
    main()
