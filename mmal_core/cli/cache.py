"""``mmal cache build|list|verify|rm``: the HDF5 pool-feature cache of raw datasets."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ..errors import MmalError
from .common import console

cache_app = typer.Typer(
    help="Build, list, verify and remove the HDF5 caches of encoded features (raw datasets).",
    no_args_is_help=True,
)

_DIR_HELP = "Cache folder. Default: $MMAL_CACHE_DIR, else $XDG_CACHE_HOME/mmal, else ~/.cache/mmal."


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _parse_pairs(values: list[str], option: str) -> dict[str, object]:
    import yaml

    out: dict[str, object] = {}
    for raw in values or []:
        key, sep, value = raw.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise MmalError(f"{option} {raw!r}: expected KEY=VALUE")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            raise MmalError(f"{option} {raw!r}: the value is not valid YAML") from None
        out[key.strip()] = parsed
    return out


def _folder(cache_dir: Optional[str]) -> Path:
    """The cache folder; a path that exists but is not a folder is an error (not "no caches")."""
    from ..cache import cache_dir as default_dir

    folder = default_dir(cache_dir)
    if folder.exists() and not folder.is_dir():
        raise MmalError(f"cache folder {folder}: is a file, expected a folder (--cache-dir or $MMAL_CACHE_DIR)")
    return folder


def _looks_like_cache(path: Path) -> bool:
    """A cache file, even a broken one: an HDF5 file with any of a cache's attributes, or a file
    HDF5 cannot read that is named like a cache. So `mmal cache rm` never deletes someone's
    own HDF5 data file (even one named like a cache).
    """
    from ..cache import is_cache_name

    try:
        import h5py

        with h5py.File(path, "r") as h5:
            names = set(h5.attrs)
    except Exception:  # noqa: BLE001 - truncated, corrupt, not HDF5: a broken cache if named like one
        return is_cache_name(path.name)
    return bool(names & {"format", "key", "dataset", "checksum", "complete"})


def _targets(targets: list[str], cache_dir: Optional[str], removing: bool = False) -> list[Path]:
    from ..cache import SUFFIX, is_cache_name, list_caches

    folder = _folder(cache_dir)
    if not targets:
        return [info.path for info in list_caches(folder)]
    paths: list[Path] = []
    for target in targets:
        p = Path(target)
        if p.suffix == SUFFIX:
            if not p.exists():
                raise MmalError(f"cache {p}: no such file")
            if not p.is_file():
                raise MmalError(f"cache {p}: not a file, expected a cache file (<dataset>-<key>{SUFFIX})")
            if removing and not _looks_like_cache(p):
                raise MmalError(
                    f"cache {p}: not an mmal cache (expected a file named <dataset>-<key>{SUFFIX} or one with mmal's "
                    "cache attributes); not removed"
                )
            paths.append(p)
            continue
        # A dataset name: every cache file of that dataset in the folder (a broken one by its name).
        matches = [info.path for info in list_caches(folder) if info.attrs.get("dataset") == target
                   or (not info.ok and is_cache_name(info.path.name, target))]
        if not matches:
            if p.exists():  # never treat (and `rm`) an arbitrary file as a cache
                raise MmalError(f"cache {p}: not a cache file (cache files end in {SUFFIX}) and no dataset of that name has a cache in {folder}")
            raise MmalError(f"no cache of dataset '{target}' in {folder} (see `mmal cache list`)")
        paths.extend(matches)
    return paths


@cache_app.command("build")
def build(
    dataset: str = typer.Argument(..., help="A raw dataset (see `mmal list datasets`), e.g. av-digits."),
    encoder: list[str] = typer.Option([], "--encoder", "-e", help="MODALITY=ENCODER, e.g. image=identity (repeatable)."),
    param: list[str] = typer.Option([], "--param", "-p", help="Dataset parameter KEY=VALUE (YAML value, repeatable)."),
    cache_dir: Optional[str] = typer.Option(None, "--cache-dir", help=_DIR_HELP),
    rebuild: bool = typer.Option(False, "--rebuild", help="Replace an existing cache for the same request."),
) -> None:
    """Encode every modality of DATASET once and write its cache (a no-op when it exists)."""
    from ..cache import RawDataset
    from ..params import construct
    from ..plugins import get_plugin_manager

    cls = get_plugin_manager().get("dataset", dataset)
    if not (isinstance(cls, type) and issubclass(cls, RawDataset)):
        raise MmalError(f"dataset '{dataset}' is generated, not encoded from raw items: it has no cache")
    params = _parse_pairs(param, "--param")
    encoders = _parse_pairs(encoder, "--encoder")
    if encoders:
        given = params.get("encoders") or {}
        if not isinstance(given, dict):
            raise MmalError(f"--param encoders={given!r}: expected a mapping of modality to encoder to combine with --encoder")
        params["encoders"] = {**given, **encoders}
    if cache_dir:
        params["cache_dir"] = cache_dir
    builder = construct(cls, params, f"dataset '{dataset}'")
    start = time.perf_counter()
    path, built = builder.build_cache(rebuild=rebuild)
    verb = "built" if built else "already cached"
    console.print(f"{verb}: {path} ({_size(path.stat().st_size)}, {time.perf_counter() - start:.1f} s)", highlight=False)


@cache_app.command("list")
def list_(cache_dir: Optional[str] = typer.Option(None, "--cache-dir", help=_DIR_HELP)) -> None:
    """List the cache files of the cache folder, with their dataset, encoders and size."""
    from ..cache import list_caches, temporaries

    folder = _folder(cache_dir)
    console.print(f"cache folder: {folder}", highlight=False)
    infos = list_caches(folder)
    temps = temporaries(folder)
    if temps:
        size = sum(_file_size(t) for t in temps)
        console.print(
            f"{len(temps)} temporary file(s) ({_size(size)}): builds under way or left by killed builds; "
            "the next build or `mmal cache rm --all` removes those of killed builds",
            highlight=False,
        )
    if not infos:
        console.print("no caches yet (they are built by `mmal cache build DATASET` or by the first run)")
        return
    table = Table()
    table.add_column("path", no_wrap=True)
    for col in ("dataset", "samples", "modalities (encoder, dim)", "skipped / missing", "size", "created", "status"):
        table.add_column(col, overflow="fold")
    for info in infos:
        a = info.attrs
        mods = ", ".join(f"{m} ({(a.get('encoders') or {}).get(m, {}).get('name', '?')}, {d})" for m, d in info.dims.items())
        skipped, missing = a.get("skipped") or {}, a.get("missing") or {}
        counts = "-"
        if isinstance(skipped, dict) and isinstance(missing, dict):
            counts = f"{sum(skipped.values())} / {sum(missing.values())}"
        status = "[green]ok[/]" if info.ok else f"[red]{info.problem}[/]"
        table.add_row(
            str(info.path), str(a.get("dataset", "?")), str(info.n or "-"), mods or "-",
            counts, _size(info.size),
            str(a.get("created", "-")), status,
        )
    console.print(table)


@cache_app.command("verify")
def verify(
    targets: list[str] = typer.Argument(None, help="Cache files or dataset names. Default: every cache of the folder."),
    cache_dir: Optional[str] = typer.Option(None, "--cache-dir", help=_DIR_HELP),
) -> None:
    """Read every chunk of the caches (checksums, shapes, finite values); exit 2 if one is bad."""
    from ..cache import verify_cache

    paths = _targets(targets or [], cache_dir)
    if not paths:
        console.print("no caches to verify")
        return
    bad = []
    for path in paths:
        info = verify_cache(path)
        if info.ok:
            console.print(f"[green]ok[/]  {path} ({info.n} samples)", highlight=False)
        else:
            console.print(f"[red]bad[/] {info.problem}", highlight=False)
            bad.append(info)
    if bad:
        raise MmalError(f"{len(bad)} of {len(paths)} cache(s) failed verification; first: {bad[0].problem}")


@cache_app.command("rm")
def rm(
    targets: list[str] = typer.Argument(None, help="Cache files or dataset names."),
    all_: bool = typer.Option(False, "--all", help="Remove every cache of the folder."),
    cache_dir: Optional[str] = typer.Option(None, "--cache-dir", help=_DIR_HELP),
) -> None:
    """Remove caches (they are rebuilt on the next run that needs them)."""
    from ..cache import remove_lock_file, remove_temporaries

    if not targets and not all_:
        raise MmalError("cache rm: name cache files or datasets, or pass --all")
    if targets and all_:
        raise MmalError("cache rm: name cache files or datasets, or pass --all, not both")
    paths = _targets(targets or [], cache_dir, removing=True)
    for path in paths:
        try:
            path.unlink()
        except OSError as err:
            raise MmalError(f"cache {path}: cannot be removed ({err.strerror or err})") from None
        with contextlib.suppress(OSError):
            remove_lock_file(path)  # kept while a builder holds it
            for tmp in remove_temporaries(path.parent, target=path.name):
                console.print(f"removed {tmp} (left by a killed build)", highlight=False)
        console.print(f"removed {path}", highlight=False)
    if all_:
        with contextlib.suppress(OSError):
            for tmp in remove_temporaries(_folder(cache_dir)):
                console.print(f"removed {tmp} (left by a killed build)", highlight=False)
    if not paths:
        console.print("no caches to remove")


def register(app: typer.Typer) -> None:
    app.add_typer(cache_app, name="cache")
