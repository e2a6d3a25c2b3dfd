"""Modality-utilization metrics: exact Shapley values, ablations, heads, probes, query facts."""

from __future__ import annotations

import importlib.util
import json
import sqlite3
from itertools import combinations
from math import factorial

import numpy as np
import pytest
import torch

from mmal_core import MmalError, ModalitySpec, MultimodalDataset, Split
from mmal_core.config import parse_config
from mmal_core.loop import run_experiment
from mmal_core import utilization as utilization_module
from mmal_core.metrics import evaluate
from mmal_core.builtin.fusion import FusionMLP
from mmal_core.utilization import (
    coalition_masks,
    fit_linear_probe,
    imbalance_degree,
    label_prior,
    normalised_contributions,
    query_metrics,
    shapley_from_coalitions,
    utilization,
)

torch.set_num_threads(1)


def brute_force_shapley(value, M):
    """Shapley values by the permutation-free subset formula, written out plainly."""
    phi = np.zeros(M)
    for j in range(M):
        others = [k for k in range(M) if k != j]
        for r in range(M):
            for S in combinations(others, r):
                s = sum(1 << k for k in S)
                w = factorial(r) * factorial(M - r - 1) / factorial(M)
                phi[j] += w * (value[s | (1 << j)] - value[s])
    return phi


def test_two_player_game_by_hand():
    # v(empty)=0, v({0})=1, v({1})=2, v({0,1})=4: phi_0 = (1 + 2)/2, phi_1 = (2 + 3)/2
    phi = shapley_from_coalitions(np.array([0.0, 1.0, 2.0, 4.0]))
    assert phi.tolist() == [1.5, 2.5]


@pytest.mark.parametrize("M", [1, 3, 5, 8])
def test_efficiency_and_agreement_with_brute_force(M):
    rng = np.random.default_rng(M)
    value = rng.random(2**M)
    phi = shapley_from_coalitions(value)
    assert phi.sum() == pytest.approx(value[-1] - value[0], abs=1e-12)
    assert np.allclose(phi, brute_force_shapley(value, M), atol=1e-12)


def test_dummy_player_gets_zero_and_batched_games():
    M = 3
    masks = coalition_masks(M)
    # player 2 never changes the value; players 0 and 1 are symmetric
    value = masks[:, 0].astype(float) + masks[:, 1] + 2.0 * (masks[:, 0] & masks[:, 1])
    phi = shapley_from_coalitions(np.stack([value, 2 * value], axis=1))  # two games at once
    assert phi.shape == (3, 2)
    assert np.allclose(phi[:, 0], [2.0, 2.0, 0.0])
    assert np.allclose(phi[:, 1], [4.0, 4.0, 0.0])


def test_contributions_and_imbalance_degree():
    c = normalised_contributions({"a": 0.3, "b": 0.1, "c": -0.2})
    assert c == pytest.approx({"a": 0.75, "b": 0.25, "c": 0.0})
    assert imbalance_degree(c) == pytest.approx((3 * 0.75 - 1) / 2)
    assert imbalance_degree({"a": 0.5, "b": 0.5}) == 0.0
    assert imbalance_degree({"a": 1.0, "b": 0.0}) == 1.0
    assert normalised_contributions({"a": -0.1, "b": 0.0}) == {"a": 0.5, "b": 0.5}
    assert label_prior(np.array([0, 0, 1]), 3) == pytest.approx([3 / 6, 2 / 6, 1 / 6])


def test_linear_probe_agrees_with_sklearn():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 6)) * 2
    y = rng.integers(0, 3, 200)
    x = centers[y] + rng.normal(size=(200, 6))
    xt = centers[y[:100]] + rng.normal(size=(100, 6))
    ours = fit_linear_probe(x, y, 3, l2=1e-2)(xt)
    mu, sd = x.mean(0), x.std(0)
    # our loss is mean CE + l2/2 ||W||^2, sklearn's is C * sum CE + 1/2 ||W||^2
    ref = LogisticRegression(C=1.0 / (1e-2 * len(y)), max_iter=1000).fit((x - mu) / sd, y).predict((xt - mu) / sd)
    assert np.mean(ours == ref) >= 0.98
    assert np.array_equal(ours, fit_linear_probe(x, y, 3, l2=1e-2)(xt))  # deterministic
    assert fit_linear_probe(x[:5], np.full(5, 2), 3)(xt).tolist() == [2] * 100


def _probe_weights(predict):
    return [c.cell_contents for c in predict.__closure__ if isinstance(c.cell_contents, np.ndarray)]


def test_linear_probes_fitted_together_equal_each_alone_bit_for_bit():
    from mmal_core.utilization import fit_linear_probes, shared_probes

    rng = np.random.default_rng(3)
    problems = []
    for k in range(9):  # equal shapes stack; one single-class, one of another size, one that stops early
        n = 60 if k != 4 else 45
        x = rng.normal(size=(n, 8)).astype(np.float32) * (1e-5 if k == 2 else 1 + k)
        problems.append((x, rng.integers(0, 3, n) if k != 6 else np.full(n, 1)))
    xt = rng.normal(size=(50, 8))
    together = fit_linear_probes(problems, 3)
    for (x, y), fitted in zip(problems, together):
        alone = fit_linear_probe(x, y, 3)
        assert np.array_equal(alone(xt), fitted(xt))
        if len(np.unique(y)) > 1:
            assert all(np.array_equal(a, b) for a, b in zip(_probe_weights(alone), _probe_weights(fitted)))
    with shared_probes(problems, together, 3):
        assert fit_linear_probe(*problems[3], 3) is together[3]
        assert fit_linear_probe(problems[3][0], problems[3][1], 3, l2=0.1) is not together[3]
        assert fit_linear_probe(problems[3][0] + 1, problems[3][1], 3) is not together[3]
    assert fit_linear_probe(*problems[3], 3) is not together[3]


def informative_and_noise_dataset(n_train=400, n_test=300, seed=0):
    """m0 carries the label, m1 is pure noise; 10% of the samples lack m1."""
    rng = np.random.default_rng(seed)

    def split(n, first):
        y = rng.integers(0, 3, n)
        centers = np.array([[3.0, 0, 0, 0], [0, 3.0, 0, 0], [0, 0, 3.0, 0]])
        m0 = centers[y] + rng.normal(size=(n, 4))
        m1 = rng.normal(size=(n, 4))
        mask = np.ones((n, 2), dtype=bool)
        mask[rng.random(n) < 0.1, 1] = False
        return Split({"m0": m0, "m1": m1}, mask, y, np.arange(first, first + n), difficulty=rng.random(n))

    return MultimodalDataset("toy", [ModalitySpec("m0", 4), ModalitySpec("m1", 4)], 3,
                             split(n_train, 0), split(n_test, 10_000)).validate()


@pytest.fixture(scope="module")
def fitted():
    data = informative_and_noise_dataset()
    model = FusionMLP(hidden=16, epochs=30, dropout=0.0)
    model.setup(data.modalities, data.n_classes)
    labeled = np.arange(150)
    model.fit(data.train, labeled, seed=0)
    return model, data, labeled


def test_utilization_efficiency_and_consistency_on_a_fitted_model(fitted):
    model, data, labeled = fitted
    u = utilization(model, data, labeled)
    base = evaluate(model, data)
    y = data.test.labels
    prior = label_prior(data.train.labels[labeled], 3)
    v_empty_acc = np.mean(y == prior.argmax())
    v_empty_ll = np.mean(np.log(prior[y]))
    # efficiency: the values sum to v(all) - v(empty)
    assert sum(u["shapley_accuracy"].values()) == pytest.approx(base["accuracy"] - v_empty_acc, abs=1e-12)
    probs = model.predict(data.test, want={"probs"})["probs"].astype(np.float64)
    v_all_ll = np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None)))
    assert sum(u["shapley_log_likelihood"].values()) == pytest.approx(v_all_ll - v_empty_ll, abs=1e-6)
    # dropping m1 leaves only m0 (and vice versa)
    assert u["drop_accuracy"]["m1"] == base["modality_accuracy"]["m0"]
    assert u["drop_accuracy"]["m0"] == base["modality_accuracy"]["m1"]
    assert sum(u["contribution"].values()) == pytest.approx(1.0)
    # the informative modality dominates every view of utilization
    assert u["shapley_accuracy"]["m0"] > u["shapley_accuracy"]["m1"] + 0.3
    assert u["shapley_log_likelihood"]["m0"] > u["shapley_log_likelihood"]["m1"]
    assert u["head_accuracy"]["m0"] > 0.8 and u["head_accuracy"]["m1"] < 0.5
    assert u["probe_accuracy"]["m0"] > 0.8 and u["probe_accuracy"]["m1"] < 0.5
    assert u["imbalance"] > 0.7
    # the same numbers through masked passes (a model without subset_probs)
    class MaskOnly:
        def provided(self):
            return frozenset({"probs"})

        def predict(self, split, index=None, want=frozenset({"probs"}), params=None, keep=None):
            return model.predict(split, index, want=want, params=params, keep=keep)

    slow = utilization(MaskOnly(), data, labeled)
    assert slow["shapley_accuracy"] == pytest.approx(u["shapley_accuracy"])
    assert "head_accuracy" not in slow and "probe_accuracy" not in slow


def test_query_metrics_describe_the_batch():
    data = informative_and_noise_dataset()
    pool = data.train
    chosen = np.array([3, 7, 11, 19, 25])
    q = query_metrics(pool, chosen, 3)
    assert sum(q["class_histogram"].values()) == 5
    assert q["class_histogram"] == {str(c): int(np.sum(pool.labels[chosen] == c)) for c in range(3)}
    assert q["missing_fraction"]["m1"] == pytest.approx(np.mean(~pool.mask[chosen, 1]))
    assert q["missing_fraction"]["m0"] == 0.0
    assert q["difficulty"] == pytest.approx(pool.difficulty[chosen].mean())


def test_metrics_are_stored_every_round_by_the_loop(tmp_path):
    cfg = parse_config({
        "name": "util",
        "dataset": {"name": "synthetic-missing", "params": {"n_train": 200, "n_test": 100, "dim": 6}},
        "model": {"name": "fusion-mlp", "params": {"epochs": 3, "hidden": 8, "min_steps": 0}},
        "budget": {"initial": 10, "per_round": 8, "rounds": 2},
        "strategies": ["random"],
        "seeds": [0],
    })
    db = tmp_path / "r.db"
    run_experiment(cfg, str(db))
    rows = sqlite3.connect(db).execute("SELECT round, metrics, queried_ids FROM rounds ORDER BY round").fetchall()
    assert len(rows) == 3
    from mmal_core import load_dataset

    pool = load_dataset("synthetic-missing", seed=0, n_train=200, n_test=100, dim=6).train
    where = {int(i): p for p, i in enumerate(pool.ids)}
    for rnd, metrics, queried in rows:
        m = json.loads(metrics)
        for key in ("shapley_accuracy", "shapley_log_likelihood", "contribution", "drop_accuracy",
                    "head_accuracy", "probe_accuracy"):
            assert set(m[key]) == {"m0", "m1"}, key
        assert 0.0 <= m["imbalance"] <= 1.0
        ids = json.loads(queried)
        if rnd < 2:
            chosen = np.array([where[i] for i in ids])
            assert m["query"] == query_metrics(pool, chosen, 4)
        else:
            assert "query" not in m and ids == []


def test_utilization_off_and_too_many_modalities(tmp_path):
    base = {
        "name": "many",
        "dataset": {"name": "synthetic-missing", "params": {"n_train": 120, "n_test": 60, "dim": 2, "n_modalities": 9}},
        "model": {"name": "fusion-mlp", "params": {"epochs": 1, "hidden": 4, "min_steps": 0}},
        "budget": {"initial": 10, "per_round": 5, "rounds": 1},
        "strategies": ["random"],
        "seeds": [0],
    }
    db = tmp_path / "r.db"
    with pytest.raises(MmalError, match=r"at most 8 modalities, the dataset has 9"):
        run_experiment(parse_config({**base, "metrics": {"utilization": True}}), str(db))
    assert not db.exists()
    # auto skips them for 9 modalities; false skips them always
    run_experiment(parse_config(base), str(db))
    m = json.loads(sqlite3.connect(db).execute("SELECT metrics FROM rounds").fetchone()[0])
    assert "shapley_accuracy" not in m and "accuracy" in m and "query" in m


def mmal(capsys, *args):
    """Run the CLI in this process; returns (exit status, stdout, stderr)."""
    from mmal_core.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    out = capsys.readouterr()
    return exit_.value.code, out.out, out.err


def test_cli_show_export_and_refusals(tmp_path, write_config, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    db = tmp_path / "r.db"
    cfg = {
        "name": "tiny-util",
        "dataset": {"name": "synthetic-missing", "params": {"n_train": 200, "n_test": 100, "dim": 6}},
        "model": {"name": "fusion-mlp", "params": {"epochs": 3, "hidden": 8, "min_steps": 0}},
        "budget": {"initial": 10, "per_round": 10, "rounds": 1},
        "strategies": ["modality_uncertainty", "bmmal"],
        "seeds": [0],
    }
    # a strategy that reads the unimodal heads, on a model without them: refused, nothing written
    no_heads = dict(cfg, model={"name": "fusion-mlp", "params": {"unimodal_heads": False, "epochs": 2}})
    code, _, err = mmal(capsys, "run", str(write_config(no_heads, "noheads.yaml")), "--db", str(db))
    assert code == 2, err
    assert "strategies[0]: strategy 'modality_uncertainty' needs ['modality_probs']" in err
    assert "no unimodal heads" in err and "Traceback" not in err
    assert not db.exists()
    # more than 8 modalities with utilization required: refused before the run
    many = dict(cfg, dataset={"name": "synthetic-missing", "params": {"n_train": 100, "n_test": 50, "n_modalities": 9}},
                metrics={"utilization": True}, strategies=["random"])
    code, _, err = mmal(capsys, "run", str(write_config(many, "many.yaml")), "--db", str(db))
    assert code == 2 and "at most 8 modalities" in err
    assert not db.exists()

    code, _, err = mmal(capsys, "run", str(write_config(cfg)), "--db", str(db), "--workers", "1")
    assert code == 0, err
    code, out, err = mmal(capsys, "show", "--db", str(db), "--metric", "shapley_accuracy")
    assert code == 0, err
    assert "shapley_accuracy.m0" in out and "shapley_accuracy.m1" in out
    assert "modality_uncertainty" in out and "bmmal" in out
    code, out, _ = mmal(capsys, "show", "--db", str(db), "--metric", "query.missing_fraction.m1")
    assert code == 0 and "query.missing_fraction.m1" in out
    code, out, _ = mmal(capsys, "export", "--db", str(db))
    doc = json.loads(out)
    first = doc["runs"][0]["rounds"][0]["metrics"]
    assert set(first["shapley_accuracy"]) == {"m0", "m1"} and "class_histogram" in first["query"]

    # the study's report reads the same database (strategy kinds from the plugins' metadata)
    if importlib.util.find_spec("statsmodels") and importlib.util.find_spec("scikit_posthocs"):
        code, out, err = mmal(capsys, "report", "--db", str(db), "--format", "json", "--baseline", "bmmal")
        assert code == 0, err
        kinds = {s["label"]: s["multimodal"] for s in json.loads(out)["strategies"]}
        assert kinds == {"bmmal": True, "modality_uncertainty": True}


def test_labeled_fields_count_as_provided_when_the_model_computes_the_field():
    from mmal_core.loop import validate_experiment

    cfg = {
        "name": "v",
        "dataset": {"name": "synthetic-missing", "params": {"n_train": 100, "n_test": 50}},
        "budget": {"initial": 10, "per_round": 5, "rounds": 1},
        "strategies": ["missing_aware_coreset"],  # needs labeled_modality_embeddings
        "seeds": [0],
    }
    validate_experiment(parse_config(cfg))  # fusion-mlp computes modality_embeddings
    cfg["model"] = {"name": "fusion-mlp", "params": {"unimodal_heads": False}}
    validate_experiment(parse_config(cfg))  # encoders only: still fine without the heads


@pytest.mark.parametrize("C", [2, 3, 4, 7, 8, 11])
def test_large_probe_stacks_normalise_class_by_class_with_the_same_bits(C, monkeypatch):
    """Stacks of many rows take the class-by-class softmax (elementwise maxima, sums added
    in numpy's order); the weights must be those of numpy's reductions, bit for bit."""
    rng = np.random.default_rng(C)
    K, n, d1 = 24, 90, 9
    xs = rng.normal(size=(K, n, d1)) * 3.0
    onehot = np.eye(C)[rng.integers(0, C, (K, n))]
    penalty = np.full((d1, 1), 1e-2)
    step = np.full((K, 1, 1), 0.05)
    stacks = [(xs[:10], onehot[:10]), (xs[10:, :70], onehot[10:, :70])]  # two sample counts: padded
    monkeypatch.setattr(utilization_module, "BY_CLASS_ROWS", 1)
    by_class = utilization_module._descend(stacks, penalty, step, 60)
    monkeypatch.setattr(utilization_module, "BY_CLASS_ROWS", 10**9)
    reduced = utilization_module._descend(stacks, penalty, step, 60)
    assert all(np.array_equal(a, b) for a, b in zip(by_class, reduced))
    assert not np.array_equal(by_class[0], by_class[1])


@pytest.mark.parametrize("by_class", [1, 10**9])
@pytest.mark.parametrize("C", [3, 4, 10])  # a product's rounding depends on its row count for 3 and 10 here
def test_probes_of_many_sizes_descend_in_one_loop_with_the_bits_of_each_alone(C, by_class, monkeypatch):
    """Lockstep's probes under missing modalities: every run's labeled set has its own count
    of samples with a modality. Problems of one width share one padded loop whatever their
    sizes, and each gets the weights it gets alone (fewer rows, other widths, early stops)."""
    from mmal_core.utilization import fit_linear_probes

    monkeypatch.setattr(utilization_module, "BY_CLASS_ROWS", by_class)
    rng = np.random.default_rng(11)
    problems = []
    for k in range(14):
        n, d = int(rng.integers(12, 140)), (32 if k % 4 else 16)  # the widths of encoder outputs
        x = rng.normal(size=(n, d)) * (1e-5 if k == 5 else 1.0 + k % 3)
        problems.append((x, rng.integers(0, C, n)))
    problems.append(problems[2])  # a twin: same size as another
    together = fit_linear_probes(problems, C)
    for (x, y), fitted in zip(problems, together):
        alone = fit_linear_probes([(x, y)], C)[0]
        assert all(np.array_equal(a, b) for a, b in zip(_probe_weights(alone), _probe_weights(fitted)))
