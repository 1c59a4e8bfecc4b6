# knd: `make demo` and `make test` are the only set-up commands a fresh machine needs.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo

.DEFAULT_GOAL := help
.PHONY: help install demo test test-fast lint format bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install knd with its test extras

demo: $(STAMP)  ## synth -> prepare -> train -> evaluate -> score on the synthetic corpus (local Ray)
	bash scripts/demo.sh $(DEMO_DIR)

test: $(STAMP) lint  ## lint, then the whole test suite (unit, integration, e2e)
	$(BIN)/pytest -q

test-fast: $(STAMP)  ## unit tests only (no Ray)
	$(BIN)/pytest -q tests/unit

lint: $(STAMP)  ## ruff check + ruff format --check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)  ## apply ruff's formatting and fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)  ## benchmarks; figures go to bench/results/*.json
	$(BIN)/python bench/synth_difficulty.py

clean:  ## remove the demo output and caches (keeps .venv)
	rm -rf $(DEMO_DIR) .pytest_cache .ruff_cache
