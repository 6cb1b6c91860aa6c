# Quick start:  make run   (set up, then run the main study)
#               make test  (set up, then run the test suite)
# TORCH picks the PyTorch build; the default is the CPU wheel. On a GPU machine use e.g.
#   make setup TORCH="torch --index-url https://download.pytorch.org/whl/cu128"
VENV  ?= .venv
TORCH ?= torch==2.13.0
PY    := $(VENV)/bin/python

.PHONY: setup run test variants clean

setup: $(VENV)/.installed

# torch first: a bare `torch` requirement on an empty venv would pull a multi-GB CUDA build
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e .
	touch $@

# the test extras (Triton for its interpreter, hypothesis, Playwright, ...) only for the tests
$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

run: setup
	$(VENV)/bin/ablate run studies/norm_placement.yaml

# in parallel (pytest-xdist): two workers a core, each pinned to it with everything it starts
# (tests/conftest.py); a test file stays on one worker, so its module fixtures are built once;
# files are handed out heaviest first (tests/file_seconds.json)
test: $(VENV)/.installed-test
	$(PY) -m pytest -q -n auto --dist loadfile --no-loadscope-reorder

variants: setup
	$(VENV)/bin/ablate variants

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
