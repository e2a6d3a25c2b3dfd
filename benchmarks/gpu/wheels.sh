#!/usr/bin/env bash
# Run HERE (where pip reaches PyPI), in the repository root, before the GPU check: downloads
# the wheels mmal needs that the GPU machine's Python 3.12 image lacks (pydantic and its
# parts; torch, numpy, h5py, pluggy, rich, pyyaml, filelock and scikit-learn are there) into
# ./.whl, which git ignores. Then carry `.whl` with the check (see benchmarks/README.md, GPU).
set -euo pipefail
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2
ls .whl
