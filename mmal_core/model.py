"""The model interface and mmal's default multimodal network.

A model is trained on the labeled set every round and answers the questions a PoolView
needs. :class:`Model` is the interface model plugins implement; :class:`FusionMLP` is the
built-in multimodal network: one MLP encoder per modality, a fusion (``concat``, ``sum``,
``gated`` attention over present modalities, or ``late`` averaging of unimodal heads), one
auxiliary classifier head per modality trained jointly, dropout that can stay on at inference
for MC sampling, and explicit masking: a missing modality contributes nothing to the fusion.

Torch is imported only when a model is built or trained, so listing plugins stays fast.
"""

from __future__ import annotations

import contextlib
import io
from itertools import combinations
from typing import Any, ClassVar

import numpy as np

from .data import ModalitySpec, Split
from .errors import MmalError
from .params import check_choice, check_float, check_int, get_params

FUSIONS = ("concat", "sum", "gated", "late")

#: Members per stacked network when lockstep training runs on the CPU (see FusionMLP.fit_many).
CPU_STACK = 16


class Model:
    """Interface of model plugins.

    Subclasses set ``name``, ``provides`` (the PoolView fields they can compute, see
    :data:`mmal_core.view.REQUIREMENTS`) and take hyper-parameters as keyword arguments of
    ``__init__`` (validated there). The loop calls, each round::

        model.setup(modalities, n_classes)             # once per run
        model.fit(pool, labeled, seed, init_state)     # fresh weights unless init_state
        model.predict(split, index, want={...})        # dict of arrays, see below
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    provides: ClassVar[frozenset[str]] = frozenset()

    def provided(self) -> frozenset[str]:
        """Fields this configured instance can compute (may depend on its parameters)."""
        return frozenset(self.provides)

    def setup(self, modalities: list[ModalitySpec], n_classes: int) -> None:
        raise NotImplementedError

    def fit(self, pool: Split, labeled: np.ndarray, seed: int, init_state: bytes | None = None) -> None:
        """Train on ``pool`` rows ``labeled`` (positions) with randomness from ``seed`` only."""
        raise NotImplementedError

    def predict(
        self,
        split: Split,
        index: np.ndarray | None = None,
        want: set[str] | frozenset[str] = frozenset({"probs"}),
        params: dict[str, Any] | None = None,
        keep: np.ndarray | None = None,
    ) -> dict[str, Any]:
        """Outputs for rows ``index`` of ``split`` (all rows when None).

        want: subset of {"probs", "embeddings", "modality_probs", "modality_embeddings",
            "mc_probs", "subset_probs"}.
        params: ``mc_samples`` (T) for ``mc_probs``.
        keep: optional (M,) bool; modalities set False are treated as missing everywhere.
        """
        raise NotImplementedError

    def state(self) -> bytes:
        """Serialized weights, for warm starts and resumable runs."""
        raise NotImplementedError

    #: True when the class implements :meth:`fit_many` (lockstep training of several runs).
    lockstep: ClassVar[bool] = False

    @classmethod
    def fit_many(cls, models: list["Model"], jobs: list[tuple[Split, np.ndarray, int, bytes | None]]) -> None:
        """Optional batched training: fit ``models[k]`` on ``jobs[k] = (pool, labeled, seed,
        init_state)`` for every k at once (lockstep execution of the runs of a study).

        The models are set up alike (same class, parameters, modalities and classes) and the
        labeled sets have equal sizes. Afterwards each model must be exactly what its own
        ``fit(*jobs[k])`` would have made: nothing of one member may depend on the others,
        so a run's results do not change with the group it trains in. Classes that
        implement it set ``lockstep = True``; the loop calls ``fit`` one run at a time for
        the others.
        """
        raise NotImplementedError

    def get_params(self) -> dict[str, Any]:
        return get_params(self)


class FusionMLP(Model):
    """Multimodal MLP with per-modality encoders, a fusion choice and unimodal heads.

    Parameters:
        fusion: ``concat`` | ``sum`` | ``gated`` | ``late``.
        hidden: width of encoders and of the fused embedding.
        dropout: dropout probability after every hidden layer (also used by MC dropout).
        epochs, batch_size, lr, weight_decay: Adam training settings.
        min_steps: at least this many optimiser steps, however small the labeled set (with
            20 labels, 40 epochs would otherwise be only 40 steps).
        aux_weight: weight of the unimodal heads' loss (0 trains them detached from nothing:
            they still learn, but do not shape the encoders).
        unimodal_heads: False removes the auxiliary heads (multimodal strategies then refuse
            to run).
        modality_dropout: probability of hiding each present modality of a training sample
            (never all of them), for robustness to missing modalities.
        device: ``auto`` (CUDA when torch sees a GPU), ``cpu`` or ``cuda``.
        eval_batch_size: rows per batch when predicting.
    """

    name = "fusion-mlp"
    lockstep = True
    summary = "MLP encoder per modality, concat/sum/gated/late fusion, unimodal heads, mask-aware"
    provides = frozenset(
        {"probs", "embeddings", "modality_probs", "modality_embeddings", "mc_probs", "subset_probs"}
    )

    def __init__(
        self,
        fusion: str = "concat",
        hidden: int = 64,
        dropout: float = 0.1,
        epochs: int = 40,
        batch_size: int = 64,
        min_steps: int = 100,
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        aux_weight: float = 1.0,
        unimodal_heads: bool = True,
        modality_dropout: float = 0.0,
        device: str = "auto",
        eval_batch_size: int = 8192,
    ):
        self.fusion = check_choice("fusion", fusion, FUSIONS)
        self.hidden = check_int("hidden", hidden, 1)
        self.dropout = check_float("dropout", dropout, 0.0, 0.95)
        self.epochs = check_int("epochs", epochs, 1)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.min_steps = check_int("min_steps", min_steps, 0)
        self.lr = check_float("lr", lr, 0.0, open_min=True)
        self.weight_decay = check_float("weight_decay", weight_decay, 0.0)
        self.aux_weight = check_float("aux_weight", aux_weight, 0.0)
        if not isinstance(unimodal_heads, bool):
            raise MmalError(f"parameter 'unimodal_heads': expected true or false, got {unimodal_heads!r}")
        self.unimodal_heads = unimodal_heads
        self.modality_dropout = check_float("modality_dropout", modality_dropout, 0.0, 0.95)
        self.device = check_choice("device", device, ("auto", "cpu", "cuda"))
        self.eval_batch_size = check_int("eval_batch_size", eval_batch_size, 1)
        if fusion == "late" and not unimodal_heads:
            raise MmalError("parameter 'unimodal_heads': late fusion averages the unimodal heads, so it needs them")
        self.net_ = None

    def provided(self) -> frozenset[str]:
        if self.unimodal_heads:
            return self.provides
        return self.provides - {"modality_probs"}

    # -- set-up --------------------------------------------------------------------------
    def setup(self, modalities: list[ModalitySpec], n_classes: int) -> None:
        self.modalities_ = list(modalities)
        self.n_classes_ = int(n_classes)
        self.net_ = None

    def _torch_device(self):
        import torch

        if self.device == "cuda" and not torch.cuda.is_available():
            raise MmalError("parameter 'device': cuda was asked for but torch sees no GPU")
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def _build(self):
        from .builtin.network import FusionNetwork

        return FusionNetwork(
            dims=[m.dim for m in self.modalities_],
            n_classes=self.n_classes_,
            fusion=self.fusion,
            hidden=self.hidden,
            dropout=self.dropout,
            unimodal_heads=self.unimodal_heads,
        )

    def _normaliser(self, pool: Split) -> None:
        # Feature scaling from the whole pool: its features are known before any label is.
        # Streamed in blocks (float64 sums), so a lazily read pool larger than memory works.
        self.mean_, self.std_ = [], []
        block = 65536
        for j, m in enumerate(pool.modalities):
            x, present = pool.features[m], pool.mask[:, j]
            total = np.zeros(x.shape[1], np.float64)
            squares = np.zeros(x.shape[1], np.float64)
            count = 0
            for start in range(0, len(present), block):
                rows = np.asarray(x[start : start + block], dtype=np.float64)[present[start : start + block]]
                total += rows.sum(axis=0)
                squares += np.square(rows).sum(axis=0)
                count += len(rows)
            mu = total / max(count, 1)
            sd = np.sqrt(np.maximum(squares / max(count, 1) - mu * mu, 0.0))
            self.mean_.append(mu.astype(np.float32))
            self.std_.append(np.where(sd > 1e-6, sd, 1.0).astype(np.float32))

    def _tensors(self, split: Split, index: np.ndarray, device, keep=None):
        import torch

        xs = []
        for j, m in enumerate(self.modalities_):
            x = (np.asarray(split.features[m.name][index]) - self.mean_[j]) / self.std_[j]
            xs.append(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device))
        mask = np.asarray(split.mask[index])
        if keep is not None:
            mask = mask & np.asarray(keep, dtype=bool)[None, :]
        return xs, torch.from_numpy(np.ascontiguousarray(mask)).to(device)

    # -- training ------------------------------------------------------------------------
    def fit(self, pool: Split, labeled: np.ndarray, seed: int, init_state: bytes | None = None) -> None:
        import torch

        if not hasattr(self, "modalities_"):
            raise MmalError("model: call setup(modalities, n_classes) before fit")
        labeled = np.sort(np.asarray(labeled, dtype=np.int64))
        device = self._torch_device()
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(int(seed))
            self._normaliser(pool)
            net = self._build().to(device)
            if init_state is not None:
                net.load_state_dict(torch.load(io.BytesIO(init_state), map_location=device))
            xs, mask = self._tensors(pool, labeled, device)
            y = torch.from_numpy(pool.labels[labeled]).to(device)
            batches = -(-len(labeled) // self.batch_size)
            epochs = max(self.epochs, -(-self.min_steps // batches))
            net.fit(xs, mask, y, epochs=epochs, batch_size=self.batch_size, lr=self.lr,
                    weight_decay=self.weight_decay, aux_weight=self.aux_weight,
                    modality_dropout=self.modality_dropout)
        net.eval()
        self.net_ = net
        self.seed_ = int(seed)

    @classmethod
    def fit_many(cls, models, jobs) -> None:
        """Train several runs' networks as one stacked network (see :meth:`Model.fit_many`).

        Each member draws its initial weights, batch order, dropout and modality-dropout
        masks from its own seed exactly as :meth:`fit` does, and a batched matmul gives each
        member the same bits as its own matmul on the CPU, so every member ends with the
        weights ``fit`` would give it alone.
        """
        import torch

        if len(models) != len(jobs) or not models:
            raise MmalError(f"model: fit_many needs one job per model, got {len(models)} models and {len(jobs)} jobs")
        first = models[0]
        nets, gens, xs_all, masks, ys, sizes = [], [], [], [], [], set()
        device = first._torch_device()
        for model, (pool, labeled, seed, init_state) in zip(models, jobs):
            if not hasattr(model, "modalities_"):
                raise MmalError("model: call setup(modalities, n_classes) before fit_many")
            if model.get_params() != first.get_params():
                raise MmalError("model: fit_many needs models with equal parameters")
            labeled = np.sort(np.asarray(labeled, dtype=np.int64))
            sizes.add(len(labeled))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seed))
                model._normaliser(pool)
                net = model._build()
                if init_state is not None:
                    net.load_state_dict(torch.load(io.BytesIO(init_state), map_location="cpu"))
                gen = torch.Generator()
                gen.set_state(torch.get_rng_state())  # the stream fit() goes on drawing from
            nets.append(net.to(device))
            gens.append(gen)
            xs, mask = model._tensors(pool, labeled, device)
            xs_all.append(xs)
            masks.append(mask)
            ys.append(torch.from_numpy(pool.labels[labeled]).to(device))
            model.seed_ = int(seed)
        if len(sizes) != 1 or len({tuple(x.shape[1] for x in xs) for xs in xs_all}) != 1:
            raise MmalError("model: fit_many needs labeled sets of one size and modalities of equal widths")
        n = sizes.pop()
        batches = -(-n // first.batch_size)
        epochs = max(first.epochs, -(-first.min_steps // batches))
        # On the CPU, stacks of more than a few dozen members spill out of the caches and
        # train slower per member: chunks of them (members are independent, so the bits
        # do not change). On a GPU a stack holds as many members as fit in its memory.
        chunk = CPU_STACK if device.type == "cpu" else first._members_fitting(device, nets[0], n)
        for start in range(0, len(nets), chunk):
            sl = slice(start, start + chunk)
            cls._fit_stack(first, device, nets[sl], gens[sl], xs_all[sl], masks[sl], ys[sl], epochs)
        for model, net in zip(models, nets):
            net.eval()
            model.net_ = net

    def _members_fitting(self, device, net, n: int) -> int:
        """How many members one stack on ``device`` may hold: half the free memory over a
        generous estimate of one member's (weights, gradients and Adam moments, its labeled
        features, a batch's activations kept for the backward pass). Never below 1."""
        import torch

        weights = sum(p.numel() for p in net.parameters())
        features = n * (sum(m.dim for m in self.modalities_) + len(self.modalities_) + 1)
        activations = self.batch_size * (sum(m.dim for m in self.modalities_) + 12 * self.hidden * (len(self.modalities_) + 1))
        member = 4 * (5 * weights + features + 4 * activations)
        free, _ = torch.cuda.mem_get_info(device)
        return max(1, int(0.5 * free // member))

    @staticmethod
    def _fit_stack(first, device, nets, gens, xs_all, masks, ys, epochs):
        import torch

        from .builtin.network import StackedFusion

        stack = StackedFusion(nets)
        xs = [torch.stack([xs_k[j] for xs_k in xs_all]) for j in range(len(xs_all[0]))]
        # One intra-op thread on the CPU: torch splits a batched product over its members but
        # a single product (K = 1) inside the matrix, and with more than one thread the two
        # splits round large products differently. Processes (--workers) give parallelism.
        threads = torch.get_num_threads()
        if device.type == "cpu":
            torch.set_num_threads(1)
        try:
            stack.fit(xs, torch.stack(masks), torch.stack(ys), gens, epochs=epochs, batch_size=first.batch_size,
                      lr=first.lr, weight_decay=first.weight_decay, aux_weight=first.aux_weight,
                      modality_dropout=first.modality_dropout)
        finally:
            torch.set_num_threads(threads)

    def state(self) -> bytes:
        import torch

        buf = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in self.net_.state_dict().items()}, buf)
        return buf.getvalue()

    # -- inference -----------------------------------------------------------------------
    def predict(self, split, index=None, want=frozenset({"probs"}), params=None, keep=None):
        import torch

        if self.net_ is None:
            raise MmalError("model: predict called before fit")
        want = set(want)
        unknown = want - self.provided()
        if unknown:
            raise MmalError(f"model '{self.name}' cannot provide {sorted(unknown)} with its current parameters")
        params = params or {}
        index = np.arange(len(split)) if index is None else np.asarray(index, dtype=np.int64)
        n, names = len(index), [m.name for m in self.modalities_]
        M = len(names)
        # every subset, the empty one first: () is the fused prediction with every modality masked
        subsets = [s for r in range(0, M + 1) for s in combinations(range(M), r)] if "subset_probs" in want else []
        T = int(params.get("mc_samples", 20)) if "mc_probs" in want else 0
        device = next(self.net_.parameters()).device
        out: dict[str, Any] = {}
        if "probs" in want:
            out["probs"] = np.empty((n, self.n_classes_), np.float32)
        if "embeddings" in want:
            out["embeddings"] = np.empty((n, self.hidden), np.float32)
        if "modality_probs" in want:
            out["modality_probs"] = {m: np.empty((n, self.n_classes_), np.float32) for m in names}
        if "modality_embeddings" in want:
            out["modality_embeddings"] = {m: np.empty((n, self.hidden), np.float32) for m in names}
        if T:
            out["mc_probs"] = np.empty((T, n, self.n_classes_), np.float32)
        if subsets:
            out["subset_probs"] = {tuple(names[i] for i in s): np.empty((n, self.n_classes_), np.float32) for s in subsets}
        net = self.net_
        mc_seed = int(params.get("mc_seed", getattr(self, "seed_", 0))) + 7919
        mc_rng = np.random.default_rng(mc_seed)  # dropout masks on the CPU (torch's generator on CUDA)
        # Only MC dropout draws from torch's generator (on CUDA): seeding it costs about a
        # millisecond (a large share of a small predict), so other passes leave it alone.
        seeded = torch.random.fork_rng(devices=[device] if device.type == "cuda" else []) if T else contextlib.nullcontext()
        with torch.no_grad(), seeded:
            if T:
                torch.manual_seed(mc_seed)
            for start in range(0, n, self.eval_batch_size):
                sl = slice(start, min(start + self.eval_batch_size, n))
                xs, mask = self._tensors(split, index[sl], device, keep)
                net.eval()
                z = net.encode(xs)
                if want & {"probs", "embeddings", "modality_probs"}:
                    emb, logits, mod_logits = net.fuse(z, mask)
                    if "probs" in want:
                        out["probs"][sl] = net.probs(logits).cpu().numpy()
                    if "embeddings" in want:
                        out["embeddings"][sl] = emb.cpu().numpy()
                    if "modality_probs" in want:
                        uniform = 1.0 / self.n_classes_
                        for j, m in enumerate(names):
                            p = torch.softmax(mod_logits[j], dim=1)
                            p = torch.where(mask[:, j : j + 1], p, torch.full_like(p, uniform))
                            out["modality_probs"][m][sl] = p.cpu().numpy()
                if "modality_embeddings" in want:
                    for j, m in enumerate(names):
                        out["modality_embeddings"][m][sl] = (z[j] * mask[:, j : j + 1]).cpu().numpy()
                for s in subsets:
                    sub = torch.zeros_like(mask)
                    sub[:, list(s)] = True
                    _, logits, _ = net.fuse(z, mask & sub)
                    out["subset_probs"][tuple(names[i] for i in s)][sl] = net.probs(logits).cpu().numpy()
                if T:
                    net.enable_dropout()
                    logits = net.mc_logits(xs, mask, T, rng=mc_rng)
                    out["mc_probs"][:, sl] = torch.softmax(logits, dim=2).cpu().numpy()
                    net.eval()
        return out
