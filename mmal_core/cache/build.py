"""Building a cache once: locking, progress, temporaries left by killed builds."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import MmalError
from .encoders import Encoder
from .store import ENV_CACHE_DIR, SUFFIX, CacheRequest, RawSource, cache_dir, check_cache, write_cache


# -- the front door -----------------------------------------------------------------------------
def _default_progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from ..console import err_console

    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), console=err_console, transient=False,
    )
    return progress


def ensure_cache(
    request: CacheRequest,
    build_source: Callable[[], RawSource],
    encoders: dict[str, Encoder],
    directory: str | os.PathLike | None = None,
    *,
    rebuild: bool = False,
    show_progress: bool = True,
    compression: str | None = "gzip",
    lock_timeout: float = -1,
) -> tuple[Path, bool]:
    """Return the path of a valid cache for ``request``, building it first if needed.

    Returns ``(path, built)``. Concurrent callers serialise on ``<path>.lock``: the first
    builds, the others wait and then open the finished file. An existing file that does not
    open or does not match ``request`` raises :class:`MmalError` (with a rebuild hint) unless
    ``rebuild`` is True, in which case it is replaced.
    """
    from filelock import FileLock, Timeout

    folder = cache_dir(directory)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise MmalError(f"cache folder {folder}: cannot be created ({err.strerror or err}); set {ENV_CACHE_DIR} to a writable folder") from None
    path = folder / request.filename()
    if path.exists() and not rebuild:
        check_cache(path, request)  # a bad file is refused here, not reported as "already cached"
        remove_temporaries(folder)  # a killed `--rebuild` left one next to a good cache
        return path, False
    lock_path = Path(str(path) + ".lock")
    try:  # create the lock file ourselves: filelock retries forever on some unwritable folders
        os.close(os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666))
    except OSError as err:
        raise MmalError(
            f"cache folder {folder}: cannot write there ({err.strerror or err}); "
            f"pass --cache-dir or set {ENV_CACHE_DIR} to a writable folder"
        ) from None
    lock = FileLock(str(lock_path), timeout=lock_timeout)
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            if show_progress:
                from ..console import err_console

                err_console.print(f"waiting for another process that is building {path} (it holds {lock_path})", highlight=False)
            lock.acquire()
        try:
            if path.exists() and not rebuild:  # another process built it while we waited
                check_cache(path, request)
                return path, False
            for stale in folder.glob(f".{path.name}.*.tmp"):  # left by a killed builder (we hold the lock)
                with contextlib.suppress(OSError):
                    stale.unlink()
            remove_temporaries(folder)  # those of other caches, when no builder holds their lock
            source = build_source()
            n = len(source.labels)
            for m in request.modalities:
                if len(source.items[m]) != n:
                    raise MmalError(f"dataset '{request.dataset}': modality '{m}' has {len(source.items[m])} items for {n} samples")
            if show_progress:
                progress = _default_progress()
                with progress:
                    tasks = {
                        m: progress.add_task(f"encoding {request.dataset}/{m} ({encoders[m].name})", total=n)
                        for m in request.modalities
                    }
                    write_cache(path, request, source, encoders, lambda m, k: progress.advance(tasks[m], k), compression)
            else:
                write_cache(path, request, source, encoders, None, compression)
        finally:
            lock.release()
    except Timeout:
        raise MmalError(f"cache {path}: another process holds {path}.lock; wait for it or remove the lock file if no build is running") from None
    return path, True


# -- temporary files of killed builders -----------------------------------------------------------
def _temporary_target(tmp: Path) -> str | None:
    """``.<name>.h5.<random>.tmp`` (see :func:`atomic_h5`) -> ``<name>.h5``."""
    name = tmp.name
    if not (name.startswith(".") and name.endswith(".tmp")):
        return None
    target = name[1 : -len(".tmp")].rpartition(".")[0]
    return target if target.endswith(SUFFIX) else None


def temporaries(directory: str | os.PathLike | None = None) -> list[Path]:
    """The temporary files in the cache folder: builds under way, or left by killed builders."""
    folder = cache_dir(directory)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob(f".*{SUFFIX}.*.tmp") if _temporary_target(p) and p.is_file())


@contextlib.contextmanager
def _if_unlocked(lock_path: Path) -> Iterator[bool]:
    """Yield True, holding the builders' lock ``lock_path``, when no process holds it; else False.

    A builder holds its lock from before it creates its temporary file until it is renamed
    or removed, so a temporary file whose lock is free was left by a killed builder.
    """
    try:
        import fcntl
    except ImportError:  # no flock: cannot tell a live builder from a dead one
        yield False
        return
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except FileNotFoundError:  # no lock file: no builder (each one creates it first)
        yield True
        return
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def remove_temporaries(directory: str | os.PathLike | None = None, target: str | None = None) -> list[Path]:
    """Remove the temporary files left by killed builders (of ``target`` only, when given).

    A temporary file is removed only when no process holds its cache's lock, so a build under
    way is never disturbed. Best effort: files that cannot be removed are kept. Returns the
    removed files.
    """
    folder = cache_dir(directory)
    removed = []
    for tmp in temporaries(folder):
        name = _temporary_target(tmp)
        if target is not None and name != target:
            continue
        with _if_unlocked(folder / f"{name}.lock") as free:
            if free:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                    removed.append(tmp)
    return removed


def remove_lock_file(path: Path) -> None:
    """Remove ``<path>.lock`` unless a builder holds it (then it stays: the build needs it)."""
    lock_path = Path(str(path) + ".lock")
    with _if_unlocked(lock_path) as free:
        if free:
            lock_path.unlink(missing_ok=True)
