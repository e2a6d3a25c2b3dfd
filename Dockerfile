# The mmal image: a CUDA runtime, torch, mmal and its plugins, installed from a wheelhouse.
#
#   mmal docker build                      # builds ./wheelhouse, then this image (tag mmal:latest)
#   mmal docker run study.yaml             # runs `mmal run` inside, all GPUs, no network
#
# Everything pip installs comes from ./wheelhouse (built on the host by `mmal docker build`),
# so building the image needs no package index. Only a base image without Python needs the
# network, for apt-get (see PYTHON_PACKAGES).
#
# Build arguments:
#   BASE_IMAGE       the CUDA runtime image (any Debian/Ubuntu image works, e.g. a CPU one)
#   TORCH_VERSION    the torch wheel to install from the wheelhouse (its CUDA build is chosen
#                    when the wheelhouse is made: `mmal docker build --torch-index ...`)
#   PYTHON_PACKAGES  apt packages installed when the base image has no `python3 -m venv`
ARG BASE_IMAGE=nvidia/cuda:12.6.3-runtime-ubuntu22.04
FROM ${BASE_IMAGE}

ARG TORCH_VERSION=2.13.0
ARG PYTHON_PACKAGES="python3 python3-venv"
ARG MMAL_PACKAGES="mmal"
ARG USER_ID=1000

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/mmal/bin:$PATH \
    MMAL_CACHE_DIR=/data/cache \
    MMAL_DB=/data/results/mmal-results.db \
    HOME=/home/mmal

RUN if ! python3 -m venv --help >/dev/null 2>&1; then \
        apt-get update && apt-get install -y --no-install-recommends ${PYTHON_PACKAGES} \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && useradd --create-home --uid ${USER_ID} --shell /bin/sh mmal \
    && mkdir -p /data/cache /data/results \
    && chown -R mmal /data

COPY wheelhouse /wheelhouse
RUN python3 -m venv /opt/mmal \
    && /opt/mmal/bin/pip install --no-cache-dir --no-index --find-links /wheelhouse \
        "torch==${TORCH_VERSION}" ${MMAL_PACKAGES} \
    && rm -rf /wheelhouse \
    && mmal --version

USER mmal
WORKDIR /data/results
VOLUME ["/data/cache", "/data/results"]
ENTRYPOINT ["mmal"]
CMD ["--help"]
