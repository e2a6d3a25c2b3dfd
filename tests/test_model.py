"""The built-in multimodal network: fusions, masking, MC dropout, determinism."""

import numpy as np
import pytest

from mmal_core import MmalError, ModalitySpec, Split
from mmal_core.builtin.fusion import FUSIONS, FusionMLP


def _pool(n=120, seed=0, missing=0.3):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    a = rng.normal(size=(n, 4)) + y[:, None]
    b = rng.normal(size=(n, 6)) - y[:, None]
    mask = np.ones((n, 2), bool)
    mask[rng.random(n) < missing, 1] = False
    return Split({"a": a, "b": b}, mask, y), [ModalitySpec("a", 4), ModalitySpec("b", 6)]


def _fit(pool, specs, seed=0, **params):
    model = FusionMLP(epochs=15, hidden=16, **params)
    model.setup(specs, 3)
    model.fit(pool, np.arange(60), seed=seed)
    return model


@pytest.mark.parametrize("fusion", FUSIONS)
def test_each_fusion_trains_and_predicts_every_field(fusion):
    pool, specs = _pool()
    model = _fit(pool, specs, fusion=fusion)
    out = model.predict(pool, np.arange(100, 120), want=model.provided(), params={"mc_samples": 3})
    assert out["probs"].shape == (20, 3) and np.allclose(out["probs"].sum(1), 1, atol=1e-5)
    assert out["embeddings"].shape == (20, 16)
    assert set(out["modality_probs"]) == {"a", "b"} and out["modality_embeddings"]["b"].shape == (20, 16)
    assert out["mc_probs"].shape == (3, 20, 3)
    assert set(out["subset_probs"]) == {(), ("a",), ("b",), ("a", "b")}
    assert np.allclose(out["subset_probs"][("a", "b")], out["probs"], atol=1e-6)
    # (): every modality masked, so the prediction no longer depends on the sample
    empty = out["subset_probs"][()]
    assert np.allclose(empty, empty[:1], atol=1e-6) and np.allclose(empty.sum(1), 1, atol=1e-5)
    masked = model.predict(pool, np.arange(100, 120), keep=np.array([False, False]))["probs"]
    assert np.allclose(empty, masked, atol=1e-6)
    acc = (model.predict(pool)["probs"].argmax(1) == pool.labels).mean()
    assert acc > 0.6  # the signal is strong; a working network learns it


@pytest.mark.parametrize("fusion", FUSIONS)
def test_missing_modality_contributes_nothing(fusion):
    pool, specs = _pool()
    model = _fit(pool, specs, fusion=fusion)
    missing = np.flatnonzero(~pool.mask[:, 1])
    before = model.predict(pool, missing, want={"probs", "embeddings"})
    altered = Split({"a": pool.features["a"], "b": pool.features["b"] + 100.0}, pool.mask, pool.labels)
    after = model.predict(altered, missing, want={"probs", "embeddings"})
    assert np.allclose(before["probs"], after["probs"], atol=1e-6)
    assert np.allclose(before["embeddings"], after["embeddings"], atol=1e-6)
    # and the data of a present modality does matter
    present = np.flatnonzero(pool.mask[:, 1])
    assert not np.allclose(model.predict(pool, present)["probs"], model.predict(altered, present)["probs"])


def test_keep_masks_a_modality_everywhere():
    pool, specs = _pool(missing=0.0)
    model = _fit(pool, specs)
    only_a = model.predict(pool, want={"probs"}, keep=np.array([True, False]))["probs"]
    masked = Split(pool.features, np.column_stack([pool.mask[:, 0], np.zeros(len(pool), bool)]), pool.labels)
    assert np.allclose(only_a, model.predict(masked)["probs"], atol=1e-6)
    assert not np.allclose(only_a, model.predict(pool)["probs"])


def test_same_seed_same_weights_other_seed_other_weights():
    pool, specs = _pool()
    p1 = _fit(pool, specs, seed=3).predict(pool)["probs"]
    p2 = _fit(pool, specs, seed=3).predict(pool)["probs"]
    p3 = _fit(pool, specs, seed=4).predict(pool)["probs"]
    assert np.array_equal(p1, p2)
    assert not np.allclose(p1, p3)


def test_mc_dropout_is_really_on_at_inference():
    pool, specs = _pool()
    model = _fit(pool, specs, dropout=0.3)
    mc = model.predict(pool, want={"mc_probs"}, params={"mc_samples": 4})["mc_probs"]
    assert not np.allclose(mc[0], mc[1])
    # seeded: the same passes again, other passes for another mc_seed
    assert np.array_equal(mc, model.predict(pool, want={"mc_probs"}, params={"mc_samples": 4})["mc_probs"])
    other = model.predict(pool, want={"mc_probs"}, params={"mc_samples": 4, "mc_seed": 1})["mc_probs"]
    assert not np.allclose(mc, other)
    mc0 = _fit(pool, specs, dropout=0.0).predict(pool, want={"mc_probs", "probs"}, params={"mc_samples": 3})
    assert np.allclose(mc0["mc_probs"][0], mc0["mc_probs"][2]) and np.allclose(mc0["mc_probs"][0], mc0["probs"], atol=1e-6)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_mc_passes_share_the_first_layer_and_sample_the_textbook_distribution(fusion):
    # fast path: first layer once, passes stacked, masks from numpy; slow path: nn.Dropout per pass
    import torch

    torch.set_num_threads(1)
    pool, specs = _pool()
    net = _fit(pool, specs, dropout=0.4, fusion=fusion).net_
    xs = [torch.as_tensor(pool.features[m][:8], dtype=torch.float32) for m in ("a", "b")]
    mask = torch.as_tensor(pool.mask[:8])
    calls = []
    hooks = [enc[0].register_forward_hook(lambda *a: calls.append(1)) for enc in net.encoders]
    net.enable_dropout()
    torch.manual_seed(0)
    with torch.no_grad():
        rng = np.random.default_rng(0)
        fast = torch.softmax(net.mc_logits(xs, mask, 3000, rng=rng, max_rows=8 * 1000), dim=2)  # 3 groups of passes
        assert len(calls) == 2  # the first layer ran once per modality, not once per pass
        slow = torch.stack([torch.softmax(net.fuse(net.encode(xs), mask)[1], dim=1) for _ in range(3000)])
    for h in hooks:
        h.remove()
    assert fast.shape == (3000, 8, 3) and not torch.allclose(fast[0], fast[1])
    # same distribution as independent full passes: mean and spread per sample and class
    # (standard error of a difference of means here: below 0.008)
    assert torch.allclose(fast.mean(0), slow.mean(0), atol=0.04)
    assert torch.allclose(fast.std(0), slow.std(0), atol=0.04)


def test_model_without_unimodal_heads_does_not_offer_modality_probs():
    pool, specs = _pool()
    model = _fit(pool, specs, unimodal_heads=False)
    assert "modality_probs" not in model.provided()
    with pytest.raises(MmalError, match="cannot provide"):
        model.predict(pool, want={"modality_probs"})


def test_warm_start_state_round_trips():
    pool, specs = _pool()
    model = _fit(pool, specs)
    state = model.state()
    clone = FusionMLP(epochs=1, hidden=16, lr=1e-9)
    clone.setup(specs, 3)
    clone.fit(pool, np.arange(60), seed=0, init_state=state)
    assert np.allclose(clone.predict(pool)["probs"], model.predict(pool)["probs"], atol=1e-4)


@pytest.mark.parametrize(
    "params, key",
    [({"fusion": "max"}, "fusion"), ({"dropout": 1.5}, "dropout"), ({"epochs": 0}, "epochs"),
     ({"fusion": "late", "unimodal_heads": False}, "unimodal_heads")],
)
def test_bad_parameters_name_the_parameter(params, key):
    with pytest.raises(MmalError, match=f"parameter '{key}'"):
        FusionMLP(**params)
