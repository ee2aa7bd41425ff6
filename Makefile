# Every target sets up what it needs by itself: a project-local virtual environment pinned by constraints.txt.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)

.PHONY: test test-mssql lint sandbox bench demo clean compose-smoke

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python >= 3.11 is required" or 0)'
	$(PYTHON) -m venv $(VENV)
	@echo "Installing pinned dependencies into $(VENV) (about a minute; log in $(VENV)/install.log)"
	@( $(BIN)/python -m pip install --disable-pip-version-check --upgrade pip \
	  && $(BIN)/python -m pip install --disable-pip-version-check -c constraints.txt -e ".[test]" \
	) > $(VENV)/install.log 2>&1 || (tail -n 40 $(VENV)/install.log; exit 1)
	rm -f $(VENV)/.installed-* && touch $@

## test: lint, then the whole test suite (sandbox over loopback, embedded PostgreSQL, real Airflow)
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest $(PYTEST_ARGS)

## test-mssql: the load scenarios (and the operator, the DAG and the demo) against a real SQL Server named by
## DEXCARE_TEST_MSSQL_URI=mssql://user:password@host:1433/database (e.g. the compose `mssql` profile)
test-mssql: $(STAMP)
	@test -n "$$DEXCARE_TEST_MSSQL_URI" || { echo "Set DEXCARE_TEST_MSSQL_URI=mssql://user:password@host:1433/database (see README: SQL Server)"; exit 2; }
	$(BIN)/pytest tests/load -m mssql -rs $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

## sandbox: a local DexCare on http://127.0.0.1:8080 (token from DEXCARE_SANDBOX_TOKEN, default sandbox-token)
sandbox: $(STAMP)
	$(BIN)/python -m dexcare.sandbox --host 127.0.0.1 --port 8080

## bench: the load benchmark (ROWS=1000000 by default)
bench: $(STAMP)
	$(BIN)/python benchmarks/load_benchmark.py --rows $${ROWS:-1000000}

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

## demo: the whole job end to end (sandbox + embedded PostgreSQL, two consecutive days through Airflow)
demo: $(STAMP)
	$(BIN)/python scripts/demo.py $(DEMO_ARGS)

## compose-smoke: docker-compose.airflow.yml on a real Docker engine: build, up, a DAG run, checks, down -v
##   (not part of `make test`; never pulls; e.g. COMPOSE="../shared/docker/offline-engine.sh compose")
COMPOSE ?= docker compose
compose-smoke: $(STAMP)
	$(BIN)/python scripts/compose_smoke.py --compose "$(COMPOSE)" $(SMOKE_ARGS)
