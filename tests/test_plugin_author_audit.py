"""Mistakes a plugin author makes, caught by the conformance checks and by the loop.

Each case here used to pass ``mmal_core.testing.check_strategy`` / ``check_dataset`` (or the
loop's own checks) silently, end in a traceback, or give a misleading message. A plugin bug
must get one line naming the strategy or dataset and what was expected.
"""

from __future__ import annotations

import random
import re
import sqlite3

import numpy as np
import pytest
import torch
import yaml

from _support import cli_in_process, one_line_error, tiny_config
from mmal_core import Dataset, MmalError, ModalitySpec, MultimodalDataset, PoolView, ScoreStrategy, Split, Strategy, hookimpl
from mmal_core.loop import check_picks, select_round
from mmal_core.params import construct
from mmal_core.plugins import PluginManager, reset_plugin_manager
from mmal_core.testing import check_dataset, check_strategy

torch.set_num_threads(1)


def _strategy(name, select, requires=("probs",), **attrs):
    ns = {"__doc__": "A test strategy.", "name": name, "requires": frozenset(requires), "select": select, **attrs}
    return type(name.title().replace("_", ""), (Strategy,), ns)


def _first(view, budget, rng):
    return np.arange(budget)


# -- strategies: check_strategy --------------------------------------------------------------
def _pop_modality(self, view, budget, rng):
    view.modality_probs.pop(view.modalities[0], None)
    return np.arange(budget)


def _zero_modality(self, view, budget, rng):
    view.modality_probs[view.modalities[0]][:] = 0.0
    return np.arange(budget)


def _edit_metrics(self, view, budget, rng):
    view.metrics["accuracy"] = 2.0
    return np.arange(budget)


def _reverse_modalities(self, view, budget, rng):
    view.modalities.reverse()
    return np.arange(budget)


@pytest.mark.parametrize(
    "select, requires, expected",
    [
        # was: passed (the global state happened to differ between the two calls, so the
        # message, when any, blamed "the same rng seed"); now names the generator used
        (lambda s, v, b, r: np.random.permutation(len(v))[:b], ("probs",), "used numpy's global random state"),
        (lambda s, v, b, r: np.array(random.sample(range(len(v)), b)), ("probs",), "used Python's random module"),
        # was: a KeyError traceback on the second call, or passed (only top-level arrays were compared)
        (_pop_modality, ("modality_probs",), "modified the view's 'modality_probs'"),
        (_zero_modality, ("modality_probs",), "modified the view's 'modality_probs'"),
        (_edit_metrics, ("probs",), "modified the view's 'metrics'"),
        (_reverse_modalities, ("probs",), "modified the view's 'modalities'"),
        # was: a bare MmalError (not an assertion) saying "the strategy"
        (lambda s, v, b, r: np.argsort(v.embeddings[:, 0])[:b], ("probs",),
         "strategy 'mistake' must list 'embeddings' in its requires"),
        # was: "must return a 1-D array, got shape ()"
        (lambda s, v, b, r: None, ("probs",), "select() returned None, expected 1 unique integer positions"),
        # was: "picks outside [0, 60)", no hint that these are ids
        (lambda s, v, b, r: np.asarray(v.ids[:b]), ("probs",), "they look like sample ids (view.ids)"),
        (lambda s, v, b, r: np.arange(len(v)) < b, ("probs",), "a boolean mask? return np.flatnonzero(mask)"),
        (lambda s, v, b, r: np.zeros(b, dtype=np.int64), ("probs",), "returned duplicate positions"),
        (lambda s, v, b, r: np.arange(b) - 1, ("probs",), "outside [0, 60)"),
        (lambda s, v, b, r: np.arange(b + 1), ("probs",), "returned 2 positions, expected 1"),
    ],
)
def test_check_strategy_catches_common_mistakes(select, requires, expected):
    cls = _strategy("mistake", select, requires)
    with pytest.raises(AssertionError, match="mistake") as err:
        check_strategy(cls)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_check_strategy_restores_nothing_it_should_not_touch():
    # A well-behaved strategy passes, and the caller's global random state is left alone.
    state = np.random.get_state()[1].copy()
    check_strategy(_strategy("well_behaved", lambda s, v, b, r: r.permutation(len(v))[:b]))
    assert np.array_equal(np.random.get_state()[1], state)


def test_check_strategy_rejects_names_that_cannot_be_typed_in_a_config():
    with pytest.raises(AssertionError, match="'My Strategy': use lower case"):
        check_strategy(_strategy("My Strategy", _first))


def test_score_strategy_names_complex_scores():
    class Complex(ScoreStrategy):
        """complex scores"""

        name = "complex_scores"
        requires = frozenset({"probs"})

        def score(self, view):
            return np.ones(len(view)) * 1j  # was: a ComplexWarning, then the real part ranked

    with pytest.raises(AssertionError, match="complex_scores: score\\(\\) must return 60 numbers .* got complex"):
        check_strategy(Complex)


# -- strategies: the loop's own checks -------------------------------------------------------
@pytest.mark.parametrize(
    "picks, expected",
    [
        ([[0, 1], [2]], "select() returned a list that is not an array"),  # was: ValueError traceback
        (None, "select() returned None"),
        (np.array([1000, 1001]), "they look like sample ids"),
        (np.array([0.0, 1.0]), "got ndarray of dtype float64 and shape (2,)"),
    ],
)
def test_check_picks_messages_name_the_strategy(picks, expected):
    with pytest.raises(MmalError) as err:
        check_picks(picks, 2, 10, "mine", ids=np.arange(1000, 1010))
    assert str(err.value).startswith("strategy 'mine': ") and expected in str(err.value)


def test_check_picks_accepts_a_list_of_ints():
    assert check_picks([3, 1], 2, 10, "mine").dtype == np.int64


class _FixedModel:
    """Stands in for a trained model: probabilities from the features' first column."""

    def predict(self, pool, index, want, params=None, keep=None):
        x = pool.features["a"][index, 0]
        p = 1 / (1 + np.exp(-x))
        return {"probs": np.stack([p, 1 - p], axis=1)}


def _tiny_dataset(name="tiny", n=30):
    rng = np.random.default_rng(0)

    def split(k, offset):
        return Split({"a": rng.normal(size=(k, 3))}, np.ones((k, 1), bool), np.arange(k) % 2, np.arange(offset, offset + k))

    return MultimodalDataset(name, [ModalitySpec("a", 3)], 2, split(n, 0), split(10, 100)).validate()


def test_select_round_refuses_a_strategy_using_global_randomness():
    # was: silently different picks for the same seed, so resumed and replayed runs diverge
    cls = _strategy("global_np", lambda s, v, b, r: np.random.choice(len(v), b, replace=False))
    data = _tiny_dataset()
    with pytest.raises(MmalError, match="strategy 'global_np': select\\(\\) used numpy's global random state"):
        select_round(cls(), "global_np", _FixedModel(), data, np.arange(5), np.arange(5, 30), {}, 3, 0, 0)


def test_select_round_answers_are_checked_with_the_ids_hint():
    cls = _strategy("returns_ids", lambda s, v, b, r: np.asarray(v.ids)[-b:])
    data = _tiny_dataset()
    with pytest.raises(MmalError, match="strategy 'returns_ids': .*outside \\[0, 25\\).*look like sample ids"):
        select_round(cls(), "returns_ids", _FixedModel(), data, np.arange(5), np.arange(5, 30), {}, 3, 0, 0)


def test_a_view_never_shares_its_containers_with_the_caller():
    # The loop passes the round's metrics dict, which it then stores: a strategy editing
    # view.metrics used to change the recorded accuracy.
    metrics = {"accuracy": 0.5, "modality_accuracy": {"a": 0.4}}
    per = {"a": np.full((3, 2), 0.5)}
    view = PoolView(modality_probs=per, metrics=metrics)
    view.metrics["accuracy"] = 2.0
    view.metrics["modality_accuracy"]["a"] = 9.0
    view.modality_probs.pop("a")
    assert metrics == {"accuracy": 0.5, "modality_accuracy": {"a": 0.4}} and "a" in per


def test_parameters_not_stored_are_refused_when_built():
    class Forgets(Strategy):
        """forgets k"""

        name = "forgets"

        def __init__(self, k: int = 3):
            self._k = k  # get_params() would record {} for this run

        select = _first

    with pytest.raises(MmalError, match="strategy 'forgets': Forgets.__init__ does not store its parameter 'k'"):
        construct(Forgets, {"k": 4}, "strategy 'forgets'")
    with pytest.raises(AssertionError, match="must store parameter 'k'"):
        check_strategy(Forgets)


# -- datasets: check_dataset -----------------------------------------------------------------
def _dataset(name, change=lambda tr, te: 3, seed_ids=None):
    """A Dataset class whose load() builds two splits, then lets ``change`` spoil them."""

    def load(self, seed):
        rng = np.random.default_rng(seed)

        def split(n, offset):
            return {"features": {"a": rng.normal(size=(n, 4)), "b": rng.normal(size=(n, 4))},
                    "mask": np.ones((n, 2), bool), "labels": np.arange(n) % 3, "ids": np.arange(offset, offset + n)}

        tr, te = split(30, 0), split(15, 1000)
        n_classes = change(tr, te)
        return MultimodalDataset(name, [ModalitySpec("a", 4), ModalitySpec("b", 4)], n_classes, Split(**tr), Split(**te))

    return type("D", (Dataset,), {"__doc__": "A test dataset.", "name": name, "load": load})


def _set(split, key, value):
    split[key] = value
    return 3


def _missing_with_garbage(tr, te):
    tr["mask"][:5, 1] = False  # missing rows may hold anything: validate() zeroes them
    tr["features"]["b"][:5] = 7.0
    return 3


_shuffled = np.random.default_rng(1)


@pytest.mark.parametrize(
    "change, expected",
    [
        # was: silently truncated to 0, 1, 2 ... and passed
        (lambda tr, te: _set(tr, "labels", np.arange(30) % 3 + 0.5), "labels: expected integer class indices, got float64 values such as 0.5"),
        (lambda tr, te: _set(tr, "ids", np.arange(30) + 0.5), "ids: expected integer sample ids"),
        (lambda tr, te: _set(tr, "mask", np.full((30, 2), 0.3)), "mask: expected booleans"),
        # was: a ValueError traceback
        (lambda tr, te: _set(tr, "labels", np.array(["cat"] * 30)), "got <U3 values such as 'cat'"),
        (lambda tr, te: _set(tr["features"], "a", None), "features of modality 'a': expected an (n, d) array of numbers, got None"),
        # was: "mask has shape (30, 2), expected (60, 2)"
        (lambda tr, te: _set(tr, "labels", np.stack([np.arange(30) % 3] * 2, 1)), "labels: expected a 1-D array"),
        (lambda tr, te: _set(tr, "labels", np.arange(29) % 3), "mask has 30 rows but there are 29 labels"),
        # was: passed validation, then a TypeError in the first round
        (lambda tr, te: 3.0, "n_classes must be an integer, got 3.0 (float)"),
    ],
)
def test_check_dataset_catches_common_mistakes(change, expected):
    with pytest.raises(AssertionError) as err:
        check_dataset(_dataset("mistaken", change))
    assert str(err.value).startswith("mistaken: ") and expected in str(err.value)


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda tr, te: 5, "class(es) [3, 4] never occur in the train split"),
        (lambda tr, te: _set(te, "labels", np.arange(15) % 2), "class(es) [2] never occur in the test split"),
    ],
)
def test_check_dataset_reports_classes_without_samples(change, expected):
    # was: passed silently; now a warning, or a failure with every_class=True
    cls = _dataset("classless", change)
    with pytest.warns(UserWarning, match=re.escape(expected)):
        check_dataset(cls)
    with pytest.raises(AssertionError, match=re.escape(expected)):
        check_dataset(cls, every_class=True)


def test_check_dataset_accepts_missing_rows_it_zeroes_itself():
    # was: "same seed, different train/b features" (only the first load was validated)
    data = check_dataset(_dataset("gappy", _missing_with_garbage))
    assert not data.train.features["b"][:5].any()


def test_check_dataset_compares_ids_of_two_loads():
    def shuffle_ids(tr, te):
        tr["ids"] = _shuffled.permutation(tr["ids"])  # not from the seed
        return 3

    with pytest.raises(AssertionError, match="twice gave different train ids"):
        check_dataset(_dataset("unstable", shuffle_ids))


def test_check_dataset_wants_the_registered_name_and_stored_params():
    class Renamed(_dataset("other-name")):
        name = "renamed"

    with pytest.raises(AssertionError, match="named 'other-name', expected 'renamed'"):
        check_dataset(Renamed)

    class Forgets(_dataset("forgets")):
        def __init__(self, n: int = 3):
            self._n = n

    with pytest.raises(AssertionError, match="must store parameter 'n'"):
        check_dataset(Forgets)


# -- the CLI: one line, exit 2, nothing written ----------------------------------------------
def _register(tmp_path, strategies=(), datasets=()):
    class Plugin:
        @hookimpl
        def mmal_register_strategies(self):
            return list(strategies)

        @hookimpl
        def mmal_register_datasets(self):
            return list(datasets)

    pm = PluginManager()
    pm.register(Plugin(), name="audit-plugin", dist="mmal-audit")
    return pm


@pytest.fixture
def plugins():
    previous = reset_plugin_manager(None)

    def install(strategies=(), datasets=()):
        reset_plugin_manager(_register(None, strategies, datasets))

    yield install
    reset_plugin_manager(previous)


def _micro(**overrides):
    cfg = tiny_config(model={"name": "fusion-mlp", "params": {"epochs": 1, "hidden": 8}},
                      budget={"initial": 6, "per_round": 3, "rounds": 1}, strategies=["random"])
    cfg["dataset"] = {"name": "synthetic-difficulty", "params": {"n_train": 60, "n_test": 30, "dim": 4}}
    cfg.update(overrides)
    return cfg


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda tr, te: _set(tr, "labels", np.array(["cat"] * 30)), "dataset 'bad-ds': labels: expected integer class indices"),
        (lambda tr, te: 3.0, "dataset 'bad-ds': n_classes must be an integer"),
    ],
)
def test_run_with_a_broken_dataset_is_one_line_and_writes_nothing(capsys, plugins, write_config, tmp_path, change, expected):
    plugins(datasets=[_dataset("bad-ds", change)])
    cfg = write_config(_micro(dataset={"name": "bad-ds"}))
    db = tmp_path / "r.db"
    one_line_error(cli_in_process(capsys, "run", str(cfg), "--db", str(db), "--workers", "1", raw=True), expected)
    assert not db.exists()


def test_run_keeps_recorded_metrics_from_a_strategy_that_edits_its_view(capsys, plugins, write_config, tmp_path):
    plugins(strategies=[_strategy("edits_metrics", _edit_metrics)])
    cfg = write_config(_micro(strategies=["edits_metrics"]))
    db = tmp_path / "r.db"
    code, out, err = cli_in_process(capsys, "run", str(cfg), "--db", str(db), "--workers", "1")
    assert code == 0, out + err
    with sqlite3.connect(db) as conn:
        stored = [yaml.safe_load(m)["accuracy"] for (m,) in conn.execute("SELECT metrics FROM rounds")]
    assert len(stored) == 2 and all(0.0 <= a <= 1.0 for a in stored)  # was: 2.0 recorded for round 0


def test_run_names_a_strategy_that_uses_global_randomness(capsys, plugins, write_config, tmp_path):
    plugins(strategies=[_strategy("global_np", lambda s, v, b, r: np.random.permutation(len(v))[:b])])
    cfg = write_config(_micro(strategies=["global_np"]))
    code, out, err = cli_in_process(capsys, "run", str(cfg), "--db", str(tmp_path / "r.db"), "--workers", "1", "--retries", "0")
    assert code == 2
    assert "strategy 'global_np': select() used numpy's global random state" in " ".join(out.split())
    assert err.startswith("error:") and len(err.splitlines()) == 1
