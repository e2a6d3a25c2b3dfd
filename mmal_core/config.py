"""Experiment configuration: YAML -> validated pydantic models, with errors that name the key.

A config file::

    name: demo                      # experiment name (results are grouped under it)
    dataset:                        # one dataset, or a list of them
      name: synthetic-difficulty
      params: {n_train: 2000}
    model:                          # optional; defaults to fusion-mlp with its defaults
      name: fusion-mlp
      params: {fusion: concat, epochs: 40}
      warm_start: false             # true: each round starts from the previous weights
    budget:
      initial: 20                   # size of the initial labeled set
      per_round: 20                 # labels bought per round ...
      rounds: 10                    # ... for this many rounds (or give `sizes: [20, 40]`)
      stratified: false             # initial set with the same count per class
    strategies: [random, margin, {name: entropy, params: {}}]
    seeds: [0, 1, 2]                # or a count: 3 -> [0, 1, 2]
    metrics: {utilization: auto}    # optional: Shapley/ablation/probe metrics (auto|true|false)

Unknown keys are errors.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError


#: Largest seed (results store seeds as SQLite 64-bit integers) and largest seed count.
MAX_SEED = 2**63 - 1
MAX_SEED_COUNT = 10_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PluginSpec(_Strict):
    """A plugin reference: a registered name and its parameters."""

    name: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"name": value}
        return value

    @property
    def label(self) -> str:
        """Name plus parameters, as shown in tables (``bald(mc_samples=10)``)."""
        if not self.params:
            return self.name
        args = ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.name}({args})"

    def canonical(self) -> dict[str, Any]:
        return {"name": self.name, "params": dict(sorted(self.params.items()))}


class ModelSpec(PluginSpec):
    name: str = "fusion-mlp"
    warm_start: bool = False

    def canonical(self) -> dict[str, Any]:
        """Name, parameters, warm start and the installed model's ``version`` (the version of
        its numbers, see :attr:`mmal_core.model.Model.version`; left out when no model of
        that name is installed), so that results of two versions never share a hash."""
        out = {**super().canonical(), "warm_start": self.warm_start}
        version = model_version(self.name)
        if version is not None:
            out["version"] = version
        return out


#: How :meth:`ModelSpec.canonical` finds an installed model's version: set by
#: :mod:`mmal_core.plugins` (imported with the package), which knows the installed models.
_model_versions: Callable[[str], str | None] = lambda name: None


def set_model_versions(lookup: Callable[[str], str | None]) -> None:
    """Install the function that gives the ``version`` of the installed model ``name``."""
    global _model_versions
    _model_versions = lookup


def model_version(name: str) -> str | None:
    """``version`` of the installed model plugin ``name`` (None when none is installed)."""
    return _model_versions(name)


class BudgetSpec(_Strict):
    """Budget schedule: ``initial`` labels, then ``rounds`` rounds of ``per_round`` (or ``sizes``)."""

    initial: int = Field(ge=1)
    per_round: int | None = Field(default=None, ge=1)
    rounds: int | None = Field(default=None, ge=0)
    sizes: list[int] | None = None
    stratified: bool = False

    @field_validator("sizes")
    @classmethod
    def _positive_sizes(cls, value):
        if value is not None and any((not isinstance(s, int)) or s < 1 for s in value):
            raise ValueError("every entry of sizes must be a positive integer")
        return value

    @model_validator(mode="after")
    def _one_schedule(self):
        if self.sizes is None and (self.per_round is None or self.rounds is None):
            raise ValueError("give either per_round and rounds, or sizes")
        if self.sizes is not None and (self.per_round is not None or self.rounds is not None):
            raise ValueError("give either per_round and rounds, or sizes, not both")
        return self

    @property
    def schedule(self) -> list[int]:
        """Labels bought in each query round (the last model is evaluated, not queried)."""
        if self.sizes is not None:
            return list(self.sizes)
        return [int(self.per_round)] * int(self.rounds)

    @property
    def total(self) -> int:
        # Arithmetic, not sum(schedule): a huge ``rounds`` must fail the pool-size check, not
        # build a list of that length first.
        if self.sizes is not None:
            return self.initial + sum(self.sizes)
        return self.initial + int(self.per_round) * int(self.rounds)


class MetricsSpec(_Strict):
    """Optional per-round metrics.

    utilization: modality-utilization metrics (exact Shapley values, ablations, unimodal
    heads, linear probes; see :mod:`mmal_core.utilization`). ``auto`` (default) computes
    them when the dataset has at most 8 modalities, ``true`` requires them (a dataset with
    more modalities is an error before the run starts), ``false`` skips them.
    """

    utilization: Literal["auto"] | bool = "auto"

    @field_validator("utilization", mode="before")
    @classmethod
    def _auto_or_bool(cls, value):
        # One clear message instead of one error per member of the union.
        if value == "auto" or isinstance(value, bool):
            return value
        raise ValueError("expected auto, true or false")

    def enabled(self, n_modalities: int) -> bool:
        from .coalitions import MAX_SHAPLEY_MODALITIES

        if self.utilization == "auto":
            return n_modalities <= MAX_SHAPLEY_MODALITIES
        return bool(self.utilization)


class ExperimentConfig(_Strict):
    name: str = Field(min_length=1)
    description: str = ""
    dataset: list[PluginSpec] = Field(min_length=1)
    model: ModelSpec = Field(default_factory=ModelSpec)
    budget: BudgetSpec
    strategies: list[PluginSpec] = Field(min_length=1)
    seeds: list[int]
    metrics: MetricsSpec = Field(default_factory=MetricsSpec)

    @field_validator("dataset", mode="before")
    @classmethod
    def _one_or_many(cls, value):
        return value if isinstance(value, list) else [value]

    @field_validator("seeds", mode="before")
    @classmethod
    def _seed_count(cls, value):
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 1:
                raise ValueError("a seed count must be at least 1")
            if value > MAX_SEED_COUNT:
                raise ValueError(f"a seed count must be at most {MAX_SEED_COUNT}")
            return list(range(value))
        return value

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, value):
        if not value:
            raise ValueError("give at least one seed")
        if len(set(value)) != len(value):
            raise ValueError("seeds must be unique")
        if any(s < 0 for s in value):
            raise ValueError("seeds must be non-negative")
        if any(s > MAX_SEED for s in value):
            raise ValueError(f"seeds must be at most {MAX_SEED} (they are stored as 64-bit integers)")
        return value

    @field_validator("strategies")
    @classmethod
    def _unique_strategies(cls, value):
        labels = [s.label for s in value]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"strategy listed twice: {', '.join(dupes)}")
        return value

    def canonical(self) -> dict[str, Any]:
        """The config as a canonical dict (what is hashed and stored); the model's entry
        carries the installed model's version (:meth:`ModelSpec.canonical`)."""
        out = json.loads(self.model_dump_json())
        out["model"] = json.loads(json.dumps(self.model.canonical(), default=str))
        return out

    def hash(self) -> str:
        return content_hash(self.canonical())


def content_hash(obj: Any) -> str:
    """SHA-256 of the canonical JSON of ``obj`` (sorted keys), first 16 hex digits."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-before[_from_string(), PluginSpec]",) or "[" in str(part) and "(" in str(part):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def format_validation_error(err: ValidationError, source: str) -> str:
    """One line: ``source: key.path: message`` for the first error (+ how many more)."""
    errors = err.errors()
    first = errors[0]
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    elif first["type"] == "missing":
        msg = "required key is missing"
    msg = msg.removeprefix("Value error, ")
    if "input" in first and first["type"] not in ("missing", "extra_forbidden") and not isinstance(first["input"], dict):
        msg += f" (got {first['input']!r})"
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return f"{source}: {_loc(first['loc'])}: {msg}{more}"


def parse_config(data: Any, source: str = "<config>") -> ExperimentConfig:
    """Validate a loaded mapping; raises :class:`ConfigError` naming ``source`` and the key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of keys at the top level, got {type(data).__name__}")
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate a YAML config file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the config file ({err.__class__.__name__}: {err})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}: malformed YAML{where}: {problem}") from None
    return parse_config(data, str(path))
