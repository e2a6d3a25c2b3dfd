"""The package layout shows the architecture, and the import graph keeps it that way.

``mmal_core`` is a small core (hook specs, plugin manager, data, view, strategy and model
interfaces, loop, config, params, store, metrics, the conformance kit) and services in
subpackages (``cache/``, ``leaderboard/``, ``runtime/``, ``report/``, ``cli/``), with the
built-in plugins in ``builtin/``. Every ``import`` statement counts, those inside functions
too (a lazy import is still a dependency); the lazy attribute hooks of a package
(``__getattr__``) and ``if TYPE_CHECKING:`` blocks do not.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import networkx as nx
import pytest

import mmal_core

PACKAGE = Path(mmal_core.__file__).parent
#: Subpackages and modules that are services: the core never imports them.
SERVICES = ("mmal_core.cli", "mmal_core.leaderboard", "mmal_core.runtime", "mmal_core.report", "mmal_core.diagnose")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Every Import/ImportFrom node, skipping TYPE_CHECKING blocks and ``__getattr__`` bodies."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            continue
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "__getattr__":
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        yield from _imports(node)


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The mmal_core modules an import statement of ``module`` loads."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in MODULES}
    if node.level:
        package = module if MODULES[module].name == "__init__.py" else module.rsplit(".", 1)[0]
        base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    out = set()
    for alias in node.names:
        child = f"{source}.{alias.name}"
        if child in MODULES:
            out.add(child)
        elif source in MODULES:
            out.add(source)
    return out


def import_graph() -> nx.DiGraph:
    graph = nx.DiGraph()
    for module, path in MODULES.items():
        graph.add_node(module)
        for node in _imports(ast.parse(path.read_text(), str(path))):
            for target in _targets(module, node):
                if target != module:
                    graph.add_edge(module, target)
    return graph


def test_every_import_of_a_mmal_core_module_names_one_that_exists():
    """Relative and lazy imports are not checked until they run: a moved module must not leave
    one behind that names its old place."""
    broken = []
    for module, path in MODULES.items():
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("mmal_core")):
                targets = _targets(module, node)
                names = {a.name for a in node.names}
                if not targets:
                    broken.append(f"{path.name}:{node.lineno} from {'.' * node.level}{node.module or ''} import {names}")
                    continue
                for target in targets:
                    if target.endswith(tuple("." + n for n in names)):
                        continue
                    tree = ast.parse(MODULES[target].read_text())
                    defined = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))}
                    defined |= {t.id for n in ast.walk(tree) if isinstance(n, (ast.Assign, ast.AnnAssign))
                                for target_ in (n.targets if isinstance(n, ast.Assign) else [n.target])
                                for t in ast.walk(target_) if isinstance(t, ast.Name)}
                    defined |= {(a.asname or a.name).split(".")[0] for n in ast.walk(tree)
                                if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
                    missing = names - defined - {"*"}
                    if missing and len(targets) == 1:
                        broken.append(f"{path.name}:{node.lineno} {target} has no {sorted(missing)}")
    assert not broken, broken


def _in(module: str, prefixes) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_the_graph_sees_the_imports_it_must():
    graph = import_graph()
    assert graph.has_edge("mmal_core.loop", "mmal_core.plugins")  # module level
    assert graph.has_edge("mmal_core.leaderboard.benchmarks", "mmal_core.loop")  # inside a function
    assert graph.has_edge("mmal_core.builtin", "mmal_core.builtin.fusion")  # inside a hook implementation


def test_the_import_graph_has_no_cycle():
    """No module depends on itself through others, lazy imports included (the old
    plugins -> builtin -> benchmarks -> loop -> plugins loop is gone)."""
    graph = import_graph()
    cycles = [sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1]
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_no_module_outside_the_cli_imports_it():
    graph = import_graph()
    bad = [(a, b) for a, b in graph.edges if _in(b, ["mmal_core.cli"]) and not _in(a, ["mmal_core.cli"])
           and a != "mmal_core.__main__"]
    assert not bad, bad


def test_the_core_imports_no_service():
    graph = import_graph()
    core = [m for m in MODULES if not _in(m, SERVICES) and m != "mmal_core.__main__"]
    bad = [(a, b) for a in core for b in graph.successors(a) if _in(b, SERVICES)]
    assert not bad, bad


def test_every_service_is_one_subpackage_and_the_builtins_sit_together():
    for name in ("cache", "leaderboard", "runtime", "report", "cli", "builtin"):
        assert (PACKAGE / name / "__init__.py").is_file(), name
    assert (PACKAGE / "builtin" / "network.py").is_file()  # the built-in network next to its registration
    flat = sorted(p.stem for p in PACKAGE.glob("*.py"))
    for service in ("executors", "docker_tools", "server", "submission", "leaderboard", "cache", "network"):
        assert service not in flat, f"mmal_core/{service}.py belongs in a subpackage"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n != "mmal_core.__main__"))
def test_every_module_imports_on_its_own(name):
    """Each module imports in a fresh order (no hidden dependency on what was imported first).
    Modules that need an extra are skipped when it is missing."""
    importlib.import_module(name)


def test_the_names_plugin_authors_use_still_import():
    from mmal_core import (Benchmark, Dataset, Encoder, Metric, MetricContext, MmalError, ModalitySpec,  # noqa: F401
                           MultimodalDataset, PoolView, RawDataset, RawSource, ScoreStrategy, Split, Strategy,
                           hookimpl, load_dataset, top_k)
    from mmal_core.cache import file_fingerprint  # noqa: F401
    from mmal_core.params import check_choice, check_float, check_int, get_params  # noqa: F401
    from mmal_core.testing import check_plugin, parametrize_with_checks, yield_checks  # noqa: F401


def test_the_old_benchmark_module_path_still_imports_with_a_warning():
    """Benchmark plugins were told ``from mmal_core.benchmarks import Benchmark`` (docs/leaderboard.md
    before the reshape): it keeps working and says where the name lives now."""
    import mmal_core

    with pytest.warns(DeprecationWarning, match="import mmal_core.Benchmark"):
        from mmal_core.benchmarks import Benchmark
    assert Benchmark is mmal_core.Benchmark
    with pytest.warns(DeprecationWarning, match="mmal_core.leaderboard.benchmarks.get_benchmark"):
        from mmal_core.benchmarks import get_benchmark
    assert get_benchmark("synthetic-missing").name == "synthetic-missing"


def test_every_extra_the_code_names_is_declared_with_its_packages_and_in_all():
    import importlib.metadata as md
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    from mmal_core.extras import EXTRAS

    declared = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    providers = md.packages_distributions()
    for extra, modules in EXTRAS.items():
        assert extra in declared, f"the code asks for mmal[{extra}], pyproject.toml does not declare it"
        dists = {canonicalize_name(Requirement(r).name) for r in declared[extra]}
        for module in modules:
            assert {canonicalize_name(d) for d in providers.get(module, [])} & dists, (
                f"mmal[{extra}] does not bring {module}")
    everything = {e for r in declared["all"] for e in Requirement(r).extras}
    assert everything == set(declared) - {"all", "test"}, everything


def test_the_old_model_path_of_fusion_mlp_still_imports_with_a_warning():
    from mmal_core.builtin.fusion import FusionMLP

    with pytest.warns(DeprecationWarning, match="import mmal_core.builtin.fusion.FusionMLP"):
        from mmal_core.model import FusionMLP as old
    assert old is FusionMLP
