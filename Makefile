# Everything a user or CI needs goes through these targets; each sets itself up on a fresh machine.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-dev
PYTEST_ARGS ?=

.PHONY: install system-deps dashboard demo test lint bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev]"
	touch $@

install: $(STAMP)

# Chromium (kaleido export, browser tests) and Fashion-MNIST (offline real data), from Debian.
system-deps:
	@scripts/system-deps.sh

RUNS ?= runs
HOST ?= 127.0.0.1
PORT ?= 8050

# Main job: the dashboard over $(RUNS); trains small demo runs first when the folder holds none.
dashboard: install system-deps
	$(VENV)/bin/gradscope-dashboard --runs $(RUNS) --demo --host $(HOST) --port $(PORT)

# The recorder alone: a short real training and its Figure-6 heatmap exported to demo/.
demo: install system-deps
	$(PY) examples/quickstart.py --out demo

test: install system-deps
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check gradscope trainers app tests benchmarks examples
	$(VENV)/bin/mypy

bench: install
	$(PY) -m gradscope.bench

clean:
	rm -rf $(VENV) demo .pytest_cache
