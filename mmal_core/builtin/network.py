"""The torch module behind :class:`mmal_core.builtin.fusion.FusionMLP` (imported lazily)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


#: Dropout keeps a unit when a 16-bit word of its mask stream is below
#: ``round(keep * MASK_WORDS)``, and scales the kept units by ``MASK_WORDS / threshold``.
MASK_WORDS = 1 << 16


def dropout_noise(bitgen: np.random.BitGenerator, shape: tuple[int, ...], keep: float, out=None) -> np.ndarray:
    """float32 dropout noise of ``shape`` (0 for a dropped unit, the kept units' scale
    otherwise) from numpy bit generator ``bitgen``: each 64-bit draw gives four 16-bit words
    (little-endian order), one per unit, so a unit costs about a nanosecond; torch's CPU
    ``bernoulli_`` takes two 32-bit Mersenne Twister words per unit (about 6 ns). Training
    and MC-dropout masks on the CPU both come from here, whether a network runs alone or
    stacked (the same draws for a member in the same order, so the same bits)."""
    size = int(np.prod(shape))
    threshold = int(round(keep * MASK_WORDS))
    if threshold <= 0:
        out = np.empty(shape, dtype=np.float32) if out is None else out
        out[...] = 0.0
        return out
    words = bitgen.random_raw(-(-size // 4)).astype("<u8", copy=False).view("<u2")[:size].reshape(shape)
    return np.multiply(words < threshold, np.float32(MASK_WORDS / threshold), out=out, dtype=np.float32)


def stacked_noise(bitgens, shape: tuple[int, ...], keep: float) -> np.ndarray:
    """(K, *shape) :func:`dropout_noise`, member k's from ``bitgens[k]``."""
    noise = np.empty((len(bitgens), *shape), dtype=np.float32)
    for k, bitgen in enumerate(bitgens):
        dropout_noise(bitgen, shape, keep, out=noise[k])
    return noise


def counter_noise(keys, step: int, shape: tuple[int, ...], keep: float):
    """(K, *shape) float32 dropout noise on the keys' device from :func:`counter_uniforms`."""
    return counter_uniforms(keys, _DROPOUT, step, shape).lt_(keep).float().div_(keep)


class MCDropout(nn.Dropout):
    """``nn.Dropout`` whose masks on the CPU come from numpy (:func:`dropout_noise`).

    Training (:meth:`FusionNetwork.fit`) sets ``noise``, this step's (rows, hidden) noise of
    the layer; MC-dropout inference sets ``rng``, a numpy Generator whose bit generator
    draws the masks pass by pass. CUDA tensors, ``p`` of 0 or 1 and neither set use
    ``nn.Dropout`` unchanged.
    """

    rng: np.random.Generator | None = None
    noise = None

    def forward(self, x):
        if self.training and self.noise is not None:
            return x * self.noise
        if not self.training or not 0.0 < self.p < 1.0 or x.device.type != "cpu" or self.rng is None:
            return super().forward(x)
        noise = dropout_noise(self.rng.bit_generator, tuple(x.shape), 1.0 - self.p)
        return torch.from_numpy(noise).mul_(x)


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

    #: Draw the training masks and batch order the way a stacked member draws them on a
    #: device (:class:`StackedFusion`): counter-based masks under the fit's key, batch order
    #: from the CPU generator. None (default): on a GPU only, so that a run trains with the
    #: same random numbers alone or in a lockstep group there too; tests set True to run
    #: that way on the CPU.
    device_draws: bool | None = None

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
        # the dropout masks' stream, keyed from torch's generator where StackedFusion.fit
        # draws a member's key from its own generator: a PCG64 stream on the CPU, the
        # counter-based masks on a device (device_draws)
        key = int(torch.randint(0, 2**62, (1,)))
        on_device = y.device.type != "cpu" if self.device_draws is None else self.device_draws
        drops = [m for m in self.modules() if isinstance(m, MCDropout)]
        masked = bool(drops) and 0.0 < drops[0].p < 1.0
        bitgen = np.random.PCG64(key) if masked and not on_device else None
        keys = torch.tensor([key], dtype=torch.int64, device=y.device) if on_device else None
        shape = (len(drops), self.encoders[0][0].out_features)
        keep = 1.0 - drops[0].p if drops else 1.0
        step = 0
        self.train()
        try:
            for _ in range(epochs):
                # on a device the batch order comes from the CPU generator, as for a stacked member
                order = torch.randperm(n).to(y.device) if on_device else torch.randperm(n, device=y.device)
                for start in range(0, n, batch_size):
                    idx = order[start : start + batch_size]
                    bmask = mask[idx]
                    if modality_dropout > 0:
                        if on_device:
                            u = counter_uniforms(keys, _MODALITY_DROPOUT, step, tuple(bmask.shape))[0]
                        else:
                            u = torch.rand(bmask.shape, device=bmask.device)
                        kept = bmask & ~(u < modality_dropout)
                        bmask = torch.where(kept.any(dim=1, keepdim=True), kept, bmask)
                    if masked:
                        rows = (shape[0], len(idx), shape[1])
                        if on_device:
                            noise = counter_noise(keys, step, rows, keep)[0]
                        else:
                            noise = torch.from_numpy(dropout_noise(bitgen, rows, keep)).to(y.device)
                        for layer, d in enumerate(drops):
                            d.noise = noise[layer]
                    loss = self.loss([x[idx] for x in xs], bmask, y[idx], aux_weight)
                    step += 1
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
        finally:
            for d in drops:
                d.noise = None
        self.eval()


# -- lockstep: K networks of one architecture trained as stacked weights ------------------------

def _linear(x, wt, b):
    """One member-batched linear layer: x (K, B, din), wt (K, din, dout) (the weights
    transposed), b (K, dout).

    ``baddbmm`` gives every member the same bits as ``F.linear`` on its own, forward and
    backward (checked by ``benchmarks/lockstep/bits.py`` and tests/test_lockstep_model.py on
    the CPU): ``F.linear``'s backward computes its weight gradient as x^T g, the product that
    gives ``wt`` its gradient here, with no transposed copy to make.
    """
    K, B, din = x.shape
    dout = wt.shape[2]
    if B * din * dout < _SMALL_PRODUCT or dout == 1:
        # torch multiplies tiny matrices (and matrix-vector products) in a batch with its own
        # loops, not with the BLAS gemm that F.linear calls: one member at a time, with its
        # weights in F.linear's own layout, keeps the bits
        return torch.stack([F.linear(x[k], wt[k].t().contiguous(), b[k]) for k in range(K)])
    return torch.baddbmm(b.unsqueeze(1), x, wt)


#: Below this many multiply-adds per member, torch's CPU bmm uses a naive kernel instead of gemm.
_SMALL_PRODUCT = 400


def _stacked_layout(p):
    """A member's parameter as :class:`StackedFusion` holds it: a weight matrix (dout, din)
    transposed to (din, dout), anything else as it is (the transposition is its own inverse)."""
    return p.t() if p.dim() == 2 else p


def _shift_right(x, bits: int):
    """Logical right shift of int64 tensors (torch's ``>>`` keeps the sign)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _mix64(x):
    """SplitMix64's finaliser on int64 tensors (multiplications wrap modulo 2**64)."""
    x = (x ^ _shift_right(x, 30)) * -4658895280553007687  # 0xBF58476D1CE4E5B9
    x = (x ^ _shift_right(x, 27)) * -7723592293110705685  # 0x94D049BB133111EB
    return x ^ _shift_right(x, 31)


def counter_uniforms(keys, stream: int, step: int, shape: tuple[int, ...]):
    """(K, *shape) float32 uniforms in [0, 1) for K members at once, member k's a function of
    ``keys[k]``, ``stream``, ``step`` and the position alone: a counter-based generator
    (SplitMix64's finaliser over key and counter, top 24 bits), so a member's numbers do not
    depend on the others in the stack, and integer arithmetic gives the same bits on every
    device. Used on a GPU, where drawing each member's masks from its own generator would
    take one kernel launch per member and step."""
    size = 1
    for d in shape:
        size *= d
    counter = ((step * 8 + stream) << 32) + torch.arange(size, dtype=torch.int64, device=keys.device)
    x = _mix64(_mix64(keys.view(-1, 1) * -7046029254386353131) + counter)  # 0x9E3779B97F4A7C15
    return (_shift_right(x, 40).to(torch.float32) * (1.0 / (1 << 24))).view(len(keys), *shape)


#: Streams of :func:`counter_uniforms` in a stacked fit: dropout and modality-dropout masks.
_DROPOUT, _MODALITY_DROPOUT = 0, 1


class StackedFusion:
    """K :class:`FusionNetwork` of the same architecture held as stacked weights.

    Every parameter ``name`` of the members becomes one (K, ...) leaf tensor (a weight
    matrix transposed, (K, din, dout)), so a layer is one batched matmul over (K, batch,
    features) and one fused Adam updates every member.
    Nothing is mixed between members: each member's loss is its own mean; its batch order
    and modality-dropout masks come from its own ``torch.Generator`` (continuing the stream
    its weights were drawn from, exactly as :meth:`FusionNetwork.fit` does with the global
    generator), and its dropout masks from a PCG64 stream keyed from that generator where
    ``fit`` keys its own (:func:`dropout_noise`), so a member trains to the same bits as it
    would alone on the CPU. On a GPU the masks come from :func:`counter_uniforms` under
    that same key: still the member's own, whatever its neighbours, but one batched draw per
    step instead of a CPU draw per member and a copy (on the CPU those integer hashes cost
    more than the PCG64 words, which is why the CPU keeps them).
    """

    #: Draw the training masks with :func:`counter_uniforms` on the stack's device: None
    #: (default) on a GPU only; the CPU keeps each member's PCG64 mask stream, the one
    #: ``fit`` draws alone. Tests set True to run the GPU's way on the CPU.
    device_draws: bool | None = None

    def __init__(self, nets: list[FusionNetwork]):
        first = nets[0]
        self.nets = nets
        self.fusion = first.fusion
        self.n_classes = first.n_classes
        self.M = len(first.encoders)
        self.heads = first.modality_heads is not None
        self.p = float(first.encoders[0][2].p)
        named = [dict(net.named_parameters()) for net in nets]  # once per member: walking modules is slow
        self.params = {n: torch.stack([_stacked_layout(d[n].detach()) for d in named]).requires_grad_(True)
                       for n in named[0]}

    def write_back(self) -> None:
        """Copy the trained stacked weights into the member networks."""
        with torch.no_grad():
            for k, net in enumerate(self.nets):
                for n, p in net.named_parameters():
                    p.copy_(_stacked_layout(self.params[n][k]))

    # forward pieces ----------------------------------------------------------------------
    def _lin(self, x, name):
        return _linear(x, self.params[name + ".weight"], self.params[name + ".bias"])

    def _dropouts(self, bitgens, rows: int, device, draws=None):
        """The dropout of one training step: a function applied after each hidden layer in
        turn. Every hidden layer is (rows, hidden), so a member's masks for the step are one
        (layers, rows, hidden) block from its own mask stream (``bitgens[k]``, as
        :meth:`FusionNetwork.fit` draws it alone) or, on a device, from
        :func:`counter_uniforms` (``draws``: keys and step)."""
        if self.p == 0.0:
            return lambda h: h
        if self.p >= 1.0:
            return lambda h: h * torch.zeros_like(h)
        keep = 1.0 - self.p
        layers = 2 * self.M + (self.fusion != "late")
        hidden = self.params["encoders.0.0.weight"].shape[2]
        if draws is not None:  # (keys, step): the device's counter-based draws
            keys, step = draws
            noise = counter_noise(keys, step, (layers, rows, hidden), keep)
        else:
            noise = torch.from_numpy(stacked_noise(bitgens, (layers, rows, hidden), keep)).to(device)
        used = iter(range(layers))
        return lambda h: h * noise[:, next(used)]

    def encode(self, xs, drop=None):
        """Per-modality encoder outputs, a list of (K, B, h); ``drop`` (training: per-member
        dropout) is applied after each hidden layer, in the order ``FusionNetwork`` applies it."""
        z = []
        for j, x in enumerate(xs):
            h = torch.relu(self._lin(x, f"encoders.{j}.0"))
            h = torch.relu(self._lin(drop(h) if drop else h, f"encoders.{j}.3"))
            z.append(drop(h) if drop else h)
        return z

    def fuse(self, z, mask, drop=None):
        """(fused embedding (K, B, h), fused logits (K, B, C), list of M modality logits):
        :meth:`FusionNetwork.fuse` for every member; late fusion's logits are log-probabilities."""
        m = mask.to(z[0].dtype)
        K, B = mask.shape[:2]
        C = self.n_classes
        mod_logits = [self._lin(zj, f"modality_heads.{j}") for j, zj in enumerate(z)] if self.heads else []
        count = m.sum(dim=2, keepdim=True)
        if self.fusion == "late":
            stacked = torch.stack([torch.softmax(lg, dim=2) for lg in mod_logits], dim=2)  # (K, B, M, C)
            probs = (stacked * m.unsqueeze(3)).sum(dim=2) / count.clamp(min=1)
            probs = torch.where(count > 0, probs, torch.full_like(probs, 1.0 / C))
            # log one member at a time: an elementwise kernel's vector/scalar split must not
            # depend on where a member's rows sit in the stack
            logp = torch.stack([torch.log(probs[k].clamp(min=1e-12)) for k in range(K)])
            emb = (torch.stack(z, dim=2) * m.unsqueeze(3)).sum(dim=2) / count.clamp(min=1)
            return emb, logp, mod_logits
        if self.fusion == "concat":
            fused = torch.cat([zj * m[:, :, j : j + 1] for j, zj in enumerate(z)], dim=2)
        elif self.fusion == "sum":
            fused = (torch.stack(z, dim=2) * m.unsqueeze(3)).sum(dim=2) / count.clamp(min=1)
        else:
            stacked = torch.stack(z, dim=2)  # (K, B, M, h)
            hdim = stacked.shape[3]
            scores = self._lin(stacked.reshape(K, B * self.M, hdim), "gate").view(K, B, self.M)
            scores = scores.masked_fill(~mask, float("-inf"))
            weights = torch.softmax(scores, dim=2).nan_to_num(0.0)
            fused = (stacked * weights.unsqueeze(3)).sum(dim=2)
        emb = torch.relu(self._lin(fused, "fusion_layer.0"))
        emb = drop(emb) if drop else emb
        return emb, self._lin(emb, "head"), mod_logits

    def loss(self, xs, mask, y, aux_weight, bitgens, draws=None):
        """Sum over members of each member's own loss (so each member's gradient is its own).

        xs: list of (K, B, d_m); mask: (K, B, M) bool; y: (K, B) int64; bitgens: each
        member's mask stream (see :meth:`_dropouts`).
        """
        K, B = y.shape
        drop = self._dropouts(bitgens, B, y.device, draws)
        _, logits, mod_logits = self.fuse(self.encode(xs, drop), mask, drop)
        m = mask.to(logits.dtype)
        C = self.n_classes
        lossf = F.nll_loss if self.fusion == "late" else F.cross_entropy
        main = lossf(logits.reshape(K * B, C), y.reshape(-1), reduction="none").view(K, B).mean(dim=1)
        loss = main
        if mod_logits and (aux_weight > 0 or self.fusion == "late"):
            per = torch.stack(
                [F.cross_entropy(lg.reshape(K * B, C), y.reshape(-1), reduction="none").view(K, B) for lg in mod_logits],
                dim=2,
            )
            aux = (per * m).sum(dim=(1, 2)) / m.sum(dim=(1, 2)).clamp(min=1)
            loss = loss + max(aux_weight, 0.0) * aux
        return loss.sum()

    # inference ---------------------------------------------------------------------------
    def mc_logits(self, xs, mask, T, rngs, max_rows=65536):
        """(K, T, B, C) fused logits under T MC-dropout passes, member k's masks drawn from
        numpy Generator ``rngs[k]`` exactly as :meth:`FusionNetwork.mc_logits` draws them
        (same passes per chunk, same order of draws), so each member gets its own bits."""
        first = [torch.relu(self._lin(x, f"encoders.{j}.0")) for j, x in enumerate(xs)]
        K, B = mask.shape[:2]
        keep = 1.0 - self.p

        def drop(h):
            if self.p == 0.0:
                return h
            noise = stacked_noise([rng.bit_generator for rng in rngs], tuple(h.shape[1:]), keep)
            return torch.from_numpy(noise).mul_(h)

        out = []
        step = max(1, max_rows // max(B, 1))
        for start in range(0, T, step):
            t = min(step, T - start)
            z = []
            for j, h in enumerate(first):
                h = torch.relu(self._lin(drop(h.repeat(1, t, 1)), f"encoders.{j}.3"))
                z.append(drop(h))
            _, logits, _ = self.fuse(z, mask.repeat(1, t, 1), drop)
            out.append(logits.view(K, t, B, -1))
        return torch.cat(out, dim=1) if len(out) > 1 else out[0]

    def fit(self, xs, mask, y, gens, epochs, batch_size, lr, weight_decay, aux_weight, modality_dropout):
        """Train every member: xs list of (K, n, d_m), mask (K, n, M), y (K, n); gens: K generators."""
        # the unimodal heads take no part in the loss without aux loss: like torch's Adam on a
        # parameter without gradient, leave them as they are (no weight decay either)
        used = aux_weight > 0 or self.fusion == "late"
        opt = MemberAdam([p for name, p in self.params.items() if used or not name.startswith("modality_heads.")],
                         lr=lr, weight_decay=weight_decay)
        K, n = y.shape
        offsets = torch.arange(K, device=y.device).unsqueeze(1) * n
        on_device = y.device.type != "cpu" if self.device_draws is None else self.device_draws
        # one key per member from its own stream, drawn where FusionNetwork.fit draws it: on
        # the CPU it seeds the member's mask stream, on a GPU its counter-based masks
        keys = [int(torch.randint(0, 2**62, (1,), generator=g)) for g in gens]
        bitgens = None if on_device else [np.random.PCG64(key) for key in keys]
        keys = torch.tensor(keys, dtype=torch.int64, device=y.device) if on_device else None
        step = 0
        for _ in range(epochs):
            order = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(y.device)
            for start in range(0, n, batch_size):
                idx = order[:, start : start + batch_size]
                flat, b = (idx + offsets).reshape(-1), idx.shape[1]
                bmask = _member_rows(mask, flat, b)
                if modality_dropout > 0:
                    if on_device:
                        u = counter_uniforms(keys, _MODALITY_DROPOUT, step, tuple(bmask.shape[1:]))
                    else:
                        u = torch.stack([torch.rand(tuple(bmask.shape[1:]), generator=g) for g in gens]).to(bmask.device)
                    kept = bmask & ~(u < modality_dropout)
                    bmask = torch.where(kept.any(dim=2, keepdim=True), kept, bmask)
                loss = self.loss([_member_rows(x, flat, b) for x in xs], bmask, _member_rows(y, flat, b), aux_weight,
                                 bitgens, (keys, step) if on_device else None)
                step += 1
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.write_back()


def _member_rows(t, flat, b: int):
    """(K, b, ...) rows of the stacked (K, n, ...) ``t``: ``flat`` holds row k n + i for
    member k's row i (one gather over the members laid end to end, cheaper than indexing
    with a (K, b) index per member)."""
    return t.reshape(-1, *t.shape[2:]).index_select(0, flat).view(t.shape[0], b, *t.shape[2:])


class MemberAdam:
    """Adam over stacked (K, ...) parameters that updates each member as its own tensor.

    One call of torch's fused Adam kernel updates every member of every parameter. The
    kernel splits each tensor it is given into a vectorised body and a scalar tail (after
    at most 15 elements), and the two round differently. A parameter whose members hold a
    multiple of 16 elements each has no tail, alone or stacked, so it goes in whole; any
    other is given member by member (a small bias stacked would put a member's scalar tail
    into the vector body). Either way each member gets the bits
    ``torch.optim.Adam(fused=True)`` gives it alone. Step count, bias corrections and eps
    are per member by construction: the members step together.

    Gradients are set to None between steps, so that backward hands each stacked gradient
    over instead of adding it to zeros.
    """

    #: Elements per member below which a multiple keeps the kernel's scalar tail away (a
    #: 64-byte cache line of float32, the kernel's unit of work, which AVX-512 fills).
    WHOLE = 16

    def __init__(self, params, lr, weight_decay, betas=(0.9, 0.999), eps=1e-8):
        self.params = params
        self.lr, self.weight_decay, self.betas, self.eps = lr, weight_decay, betas, eps
        self.exp_avg = [torch.zeros_like(p) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]
        self.whole = [p[0].numel() % self.WHOLE == 0 for p in params]
        self._p, self._m, self._v = (self._split(ts) for ts in (params, self.exp_avg, self.exp_avg_sq))
        self.step_count = torch.zeros((), dtype=torch.float32, device=params[0].device)
        self._steps = [self.step_count] * len(self._p)

    def _split(self, tensors) -> list:
        """The kernel's tensors: each whole one, the members of each other one."""
        out = []
        for t, whole in zip(tensors, self.whole):
            t = t.detach()
            if whole:
                out.append(t)
            else:
                out.extend(t.unbind(0))
        return out

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        self.step_count.add_(1)
        grads = self._split([p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params])
        torch._fused_adam_(
            self._p, grads, self._m, self._v, [], self._steps, amsgrad=False, lr=self.lr,
            beta1=self.betas[0], beta2=self.betas[1], weight_decay=self.weight_decay, eps=self.eps,
            maximize=False, grad_scale=None, found_inf=None,
        )
