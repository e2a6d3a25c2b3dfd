"""`mmal diagnose`: the measurements find what the synthetic generators put in, and bad input
is one line with exit 2.

The hit-rate tests use generator parameters and seeds that were not used while the
diagnosis was developed (that used the generators' defaults and seeds 0-2); the fuller
hit-rate table is in docs/diagnose.md (benchmarks/diagnose/hit_rates.py).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from _support import cli_in_process, one_line_error
from mmal_core import Dataset, ModalitySpec, MultimodalDataset, Split, hookimpl, load_dataset
from mmal_core.diagnose import ALPHA, decompose, diagnose, load_study, missing_profile, render


class ToyDataset(Dataset):
    """A tiny Gaussian dataset whose shape the bad-input tests choose."""

    name = "diag-toy"

    def __init__(self, modalities: int = 2, classes: int = 3, per_class: int = 30, small_class: int = 30):
        self.modalities = modalities
        self.classes = classes
        self.per_class = per_class
        self.small_class = small_class

    def load(self, seed):
        rng = np.random.default_rng(seed)

        def split(counts, offset):
            y = np.concatenate([np.full(k, c) for c, k in enumerate(counts)]).astype(np.int64)
            feats = {f"x{j}": rng.normal(size=(len(y), 3)) + y[:, None] for j in range(self.modalities)}
            return Split(feats, np.ones((len(y), self.modalities), bool), y, np.arange(len(y)) + offset)

        counts = [self.per_class] * (self.classes - 1) + [self.small_class]
        n_classes = max(self.classes, 2)
        train = split(counts, 0)
        return MultimodalDataset(
            self.name, [ModalitySpec(f"x{j}", 3) for j in range(self.modalities)], n_classes, train, split([10] * self.classes, 10_000)
        )


class _ToyPlugin:
    @hookimpl
    def mmal_register_datasets(self):
        return [ToyDataset]


@pytest.fixture
def toy_plugin():
    from mmal_core.plugins import PluginManager, reset_plugin_manager

    manager = PluginManager()
    manager.register(_ToyPlugin(), name="diag-toy-plugin")
    previous = reset_plugin_manager(manager)
    yield
    reset_plugin_manager(previous)


# --- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, needles",
    [
        (["synthetic-interactoin"], ["synthetic-interactoin", "did you mean 'synthetic-interaction'"]),
        (["synthetic-interaction", "--param", "interaktion=synergy"], ["unknown parameter 'interaktion'"]),
        (["synthetic-interaction", "--param", "interaction=xor"], ["interaction"]),
        (["synthetic-interaction", "--param", "noise"], ["--param", "KEY=VALUE"]),
        (["synthetic-interaction", "--seeds", "0"], ["--seeds"]),
        (["synthetic-interaction", "--format", "pdf"], ["--format pdf", "table, md, json, html"]),
        (["diag-toy", "--param", "modalities=1"], ["diag-toy", "at least two", "has 1 (x0)"]),
        (["diag-toy", "--param", "classes=1"], ["diag-toy", "1 class(es)", "at least two"]),
        (["diag-toy", "--param", "small_class=2"], ["diag-toy", "class 2 has 2 sample(s)", "at least 5 per class"]),
    ],
)
def test_bad_input_is_one_line_exit_2(capsys, toy_plugin, tmp_path, args, needles):
    out = tmp_path / "report.json"
    fmt = [] if "--format" in args else ["--format", "json", "-o", str(out)]
    one_line_error(cli_in_process(capsys, "diagnose", *args, *fmt, raw=True), *needles)
    assert not out.exists()


# --- the measurements on known truths --------------------------------------------------------------
def test_decompose_is_the_minimum_mutual_information_pid():
    parts = decompose({"a": 1.5, "b": 0.5}, 2.5)
    assert parts == {"redundant": 0.5, "unique": {"a": 1.0, "b": 0.0}, "synergy": 1.0}
    assert decompose({"a": 1.0, "b": 1.0}, 0.9)["synergy"] == 0.0  # never negative


def _missing_hits(mechanism: str, trials: int, **params) -> float:
    hits = []
    for seed in range(100, 100 + trials):
        ds = load_dataset("synthetic-missing", seed=seed, mechanism=mechanism, **params)
        prof = missing_profile(ds, ALPHA)
        hits += [v["class_dependent"] for m, v in prof.items() if v["share_missing_pool"] > 0]
    return float(np.mean(hits))


def test_class_dependent_missingness_detected_and_mcar_not():
    params = {"n_train": 400, "n_test": 150, "n_classes": 3, "dim": 4, "missing_rate": [0.0, 0.3]}
    false_positive = _missing_hits("mcar", 200, **params)
    power = _missing_hits("class", 40, **params)
    assert false_positive <= 0.09  # alpha = 0.05; 200 trials
    assert power >= 0.95


@pytest.mark.slow
@pytest.mark.parametrize(
    "interaction, params",
    [
        ("redundant", {"n_classes": 3, "noise": 0.6}),
        ("redundant", {"n_classes": 5, "dim": 12}),
        ("unique", {"n_classes": 3, "unique_modality": 1}),
        ("unique", {"n_classes": 5, "noise": 0.4}),
        ("synergy", {"n_classes": 2, "dim": 12}),
        ("synergy", {"n_classes": 3, "noise": 0.4}),
    ],
)
def test_dominant_interaction_is_named(interaction, params):
    report = diagnose("synthetic-interaction", {"interaction": interaction, "n_train": 2000, "n_test": 600, **params},
                      seeds=1, first_seed=11, with_advice=False)
    assert report["interaction"]["dominant"] == interaction, report["interaction"]["shares"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "params, weak",
    [
        ({"snr": [0.4, 3.0], "mapping": "linear", "n_classes": 3}, "m0"),
        ({"snr": [3.0, 0.6], "mapping": "linear", "n_classes": 5}, "m1"),
        ({"snr": [2.0, 2.0], "n_classes": 3}, "m1"),  # the same noise, m1 nonlinear
    ],
)
def test_weaker_modality_of_synthetic_difficulty(params, weak):
    report = diagnose("synthetic-difficulty", {"n_train": 1500, "n_test": 500, **params}, seeds=1, first_seed=21, with_advice=False)
    assert report["difficulty"]["hard_modality"] == weak
    assert report["difficulty"]["clear"]


# --- determinism -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_same_seed_same_json_whatever_the_thread_count():
    """The report does not depend on the caller's torch or BLAS thread count: with 1024-dim
    features both the probes' and the network's products used to round differently on two
    threads (a difference in the 13th digit of the information estimates)."""
    import torch
    from threadpoolctl import threadpool_limits

    params = {"n_train": 400, "n_test": 150, "dim": 1024, "n_classes": 6}

    def run(threads):
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            with threadpool_limits(limits=threads):
                return render(diagnose("synthetic-missing", params, seeds=1, with_advice=False), "json")
        finally:
            torch.set_num_threads(before)

    assert run(2) == run(1)
    assert torch.get_num_threads() == 1  # diagnose restores the caller's setting


# --- output ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_report():
    return diagnose("synthetic-missing", {"n_train": 400, "n_test": 200, "dim": 6, "mechanism": "class"}, seeds=2)


def test_json_keys_and_types(small_report):
    doc = json.loads(render(small_report, "json"))
    assert list(doc) == ["dataset", "missing", "difficulty", "interaction", "reliance", "advice"]
    assert set(doc["missing"]) == {"m0", "m1"}
    assert all(isinstance(v["class_dependent"], bool) for v in doc["missing"].values())
    assert doc["missing"]["m1"]["class_dependent"] and not doc["missing"]["m0"]["class_dependent"]
    assert doc["interaction"]["dominant"] in {"redundant", "unique", "synergy", "mixture"}
    assert set(doc["difficulty"]["modalities"]) == set(doc["reliance"]["modalities"]) == {"m0", "m1"}
    iv = doc["reliance"]["modalities"]["m0"]["shapley_share"]
    assert iv["n"] == 2 and iv["low"] <= iv["mean"] <= iv["high"]
    cells = doc["advice"]["closest_cells"]
    assert cells and all(c["cell"] for c in cells)


def test_advice_names_study_and_cells(small_report):
    study = load_study()
    assert study["study"]["seeds"] >= 2 and study["cells"]
    adv = small_report["advice"]
    # The profile has missing modalities: the missing-modality cell of the study is the closest.
    assert adv["closest_cells"][0]["cell"].startswith("synthetic-missing")
    assert all("[cell " in w for w in adv["warnings"])


def test_formats_and_output_file(capsys, tmp_path):
    args = ["diagnose", "synthetic-interaction", "--param", "n_train=300", "--param", "n_test=120", "--seeds", "1"]
    for fmt in ("md", "html", "json"):
        out = tmp_path / f"r.{fmt}"
        code, _, err = cli_in_process(capsys, *args, "--format", fmt, "-o", str(out))
        assert code == 0, err
        text = out.read_text()
        assert ("Interaction structure" in text) if fmt != "json" else json.loads(text)["dataset"]["name"] == "synthetic-interaction"
    code, out, err = cli_in_process(capsys, *args)
    assert code == 0 and "Reliance after" in out and "Dominant:" in out
