"""The plugin manager: entry points of group ``mmal``, name registries, honest failure reports.

Plugins load once per process, on first use. A plugin that fails to import is recorded and
shown by ``mmal list plugins``; it does not stop commands that do not need it. Two plugins
registering the same name for the same kind is an error naming both distributions.

Environment variables:
    MMAL_PLUGINS: comma-separated entry-point or distribution names; only these load.
    MMAL_DISABLE_PLUGINS: comma-separated names that are skipped.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import traceback
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pluggy

from . import hookspecs
from .config import set_model_versions
from .data import MultimodalDataset
from .errors import MmalError, UnknownNameError, did_you_mean
from .params import construct
from .version import __version__

ENTRY_POINT_GROUP = "mmal"

#: kind -> hook name
KINDS: dict[str, str] = {
    "dataset": "mmal_register_datasets",
    "strategy": "mmal_register_strategies",
    "model": "mmal_register_models",
    "encoder": "mmal_register_encoders",
    "metric": "mmal_register_metrics",
    "benchmark": "mmal_register_benchmarks",
}

PLURAL = {"dataset": "datasets", "strategy": "strategies", "model": "models", "encoder": "encoders", "metric": "metrics",
          "benchmark": "benchmarks"}


@dataclass
class PluginInfo:
    """One loaded (or failed) plugin."""

    name: str
    dist: str
    version: str
    module: str
    hooks: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Entry:
    """One registered class (dataset, strategy, model, ...)."""

    kind: str
    name: str
    obj: Any
    plugin: str
    dist: str
    version: str

    @property
    def summary(self) -> str:
        text = getattr(self.obj, "summary", "") or ""
        if not text:
            doc = (getattr(self.obj, "__doc__", "") or "").strip()
            text = doc.splitlines()[0] if doc else ""
        return text


def _names(env: str) -> set[str]:
    return {s.strip() for s in os.environ.get(env, "").split(",") if s.strip()}


class PluginManager:
    """Wraps :class:`pluggy.PluginManager` with lazy loading and per-kind registries."""

    def __init__(self, load_entry_points: bool = True):
        self.pm = pluggy.PluginManager("mmal")
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self._registries: dict[str, dict[str, Entry]] = {}
        self._loaded = not load_entry_points

    # -- loading -----------------------------------------------------------------------
    def load(self) -> None:
        """Import every entry point of the ``mmal`` group once."""
        if self._loaded:
            return
        self._loaded = True
        only, skip = _names("MMAL_PLUGINS"), _names("MMAL_DISABLE_PLUGINS")
        seen: set[tuple[str, str]] = set()
        for ep in sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: (e.name, e.value)):
            dist = ep.dist.name if ep.dist is not None else "unknown"
            version = ep.dist.version if ep.dist is not None else "?"
            if (dist, ep.name) in seen:  # the same distribution found twice on sys.path
                continue
            seen.add((dist, ep.name))
            if only and ep.name not in only and dist not in only:
                continue
            if ep.name in skip or dist in skip:
                continue
            taken = self.plugins.get(ep.name)
            if taken is not None and taken.ok:  # two distributions use one entry-point name
                key = f"{ep.name} ({dist})"
                error = f"entry point '{ep.name}' is already taken by distribution {taken.dist}; not loaded"
                self.plugins[key] = PluginInfo(key, dist, version, ep.value, error=error)
                continue
            try:
                module = ep.load()
            except Exception as err:  # a broken plugin must not break other commands
                last = traceback.format_exception_only(type(err), err)[-1].strip()
                self.plugins[ep.name] = PluginInfo(ep.name, dist, version, ep.value, error=last)
                continue
            try:
                self.register(module, name=ep.name, dist=dist, version=version)
            except MmalError as err:
                self.plugins[ep.name] = PluginInfo(ep.name, dist, version, ep.value, error=str(err))
        if not any(info.module == "mmal_core.builtin" for info in self.plugins.values()):
            # Running from a source tree without the package's metadata: still offer builtins.
            from . import builtin

            self.register(builtin, name="mmal-builtin", dist="mmal", version=__version__)

    def register(self, plugin: ModuleType | object, name: str, dist: str = "local", version: str = "0") -> None:
        """Register a plugin object directly (tests, notebooks, in-process extensions)."""
        if name in self.plugins and self.plugins[name].ok:
            raise MmalError(f"plugin '{name}' is registered twice (distributions {self.plugins[name].dist} and {dist})")
        try:
            self.pm.register(plugin, name=name)
        except ValueError as err:  # pluggy: the same module already registered under another name
            raise MmalError(f"plugin '{name}' ({dist}) cannot be registered: {err}".splitlines()[0]) from None
        hooks = [h.name for h in self.pm.get_hookcallers(plugin) or []]
        module = getattr(plugin, "__name__", type(plugin).__name__)
        self.plugins[name] = PluginInfo(name, dist, version, module, sorted(hooks))
        self._registries.clear()

    # -- registries --------------------------------------------------------------------
    def entries(self, kind: str) -> dict[str, Entry]:
        """All registered classes of ``kind``, by name. Clashing names raise :class:`MmalError`."""
        if kind not in KINDS:
            raise MmalError(f"unknown plugin kind '{kind}'{did_you_mean(kind, KINDS)}; expected one of {', '.join(KINDS)}")
        self.load()
        if kind in self._registries:
            return self._registries[kind]
        hook = getattr(self.pm.hook, KINDS[kind])
        registry: dict[str, Entry] = {}
        for impl in reversed(hook.get_hookimpls()):  # registration order
            info = self.plugins.get(impl.plugin_name)
            dist = info.dist if info else "local"
            version = info.version if info else "0"
            try:
                result = impl.function()
            except Exception as err:
                last = traceback.format_exception_only(type(err), err)[-1].strip()
                raise MmalError(f"plugin '{impl.plugin_name}' ({dist}) failed in {KINDS[kind]}: {last}") from None
            for obj in result or []:
                name = getattr(obj, "name", None)
                if not isinstance(name, str) or not name:
                    raise MmalError(
                        f"plugin '{impl.plugin_name}' ({dist}) registered a {kind} without a 'name' attribute: {obj!r}"
                    )
                if name in registry:
                    other = registry[name]
                    raise MmalError(
                        f"{kind} name '{name}' is registered by two distributions: "
                        f"{other.dist} (plugin '{other.plugin}') and {dist} (plugin '{impl.plugin_name}')"
                    )
                if kind == "metric":
                    from .metrics import check_metric_class

                    check_metric_class(obj, f"plugin '{impl.plugin_name}' ({dist})")
                registry[name] = Entry(kind, name, obj, impl.plugin_name, dist, version)
        self._registries[kind] = registry
        return registry

    def get(self, kind: str, name: str) -> Any:
        """The class registered as ``name``; unknown names get a 'did you mean' hint."""
        entries = self.entries(kind)
        if name not in entries:
            known = ", ".join(sorted(entries)) or "none installed"
            raise UnknownNameError(f"unknown {kind} '{name}'{did_you_mean(name, entries)}; installed: {known}")
        return entries[name].obj

    def entry(self, kind: str, name: str) -> Entry:
        self.get(kind, name)
        return self.entries(kind)[name]


_manager: PluginManager | None = None


def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager (created on first use)."""
    global _manager
    if _manager is None:
        _manager = PluginManager()
    return _manager


def reset_plugin_manager(manager: PluginManager | None = None) -> PluginManager | None:
    """Replace the process-wide manager (tests); returns the previous one."""
    global _manager
    previous, _manager = _manager, manager
    return previous


def installed_model_version(name: str) -> str | None:
    """The ``version`` of the installed model plugin ``name`` (None when there is none): what
    :meth:`mmal_core.config.ModelSpec.canonical` records, so hashes follow a model's numbers."""
    try:
        entry = get_plugin_manager().entries("model").get(name)
    except MmalError:  # plugins that cannot load: reported where they are used
        return None
    return None if entry is None else str(getattr(entry.obj, "version", "1"))


set_model_versions(installed_model_version)


def load_dataset(name: str, seed: int = 0, **params) -> MultimodalDataset:
    """Build the registered dataset ``name`` for ``seed`` and validate it.

    Returns a :class:`MultimodalDataset` whose ``train`` (the pool) and ``test`` splits
    expose ``features`` (dict modality -> (n, d_m) float32), ``mask`` (n, M) bool and
    ``labels`` (n,) int64. Unknown names and bad parameters raise :class:`MmalError`.
    """
    cls = get_plugin_manager().get("dataset", name)
    builder = construct(cls, params, f"dataset '{name}'")
    try:
        dataset = builder.load(int(seed))
    except MmalError as err:
        raise MmalError(f"dataset '{name}': {err}") from None
    except MemoryError as err:  # sizes that cannot fit (n_train: 1e15): a bad parameter, not a bug
        raise MmalError(f"dataset '{name}': the parameters ask for more memory than there is ({err})") from None
    if not isinstance(dataset, MultimodalDataset):
        raise MmalError(f"dataset '{name}': load() returned {type(dataset).__name__}, expected MultimodalDataset")
    return dataset.validate()


# -- metric lookups by name (ranking takes a metric's direction from its registered class) ---------
def registered_metrics() -> dict[str, Any]:
    """Registered metrics by name (plugin entries of kind ``metric``)."""
    return get_plugin_manager().entries("metric")


def higher_is_better(path: str) -> bool:
    """The direction of a metric path (``modality_accuracy.m0`` -> that of ``modality_accuracy``).

    Paths of no registered metric (timings, query facts) count as higher is better, except
    ``timings.*`` (lower is better).
    """
    if path.startswith("timings."):
        return False
    entry = registered_metrics().get(path.split(".")[0])
    return True if entry is None else bool(entry.obj.higher_is_better)


def check_metric_path(path: str, where: str) -> None:
    """Raise :class:`MmalError` unless ``path`` starts with a registered metric's name."""
    entries = registered_metrics()
    head = path.split(".")[0]
    if head not in entries:
        known = ", ".join(sorted(entries)) or "none"
        raise MmalError(f"{where}: '{path}' is not a registered metric{did_you_mean(head, entries)}; registered: {known}")


# -- the built-in metrics -----------------------------------------------------------------------


def benchmark_availability(bench: Any) -> tuple[bool, str]:
    """(True, "") when the benchmark's dataset and model plugins and the plugins of the metrics it
    compares are installed, else (False, why)."""
    pm = get_plugin_manager()
    try:
        datasets = pm.entries("dataset")
        models = pm.entries("model")
        metrics = pm.entries("metric")
    except MmalError as err:
        return False, str(err)
    if bench.dataset.name not in datasets:
        return False, f"dataset '{bench.dataset.name}' is not installed"
    if bench.model.name not in models:
        return False, f"model '{bench.model.name}' is not installed"
    for path in bench.metrics:
        if path.split(".")[0] not in metrics:
            return False, f"metric '{path}' is not a registered metric{did_you_mean(path.split('.')[0], metrics)}"
    return True, ""
