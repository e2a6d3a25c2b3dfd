"""The torch module behind :class:`mmal_core.model.FusionMLP` (imported lazily)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class MCDropout(nn.Dropout):
    """``nn.Dropout`` whose masks may come from a numpy Generator (``self.rng``).

    Used for MC-dropout inference on the CPU, where torch draws one Bernoulli at a time
    (about 15 ns each, most of an MC pass's cost) and numpy fills float32 uniforms in bulk
    (about 4 ns each). A unit is kept when its uniform is below 1 - p, as in torch's own
    CUDA kernel. Training, CUDA tensors and ``rng = None`` use ``nn.Dropout`` unchanged.
    """

    rng: np.random.Generator | None = None

    def forward(self, x):
        if self.rng is None or not self.training or self.p == 0.0 or x.device.type != "cpu":
            return super().forward(x)
        keep = 1.0 - self.p
        u = torch.from_numpy(self.rng.random(tuple(x.shape), dtype=np.float32))
        return u.lt_(keep).mul_(1.0 / keep).mul_(x)


class FusionNetwork(nn.Module):
    """Per-modality MLP encoders -> mask-aware fusion -> fused head (+ one head per modality).

    Shapes: ``xs`` is a list of (B, d_m) tensors, ``mask`` a (B, M) bool tensor. A missing
    modality's encoder output is multiplied by zero *after* encoding, so no learned bias of a
    missing input leaks into the fusion; gated fusion renormalises its attention over the
    present modalities only, and late fusion averages the present heads only.
    """

    def __init__(self, dims, n_classes, fusion="concat", hidden=64, dropout=0.1, unimodal_heads=True):
        super().__init__()
        self.fusion = fusion
        self.n_classes = n_classes
        self.encoders = nn.ModuleList(
            nn.Sequential(
                nn.Linear(d, hidden), nn.ReLU(), MCDropout(dropout),
                nn.Linear(hidden, hidden), nn.ReLU(), MCDropout(dropout),
            )
            for d in dims
        )
        M = len(dims)
        if fusion == "concat":
            self.fusion_layer = nn.Sequential(nn.Linear(M * hidden, hidden), nn.ReLU(), MCDropout(dropout))
        elif fusion in ("sum", "gated"):
            self.fusion_layer = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), MCDropout(dropout))
        if fusion == "gated":
            self.gate = nn.Linear(hidden, 1)
        if fusion != "late":
            self.head = nn.Linear(hidden, n_classes)
        self.modality_heads = nn.ModuleList(nn.Linear(hidden, n_classes) for _ in dims) if unimodal_heads else None

    def encode(self, xs):
        return [enc(x) for enc, x in zip(self.encoders, xs)]

    def fuse(self, z, mask):
        """Returns (fused embedding (B, h), fused logits (B, C), list of M modality logits)."""
        m = mask.to(z[0].dtype)
        mod_logits = [head(zj) for head, zj in zip(self.modality_heads, z)] if self.modality_heads is not None else []
        count = m.sum(dim=1, keepdim=True)
        if self.fusion == "late":
            stacked = torch.stack([F.softmax(lg, dim=1) for lg in mod_logits], dim=1)  # (B, M, C)
            probs = (stacked * m.unsqueeze(2)).sum(dim=1) / count.clamp(min=1)
            probs = torch.where(count > 0, probs, torch.full_like(probs, 1.0 / self.n_classes))
            emb = (torch.stack(z, dim=1) * m.unsqueeze(2)).sum(dim=1) / count.clamp(min=1)
            return emb, torch.log(probs.clamp(min=1e-12)), mod_logits
        if self.fusion == "concat":
            fused = torch.cat([zj * m[:, j : j + 1] for j, zj in enumerate(z)], dim=1)
        elif self.fusion == "sum":
            fused = (torch.stack(z, dim=1) * m.unsqueeze(2)).sum(dim=1) / count.clamp(min=1)
        else:  # gated: attention weights over the present modalities only
            stacked = torch.stack(z, dim=1)  # (B, M, h)
            scores = self.gate(stacked).squeeze(2).masked_fill(~mask, float("-inf"))
            weights = torch.softmax(scores, dim=1).nan_to_num(0.0)
            fused = (stacked * weights.unsqueeze(2)).sum(dim=1)
        emb = self.fusion_layer(fused)
        return emb, self.head(emb), mod_logits

    def mc_logits(self, xs, mask, T, rng=None, max_rows=65536):
        """(T, B, C) fused logits under T dropout passes (call :meth:`enable_dropout` first).

        Each encoder's first layer and its ReLU come before any dropout, so they are the same
        in every pass: they are computed once, and the rest of the network runs on the T
        passes stacked into one batch (in groups of at most ``max_rows`` rows). ``rng``: a
        numpy Generator for the dropout masks on the CPU (see :class:`MCDropout`); None
        draws them from torch's generator.
        """
        first = [enc[1](enc[0](x)) for enc, x in zip(self.encoders, xs)]
        B = mask.shape[0]
        out = []
        step = max(1, max_rows // max(B, 1))
        drops = [m for m in self.modules() if isinstance(m, MCDropout)]
        for m in drops:
            m.rng = rng
        try:
            for start in range(0, T, step):
                t = min(step, T - start)
                z = [enc[2:](h.repeat(t, 1)) for enc, h in zip(self.encoders, first)]
                _, logits, _ = self.fuse(z, mask.repeat(t, 1))
                out.append(logits.view(t, B, -1))
        finally:
            for m in drops:
                m.rng = None
        return torch.cat(out) if len(out) > 1 else out[0]

    @staticmethod
    def probs(logits):
        return F.softmax(logits, dim=1)

    def enable_dropout(self):
        """Dropout on, everything else in eval mode: the MC-dropout inference setting."""
        self.eval()
        for module in self.modules():
            if isinstance(module, nn.Dropout):
                module.train()

    def loss(self, xs, mask, y, aux_weight):
        z = self.encode(xs)
        _, logits, mod_logits = self.fuse(z, mask)
        loss = F.cross_entropy(logits, y) if self.fusion != "late" else F.nll_loss(logits, y)
        if mod_logits and (aux_weight > 0 or self.fusion == "late"):
            m = mask.to(logits.dtype)
            per = torch.stack([F.cross_entropy(lg, y, reduction="none") for lg in mod_logits], dim=1)
            aux = (per * m).sum() / m.sum().clamp(min=1)
            loss = loss + max(aux_weight, 0.0) * aux
        return loss

    def fit(self, xs, mask, y, epochs, batch_size, lr, weight_decay, aux_weight, modality_dropout):
        # The fused Adam kernel updates all parameters in one call: with a network this small,
        # per-tensor optimiser overhead is a large share of each step.
        try:
            opt = torch.optim.Adam(self.parameters(), lr=lr, weight_decay=weight_decay, fused=True)
        except (RuntimeError, TypeError):
            opt = torch.optim.Adam(self.parameters(), lr=lr, weight_decay=weight_decay)
        n = y.shape[0]
        self.train()
        for _ in range(epochs):
            order = torch.randperm(n, device=y.device)
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                bmask = mask[idx]
                if modality_dropout > 0:
                    drop = torch.rand(bmask.shape, device=bmask.device) < modality_dropout
                    kept = bmask & ~drop
                    bmask = torch.where(kept.any(dim=1, keepdim=True), kept, bmask)
                loss = self.loss([x[idx] for x in xs], bmask, y[idx], aux_weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        self.eval()
