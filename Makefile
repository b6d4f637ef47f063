# Everything a user or CI needs goes through these targets; each sets itself up on a fresh machine.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-dev
PYTEST_ARGS ?=

.PHONY: install system-deps dashboard screenshots demo test lint bench clean

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

# Main job: the dashboard over $(RUNS), answering within seconds; when the folder holds no run, small
# demo runs train in a background process and appear as they start (log: $(RUNS)/.demo/demo.log).
dashboard: install system-deps
	$(VENV)/bin/gradscope-dashboard --runs $(RUNS) --demo --host $(HOST) --port $(PORT)

# The README's images: every page of the dashboard over $(RUNS) in headless Chromium, into docs/img.
screenshots: install system-deps
	$(PY) -m app.screenshots --runs $(RUNS) --out docs/img

# The recorder alone: a short real training and its Figure-6 heatmap exported to demo/.
demo: install system-deps
	$(PY) examples/quickstart.py --out demo

test: install system-deps
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check gradscope trainers app tests benchmarks examples
	$(VENV)/bin/mypy

bench: install
	$(PY) benchmarks/recorder_overhead.py

clean:
	rm -rf $(VENV) demo .pytest_cache
