"""The conformance kit (mmal_core.testing): every built-in plugin passes it, and each named
check fails for the mistake it is about (and only the checks that should)."""

from __future__ import annotations

import numpy as np
import pytest

from mmal_core import Dataset, Encoder, Metric, MmalError, ScoreStrategy
from mmal_core.plugins import PluginManager
from mmal_core.benchmark import Benchmark
from mmal_core.builtin.benchmarks import canonical_suite
from mmal_core.builtin.fusion import FUSIONS, FusionMLP
from mmal_core.testing import check_plugin, parametrize_with_checks, tiny_dataset, yield_checks

FAST = {"epochs": 2, "min_steps": 5, "device": "cpu"}


@parametrize_with_checks(
    [(FusionMLP, {**FAST, "fusion": f}) for f in FUSIONS]
    + [(FusionMLP, {**FAST, "unimodal_heads": False}), (FusionMLP, {**FAST, "modality_dropout": 0.3})]
    + [b for b in canonical_suite() if b.dataset.name.startswith("synthetic")]
)
def test_builtin_model_and_benchmarks_conform(check):
    check()


@parametrize_with_checks([e.obj for e in PluginManager().entries("metric").values() if e.dist == "mmal"])
def test_builtin_metrics_conform(check):
    check()


class _Undeclared(Metric):
    """Reads the unimodal heads through the context without listing them in needs."""

    name = "kit_undeclared"

    def compute(self, ctx):
        return float(np.mean(ctx.output("modality_probs")["m0"]))


class _Behind(Metric):
    """Asks the model itself for a field it does not declare."""

    name = "kit_behind"

    def compute(self, ctx):
        return float(np.mean(ctx.model.predict(ctx.test, want={"probs", "modality_probs"})["probs"]))


class _Infinite(Metric):
    name = "kit_infinite"

    def compute(self, ctx):
        return {"m0": float("inf")}


class _Drifting(Metric):
    name = "kit_drifting"
    calls = 0

    def compute(self, ctx):
        type(self).calls += 1
        return float(type(self).calls)


@pytest.mark.parametrize("cls, failing", [
    (_Undeclared, {"check_metric_value", "check_metric_deterministic", "check_needs_honoured"}),
    (_Behind, {"check_needs_honoured"}),
    (_Infinite, {"check_metric_value"}),
    (_Drifting, {"check_metric_deterministic"}),
])
def test_a_metric_fails_the_checks_of_its_mistake(cls, failing):
    assert _failing(cls) == failing


def test_a_benchmark_comparing_an_unregistered_metric_fails_that_check():
    bench = next(b for b in canonical_suite() if b.name == "synthetic-missing")
    odd = Benchmark(name="kit-odd-metric", dataset=bench.dataset, model=bench.model, seeds=(0,),
                    budget=bench.budget, metrics=("accuracy", "acuracy_typo"))
    with pytest.warns(UserWarning, match="not a registered metric"):
        assert _failing(odd) == {"check_metrics_registered"}


def _failing(plugin, params=None) -> set[str]:
    """Names of the checks of ``plugin`` that fail."""
    failed = set()
    for name, check in yield_checks(plugin, params):
        try:
            check()
        except AssertionError:
            failed.add(name)
    return failed


class _Scores(ScoreStrategy):
    """Test strategy: highest fused uncertainty."""

    name = "kit_scores"
    requires = frozenset({"probs"})

    def score(self, view):
        return 1.0 - np.asarray(view.probs).max(axis=1)


class _Scribbles(_Scores):
    """Test strategy that writes into its view."""

    name = "kit_scribbles"

    def score(self, view):
        view.probs[:] = 0.5
        return np.zeros(len(view))


def test_a_strategy_that_edits_its_view_fails_that_check_alone():
    assert _failing(_Scores) == set()
    assert _failing(_Scribbles) == {"check_view_untouched"}


class _IgnoresMask(FusionMLP):
    """Test model that reads the rows of missing modalities as if they were there."""

    name = "kit-ignores-mask"

    def predict(self, split, index=None, want=frozenset({"probs"}), params=None, keep=None):
        shown = split.subset(np.arange(len(split)))
        shown.mask[:] = True
        return super().predict(shown, index, want, params, None)


def test_a_model_that_reads_missing_rows_fails_the_missing_check():
    failed = _failing(_IgnoresMask, FAST)
    assert "check_missing_ignored" in failed
    assert {"check_predict_shapes", "check_fit_deterministic", "check_warm_start"}.isdisjoint(failed)


class _BatchNormed(Encoder):
    """Test encoder whose vectors are centred over the batch."""

    name = "kit-batchnormed"
    kind = "vector"

    def encode(self, items):
        x = np.stack([np.asarray(i, np.float32) for i in items])
        return x - x.mean(axis=0)


def test_an_encoder_whose_rows_depend_on_the_batch_fails_that_check_alone():
    assert _failing(_BatchNormed) == {"check_encode_batch_independent"}


class _Unstable(Dataset):
    """Test dataset whose features change from one load to the next."""

    name = "kit-unstable"
    loads = 0

    def load(self, seed):
        type(self).loads += 1
        data = tiny_dataset(seed=seed)
        data.train.features["m0"] += type(self).loads
        data.name = self.name
        return data


def test_a_dataset_that_loads_differently_fails_the_determinism_check_alone():
    assert _failing(_Unstable) == {"check_load_deterministic"}


def test_a_benchmark_whose_budget_exceeds_the_pool_fails_the_plugin_check():
    bench = next(b for b in canonical_suite() if b.name == "synthetic-missing")
    big = Benchmark(name="kit-too-big", dataset=bench.dataset, model=bench.model, seeds=(0,),
                    budget={"initial": 900, "per_round": 100, "rounds": 3})
    assert _failing(big) == {"check_plugins_valid"}


def test_ids_name_the_plugin_its_parameters_and_the_check():
    mark = parametrize_with_checks([_Scores, (FusionMLP, {"fusion": "sum"}), canonical_suite()[0]])
    ids = mark.kwargs["ids"]
    assert "_Scores()-check_picks_valid" in ids
    assert "FusionMLP(fusion='sum')-check_missing_ignored" in ids
    assert f"Benchmark({canonical_suite()[0].name})-check_hash_stable" in ids
    assert len(ids) == len(set(ids))


def test_something_that_is_not_a_plugin_is_refused_in_one_line():
    with pytest.raises(TypeError, match="not a plugin class"):
        list(yield_checks(dict))
    with pytest.raises(TypeError, match="takes no parameters"):
        list(yield_checks(canonical_suite()[0], {"x": 1}))


def test_check_plugin_stops_at_the_first_failure():
    with pytest.raises(AssertionError, match="modified the view"):
        check_plugin(_Scribbles)
    with pytest.raises(MmalError):
        FusionMLP(fusion="nope")
