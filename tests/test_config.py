"""Config parsing: valid files load, every mistake gets a one-line error naming file and key."""

import pytest

from mmal_core.config import load_config, parse_config
from mmal_core.errors import ConfigError

from _support import tiny_config


def test_valid_config_fills_defaults(write_config):
    cfg = load_config(write_config(tiny_config(seeds=3)))
    assert cfg.seeds == [0, 1, 2]
    assert cfg.model.name == "fusion-mlp" and cfg.model.warm_start is False
    assert cfg.budget.schedule == [10, 10, 10]
    assert cfg.budget.total == 40
    assert [s.name for s in cfg.strategies] == ["random", "margin"]
    assert len(cfg.dataset) == 1


def test_budget_sizes_list():
    cfg = parse_config(tiny_config(budget={"initial": 5, "sizes": [5, 10, 20]}))
    assert cfg.budget.schedule == [5, 10, 20] and cfg.budget.total == 40


def test_hash_changes_with_content():
    a = parse_config(tiny_config())
    b = parse_config(tiny_config(seeds=[1]))
    assert a.hash() == parse_config(tiny_config()).hash()
    assert a.hash() != b.hash()


@pytest.mark.parametrize(
    "cfg, expected",
    [
        (tiny_config(colour="red"), "colour: unknown key"),
        (tiny_config(budget={"initial": 10, "per_round": 10, "rounds": 2, "extra": 1}), "budget.extra: unknown key"),
        (tiny_config(budget={"initial": -1, "per_round": 10, "rounds": 2}), "budget.initial"),
        (tiny_config(budget={"initial": 10}), "budget: give either per_round and rounds, or sizes"),
        (tiny_config(seeds=[0, 0]), "seeds: seeds must be unique"),
        (tiny_config(strategies=[]), "strategies"),
        (tiny_config(strategies=["margin", "margin"]), "strategy listed twice"),
        ({k: v for k, v in tiny_config().items() if k != "budget"}, "budget: required key is missing"),
        (tiny_config(strategies=[{"name": "margin", "parms": {}}]), "strategies[0].parms: unknown key"),
    ],
)
def test_bad_configs_name_the_key(cfg, expected):
    with pytest.raises(ConfigError) as err:
        parse_config(cfg, "exp.yaml")
    message = str(err.value)
    assert message.startswith("exp.yaml: ")
    assert expected in message
    assert "\n" not in message


def test_malformed_yaml_names_line(write_config):
    path = write_config("name: x\nbudget: {initial: 3\nseeds: [1]\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and "malformed YAML at line" in str(err.value)


def test_missing_file():
    with pytest.raises(ConfigError, match="no such config file"):
        load_config("/nonexistent/exp.yaml")


def test_top_level_must_be_mapping(write_config):
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(write_config("- a\n- b\n"))
