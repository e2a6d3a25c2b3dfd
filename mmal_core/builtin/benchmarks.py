"""mmal's canonical benchmarks: one per synthetic pitfall setting and one per real dataset."""

from __future__ import annotations

from typing import Any

from ..benchmark import Benchmark
from ..config import BudgetSpec, ModelSpec, PluginSpec


def _synthetic(name: str, dataset: str, params: dict[str, Any], summary: str) -> Benchmark:
    # Small on purpose: one `mmal bench run` (3 seeds x 5 rounds) takes seconds on a CPU, and
    # the server replays a submission in about as long.
    return Benchmark(
        name=name,
        dataset=PluginSpec(name=dataset, params={"n_train": 1000, "n_test": 500, **params}),
        model=ModelSpec(name="fusion-mlp", params={"fusion": "concat", "epochs": 20, "device": "cpu"}),
        budget=BudgetSpec(initial=20, per_round=20, rounds=4),
        seeds=(0, 1, 2),
        version="1",
        summary=summary,
    )


def canonical_suite() -> list[Benchmark]:
    """mmal's canonical benchmarks: one per synthetic pitfall setting, one per real dataset.

    The real-dataset benchmarks are always listed; ``mmal bench list`` marks them unavailable
    until their dataset plugin is installed.
    """
    suite = [
        _synthetic("synthetic-missing", "synthetic-missing", {},
                   "pitfall: modalities missing at random in pool and test"),
        _synthetic("synthetic-difficulty", "synthetic-difficulty", {},
                   "pitfall: one modality much harder to learn from than the other"),
    ]
    for interaction, what in (
        ("redundant", "both modalities carry the same class information"),
        ("unique", "only one modality carries the class"),
        ("synergy", "the class is only visible from both modalities together"),
        ("mixture", "a mixture of redundant, unique and synergistic samples"),
    ):
        suite.append(_synthetic(f"synthetic-{interaction}", "synthetic-interaction",
                                {"interaction": interaction}, f"interaction pitfall: {what}"))
    for dataset, what in (("av-digits", "audio-visual spoken digits"), ("clipart", "clipart images with captions")):
        suite.append(Benchmark(
            name=dataset,
            dataset=PluginSpec(name=dataset),
            model=ModelSpec(name="fusion-mlp", params={"fusion": "concat", "epochs": 20, "device": "cpu"}),
            budget=BudgetSpec(initial=20, per_round=20, rounds=4),
            seeds=(0, 1, 2),
            version="1",
            summary=f"real data: {what}",
        ))
    return suite
