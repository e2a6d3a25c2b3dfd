"""Every extension point of mmal, in one place.

A plugin is a module (or object) with functions decorated by ``mmal_core.hookimpl`` and named
after the specs below. It is found through the ``mmal`` entry-point group of an installed
distribution::

    [project.entry-points.mmal]
    my_strategies = "my_package.plugin"

Each hook takes no arguments and returns a list of classes. Every class has a ``name``
class attribute; names are unique per kind across all installed plugins (a clash is an error
that names both distributions). Hooks are called once per process, lazily, the first time
a command needs that kind of plugin.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("mmal")
hookimpl = pluggy.HookimplMarker("mmal")


@hookspec
def mmal_register_datasets() -> list[type]:
    """Return dataset classes: subclasses of :class:`mmal_core.Dataset`.

    Each class takes its parameters as keyword arguments of ``__init__`` and builds a
    :class:`mmal_core.MultimodalDataset` with ``load(seed)``. Called when a command needs a
    dataset or lists them.
    """


@hookspec
def mmal_register_strategies() -> list[type]:
    """Return query-strategy classes: subclasses of :class:`mmal_core.Strategy`.

    Each declares ``name`` and ``requires`` and implements
    ``select(view, budget, rng) -> positions``. Called when a command needs a strategy or
    lists them.
    """


@hookspec
def mmal_register_models() -> list[type]:
    """Return model classes: subclasses of :class:`mmal_core.model.Model`.

    A model is built from the dataset's modality specs, trained on the labeled set each
    round and asked for the PoolView fields a strategy requires. A class that can train
    several runs at once sets ``lockstep = True`` and implements the classmethod
    ``fit_many(models, jobs)`` (see :meth:`mmal_core.model.Model.fit_many`); ``mmal run``
    then trains the runs of a study that share dataset, model and budget together. Its
    results must be exactly those of one ``fit`` per run.
    """


@hookspec
def mmal_register_encoders() -> list[type]:
    """Return frozen-encoder classes that turn one modality's raw items into vectors.

    Encoders must import their heavy dependencies only when used, so that listing plugins
    stays fast.
    """


@hookspec
def mmal_register_metrics() -> list[type]:
    """Return per-round metric classes: subclasses of :class:`mmal_core.Metric`.

    Each declares ``name`` (the key stored in every round's metrics), ``summary``,
    ``higher_is_better`` (the ranking direction) and ``needs`` (model fields such as
    ``probs`` or ``modality_embeddings``, and ``keep``, ``coalitions`` or ``labeled``), and
    implements ``compute(ctx) -> float | dict[str, float]`` over a
    :class:`mmal_core.metrics.MetricContext` that computes each prediction once per round.
    The loop records every registered metric whose needs the model provides;
    ``mmal show/leaderboard/report --metric NAME`` rank by it.
    """


@hookspec
def mmal_register_benchmarks() -> list[object]:
    """Return benchmark specifications (named, versioned, frozen experiment specs).

    Each object is a :class:`mmal_core.Benchmark` (dataset, model, budget, seeds,
    compared metrics; identified by its content hash). Called when a command needs a
    benchmark, lists them, or verifies a leaderboard submission.
    """
