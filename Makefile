# The two commands of the README: `make run` and `make test`. Each does its own set-up.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)

.PHONY: help setup run train test test-fast test-compose test-deps lint format bench env stack-env clean

help:
	@echo "make run    set up, then the local stack (Airflow, MLflow, API) running the DAG once"
	@echo "make train  set up, then the pipeline in-process, without Airflow"
	@echo "make test   set up (Debian tools, services, .venv), then run the whole test suite"
	@echo "make test-fast  the same without the heavy tiers (docs/testing.md)"
	@echo "make test-compose  set up, then only the Docker Compose stack run for real"
	@echo "make lint   ruff check and ruff format --check"
	@echo "make bench  time each pipeline step"
	@echo "make env    write .env for the Docker stack with fresh random secrets"

# The environment comes from the committed uv.lock: nothing is resolved at install time.
$(BIN)/.synced: pyproject.toml uv.lock
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 \
		|| python3 -m pip install --quiet "uv>=0.5"
	$(UV) sync --frozen --all-extras --compile-bytecode
	@touch $@

setup: $(BIN)/.synced

# the embedded stack: MLflow UI :5000, Airflow :8080 running the DAG once, API :8800; Ctrl-C stops all
run: setup
	$(BIN)/heart-mlops up

train: setup
	$(BIN)/heart-mlops train

# what the tests need from the machine (tests/debian-packages.txt, PostgreSQL, Redis): as root,
# installs and starts what is missing; otherwise names it and stops
test-deps:
	@scripts/test_deps.sh

test: test-deps setup
	$(BIN)/pytest

# for development: everything but the heavy tiers (real Airflow runs, services, outages)
test-fast: test-deps setup
	$(BIN)/pytest -m "not heavy"

# docker-compose.yaml run for real on local stand-in images (docs/docker.md); as root
test-compose: test-deps setup
	$(BIN)/pytest -m compose_stack

# the same checks run in the test suite (tests/test_code_style.py)
LINTED := src tests benchmarks airflow scripts

lint: setup
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

format: setup
	$(BIN)/ruff format $(LINTED)

bench: setup
	$(BIN)/python benchmarks/bench_pipeline.py

# .env for Docker Compose: fresh random secrets and your AIRFLOW_UID (never overwrites .env)
env:
	python3 scripts/make_env.py

# regenerate docker-compose.yaml's settings block after deploy/stack.env.template changed
stack-env: setup
	$(BIN)/python scripts/compose_stack_env.py

clean:
	rm -rf $(VENV) .heart-mlops .pytest_cache .ruff_cache
