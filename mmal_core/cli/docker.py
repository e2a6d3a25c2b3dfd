"""``mmal docker build`` and ``mmal docker run``: the container image and runs inside it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .common import console, default_db

docker_app = typer.Typer(
    name="docker",
    help="Build the mmal container image and run experiments in it (needs a Docker engine).",
    no_args_is_help=True,
)


@docker_app.command("build")
def build(
    source: Optional[Path] = typer.Option(None, "--source", help="The mmal checkout (holds Dockerfile). Default: the working directory."),
    tag: str = typer.Option("mmal:latest", "--tag", help="Name of the image."),
    base_image: Optional[str] = typer.Option(None, "--base-image", help="Base image (build argument BASE_IMAGE). Default: the Dockerfile's CUDA 12 runtime image."),
    python_version: Optional[str] = typer.Option(None, "--python-version", help="Python of the base image, for the wheels. Default: 3.10 (the default base image); with --base-image, this Python."),
    torch_version: str = typer.Option("2.13.0", "--torch-version", help="torch release installed in the image."),
    torch_index: Optional[str] = typer.Option(None, "--torch-index", help="PyTorch wheel index for a given CUDA build, e.g. https://download.pytorch.org/whl/cu126 (default: PyPI's build)."),
    torch_wheel: Optional[Path] = typer.Option(None, "--torch-wheel", help="A torch wheel file to install instead of downloading one."),
    plugin: Optional[List[str]] = typer.Option(None, "--plugin", help="Plugin source folder to install (repeatable or comma-separated). Default: every folder of plugins/."),
    network: str = typer.Option("default", "--network", help="Network of the build steps: 'none' when the base image already has python3 and venv."),
    wheelhouse_only: bool = typer.Option(False, "--wheelhouse-only", help="Only build ./wheelhouse, not the image."),
) -> None:
    """Build ./wheelhouse (wheels of mmal, its plugins and every dependency), then the image."""
    from ..runtime import docker as dt

    root = dt.find_source(source)
    plugins = [Path(p) if Path(p).is_absolute() else root / p for p in dt.split_list(plugin)] or dt.default_plugins(root)
    if python_version is None:
        python_version = dt.DEFAULT_PYTHON if base_image is None else f"{sys.version_info.major}.{sys.version_info.minor}"
    spec = dt.WheelhouseSpec(root, plugins, torch_version, torch_index, torch_wheel, python_version)
    client = None if wheelhouse_only else dt.docker_client()  # fail on the engine before minutes of downloads
    with console.status("wheelhouse") as status:
        names = dt.build_wheelhouse(spec, step=lambda text: status.update(f"wheelhouse: {text}"))
    count = len(list(spec.wheelhouse.glob("*.whl")))
    console.print(f"wheelhouse: {count} wheels in {spec.wheelhouse} ({', '.join(names)})")
    if wheelhouse_only:
        return
    buildargs = {"TORCH_VERSION": torch_version, "MMAL_PACKAGES": " ".join(names)}
    if base_image:
        buildargs["BASE_IMAGE"] = base_image
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task(f"image {tag}", total=None)

        def on_step(done, total, text):
            progress.update(task, completed=done, total=total, description=f"image {tag}: {text[:60]}")

        dt.build_image(client, root, tag, buildargs, network, on_step=on_step)
        progress.update(task, completed=progress.tasks[0].total or 1, description=f"image {tag}")
    info = dt.image_summary(client, tag)
    console.print(f"image [bold]{tag}[/] {info['id']} ({info['size_mb']:.0f} MB, user {info['user'] or 'root'})")


@docker_app.command("run", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run(
    ctx: typer.Context,
    config: Path = typer.Argument(..., help="Experiment YAML (mounted read-only in the container)."),
    image: str = typer.Option("mmal:latest", "--image", help="The image built by `mmal docker build`."),
    db: Optional[str] = typer.Option(None, "--db", help="Results database on this machine. Default: ./mmal-results.db or $MMAL_DB."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Feature cache folder on this machine. Default: mmal's cache folder."),
    gpus: str = typer.Option("auto", "--gpus", help="auto (every GPU when this machine has one), all, or none."),
) -> None:
    """Run CONFIG with `mmal run` in the container: no network, the database and cache mounted.

    Options after CONFIG that this command does not know go to `mmal run` (e.g. --workers 2).
    The exit status is mmal's inside the container.
    """
    from ..runtime import docker as dt
    from ..cache import cache_dir
    from ..config import load_config
    from ..store import check_writable

    load_config(config)  # the same one-line errors as `mmal run`, before any container starts
    db_path = check_writable(default_db(db))
    spec = dt.ContainerRun(image, config, db_path, cache if cache is not None else cache_dir(), gpus, list(ctx.args))
    client = dt.docker_client()
    out, err = sys.stdout, sys.stderr

    def write(stream):
        def _write(data: bytes):
            stream.write(data.decode(errors="replace"))
            stream.flush()
        return _write

    code = dt.run_container(client, spec, write(out), write(err))
    if code:
        raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.add_typer(docker_app, name="docker")
