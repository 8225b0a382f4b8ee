# The two commands: `make run` (set up + train the quickstart) and `make test` (set up + lint + tests).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: setup run test lint format bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# The CPU build of torch lies on this machine's disk; an unpinned torch may pull a CUDA build.
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e ".[dev]"
	touch $(STAMP)

run: setup
	$(VENV)/bin/evolstm train configs/quickstart.yaml

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: setup
	$(PIP) install --quiet -e ".[dev,bench]"
	$(PY) bench/throughput.py
	$(PY) bench/envs.py

clean:
	rm -rf $(VENV) runs wandb .pytest_cache
