# The two commands a new user needs: `make run` and `make test`. Everything else is a helper.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is installed on its own first: the pinned release lies on this project's build
# machines (CPU build); an open range would pull a multi-GB CUDA build. GPU users install
# their own CUDA torch into the venv before `make install` and it is kept.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
# Two lanes side by side (tests/support/lanes.py): the tests on the session's Ray cluster and
# PostgreSQL in one process, the rest in the other. PYTEST_WORKERS=0 runs them one by one.
PYTEST_WORKERS ?= 2

.PHONY: install run test lint typecheck unit bench bench-compare clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

run: install
	$(BIN)/adamp-tune serve

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

test: install lint typecheck
	scripts/ensure-test-services
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

bench: install
	$(BIN)/python -m benchmarks.optim_step

# Issue 7's evidence, all of it (hours on a 2-core machine: Ray Tune's default configuration
# starts an actor per trial): the service against Ray Tune and plain Optuna, the scale of
# one study, the paper's observation. Results print as markdown tables; the plot is written
# to benchmarks/results/weight_norms.png.
bench-compare: install
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[bench]'
	$(BIN)/python -m benchmarks.head_to_head compare --db sqlite postgres --reuse-actors
	$(BIN)/python -m benchmarks.head_to_head scale --budget-s 2700
	$(BIN)/python -m benchmarks.paper_claim norms
	$(BIN)/python -m benchmarks.paper_claim service

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
