# knd: `make demo` and `make test` are the only set-up commands a fresh machine needs.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo
BENCH_DIR ?= bench/.work

.DEFAULT_GOAL := help
.PHONY: help install demo test test-fast test-chaos lint docs format bench clean

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

test: $(STAMP) lint docs  ## lint, build the docs site, then the whole test suite (unit, integration, e2e)
	$(BIN)/pytest -q --durations=15

test-fast: $(STAMP)  ## unit tests only (no Ray)
	$(BIN)/pytest -q tests/unit

test-chaos: $(STAMP)  ## the chaos tests alone: nodes and drivers killed mid-job on a 3-node local Ray
	$(BIN)/pytest -q -m chaos --durations=5

lint: $(STAMP)  ## ruff (check + format), hadolint (Dockerfile), actionlint (CI workflow)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint Dockerfile
	$(BIN)/actionlint .github/workflows/ci.yml .github/workflows/docs.yml

docs: $(STAMP)  ## build the documentation site into site/ (strict: a broken link or page fails)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

format: $(STAMP)  ## apply ruff's formatting and fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)  ## every benchmark on the 24-actor synthetic corpus; figures in bench/results/*.json
	$(BIN)/knd synth out=$(BENCH_DIR)/synth
	$(BIN)/knd prepare input=$(BENCH_DIR)/synth output=$(BENCH_DIR)/features
	$(BIN)/python bench/prepare.py --corpus $(BENCH_DIR)/synth
	$(BIN)/python bench/synth_difficulty.py --work $(BENCH_DIR)/difficulty --folds 1 --seeds 0
	$(BIN)/python bench/train.py --data $(BENCH_DIR)/features --recipe cpu_small --epochs 3
	$(BIN)/python bench/tune.py
	$(BIN)/python bench/score.py --actors 6

clean:  ## remove the demo output and caches (keeps .venv)
	rm -rf $(DEMO_DIR) site .pytest_cache .ruff_cache
