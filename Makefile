# airflow-parallel-batch: every target runs inside .venv, created by `make setup`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test test-fast lint format demo bench airflow cluster clean

setup: $(STAMP)

# Re-install only when the project's metadata changed (editable install: code changes need nothing).
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@# setuptools leaves its egg-info in plugins/, which is on sys.path: Airflow would then find
	@# our plugin entry point twice ("Plugin 'parallel_batch' already registered").
	rm -rf plugins/*.egg-info
	@touch $(STAMP)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The whole suite; `make test-fast` leaves out the cases marked slow.
test: setup lint
	$(BIN)/python -m pytest

test-fast: setup lint
	$(BIN)/python -m pytest -m "not slow"

# Embedded PostgreSQL, 1M demo events + a 200k-record CSV, both DAGs through real Airflow.
demo: setup
	$(BIN)/parallel-batch demo

bench: setup
	$(BIN)/python -m bench

# A local Airflow on http://localhost:8080 until Ctrl-C; seeds small demo data where it is missing.
airflow: setup
	$(BIN)/parallel-batch airflow

# The same with the CeleryExecutor: two named Celery workers on Redis (PARALLEL_BATCH_BROKER_URL,
# default redis://127.0.0.1:6379/0), for a user without Docker. Ctrl-C stops everything.
cluster: setup
	$(BIN)/parallel-batch cluster

clean:
	-$(BIN)/parallel-batch db stop
	rm -rf .parallel_batch .pytest_cache .mypy_cache .ruff_cache
