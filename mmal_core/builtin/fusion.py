"""fusion-mlp, mmal's built-in multimodal network as a model plugin.

One MLP encoder per modality, a fusion (``concat``, ``sum``, ``gated`` attention over present
modalities, or ``late`` averaging of unimodal heads), one auxiliary classifier head per
modality trained jointly, dropout that can stay on at inference for MC sampling, and
explicit masking: a missing modality contributes nothing to the fusion. Lockstep training
(``fit_many``) holds K runs' networks as stacked weights (:mod:`.network`).

Torch is imported only when a model is built or trained, so listing plugins stays fast.
"""

from __future__ import annotations

import contextlib
import io
from itertools import combinations
from typing import Any

import numpy as np

from ..data import ModalitySpec, Split
from ..errors import MmalError
from ..params import check_choice, check_float, check_int
from ..model import Model

FUSIONS = ("concat", "sum", "gated", "late")

#: The fixed CPU stack size of the first lockstep code (kept for old imports; stacks now
#: follow the network's size: CPU_STACK_FLOATS, PREDICT_STACK_FLOATS).
CPU_STACK = 16
#: Rows x hidden units over all members of one stacked prediction pass on the CPU: 2**18 / (rows
#: * hidden) members per stack (4 of the default network on 1,000 rows, 1 for its 10 MC-dropout
#: passes). Larger stacks leave the caches: with 16 members, 10 MC passes over 1,000 rows took
#: 1.7x as long as each model's own predict (``benchmarks/lockstep/predict_device.py``).
PREDICT_STACK_FLOATS = 2**18
#: Most members per stacked network of a batched prediction on a GPU (an eval batch of
#: 64 default members of 8192 rows holds about 1 GiB of activations).
GPU_PREDICT_STACK = 64
#: Batch rows x hidden units that one stacked training step holds per layer on the CPU, over
#: all its members: a stack of 2**17 / (batch_size * hidden) members (32 of the default
#: 64 x 64) keeps a step's activations in the caches; more members per stack spill, fewer
#: pay more dispatch per member (see ``benchmarks/lockstep/throughput.py --stacks``).
CPU_STACK_FLOATS = 2**17


def even_slices(n: int, most: int) -> list[slice]:
    """``n`` positions in as few consecutive slices of at most ``most`` as possible, of sizes
    within one of each other (40 members by 32: 20 + 20, not 32 + 8)."""
    parts = max(1, -(-n // max(1, most)))
    cuts = [n * j // parts for j in range(parts + 1)]
    return [slice(a, b) for a, b in zip(cuts, cuts[1:])]


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
    #: 2: dropout masks (training and MC dropout) on the CPU from a PCG64 stream per fit or
    #: predict (``network.dropout_noise``) instead of torch's ``bernoulli_`` and numpy's
    #: float uniforms; on a GPU, ``fit`` draws the counter-based masks and CPU batch order
    #: of a stacked member (``FusionNetwork.device_draws``); 1: before that.
    version = "2"
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
        from .network import FusionNetwork

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
        # On the CPU, stacks of too many members spill out of the caches and train slower
        # per member: even chunks of them (members are independent, so the bits do not
        # change). On a GPU a stack holds as many members as fit in its memory.
        chunk = first._cpu_stack() if device.type == "cpu" else first._members_fitting(device, nets[0], n)
        for sl in even_slices(len(nets), chunk):
            cls._fit_stack(first, device, nets[sl], gens[sl], xs_all[sl], masks[sl], ys[sl], epochs)
        for model, net in zip(models, nets):
            net.eval()
            model.net_ = net

    def lockstep_bytes(self, dataset, n_labeled: int) -> int:
        """One member's share of a lockstep round (see :meth:`Model.lockstep_bytes`): weights
        with gradients, Adam moments and stacked copies; its labeled features and their
        stacked copy; a training batch's activations; the batched answers it holds on the
        test split (fused, unimodal, every coalition and kept modality, embeddings) and the
        pool (with 20 MC-dropout passes); an eval pass's activations over the larger split."""
        M, C, h = len(dataset.modalities), dataset.n_classes, self.hidden
        width = sum(m.dim for m in dataset.modalities)
        weights = sum(d * h + h * h + 2 * h for d in (m.dim for m in dataset.modalities)) + (M + 1) * (h * C + C) \
            + M * h * h + 2 * h
        labeled = 2 * n_labeled * (width + M + 1)
        batch = 4 * self.batch_size * (width + 12 * h * (M + 1))
        test = len(dataset.test) * (C * (1 + 2 * M + 2**M) + h * (M + 1))
        pool = len(dataset.train) * (C * (1 + M + 20) + h * (M + 1))
        passes = max(len(dataset.train), len(dataset.test)) * (width + 4 * h * (M + 1))
        return 4 * (6 * weights + labeled + batch + test + pool + passes)

    def _cpu_stack(self) -> int:
        """Most members per stacked network when ``fit_many`` trains on the CPU."""
        return max(4, CPU_STACK_FLOATS // (self.batch_size * self.hidden))

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

        from .network import StackedFusion

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
    def _check_want(self, want) -> set[str]:
        if self.net_ is None:
            raise MmalError("model: predict called before fit")
        want = set(want)
        unknown = want - self.provided()
        if unknown:
            raise MmalError(f"model '{self.name}' cannot provide {sorted(unknown)} with its current parameters")
        return want

    def _subsets(self, want) -> list[tuple[int, ...]]:
        """Every subset of modalities when ``subset_probs`` is wanted, the empty one first: ()
        is the fused prediction with every modality masked."""
        M = len(self.modalities_)
        return [s for r in range(0, M + 1) for s in combinations(range(M), r)] if "subset_probs" in want else []

    def _empty_outputs(self, n: int, want, subsets, T: int) -> dict[str, Any]:
        """The arrays :meth:`predict` fills for ``n`` rows."""
        names, C = [m.name for m in self.modalities_], self.n_classes_
        out: dict[str, Any] = {}
        if "probs" in want:
            out["probs"] = np.empty((n, C), np.float32)
        if "embeddings" in want:
            out["embeddings"] = np.empty((n, self.hidden), np.float32)
        if "modality_probs" in want:
            out["modality_probs"] = {m: np.empty((n, C), np.float32) for m in names}
        if "modality_embeddings" in want:
            out["modality_embeddings"] = {m: np.empty((n, self.hidden), np.float32) for m in names}
        if T:
            out["mc_probs"] = np.empty((T, n, C), np.float32)
        if subsets:
            out["subset_probs"] = {tuple(names[i] for i in s): np.empty((n, C), np.float32) for s in subsets}
        return out

    def predict(self, split, index=None, want=frozenset({"probs"}), params=None, keep=None):
        import torch

        want = self._check_want(want)
        params = params or {}
        index = np.arange(len(split)) if index is None else np.asarray(index, dtype=np.int64)
        n, names = len(index), [m.name for m in self.modalities_]
        subsets = self._subsets(want)
        T = int(params.get("mc_samples", 20)) if "mc_probs" in want else 0
        device = next(self.net_.parameters()).device
        out = self._empty_outputs(n, want, subsets, T)
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

    @classmethod
    def predict_many(cls, models, requests):
        """Batched :meth:`predict` (see :meth:`Model.predict_many`) with the same bits per
        answer as the model's own ``predict``, on the CPU: the requests of one model on the
        same rows of one split share one encoder pass (``keep`` only changes the mask, and a
        subset's prediction is the fused one under the subset's mask, so each distinct mask
        is fused once), and such units with equal row counts run as one stacked network
        (even stacks, sized by ``PREDICT_STACK_FLOATS``), with the batched products of :meth:`fit_many`;
        MC-dropout masks come from each request's own generator in the order ``predict``
        draws them.

        On a GPU the stacks are the same batched network on the device (up to
        ``GPU_PREDICT_STACK`` members; the bits may differ from one model's own pass,
        as a batched product rounds differently there). The MC-dropout passes are the one
        exception: ``predict`` draws their masks from torch's CUDA generator, whose stream
        the stacked network cannot share, so each model answers its own ``mc_probs``.
        Models on different devices are asked one at a time."""
        import torch

        if len(models) != len(requests):
            raise MmalError(f"model: predict_many needs one request per model, got {len(models)} and {len(requests)}")
        if not models:
            return []
        first = models[0]
        for model, request in zip(models, requests):
            model._check_want(request.get("want", frozenset({"probs"})))
        devices = {next(m.net_.parameters()).device for m in models}
        if len(devices) != 1 or any(m.get_params() != first.get_params() for m in models):
            return super().predict_many(models, requests)
        device = devices.pop()
        units: dict[tuple, list[int]] = {}
        for k, (model, request) in enumerate(zip(models, requests)):
            index = request.get("index")
            rows = None if index is None else np.asarray(index, dtype=np.int64).tobytes()
            units.setdefault((id(model), id(request["split"]), rows), []).append(k)
        stacks: dict[tuple, list[list[int]]] = {}
        for ks in units.values():
            lead = requests[ks[0]]
            n = len(lead["split"]) if lead.get("index") is None else len(lead["index"])
            variants = tuple(sorted({first._keep_key(requests[k].get("keep")) for k in ks}))
            stacks.setdefault((n, variants), []).append(ks)
        outs: list[Any] = [None] * len(models)
        threads = torch.get_num_threads()
        on_cpu = device.type == "cpu"
        if on_cpu:
            torch.set_num_threads(1)  # as in fit_many: a product's rounding must not depend on K
        try:
            for (n, _), unit_list in stacks.items():
                most = first._predict_stack(n) if on_cpu else GPU_PREDICT_STACK
                for sl in even_slices(len(unit_list), most):
                    cls._predict_units(models, requests, unit_list[sl], outs, device, mc_stacked=on_cpu)
        finally:
            torch.set_num_threads(threads)
        return outs

    def _keep_key(self, keep) -> tuple[bool, ...]:
        """The modalities a request keeps, as a tuple of M bools (all True without ``keep``)."""
        M = len(self.modalities_)
        return (True,) * M if keep is None else tuple(bool(v) for v in np.asarray(keep, dtype=bool))

    def _predict_stack(self, rows: int) -> int:
        """Most members per stacked prediction pass over ``rows`` rows on the CPU."""
        return max(1, PREDICT_STACK_FLOATS // (max(1, min(rows, self.eval_batch_size)) * self.hidden))

    @staticmethod
    def _predict_units(models, requests, units, outs, device=None, mc_stacked=True):
        """Answer the requests of ``units`` (lists of request positions, one model, split and
        set of rows each; equal rows and keeps across units) into ``outs``, the stacked network
        on ``device`` (the CPU by default). ``mc_stacked``: the MC-dropout passes run stacked
        with numpy masks (the CPU's stream); False: each model's own ``predict`` answers them
        (the stream of torch's generator, as on CUDA)."""
        import torch

        from .network import StackedFusion

        lead = [requests[ks[0]] for ks in units]
        nets = [models[ks[0]] for ks in units]
        first = nets[0]
        names = [m.name for m in first.modalities_]
        M = len(names)
        index = [np.arange(len(r["split"])) if r.get("index") is None else np.asarray(r["index"], dtype=np.int64)
                 for r in lead]
        n = len(index[0])
        todo = []  # (unit position, request position, keep key, want, T)
        for u, ks in enumerate(units):
            for k in ks:
                r, model = requests[k], models[k]
                want = model._check_want(r.get("want", frozenset({"probs"})))
                T = int((r.get("params") or {}).get("mc_samples", 20)) if "mc_probs" in want else 0
                todo.append((u, k, first._keep_key(r.get("keep")), want, T))
                outs[k] = model._empty_outputs(n, want, model._subsets(want), T)
        device = torch.device("cpu") if device is None else device
        rngs = {}  # each MC request's own mask generator, seeded as predict seeds it
        for _, k, _, _, T in todo:
            if T and mc_stacked:
                seed = (requests[k].get("params") or {}).get("mc_seed", getattr(models[k], "seed_", 0))
                rngs[k] = np.random.default_rng(int(seed) + 7919)
            elif T:
                r = requests[k]
                own = models[k].predict(r["split"], r.get("index"), want={"mc_probs"}, params=r.get("params"),
                                        keep=r.get("keep"))
                outs[k]["mc_probs"][...] = own["mc_probs"]
        stack = StackedFusion([m.net_ for m in nets])
        uniform = 1.0 / first.n_classes_
        with torch.no_grad():
            for start in range(0, n, first.eval_batch_size):
                sl = slice(start, min(start + first.eval_batch_size, n))
                tensors = [m._tensors(r["split"], ix[sl], device) for m, r, ix in zip(nets, lead, index)]
                xs = [torch.stack([t[0][j] for t in tensors]) for j in range(M)]
                mask = torch.stack([t[1] for t in tensors])
                z = stack.encode(xs)
                fused: dict[tuple[bool, ...], Any] = {}

                def masked(eff):
                    return mask if all(eff) else mask & torch.tensor(eff, device=mask.device)

                def fuse(eff):
                    """(emb, probs, modality logits) of every unit with only the modalities ``eff``."""
                    if eff not in fused:
                        emb, logits, mod_logits = stack.fuse(z, masked(eff))
                        fused[eff] = (emb, torch.softmax(logits, dim=2), mod_logits)
                    return fused[eff]

                mc: dict[tuple, list[tuple[int, int]]] = {}
                for u, k, keep, want, T in todo:
                    out = outs[k]
                    if want & {"probs", "embeddings", "modality_probs"}:
                        emb, probs, mod_logits = fuse(keep)
                        if "probs" in want:
                            out["probs"][sl] = probs[u].cpu().numpy()
                        if "embeddings" in want:
                            out["embeddings"][sl] = emb[u].cpu().numpy()
                        if "modality_probs" in want:
                            eff = masked(keep)
                            for j, m in enumerate(names):
                                p = torch.softmax(mod_logits[j][u], dim=1)
                                p = torch.where(eff[u, :, j : j + 1], p, torch.full_like(p, uniform))
                                out["modality_probs"][m][sl] = p.cpu().numpy()
                    if "modality_embeddings" in want:
                        eff = masked(keep)
                        for j, m in enumerate(names):
                            out["modality_embeddings"][m][sl] = (z[j][u] * eff[u, :, j : j + 1]).cpu().numpy()
                    if "subset_probs" in want:
                        for s in first._subsets(want):
                            eff = tuple(keep[j] and j in s for j in range(M))
                            out["subset_probs"][tuple(names[i] for i in s)][sl] = fuse(eff)[1][u].cpu().numpy()
                    if T and mc_stacked:
                        mc.setdefault((T, keep), []).append((u, k))
                for (T, keep), members in mc.items():
                    us = [u for u, _ in members]
                    logits = FusionMLP._mc_logits([models[k].net_ for _, k in members], [x[us] for x in xs],
                                                  masked(keep)[us], T, [rngs[k] for _, k in members])
                    for i, (_, k) in enumerate(members):
                        outs[k]["mc_probs"][:, sl] = logits[i]

    @staticmethod
    def _mc_logits(nets, xs, mask, T, rngs, max_rows=262144):
        """The (T, B, C) MC-dropout probabilities of each of the stacked members ``nets``,
        computed in parts of at most ``max_rows`` rows of activations."""
        import torch

        from .network import StackedFusion

        B = mask.shape[1]
        rows = min(T, max(1, 65536 // max(B, 1))) * B  # one member's rows per pass chunk (see mc_logits)
        hidden = nets[0].encoders[0][0].out_features
        size = max(1, min(max_rows // max(rows, 1), PREDICT_STACK_FLOATS // max(1, rows * hidden)))
        out = []
        for start in range(0, len(nets), size):
            part = slice(start, start + size)
            logits = StackedFusion(nets[part]).mc_logits([x[part] for x in xs], mask[part], T, rngs[part])
            out.extend(torch.softmax(logits, dim=3).numpy())
        return out
