"""mmal as a user installs it: built wheels (not an editable checkout) in a fresh venv.

The wheels are built offline from this checkout (no build isolation: the setuptools of the
test environment builds them) and installed without dependencies into a new venv, which
sees the dependencies already installed here (torch, numpy, ...) through a folder of links
that leaves out every mmal distribution, so only the wheels provide mmal.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest
from _support import ROOT

DISTRIBUTIONS = [ROOT, *sorted(p.parent for p in (ROOT / "plugins").glob("*/pyproject.toml"))]


def _package_files(source: Path) -> set[str]:
    """Every file of the importable packages in a distribution's source folder (no caches)."""
    found = set()
    for init in source.glob("*/__init__.py"):
        for path in init.parent.rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                found.add(path.relative_to(source).as_posix())
    return found


_BUILD_LOG: list[str] = []


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> list[Path]:
    out = tmp_path_factory.mktemp("wheels")
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation", "--no-index",
                          "-w", str(out), *map(str, DISTRIBUTIONS)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    _BUILD_LOG.append(res.stdout + res.stderr)
    built = sorted(out.glob("*.whl"))
    assert len(built) == len(DISTRIBUTIONS)
    return built


@pytest.mark.slow
def test_building_the_wheels_warns_about_nothing_in_the_pyprojects(wheels):
    """No setuptools warnings about project.license (the SPDX string form, setuptools>=77)."""
    warnings = [line.strip() for line in _BUILD_LOG[0].splitlines()
                if "license" in line.lower() and ("warn" in line.lower() or "deprecat" in line.lower())]
    assert not warnings, warnings[:3]


def _pyprojects() -> list[Path]:
    return sorted([ROOT / "pyproject.toml", *ROOT.glob("plugins/*/pyproject.toml"), *ROOT.glob("examples/*/pyproject.toml")])


#: APIs the code uses that older releases lack: (text in the code, distribution, first release with it).
NEEDS = [
    ("np.trapezoid(", "numpy", "2.0"),
    ("rng=np.random.default_rng", "scipy", "1.15"),  # scipy.stats.bootstrap(..., rng=...)
    ("Image.Resampling", "pillow", "9.1"),
    # not a new API: 3.5 is the first threadpoolctl that finds (and limits) NumPy 2's OpenBLAS
    ("threadpool_limits(", "threadpoolctl", "3.5"),
]


def test_declared_floors_are_at_least_the_releases_with_the_apis_the_code_uses():
    """Every requirement of a pyproject (dependencies and extras) whose sources use one of
    NEEDS has a floor at or above that release (issue 12: numpy>=1.24 with np.trapezoid)."""
    tomllib = pytest.importorskip("tomllib")
    from packaging.requirements import Requirement
    from packaging.version import Version

    for pyproject in _pyprojects():
        project = tomllib.loads(pyproject.read_text())["project"]
        code = "\n".join(path.read_text() for path in pyproject.parent.glob("*/**/*.py")
                         if not {"tests", "build", ".venv"} & set(path.relative_to(pyproject.parent).parts))
        requirements = [Requirement(r) for r in project.get("dependencies", [])]
        requirements += [Requirement(r) for extra in project.get("optional-dependencies", {}).values() for r in extra]
        for text, dist, first in NEEDS:
            if text not in code:
                continue
            for req in (r for r in requirements if r.name.lower() == dist):
                floors = [Version(s.version) for s in req.specifier if s.operator in (">=", "==", "~=")]
                assert floors and max(floors) >= Version(first), \
                    f"{pyproject.relative_to(ROOT)}: {req} but the code uses {text!r} (needs {dist}>={first})"


def test_every_pyproject_names_its_license_in_spdx_form_with_a_setuptools_that_reads_it():
    tomllib = pytest.importorskip("tomllib")

    for pyproject in _pyprojects():
        data = tomllib.loads(pyproject.read_text())
        where = pyproject.relative_to(ROOT)
        assert isinstance(data["project"].get("license"), str), f"{where}: license must be an SPDX string"
        assert data["build-system"]["requires"] == ["setuptools>=77"], where


@pytest.mark.slow
def test_every_wheel_holds_every_file_of_its_packages(wheels):
    """Data files the code reads at run time (mmal_core/configs/demo.yaml, ...) are in the wheels."""
    in_wheels = set()
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            in_wheels |= set(zf.namelist())
    assert "mmal_core/configs/demo.yaml" in in_wheels
    for source in DISTRIBUTIONS:
        missing = _package_files(source) - in_wheels
        assert not missing, f"{source.name}: not in its wheel: {sorted(missing)}"


def _fresh_venv(where: Path, leave_out: tuple[str, ...] = ()) -> Path:
    """A new venv whose site-packages links to this environment's, less every mmal distribution
    and every entry whose name starts with one of ``leave_out``."""
    venv.EnvBuilder(with_pip=False).create(where)
    site = Path(subprocess.run([str(where / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    links = where / "deps"
    links.mkdir()
    for lib in {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}:
        for entry in Path(lib).iterdir():
            name = entry.name.lower()
            if name.startswith(("mmal", "__editable__", "_mmal", *leave_out)) or entry.suffix == ".pth" \
                    or (links / entry.name).exists():
                continue
            (links / entry.name).symlink_to(entry)
    (site / "deps.pth").write_text(str(links) + "\n")
    return where / "bin"


@pytest.mark.slow
def test_mmal_run_without_a_config_starts_the_demo_from_installed_wheels(wheels, tmp_path):
    bindir = _fresh_venv(tmp_path / "venv")
    res = subprocess.run([sys.executable, "-m", "pip", "--python", str(bindir / "python"), "install", "-q", "--no-deps",
                          "--no-index", *map(str, wheels)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MMAL_DB")}
    env["OMP_NUM_THREADS"] = "1"
    where = subprocess.run([str(bindir / "python"), "-c", "import mmal_core; print(mmal_core.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, env=env)
    assert where.stdout.startswith(str(tmp_path / "venv")), where.stdout + where.stderr  # the wheel, not the checkout
    # the whole demo takes minutes: once it has read its embedded config and started, stop it
    demo = subprocess.Popen([str(bindir / "mmal"), "run", "--workers", "1", "--db", str(tmp_path / "demo.db")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path, env=env,
                            start_new_session=True)
    seen = []
    try:
        for line in demo.stdout:
            seen.append(line)
            if "experiment demo (" in line or "error" in line:
                break
    finally:
        os.killpg(demo.pid, signal.SIGTERM)
        demo.wait(timeout=60)
    assert any("experiment demo (24 runs" in line for line in seen), "".join(seen)[-2000:]


#: Packages that only the extras bring (site-packages entries starting with these names).
EXTRA_ONLY = ("scipy", "sklearn", "scikit_learn", "matplotlib", "statsmodels", "scikit_posthocs", "pandas", "fastapi",
              "starlette", "uvicorn", "sqlalchemy", "ray", "docker", "psycopg")

TINY = """
name: tiny
dataset: [{name: synthetic-missing, params: {n_train: 120, n_test: 60}}]
model: {name: fusion-mlp, params: {epochs: 3, hidden: 16}}
budget: {initial: 10, per_round: 10, rounds: 1}
strategies: [random, margin]
seeds: [0]
"""


@pytest.mark.slow
def test_the_core_runs_without_the_extras_and_each_service_names_its_extra(wheels, tmp_path):
    """``pip install mmal`` alone runs and shows experiments; each service command stops with one
    line naming the extra that brings what it lacks (``pip install 'mmal[report]'``)."""
    bindir = _fresh_venv(tmp_path / "venv", leave_out=EXTRA_ONLY)
    core = [w for w in wheels if w.name.startswith(("mmal-", "mmal_strategies", "mmal_synthetic"))
            and not w.name.startswith(("mmal_datasets", "mmal_encoders"))]
    res = subprocess.run([sys.executable, "-m", "pip", "--python", str(bindir / "python"), "install", "-q", "--no-deps",
                          "--no-index", *map(str, core)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MMAL_DB")}
    env.update(OMP_NUM_THREADS="1", MMAL_DB=str(tmp_path / "r.db"), XDG_CACHE_HOME=str(tmp_path / "cache"))
    (tmp_path / "tiny.yaml").write_text(TINY)

    def mmal(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(bindir / "mmal"), *args], capture_output=True, text=True, cwd=tmp_path, env=env,
                              timeout=300)

    gone = subprocess.run([str(bindir / "python"), "-c", "import scipy"], capture_output=True, text=True, env=env)
    assert gone.returncode != 0  # the venv really lacks the extras' packages
    run = mmal("run", "tiny.yaml", "--workers", "1")
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    show = mmal("show")
    assert show.returncode == 0 and "margin" in show.stdout, show.stdout + show.stderr
    for args, extra in [
        (("report",), "report"),
        (("leaderboard",), "report"),
        (("diagnose", "synthetic-missing", "--seeds", "1"), "diagnose"),
        (("serve", "--db", str(tmp_path / "s.db")), "server"),
        (("run", "tiny.yaml", "--executor", "ray"), "ray"),
        (("docker", "build", "--source", str(ROOT)), "docker"),
    ]:
        res = mmal(*args)
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2 and len(lines) == 1, (args, res.stdout[-500:], res.stderr[-1500:])
        assert f"pip install 'mmal[{extra}]'" in lines[0] and "Traceback" not in res.stderr, (args, lines)
