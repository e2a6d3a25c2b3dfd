"""The container image: a wheelhouse, the image build, and `mmal run` inside a container.

``mmal docker build`` works on a source checkout of mmal (the folder with ``Dockerfile``
and ``pyproject.toml``): it builds wheels of mmal and its plugins, downloads every
dependency (torch included) into ``wheelhouse/``, then builds the image with the Docker
SDK for Python; the ``Dockerfile`` installs from that wheelhouse only, without an index.
``mmal docker run`` runs ``mmal run`` in that image with the config mounted read-only,
the database folder and the feature cache mounted, no network, and every GPU of the host
when it has one. Problems with the Docker engine (missing, not running, no permission) are
one-line :class:`~mmal_core.errors.MmalError` that say what to do.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from ..errors import MmalError
from ..extras import require_extra

DEFAULT_TAG = "mmal:latest"
#: The CUDA 12 runtime image the Dockerfile defaults to (Ubuntu 22.04: Python 3.10).
DEFAULT_BASE_IMAGE = "nvidia/cuda:12.6.3-runtime-ubuntu22.04"
DEFAULT_PYTHON = "3.10"
DEFAULT_TORCH = "2.13.0"
#: Where the container finds the config, the results and the feature cache.
CONFIG_DIR, RESULTS_DIR, CACHE_DIR = "/config", "/data/results", "/data/cache"


# -- the engine -----------------------------------------------------------------------------

def docker_host() -> str:
    return os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")


def engine_error(err: BaseException) -> MmalError:
    """A one-line error for a failure to talk to the Docker engine, saying what to do."""
    text = " ".join(str(err).split())
    where = docker_host()
    if "Permission denied" in text or "PermissionError" in text:
        return MmalError(
            f"mmal docker: permission denied on the Docker engine socket {where}; add your user to the docker group "
            "(`sudo usermod -aG docker $USER`, then log in again) or run the command with sudo"
        )
    return MmalError(
        f"mmal docker: cannot reach a Docker engine at {where}; install Docker and start it "
        "(`sudo systemctl start docker`), or set DOCKER_HOST to a running engine"
    )


def docker_client():
    """A connected client of the Docker engine (``DOCKER_HOST`` or the default socket)."""
    require_extra("docker", what="mmal docker")
    import docker

    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except docker.errors.DockerException as err:
        raise engine_error(err) from None
    except Exception as err:  # requests' connection errors when the engine answers oddly
        raise engine_error(err) from None
    return client


# -- the wheelhouse -------------------------------------------------------------------------

@dataclass
class WheelhouseSpec:
    """What goes into the wheelhouse.

    source: the mmal checkout (holds ``pyproject.toml`` and ``Dockerfile``).
    plugins: plugin source folders (each with a ``pyproject.toml``) installed in the image.
    torch_version: the torch release; torch_index: a PyTorch wheel index (e.g.
    ``https://download.pytorch.org/whl/cu126``) or None for PyPI's default build;
    torch_wheel: a torch wheel file to use instead of downloading one.
    python_version: the image's Python (``3.10`` for the default Ubuntu 22.04 base).
    """

    source: Path
    plugins: list[Path] = field(default_factory=list)
    torch_version: str = DEFAULT_TORCH
    torch_index: str | None = None
    torch_wheel: Path | None = None
    python_version: str = DEFAULT_PYTHON

    @property
    def wheelhouse(self) -> Path:
        return self.source / "wheelhouse"


def find_source(path: str | Path | None) -> Path:
    """The mmal checkout at ``path`` (default: the working directory), checked."""
    root = Path(path or ".").resolve()
    pyproject = root / "pyproject.toml"
    if not (root / "Dockerfile").is_file() or not pyproject.is_file():
        raise MmalError(f"--source {root}: not an mmal checkout (expected Dockerfile and pyproject.toml there)")
    if distribution_name(pyproject) != "mmal":
        raise MmalError(f"--source {root}: pyproject.toml there is not mmal's")
    return root


def distribution_name(pyproject: Path) -> str:
    """The ``[project] name`` of a pyproject.toml."""
    try:
        text = pyproject.read_text()
    except OSError as err:
        raise MmalError(f"{pyproject}: cannot read it ({err.__class__.__name__})") from None
    try:
        import tomllib  # Python 3.11+
    except ImportError:  # 3.10: the first name = "..." after [project] is enough here
        match = re.search(r"^\[project\][^\[]*?^name\s*=\s*[\"']([^\"']+)", text, re.M | re.S)
        if match:
            return match.group(1)
        raise MmalError(f"{pyproject}: no [project] name found") from None
    try:
        return str(tomllib.loads(text)["project"]["name"])
    except (KeyError, tomllib.TOMLDecodeError) as err:
        raise MmalError(f"{pyproject}: cannot read the project name ({err.__class__.__name__})") from None


def default_plugins(source: Path) -> list[Path]:
    """Every plugin distribution shipped in the checkout (``plugins/*/pyproject.toml``)."""
    return sorted(p.parent for p in (source / "plugins").glob("*/pyproject.toml"))


def _pip(args: list[str], what: str) -> None:
    res = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)
    if res.returncode != 0:
        lines = [ln for ln in (res.stderr or res.stdout).splitlines() if ln.strip()]
        last = next((ln for ln in reversed(lines) if "ERROR" in ln), lines[-1] if lines else "no output")
        raise MmalError(f"mmal docker build: {what} failed: {last.strip()}")


def build_wheelhouse(spec: WheelhouseSpec, step: Callable[[str], None] = lambda text: None) -> list[str]:
    """Fill ``spec.wheelhouse`` with wheels of mmal, the plugins and all their dependencies.

    Returns the distribution names to install in the image (mmal first). Wheels already in
    the folder are reused by pip, so a second build downloads nothing new.
    """
    wheelhouse = spec.wheelhouse
    wheelhouse.mkdir(exist_ok=True)
    names = [distribution_name(spec.source / "pyproject.toml")]
    for plugin in spec.plugins:
        if not (plugin / "pyproject.toml").is_file():
            raise MmalError(f"--plugin {plugin}: no pyproject.toml there")
        names.append(distribution_name(plugin / "pyproject.toml"))
    ours = {n.replace("-", "_").lower() for n in names}
    for old in wheelhouse.glob("*.whl"):  # our own wheels are rebuilt from the sources every time
        if old.name.split("-")[0].lower() in ours:
            old.unlink()

    step(f"building wheels of {', '.join(names)}")
    # without build isolation when setuptools is here: no index is needed to build our wheels
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    _pip(["wheel", "--no-deps", *isolation, "-q", "-w", str(wheelhouse), str(spec.source),
          *map(str, spec.plugins)], "building the wheels of mmal and its plugins")
    own_wheels = sorted(str(w) for w in wheelhouse.glob("*.whl") if w.name.split("-")[0].lower() in ours)

    torch_req = f"torch=={spec.torch_version}"
    if spec.torch_wheel is not None:
        wheel = Path(spec.torch_wheel)
        if not wheel.is_file() or not wheel.name.startswith("torch-"):
            raise MmalError(f"--torch-wheel {wheel}: expected a torch wheel file")
        shutil.copy2(wheel, wheelhouse / wheel.name)
        torch_req = str(wheelhouse / wheel.name)

    step(f"downloading the dependencies for Python {spec.python_version} (torch {spec.torch_version})")
    args = ["download", "-q", "-d", str(wheelhouse), "--find-links", str(wheelhouse), *own_wheels, torch_req]
    if spec.python_version != f"{sys.version_info.major}.{sys.version_info.minor}":
        args += ["--only-binary", ":all:", "--python-version", spec.python_version]
    if spec.torch_index:
        args += ["--extra-index-url", spec.torch_index]
    _pip(args, f"downloading the dependencies (torch {spec.torch_version}, Python {spec.python_version})")
    return names


# -- the image ------------------------------------------------------------------------------

_STEP = re.compile(r"^Step (\d+)/(\d+)")


def build_image(client, source: Path, tag: str, buildargs: dict[str, str], network: str = "default",
                on_step: Callable[[int, int, str], None] = lambda done, total, text: None,
                on_line: Callable[[str], None] = lambda text: None) -> str:
    """Build ``source/Dockerfile`` (context: the wheelhouse, see ``.dockerignore``); returns the image id.

    on_step(done, total, text) is called at every Dockerfile step, on_line for every line of
    build output. A failed step raises :class:`MmalError` with the engine's message.
    """
    import docker

    image_id = None
    recent: list[str] = []  # the step's output, for the error message
    try:
        stream = client.api.build(path=str(source), dockerfile="Dockerfile", tag=tag, buildargs=buildargs,
                                  decode=True, rm=True, forcerm=True, pull=False, network_mode=network)
        for chunk in stream:
            if "error" in chunk:
                cause = next((ln for ln in reversed(recent) if "error" in ln.lower()), recent[-1] if recent else "")
                raise MmalError(f"mmal docker build: the image build failed: {chunk['error']}"
                                + (f" (last output: {cause.strip()})" if cause else ""))
            text = chunk.get("stream", "")
            for line in text.splitlines():
                if not line.strip():
                    continue
                on_line(line)
                recent = recent[-30:] + [line]
                match = _STEP.match(line)
                if match:
                    on_step(int(match.group(1)) - 1, int(match.group(2)), line)
            aux = chunk.get("aux") or {}
            if "ID" in aux:
                image_id = aux["ID"]
    except docker.errors.APIError as err:
        raise MmalError(f"mmal docker build: the Docker engine refused the build: {err.explanation or err}") from None
    except docker.errors.DockerException as err:
        raise engine_error(err) from None
    if image_id is None:
        image_id = client.images.get(tag).id
    return image_id


# -- running --------------------------------------------------------------------------------

def host_has_gpu() -> bool:
    """Whether this machine has an NVIDIA GPU the engine could hand to a container."""
    return Path("/dev/nvidia0").exists() or shutil.which("nvidia-smi") is not None


@dataclass
class ContainerRun:
    """One ``mmal run`` in a container.

    config: the experiment YAML on the host (mounted read-only).
    db: the results database on the host (its folder is mounted read-write).
    cache: the feature cache folder on the host.
    gpus: "auto" (all GPUs when the host has one), "all" or "none".
    extra: more ``mmal run`` options (``--workers 2``).
    """

    image: str
    config: Path
    db: Path
    cache: Path
    gpus: str = "auto"
    extra: list[str] = field(default_factory=list)

    def command(self) -> list[str]:
        return ["run", f"{CONFIG_DIR}/{self.config.name}", "--db", f"{RESULTS_DIR}/{self.db.name}", *self.extra]

    def volumes(self) -> dict[str, dict[str, str]]:
        return {
            str(self.config.resolve()): {"bind": f"{CONFIG_DIR}/{self.config.name}", "mode": "ro"},
            str(self.db.resolve().parent): {"bind": RESULTS_DIR, "mode": "rw"},
            str(self.cache.resolve()): {"bind": CACHE_DIR, "mode": "rw"},
        }


#: Settings of this shell that the container inherits (thread counts, terminal width).
PASSED_ENVIRONMENT = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "COLUMNS", "MMAL_PLUGINS", "MMAL_DISABLE_PLUGINS")


def container_environment() -> dict[str, str]:
    env = {"HOME": "/tmp"}  # the host's user id has no home folder in the image
    env.update({k: os.environ[k] for k in PASSED_ENVIRONMENT if k in os.environ})
    return env


def run_container(client, run: ContainerRun, write_out: Callable[[bytes], Any], write_err: Callable[[bytes], Any]) -> int:
    """Run ``run`` to its end, streaming its output; returns the exit status of ``mmal`` inside."""
    import docker

    if run.gpus not in ("auto", "all", "none"):
        raise MmalError(f"--gpus {run.gpus}: expected auto, all or none")
    try:
        client.images.get(run.image)
    except docker.errors.ImageNotFound:
        raise MmalError(f"--image {run.image}: no such image; build it first with `mmal docker build --tag {run.image}`") from None
    except docker.errors.DockerException as err:
        raise engine_error(err) from None
    run.cache.mkdir(parents=True, exist_ok=True)
    gpu = run.gpus == "all" or (run.gpus == "auto" and host_has_gpu())
    requests = [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])] if gpu else None
    try:
        container = client.containers.create(
            run.image, run.command(), volumes=run.volumes(), network_mode="none", device_requests=requests,
            # the host's user: the database and the cache stay owned by whoever ran the command
            user=f"{os.getuid()}:{os.getgid()}", environment=container_environment(),
            detach=True, tty=False, stdin_open=False,
        )
    except docker.errors.APIError as err:
        raise MmalError(f"mmal docker run: the Docker engine refused the container: {err.explanation or err}") from None
    try:
        stream = client.api.attach(container.id, stdout=True, stderr=True, stream=True, logs=True, demux=True)
        try:
            container.start()
        except docker.errors.APIError as err:
            hint = ("; install the NVIDIA Container Toolkit or pass --gpus none"
                    if gpu and "device driver" in str(err.explanation or err) else "")
            raise MmalError(f"mmal docker run: the container did not start: {err.explanation or err}{hint}") from None
        for out, err in stream:
            if out:
                write_out(out)
            if err:
                write_err(err)
        return int(container.wait()["StatusCode"])
    except KeyboardInterrupt:
        container.stop(timeout=10)
        raise
    finally:
        try:
            container.remove(force=True)
        except docker.errors.DockerException:
            pass


def image_summary(client, tag: str) -> dict[str, Any]:
    """Id, size (MB) and default user of a built image."""
    image = client.images.get(tag)
    return {"id": image.short_id, "size_mb": image.attrs.get("Size", 0) / 1e6,
            "user": image.attrs.get("Config", {}).get("User", "")}


def split_list(values: Iterable[str] | None) -> list[str]:
    """Repeatable or comma-separated CLI values as one list."""
    return [v.strip() for value in values or [] for v in value.split(",") if v.strip()]
