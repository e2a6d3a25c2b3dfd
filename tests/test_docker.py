"""`mmal docker build` and `mmal docker run` against a real Docker engine.

Registries cannot be reached from the test machines, so the image is built on a base made
here: a Debian root file system from debootstrap (with python3 and venv), imported with
`docker import`, plus the torch wheel installed on this machine. The root file system is
cached as a tarball under build/docker/ (git-ignored) to keep reruns fast; unchanged
sources also reuse Docker's layer cache.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from _support import ROOT, run_cli

from mmal_core import MmalError
from mmal_core.runtime.docker import ContainerRun, engine_error

BASE_IMAGE = "mmal-test-base:bookworm"
IMAGE = "mmal:test"
CACHE = ROOT / "build" / "docker"
ROOTFS_TARBALL = CACHE / "bookworm-python3.tar.gz"


def test_engine_problems_are_one_line_errors_that_say_what_to_do(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    missing = engine_error(ConnectionError("('Connection aborted.', FileNotFoundError(2, 'No such file or directory'))"))
    assert str(missing).startswith("mmal docker: cannot reach a Docker engine at unix:///nonexistent/docker.sock;")
    assert "start it" in str(missing)
    denied = engine_error(Exception("Error while fetching server API version: ('Connection aborted.', "
                                    "PermissionError(13, 'Permission denied'))"))
    assert "permission denied" in str(denied) and "usermod -aG docker" in str(denied)
    pytest.importorskip("docker")
    from mmal_core.runtime.docker import docker_client

    with pytest.raises(MmalError, match="cannot reach a Docker engine at unix:///nonexistent/docker.sock"):
        docker_client()


def test_the_container_gets_no_network_the_config_read_only_and_the_results_folder(tmp_path):
    run = ContainerRun("mmal:x", tmp_path / "study.yaml", tmp_path / "out" / "r.db", tmp_path / "cache", "none",
                       ["--workers", "2"])
    assert run.command() == ["run", "/config/study.yaml", "--db", "/data/results/r.db", "--workers", "2"]
    assert run.volumes() == {
        str(tmp_path / "study.yaml"): {"bind": "/config/study.yaml", "mode": "ro"},
        str(tmp_path / "out"): {"bind": "/data/results", "mode": "rw"},
        str(tmp_path / "cache"): {"bind": "/data/cache", "mode": "rw"},
    }


def _debian_mirror() -> str:
    """The Debian mirror apt uses on this machine (registries and other mirrors are unreachable)."""
    for source in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")) + [Path("/etc/apt/sources.list")]:
        if source.is_file():
            match = re.search(r"^(?:URIs:|deb)\s+(\S*debian\S*?)/?(?:\s|$)", source.read_text(), re.M)
            if match and "security" not in match.group(1):
                return match.group(1)
    return "http://deb.debian.org/debian"


def _rootfs_tarball() -> Path:
    """A Debian bookworm root file system with python3 and venv, as a tarball (cached)."""
    if not ROOTFS_TARBALL.is_file():
        if shutil.which("debootstrap") is None or os.geteuid() != 0:
            pytest.skip("needs debootstrap run as root to make the base image (see .ci/run)")
        CACHE.mkdir(parents=True, exist_ok=True)
        rootfs = CACHE / "rootfs"
        shutil.rmtree(rootfs, ignore_errors=True)
        subprocess.run(["debootstrap", "--variant=minbase", "--include=python3,python3-venv", "bookworm", str(rootfs),
                        _debian_mirror()], check=True, capture_output=True, timeout=900)
        partial = ROOTFS_TARBALL.with_suffix(".partial")
        subprocess.run(f"tar -C '{rootfs}' -c . | gzip -1 > '{partial}'", shell=True, check=True)
        partial.rename(ROOTFS_TARBALL)
        shutil.rmtree(rootfs, ignore_errors=True)
    return ROOTFS_TARBALL


def _import_base_image(client, name: str) -> None:
    """`docker import` of the root file system tarball as image ``name`` (repository:tag).

    The Docker SDK 7 has no high-level ``images.import_image``; the low-level API does it.
    """
    repository, tag = name.rsplit(":", 1)
    client.api.import_image_from_file(str(_rootfs_tarball()), repository=repository, tag=tag)


def _make_base_image(client) -> None:
    """The base image in the engine: imported from the cached root file system when absent."""
    try:
        client.images.get(BASE_IMAGE)
    except Exception:
        _import_base_image(client, BASE_IMAGE)


def _torch_wheel() -> Path:
    """The wheel of the torch installed here (pip finds it in its cache or local wheel folders)."""
    version = md.version("torch")
    folder = CACHE / "torch-wheel"
    found = sorted(folder.glob(f"torch-{version}-*.whl"))
    if not found:
        res = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(folder),
                              f"torch=={version}"], capture_output=True, text=True)
        found = sorted(folder.glob(f"torch-{version}-*.whl"))
        if not found:
            pytest.skip(f"cannot get the torch {version} wheel: {res.stderr.strip()[-200:]}")
    return found[0]


@pytest.fixture(scope="module")
def engine():
    pytest.importorskip("docker")
    from mmal_core.runtime.docker import docker_client

    try:
        return docker_client()
    except MmalError as err:
        pytest.skip(f"no Docker engine to test against ({err}); .ci/run starts one")


@pytest.mark.docker
@pytest.mark.slow
def test_the_base_image_is_imported_from_the_root_file_system(engine):
    """The import path runs on every test run, not only where the engine lacks the base image."""
    if sys.version_info[:2] != (3, 11):
        pytest.skip("the debootstrap base image has Python 3.11; the wheels must match")
    name = f"mmal-test-base:import-check-{os.getpid()}"
    try:
        _import_base_image(engine, name)
        assert name in engine.images.get(name).tags
        out = engine.containers.run(name, ["python3", "-c", "import venv; print('python ok')"], network_mode="none",
                                    remove=True)
        assert out.strip() == b"python ok"
    finally:
        try:
            engine.images.remove(name, force=True)
        except Exception:
            pass


@pytest.mark.docker
@pytest.mark.slow
def test_build_the_image_and_run_a_study_in_it(engine, tmp_path, write_config):
    if sys.version_info[:2] != (3, 11):
        pytest.skip("the debootstrap base image has Python 3.11; the wheels must match")
    _make_base_image(engine)
    wheel = _torch_wheel()
    build = run_cli("docker", "build", "--source", str(ROOT), "--tag", IMAGE, "--base-image", BASE_IMAGE,
                    "--python-version", "3.11", "--torch-wheel", str(wheel), "--network", "none",
                    "--plugin", "plugins/mmal-synthetic,plugins/mmal-strategies", timeout=900)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    assert f"image {IMAGE}" in build.stdout and "user mmal" in build.stdout  # not root by default
    image = engine.images.get(IMAGE)
    assert image.attrs["Config"]["Entrypoint"] == ["mmal"]
    assert set(image.attrs["Config"]["Volumes"]) == {"/data/cache", "/data/results"}
    # `mmal run` without a config finds the embedded demo in the installed wheel (the whole
    # demo takes minutes: once it has started, that is enough)
    demo = engine.containers.run(IMAGE, ["run", "--workers", "1"], network_mode="none", detach=True)
    try:
        seen = b""
        for chunk in demo.logs(stream=True, follow=True):
            seen += chunk
            if b"experiment demo (24 runs" in seen or b"error" in seen:
                break
        assert b"experiment demo (24 runs" in seen, seen.decode(errors="replace")[-2000:]
    finally:
        demo.remove(force=True)

    config = write_config({
        "name": "in-docker",
        "dataset": {"name": "synthetic-difficulty", "params": {"n_train": 200, "n_test": 100, "dim": 8}},
        "model": {"params": {"epochs": 3, "hidden": 8}},
        "budget": {"initial": 10, "per_round": 10, "rounds": 1},
        "strategies": ["random", "margin"],
        "seeds": [0],
    })
    results = tmp_path / "results"
    results.mkdir()
    db = results / "study.db"
    run = run_cli("docker", "run", str(config), "--image", IMAGE, "--db", str(db), "--cache", str(tmp_path / "cache"),
                  "--gpus", "none", "--workers", "1", timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "experiment in-docker (2 runs" in run.stdout  # mmal's own output, streamed from the container
    with sqlite3.connect(db) as conn:
        runs = conn.execute("SELECT strategy, status FROM runs ORDER BY strategy").fetchall()
        rounds = conn.execute("SELECT COUNT(*) FROM rounds").fetchone()[0]
        env = conn.execute("SELECT environment FROM experiments").fetchone()[0]
    assert runs == [("margin", "finished"), ("random", "finished")]
    assert rounds == 4
    assert '"torch": "' + md.version("torch") in env

    # a config mmal rejects: the same exit status and one line as `mmal run`
    bad = write_config(yaml.safe_dump({"name": "bad", "dataset": "synthetic-difficulty", "budget": {"initial": 5},
                                       "strategies": ["random"], "seeds": 1}), "bad.yaml")
    local = run_cli("run", str(bad), "--db", str(tmp_path / "local.db"))
    inside = run_cli("docker", "run", str(bad), "--image", IMAGE, "--db", str(db), "--gpus", "none")
    assert (inside.returncode, inside.stderr.strip()) == (local.returncode, local.stderr.strip()) == (2, local.stderr.strip())
    # a plugin error raised inside the container (unknown strategy) comes back the same way
    unknown = write_config({"name": "typo", "dataset": {"name": "synthetic-difficulty", "params": {"n_train": 100}},
                            "budget": {"initial": 5, "per_round": 5, "rounds": 1}, "strategies": ["margn"], "seeds": 1},
                           "typo.yaml")
    inside = run_cli("docker", "run", str(unknown), "--image", IMAGE, "--db", str(db), "--gpus", "none")
    assert inside.returncode == 2
    assert inside.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "margn" in inside.stderr and "did you mean 'margin'" in inside.stderr
    missing = run_cli("docker", "run", str(config), "--image", "mmal:no-such-image", "--db", str(db))
    assert missing.returncode == 2
    assert missing.stderr.strip() == "error: --image mmal:no-such-image: no such image; build it first with " \
                                     "`mmal docker build --tag mmal:no-such-image`"
