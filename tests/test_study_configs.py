"""The reference study configs (benchmarks/pitfalls.yaml, benchmarks/real.yaml) stay what
benchmarks/README.md says they are: every built-in strategy, at least 10 seeds, and for the
pitfalls the severity grid."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmal_core.config import load_config
from mmal_core.loop import validate_experiment
from mmal_core.plugins import get_plugin_manager

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def builtin_strategies() -> set[str]:
    return {name for name, entry in get_plugin_manager().entries("strategy").items() if entry.dist == "mmal-strategies"}


@pytest.mark.parametrize("name", ["pitfalls.yaml", "real.yaml"])
def test_study_runs_every_builtin_strategy_with_ten_seeds(name):
    config = load_config(BENCHMARKS / name)
    assert {s.name for s in config.strategies} == builtin_strategies()
    assert len(config.seeds) >= 10


def test_pitfalls_is_a_severity_grid_and_validates():
    config = load_config(BENCHMARKS / "pitfalls.yaml")
    cells = [(d.name, d.params) for d in config.dataset]
    missing = {(p["mechanism"], p["missing_rate"][1]) for n, p in cells if n == "synthetic-missing"}
    assert missing == {(m, r) for m in ("mcar", "class") for r in (0.0, 0.3, 0.6, 0.9)}
    snr = [p["snr"] for n, p in cells if n == "synthetic-difficulty"]
    assert len(snr) == 4 and snr[0][0] == snr[0][1] and all(s[1] < t[1] for s, t in zip(snr[1:], snr))
    interactions = [p["interaction"] for n, p in cells if n == "synthetic-interaction"]
    assert sorted(interactions) == ["mixture", "redundant", "synergy", "unique"]
    validate_experiment(config, "benchmarks/pitfalls.yaml")  # every dataset setting loads
