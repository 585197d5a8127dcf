# objfs developer tasks. `make setup` bootstraps a fresh Debian 12 machine
# (see scripts/setup.sh); every other target runs inside .venv.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SRC    := objfs tests bench

ARGS        ?=
PYTEST_ARGS ?=

.DEFAULT_GOAL := test
.PHONY: run test setup lint bench clean

setup: $(STAMP)

# Re-runs (apt check, venv, pip) only when pyproject.toml or the script changed.
$(STAMP): pyproject.toml scripts/setup.sh
	PYTHON=$(PYTHON) bash scripts/setup.sh

# Where FUSE is available the buckets are also mounted at ./objfs-mnt.
MOUNT := $(if $(wildcard /dev/fuse),--mount ./objfs-mnt,)

run: setup
	$(BIN)/objfs serve --data ./objfs-data $(MOUNT) $(ARGS)

lint: setup
	$(BIN)/ruff check $(SRC)
	$(BIN)/ruff format --check $(SRC)
	$(BIN)/mypy

# Two worker processes, each taking whole test files (a file's fixtures and its
# nodes stay in one process). PYTEST_ARGS="-n 0" runs everything in one process.
test: lint
	$(BIN)/pytest -q -n 2 --dist loadfile $(PYTEST_ARGS)

bench: setup
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
	find . -path ./.git -prune -o -path ./objfs-data -prune \
		-o -type d -name __pycache__ -prune -exec rm -rf {} +
