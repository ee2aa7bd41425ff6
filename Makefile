# Every target sets up what it needs by itself: a project-local virtual environment pinned by constraints.txt.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# $(call stamp,<venv>,<constraints file>): marks a venv as installed from exactly these inputs, so it is
# re-installed when pyproject.toml or its constraints change, and never otherwise.
stamp = $(1)/.installed-$(shell cat pyproject.toml $(2) | sha1sum | cut -c1-12)
STAMP := $(call stamp,$(VENV),constraints.txt)

# Older Airflow 3 minors: each runs in .venv-<minor>, installed from constraints/airflow-<minor>.txt (made by
# scripts/make_constraints.py; `make constraints` re-makes them all), and runs COMPAT_TESTS.
NEWEST_AIRFLOW := $(shell sed -n 's/^apache-airflow==//p' constraints.txt)
OLDER_AIRFLOW := 3.0.6 3.1.8 3.2.2
minor = $(basename $(1))
# $(call older_venv,<version>), ...: where an older version's venv, constraints file and install stamp live, named
# by its minor; spelled once here so the rules, `test-older`, `clean` and `constraints` cannot disagree.
older_venv = .venv-$(call minor,$(1))
older_constraints = constraints/airflow-$(call minor,$(1)).txt
older_stamp = $(call stamp,$(call older_venv,$(1)),$(call older_constraints,$(1)))
COMPAT_TESTS := tests/hooks tests/test_csv_records.py tests/frames/test_report.py \
	tests/operators tests/sensors tests/triggers tests/dags tests/test_provider.py tests/test_compat.py \
	tests/ui/test_plugin.py
# Left out there (about 100 s a version): daily-DAG runs that take the same Airflow path as one that stays and
# test the loader's or the lineage code's own logic (visit history, a broken facet, a failed load's lineage,
# the package without the OpenLineage provider); and (about 150 s a version) the eleven `dags test` runs of
# settings that plan refuses: plan's own checks run in-process on every version (test_daily_dag_integrity.py).
# The DataFrame benchmark's smoke test (12 s a version) runs on the newest only: it measures pandas, not Airflow.
COMPAT_DESELECT := \
	tests/dags/test_daily_dag_refuses_settings.py \
	tests/dags/test_daily_dag_runs.py::test_three_days_keep_each_visits_history_and_reruns_add_none \
	tests/dags/test_daily_dag_lineage.py::test_a_facet_that_cannot_be_built_is_logged_and_dropped \
	tests/dags/test_daily_dag_lineage.py::test_a_failed_load_names_what_it_was_about_and_claims_no_write \
	tests/dags/test_daily_dag_lineage.py::test_the_package_works_without_the_openlineage_provider

.PHONY: help test test-newest test-older test-fast test-mssql lint sandbox bench demo airflow clean constraints compose-smoke chromium

# $(call install,<venv>,<constraints file>)
define install
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python >= 3.11 is required" or 0)'
	$(PYTHON) -m venv $(1)
	@echo "Installing pinned dependencies into $(1) from $(2) (about a minute; log in $(1)/install.log)"
	@( $(1)/bin/python -m pip install --disable-pip-version-check --upgrade pip \
	  && $(1)/bin/python -m pip install --disable-pip-version-check -c $(2) -e ".[test]" \
	) > $(1)/install.log 2>&1 || (tail -n 40 $(1)/install.log; exit 1)
	rm -f $(1)/.installed-* && touch $@
endef

$(STAMP): pyproject.toml constraints.txt
	$(call install,$(VENV),constraints.txt)

# One venv and one test target per older minor: test-airflow-3.0, test-airflow-3.1, ...
define older
$(call older_stamp,$(1)): pyproject.toml $(call older_constraints,$(1))
	$$(call install,$(call older_venv,$(1)),$(call older_constraints,$(1)))

.PHONY: test-airflow-$(call minor,$(1))
## test-airflow-<minor>: the hook, operator, sensor, trigger (airflow dags test) and daily-DAG tests on Airflow <minor>
test-airflow-$(call minor,$(1)): $(call older_stamp,$(1))
	@echo "== Airflow $(1): $(COMPAT_TESTS)"
	$(call older_venv,$(1))/bin/pytest $(COMPAT_TESTS) $(addprefix --deselect ,$(COMPAT_DESELECT)) $(PYTEST_ARGS)
endef
$(foreach v,$(OLDER_AIRFLOW),$(eval $(call older,$(v))))

## test: lint, the whole test suite on the newest Airflow, then the Airflow-facing tests on each older minor
## test-newest: lint, then the whole test suite on the newest Airflow (the first half of `make test`)
## test-older: the Airflow-facing tests (COMPAT_TESTS) on each older minor in turn (the second half)
test: test-newest test-older

test-newest: lint chromium
	@echo "== Airflow $(NEWEST_AIRFLOW): the whole suite"
	$(BIN)/pytest $(PYTEST_ARGS)

OLDER_STAMPS := $(foreach v,$(OLDER_AIRFLOW),$(call older_stamp,$(v)))

# The older venvs are installed side by side (pip mostly waits on the network and the disk), then tested in turn.
test-older:
	@$(MAKE) --no-print-directory -j $(words $(OLDER_STAMPS)) $(OLDER_STAMPS)
	@$(MAKE) --no-print-directory $(foreach v,$(OLDER_AIRFLOW),test-airflow-$(call minor,$(v)))

## test-fast: the loop while editing: every test but the e2e, compose and slow ones, on the newest Airflow,
##   stopping at the first failure (no lint; PYTEST_ARGS adds pytest options, e.g. PYTEST_ARGS="tests/hooks")
test-fast: $(STAMP)
	$(BIN)/pytest -m "not e2e and not compose and not slow" -x $(PYTEST_ARGS)

## chromium: Debian's chromium package, the browser of the DexCare page test (tests/e2e/test_dexcare_page.py),
## installed when missing (apt-get; through sudo unless root)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
chromium:
	@command -v chromium >/dev/null || { echo "Installing Debian's chromium (the DexCare page test's browser)"; \
	  $(SUDO) apt-get install -y chromium || { $(SUDO) apt-get update && $(SUDO) apt-get install -y chromium; }; }

## test-mssql: the load scenarios (and the operator, the DAG and the demo) against a real SQL Server named by
## DEXCARE_TEST_MSSQL_URI=mssql://user:password@host:1433/database (e.g. the compose `mssql` profile)
test-mssql: $(STAMP)
	@test -n "$$DEXCARE_TEST_MSSQL_URI" || { echo "Set DEXCARE_TEST_MSSQL_URI=mssql://user:password@host:1433/database (see README: SQL Server)"; exit 2; }
	$(BIN)/pytest tests/load -m mssql -rs $(PYTEST_ARGS)

## lint: ruff on everything, mypy on plugins/ and dags/ (pyproject.toml [tool.mypy]), on the newest Airflow
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

## constraints: re-make constraints.txt and every constraints/airflow-<minor>.txt (after a dependency change)
constraints:
	$(PYTHON) scripts/make_constraints.py $(NEWEST_AIRFLOW) constraints.txt
	$(foreach v,$(OLDER_AIRFLOW),$(PYTHON) scripts/make_constraints.py $(v) $(call older_constraints,$(v)) &&) true

## sandbox: a local DexCare on http://127.0.0.1:8080 (token from DEXCARE_SANDBOX_TOKEN, default sandbox-token)
sandbox: $(STAMP)
	$(BIN)/python -m dexcare.sandbox --host 127.0.0.1 --port 8080

## bench: the load benchmark (ROWS=1000000 by default)
bench: $(STAMP)
	$(BIN)/python benchmarks/load_benchmark.py --rows $${ROWS:-1000000}

## clean: remove every venv this Makefile made and the pytest and ruff caches
clean:
	rm -rf $(VENV) $(foreach v,$(OLDER_AIRFLOW),$(call older_venv,$(v))) .pytest_cache .ruff_cache

## demo: the whole job end to end (sandbox + embedded PostgreSQL, two consecutive days through Airflow)
demo: $(STAMP)
	$(BIN)/python scripts/demo.py $(DEMO_ARGS)

## airflow: a local Airflow on http://127.0.0.1:8080 (login admin / admin): api-server, scheduler, dag-processor,
##   triggerer, DexCare sandbox, embedded PostgreSQL; Ctrl-C stops it all (AIRFLOW_ARGS="--reset", "--unpause")
airflow: $(STAMP)
	$(BIN)/python scripts/local_airflow.py $(AIRFLOW_ARGS)

## compose-smoke: docker-compose.airflow.yml on a real Docker engine: build, up, a DAG run, checks, down -v
##   (not part of `make test`; never pulls; e.g. COMPOSE="../shared/docker/offline-engine.sh compose")
COMPOSE ?= docker compose
compose-smoke: $(STAMP)
	$(BIN)/python scripts/compose_smoke.py --compose "$(COMPOSE)" $(SMOKE_ARGS)

## help: this list: each target and what it does, from the `## target: description` comment above it
help:
	@awk 'sub(/^## /, "") { if (match($$0, /^[A-Za-z0-9_.<>-]+: /)) { name = substr($$0, 1, RLENGTH - 2); \
	  text = substr($$0, RLENGTH + 1) } else { name = ""; text = $$0; sub(/^ +/, "", text) }; \
	  printf "  %-22s %s\n", name, text }' $(firstword $(MAKEFILE_LIST))
