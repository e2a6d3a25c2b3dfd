"""MFCC summary statistics: a fixed-size vector for a sound of any length.

The vector is ``[mean(c), std(c), mean(dc), std(dc)]`` over frames, where ``c`` are the
``n_mfcc`` mel-frequency cepstral coefficients of each frame and ``dc`` their deltas
(first-order regression over +-2 frames), so ``4 * n_mfcc`` values (52 by default).

MFCCs follow the usual recipe (Davis & Mermelstein 1980): pre-emphasis 0.97, 25 ms Hamming
frames every 10 ms, power spectrum, ``n_mels`` triangular mel filters, log, DCT-II
(orthonormal), first ``n_mfcc`` coefficients. Only numpy and scipy are used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mmal_core import Encoder, MmalError


def _hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Triangular mel filters: (n_mels, n_fft // 2 + 1)."""
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2.0), n_mels + 2))
    bins = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - lower) / np.maximum(centre - lower, 1e-9)
    falling = (upper - bins[None, :]) / np.maximum(upper - centre, 1e-9)
    return np.maximum(0.0, np.minimum(rising, falling))


def mfcc(waveform: np.ndarray, sample_rate: int, n_mfcc: int = 13, n_mels: int = 26) -> np.ndarray:
    """MFCCs of a mono waveform.

    waveform: (t,) samples (any scale; integers are converted to float).
    Returns (n_frames, n_mfcc) float64; a sound shorter than one frame is zero-padded.
    """
    from scipy.fft import dct

    x = np.asarray(waveform, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError("empty waveform")
    x = np.append(x[0], x[1:] - 0.97 * x[:-1])
    frame = max(1, int(round(0.025 * sample_rate)))
    hop = max(1, int(round(0.010 * sample_rate)))
    if x.size < frame:
        x = np.pad(x, (0, frame - x.size))
    n_frames = 1 + (x.size - frame) // hop
    idx = np.arange(frame)[None, :] + hop * np.arange(n_frames)[:, None]
    frames = x[idx] * np.hamming(frame)[None, :]
    n_fft = 1 << int(np.ceil(np.log2(frame)))
    power = np.abs(np.fft.rfft(frames, n_fft, axis=1)) ** 2 / n_fft
    energies = power @ mel_filterbank(sample_rate, n_fft, n_mels).T
    return dct(np.log(np.maximum(energies, 1e-10)), type=2, axis=1, norm="ortho")[:, :n_mfcc]


def deltas(c: np.ndarray, width: int = 2) -> np.ndarray:
    """Regression deltas over +-``width`` frames: (n_frames, k) -> (n_frames, k)."""
    padded = np.pad(c, ((width, width), (0, 0)), mode="edge")
    n = len(c)
    num = sum(k * (padded[width + k : width + k + n] - padded[width - k : width - k + n]) for k in range(1, width + 1))
    return num / (2.0 * sum(k * k for k in range(1, width + 1)))


class MfccStatsEncoder(Encoder):
    """Mean and std of MFCCs and of their deltas: ``4 * n_mfcc`` values per sound.

    An item is either a ``(waveform, sample_rate)`` pair (waveform: (t,) samples) or a 2-D
    array of precomputed MFCC frames (n_frames, n_mfcc).
    """

    name = "mfcc-stats"
    summary = "MFCC summary statistics (mean/std of coefficients and deltas, 4 x n_mfcc values)"
    version = "1"
    kind = "audio"
    batch_size = 256

    def __init__(self, n_mfcc: int = 13, n_mels: int = 26):
        from mmal_core.params import check_int

        self.n_mfcc = check_int("n_mfcc", n_mfcc, 1, 64)
        self.n_mels = check_int("n_mels", n_mels, self.n_mfcc, 256)

    def frames(self, item: Any) -> np.ndarray:
        """MFCC frames (n_frames, n_mfcc) of one item."""
        if isinstance(item, tuple) and len(item) == 2:
            waveform, rate = item
            waveform = np.asarray(waveform, dtype=np.float64)
            if waveform.ndim == 2:  # (t, channels) -> mono
                waveform = waveform.mean(axis=1)
            return mfcc(waveform, int(rate), self.n_mfcc, self.n_mels)
        c = np.asarray(item, dtype=np.float64)
        if c.ndim != 2 or c.shape[1] != self.n_mfcc or len(c) == 0:
            raise MmalError(
                f"encoder 'mfcc-stats': expected (waveform, sample_rate) or MFCC frames of shape (n_frames, {self.n_mfcc}), "
                f"got an array of shape {c.shape}"
            )
        return c

    def encode(self, items: Sequence[Any]) -> np.ndarray:
        """items: n sounds -> (n, 4 * n_mfcc) float32."""
        out = np.empty((len(items), 4 * self.n_mfcc), dtype=np.float32)
        for i, item in enumerate(items):
            c = self.frames(item)
            d = deltas(c)
            out[i] = np.concatenate([c.mean(0), c.std(0), d.mean(0), d.std(0)])
        return out
