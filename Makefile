# Batch CDP: `make run` (whole pipeline on generated data) and `make test` are all you need.
SHELL := /bin/bash
PYTHON_VERSION := 3.11
UV_VERSION := 0.13.8
UV := python3 -m uv
VENV := .venv
BIN := $(VENV)/bin
DATE ?= 2026-11-20
CUSTOMERS ?= 2000
export UV_PYTHON_DOWNLOADS := never

.DEFAULT_GOAL := help
.PHONY: help setup chromium run test test-slow serve lint bench cluster-demo clean distclean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-13s %s\n", $$1, $$2}'
	@echo "  variables: DATE=$(DATE) (logical date of make run), CUSTOMERS=$(CUSTOMERS) (generated people)"

SERVING_JAR := .cache/jars/serving/cdp-serving.jar

setup: $(VENV)/.installed .cache/jars/manifest.json $(SERVING_JAR) chromium ## create the venv from uv.lock, cache the Delta jars, compile the serving endpoint's classes, install Chromium if missing (idempotent)

$(VENV)/.installed: pyproject.toml uv.lock
	@command -v java >/dev/null || { echo "Java 17 is required (apt-get install openjdk-17-jre-headless)"; exit 1; }
	@python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet "uv==$(UV_VERSION)"
	# Bytecode compiled once here: every Airflow task, spark-submit and CLI call is a fresh interpreter,
	# and with PYTHONDONTWRITEBYTECODE set (as on CI) each would compile Airflow, GX and pandas again
	# (importing GX: 12 s of CPU from source, 3.5 s from bytecode).
	$(UV) sync --frozen --compile-bytecode --python $(PYTHON_VERSION)
	@touch $@

.cache/jars/manifest.json: $(VENV)/.installed conf/base.yaml
	$(BIN)/cdp setup-jars

# Compiled with javac against PySpark's jars (serving/java: authentication, the read-only parser, the audit).
$(SERVING_JAR): .cache/jars/manifest.json $(wildcard serving/java/cdp/serving/*.java)
	$(BIN)/cdp setup-jars

# Headless Chromium renders the run report in its test (skipped without it); apt-get needs root.
chromium:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else \
		echo "Chromium not found: the run report's browser test will be skipped (install it as root: apt-get install chromium)"; \
	fi

run: setup ## generate sample data, run the daily DAG in Airflow for DATE, print the run summary, score identity resolution
	$(BIN)/cdp generate --customers $(CUSTOMERS)
	$(BIN)/cdp airflow-run --date $(DATE)
	$(BIN)/cdp summary --date $(DATE)
	$(BIN)/cdp identity-quality

# Two workers, one test module each at a time (module fixtures such as the stage tier's warehouse are built once).
test: setup ## the suite CI runs: unit, the stage tier, a DAG run in Airflow, a JDBC client (not slow), on 2 workers
	$(BIN)/pytest -m "not slow" -n 2 --dist loadfile

test-slow: setup ## the slow end-to-end variants: the daily DAG backfilled in Airflow, every stage rebuilt, refit and erasure DAGs, the erasure search, a failing cleanse gate, cluster, the silver_reader serving role, audience syncs resent, resolution rerun, a household list
	$(BIN)/pytest -m slow

serve: setup ## serve the bi views over JDBC/ODBC (Spark Thrift Server), read-only, to users of cdp serve-user add
	$(BIN)/cdp serve

lint: setup ## ruff
	$(BIN)/ruff check .

bench: setup ## benchmark the 2,000-person demo (cdp run, cdp airflow-run), 100k and 1M customers through the pipeline (first day, day two) + baselines (hours; rewrites docs/BENCHMARKS.md)
	$(BIN)/cdp bench --command-line "make bench"

cluster-demo: setup ## the same pipeline on a Spark standalone cluster (master + 2 workers started here), by profile only
	$(BIN)/cdp cluster start
	trap '$(BIN)/cdp cluster stop' EXIT; set -e; export CDP_PROFILE=standalone; \
	$(BIN)/cdp generate --customers $(CUSTOMERS); \
	$(BIN)/cdp run --date $(DATE); \
	$(BIN)/cdp summary --date $(DATE); \
	$(BIN)/cdp identity-quality

clean: ## remove generated data, tables, Airflow state
	rm -rf data .airflow spark-warehouse metastore_db derby.log

distclean: clean ## also remove the venv and .cache (the jar cache, local PII keys, the serving users)
	rm -rf $(VENV) .cache
