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

.PHONY: setup demo test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first: the pinned CPU wheel, so that no CUDA build is pulled in by a plain `torch`.
setup: $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test]" $(foreach p,$(PLUGINS),-e $(p))

demo: setup
	$(BIN)/mmal run

test: setup
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python benchmarks/run_loop.py

clean:
	rm -rf $(VENV) *.egg-info build dist mmal-results.db
