"""Lockstep training of fusion-mlp: K runs' networks as stacked weights, each member bit for
bit what it would be when trained alone (CPU)."""

import numpy as np
import pytest
import torch

from mmal_core import MmalError
from mmal_core.builtin.fusion import FUSIONS, FusionMLP
from tests.test_model import _pool


def _states(models):
    return [{k: v.clone() for k, v in m.net_.state_dict().items()} for m in models]


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a) and a.keys() == b.keys()


def _jobs(K, n=50, warm=None, missing=0.3):
    jobs = []
    for k in range(K):
        pool, specs = _pool(seed=k % 3, missing=missing)  # members may even hold different pools
        labeled = np.random.default_rng(100 + k).choice(len(pool), n, replace=False)
        jobs.append((pool, labeled, 1000 + 7 * k, warm[k] if warm else None))
    return jobs, specs


def _alone(jobs, specs, **params):
    models = []
    for job in jobs:
        m = FusionMLP(**params)
        m.setup(specs, 3)
        m.fit(*job[:3], init_state=job[3])
        models.append(m)
    return models


def _together(jobs, specs, **params):
    models = []
    for _ in jobs:
        m = FusionMLP(**params)
        m.setup(specs, 3)
        models.append(m)
    FusionMLP.fit_many(models, jobs)
    return models


OPTIONS = [{"fusion": f} for f in FUSIONS] + [
    {"aux_weight": 0.0},
    {"aux_weight": 0.3, "fusion": "gated"},
    {"unimodal_heads": False},
    {"unimodal_heads": False, "fusion": "sum"},
    {"modality_dropout": 0.4},
    {"modality_dropout": 0.3, "fusion": "late"},
    {"dropout": 0.0},
    {"batch_size": 16},
    {"batch_size": 7, "fusion": "gated"},
]


@pytest.mark.parametrize("params", OPTIONS, ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()))
def test_stacked_members_equal_separate_fits_bit_for_bit(params):
    params = {"epochs": 3, "hidden": 16, "min_steps": 12, "device": "cpu", **params}
    jobs, specs = _jobs(5)
    alone = _states(_alone(jobs, specs, **params))
    together = _states(_together(jobs, specs, **params))
    for k in range(5):
        assert _same(alone[k], together[k]), f"member {k} differs"


def test_members_do_not_depend_on_group_size_or_order():
    params = {"epochs": 2, "hidden": 8, "min_steps": 8, "device": "cpu", "modality_dropout": 0.2}
    jobs, specs = _jobs(7)
    seven = _states(_together(jobs, specs, **params))
    order = [6, 2, 0, 5, 1, 4, 3]
    shuffled = _states(_together([jobs[i] for i in order], specs, **params))
    for pos, i in enumerate(order):
        assert _same(seven[i], shuffled[pos])
    pair = _states(_together(jobs[3:5], specs, **params))
    assert _same(pair[0], seven[3]) and _same(pair[1], seven[4])


def test_even_stacks_of_the_chosen_size_change_no_bits(monkeypatch):
    from mmal_core.builtin import fusion

    assert [(s.start, s.stop) for s in fusion.even_slices(40, 32)] == [(0, 20), (20, 40)]
    assert [s.stop - s.start for s in fusion.even_slices(7, 3)] == [2, 2, 3]
    assert [s.stop - s.start for s in fusion.even_slices(5, 16)] == [5]
    # 32 of the default 64 hidden units and batches of 64; more for smaller networks
    assert FusionMLP()._cpu_stack() == 32 and FusionMLP(hidden=32)._cpu_stack() == 64
    assert FusionMLP(hidden=1024, batch_size=512)._cpu_stack() == 4
    params = {"epochs": 2, "hidden": 8, "min_steps": 8, "device": "cpu", "modality_dropout": 0.2}
    jobs, specs = _jobs(7)
    one_stack = _states(_together(jobs, specs, **params))
    sizes = []
    real = FusionMLP._fit_stack

    def fit_stack(first, device, nets, *rest):
        sizes.append(len(nets))
        return real(first, device, nets, *rest)

    monkeypatch.setattr(FusionMLP, "_cpu_stack", lambda self: 3)
    monkeypatch.setattr(FusionMLP, "_fit_stack", staticmethod(fit_stack))
    three_stacks = _states(_together(jobs, specs, **params))
    assert sizes == [2, 2, 3]
    assert all(_same(a, b) for a, b in zip(one_stack, three_stacks))


def test_the_gpus_counter_based_masks_keep_members_independent_of_their_stack(monkeypatch):
    # On a GPU the stacked fit draws its dropout and modality-dropout masks with
    # counter_uniforms (one batched draw, no launch per member). Run that way on the CPU:
    # a member's weights must not depend on the group's size or order, and must differ
    # from the CPU's generator path (the masks really come from the counters).
    from mmal_core.builtin.network import StackedFusion, counter_uniforms

    params = {"epochs": 2, "hidden": 8, "min_steps": 8, "device": "cpu", "modality_dropout": 0.3}
    jobs, specs = _jobs(5)
    cpu_way = _states(_together(jobs, specs, **params))
    monkeypatch.setattr(StackedFusion, "device_draws", True)
    five = _states(_together(jobs, specs, **params))
    order = [3, 0, 4, 1, 2]
    shuffled = _states(_together([jobs[i] for i in order], specs, **params))
    alone = _states(_together(jobs[2:3], specs, **params))
    for pos, i in enumerate(order):
        assert _same(five[i], shuffled[pos])
    assert _same(alone[0], five[2])
    assert not any(_same(a, b) for a, b in zip(cpu_way, five))
    # a run trained alone on the device (fit) draws the same masks and batch order as in a
    # group: here, on the CPU, the same bits as its stacked fit
    from mmal_core.builtin.network import FusionNetwork

    monkeypatch.setattr(FusionNetwork, "device_draws", True)
    assert all(_same(a, b) for a, b in zip(_states(_alone(jobs, specs, **params)), five))
    # the uniforms: a member's block is the same alone, keys and steps give other numbers,
    # and a mask keeps about 1 - p of the units
    keys = torch.tensor([3, 4, 2**61], dtype=torch.int64)
    u = counter_uniforms(keys, 0, 7, (5, 64, 16))
    assert torch.equal(u[2:], counter_uniforms(keys[2:], 0, 7, (5, 64, 16)))
    assert not torch.equal(u[0], u[1]) and not torch.equal(u, counter_uniforms(keys, 0, 8, (5, 64, 16)))
    assert not torch.equal(u, counter_uniforms(keys, 1, 7, (5, 64, 16)))
    assert 0.0 <= float(u.min()) and float(u.max()) < 1.0
    assert abs(float((u < 0.9).float().mean()) - 0.9) < 0.01


def test_warm_start_members_continue_their_own_weights():
    params = {"epochs": 2, "hidden": 8, "min_steps": 8, "device": "cpu"}
    jobs, specs = _jobs(3)
    first = _alone(jobs, specs, **params)
    warm = [m.state() for m in first]
    jobs2, _ = _jobs(3, n=60, warm=warm)
    assert all(_same(a, b) for a, b in zip(_states(_alone(jobs2, specs, **params)),
                                           _states(_together(jobs2, specs, **params))))


@pytest.mark.parametrize("threads", [2])
def test_identical_with_two_threads(threads):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        params = {"epochs": 2, "hidden": 16, "min_steps": 8, "device": "cpu", "fusion": "gated"}
        jobs, specs = _jobs(4)
        assert all(_same(a, b) for a, b in zip(_states(_alone(jobs, specs, **params)),
                                               _states(_together(jobs, specs, **params))))
    finally:
        torch.set_num_threads(before)


def test_device_route_of_batched_predict_asks_each_model_for_its_mc_passes(monkeypatch):
    # On a GPU, predict_many stacks every field but the MC-dropout passes, which each model
    # answers itself (torch's CUDA generator). Taken on the CPU, that route must give the
    # same answers as the stacked one, and reach the models' own predict for mc_probs only.
    params = {"epochs": 2, "hidden": 16, "min_steps": 4, "device": "cpu"}
    jobs = []
    for k in range(4):
        pool, specs = _pool(n=300, seed=k % 2)
        jobs.append((pool, np.random.default_rng(k).choice(len(pool), 40, replace=False), 50 + k, None))
    models = _together(jobs, specs, **params)
    calls = _requests(jobs)
    requests = [member[1] for member in calls] + [member[0] for member in calls]
    doubled = models + models
    stacked = FusionMLP.predict_many(doubled, requests)
    own_calls = []
    real_predict = FusionMLP.predict

    def predict(self, *a, **k):
        own_calls.append(set(k.get("want", ())))
        return real_predict(self, *a, **k)

    real_stack = FusionMLP._predict_units
    monkeypatch.setattr(FusionMLP, "predict", predict)
    monkeypatch.setattr(FusionMLP, "_predict_units", staticmethod(
        lambda models, requests, units, outs, device=None, mc_stacked=True:
        real_stack(models, requests, units, outs, torch.device("cpu"), mc_stacked=False)))
    routed = FusionMLP.predict_many(doubled, requests)
    assert own_calls == [{"mc_probs"}, {"mc_probs"}]  # members 1 and 3 ask for MC passes
    for a, b in zip(stacked, routed):
        _same_outputs(a, b)


def test_fit_many_refuses_unequal_labeled_sizes_or_parameters():
    jobs, specs = _jobs(2)
    jobs[1] = (jobs[1][0], jobs[1][1][:40], jobs[1][2], None)
    with pytest.raises(MmalError, match="one size"):
        _together(jobs, specs, epochs=1, hidden=4, device="cpu")
    a, b = FusionMLP(hidden=4, device="cpu"), FusionMLP(hidden=8, device="cpu")
    a.setup(specs, 3), b.setup(specs, 3)
    with pytest.raises(MmalError, match="equal parameters"):
        FusionMLP.fit_many([a, b], _jobs(2)[0])


def _requests(jobs, rng_seed=0):
    """Per member: the calls a round makes (test-like split, unlabeled rows with MC, labeled rows, a kept subset)."""
    rng = np.random.default_rng(rng_seed)
    out = []
    for k, (pool, labeled, _, _) in enumerate(jobs):
        unlabeled = np.setdiff1d(np.arange(len(pool)), labeled)
        wants = [{"probs", "modality_probs", "modality_embeddings", "subset_probs"},
                 {"probs", "embeddings", "mc_probs"} if k % 2 else {"embeddings"},
                 {"modality_embeddings", "embeddings"}]
        out.append([
            {"split": pool, "index": None, "want": wants[0]},
            {"split": pool, "index": unlabeled[: len(pool) - 60], "want": wants[1],
             "params": {"mc_samples": 3 + k % 2 * 2}},
            {"split": pool, "index": labeled, "want": wants[2]},
            {"split": pool, "index": None, "want": {"probs"}, "keep": np.array([True, bool(rng.integers(2))])},
        ])
    return out


def _same_outputs(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], dict):
            assert a[key].keys() == b[key].keys()
            for m in a[key]:
                assert np.array_equal(a[key][m], b[key][m]), key
        else:
            assert np.array_equal(a[key], b[key]), key


@pytest.mark.parametrize("params", [{"fusion": f} for f in FUSIONS] + [{"unimodal_heads": False}, {"dropout": 0.0}],
                         ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()))
@pytest.mark.parametrize("threads", [1, 2])
def test_batched_predict_equals_each_members_predict_bit_for_bit(params, threads):
    params = {"epochs": 2, "hidden": 32, "min_steps": 4, "device": "cpu", **params}
    jobs = []
    for k in range(5):
        pool, specs = _pool(n=700, seed=k % 3)
        labeled = np.random.default_rng(100 + k).choice(len(pool), 60, replace=False)
        jobs.append((pool, labeled, 1000 + 7 * k, None))
    models = _together(jobs, specs, **params)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        calls = _requests(jobs)
        for c in range(len(calls[0])):
            requests = [member[c] for member in calls]
            for r in requests:
                r["want"] = set(r["want"]) & models[0].provided()
            alone = [m.predict(**r) for m, r in zip(models, requests)]
            together = FusionMLP.predict_many(models, requests)
            assert len(together) == len(models)
            for a, b in zip(alone, together):
                _same_outputs(a, b)
        # every call of every member at once: calls on the same rows share one encoder pass
        flat = [(m, r) for m, member in zip(models, calls) for r in member]
        together = FusionMLP.predict_many([m for m, _ in flat], [r for _, r in flat])
        for (m, r), b in zip(flat, together):
            _same_outputs(m.predict(**r), b)
    finally:
        torch.set_num_threads(before)
