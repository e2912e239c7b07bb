# Spaceport developer commands. `make demo` and `make test` are the README's two commands.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint crd check-crd bench images e2e clean

$(STAMP): pyproject.toml package.json package-lock.json
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: pip takes the local CPU build instead of a multi-GB CUDA download.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[stages,dev]'
	npm ci --no-audit --no-fund --loglevel=error
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/spaceport demo --out demo-out

test: setup
	$(BIN)/ruff check operator tests bench
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

crd: setup
	$(BIN)/spaceport crd crds/reconstructions.spaceport.dev.yaml charts/spaceport/crds/reconstructions.spaceport.dev.yaml

bench: setup
	$(BIN)/python bench/operator_latency.py

clean:
	rm -rf $(VENV) node_modules demo-out
