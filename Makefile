# pnyx: `make run` starts a local 3-node cluster, `make test` runs every check.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: all install run test lint typecheck contracts pytest sim-soak clean

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# mypy cannot follow setuptools' editable import hook, so it reads the packages
# through a tree of symlinks that mirrors the installed names (pnyx.core -> core/).
.typecheck/pnyx:
	mkdir -p .typecheck/pnyx
	ln -sfn ../../core .typecheck/pnyx/core
	ln -sfn ../../clients .typecheck/pnyx/clients
	ln -sfn ../../recipes .typecheck/pnyx/recipes

run: $(STAMP)
	$(BIN)/pnyx up --nodes 3

lint: $(STAMP)
	$(BIN)/ruff check core clients recipes tests examples
	$(BIN)/ruff format --check core clients recipes tests examples

typecheck: $(STAMP) .typecheck/pnyx
	$(BIN)/mypy .typecheck/pnyx

contracts: $(STAMP)
	$(BIN)/lint-imports

pytest: $(STAMP)
	$(BIN)/pytest -n 2 --dist loadgroup

test: lint typecheck contracts pytest

sim-soak: $(STAMP)
	$(BIN)/python -m pnyx.core.sim --seeds 5000

clean:
	rm -rf $(VENV) .typecheck .mypy_cache .pytest_cache .ruff_cache build *.egg-info
