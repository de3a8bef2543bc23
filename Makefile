# IntelGraph Streams — the two set-up commands are `make demo` and `make test`.
# Both are idempotent: they create the venv, install, start the local stack and set it up.

SHELL := /bin/bash
.DEFAULT_GOAL := help
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
IGFLOW := $(BIN)/igflow
export PYICEBERG_HOME := $(CURDIR)/.stack
export IGFLOW_STACK_DIR ?= $(CURDIR)/.stack
PYTEST_ARGS ?=
# The unit tests' processes (pytest-xdist's -n: auto is one per core). The integration tests run
# one at a time: some pause, kill or restart the shared stack's servers.
UNIT_WORKERS ?= auto
UNIT_TESTS = $(BIN)/python -m pytest -m "not integration" -n $(UNIT_WORKERS) $(PYTEST_ARGS)
# make evidence: where the bundle goes, and where its SLO part comes from (live: the stack's
# Prometheus; none; or a file of `igflow slo --json`).
EVIDENCE_DIR ?= dist/evidence
EVIDENCE_SLO ?= live

.PHONY: help venv system stack-up up down status setup demo test check lint typecheck governance-check schemas-check unit integration bench bench-clean evidence wheel clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml setup.py psi/_build_sodium.py core/_build_rowhash.py core/_native.c | system
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[stack,dev]'
	@touch $@

venv: $(STAMP) ## create .venv and install the project with its pinned dependencies

system: ## install Postgres 15, Redis 7, Prometheus (and promtool), Chromium (the dashboard's page test), libsodium (PSI), OpenSSL headers (the digest), JDK 17 and Maven (Kafka, Neo4j) from Debian if missing (needs root)
	@if [ ! -x /usr/lib/postgresql/15/bin/postgres ] || ! command -v redis-server >/dev/null \
		|| [ ! -f /usr/include/sodium.h ] || [ ! -f /usr/include/openssl/sha.h ] || [ ! -x /usr/lib/jvm/java-17-openjdk-amd64/bin/java ] \
		|| ! command -v mvn >/dev/null || [ ! -x /usr/bin/prometheus ] || ! command -v promtool >/dev/null \
		|| [ ! -x /usr/bin/chromium ]; then \
		echo "installing postgresql-15, redis-server, prometheus, chromium, libsodium-dev, libssl-dev, openjdk-17-jdk-headless and maven"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			postgresql-15 redis-server prometheus chromium libsodium-dev libssl-dev openjdk-17-jdk-headless maven >/dev/null; \
	fi

stack-up: venv system ## start the local stack (Apache Kafka, Neo4j, registry, Postgres, Redis, Prometheus; the first start fetches the jars with Maven)
	$(BIN)/python -m dev start

up: stack-up

down: ## stop everything the stack started
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m dev stop; else echo "no venv: nothing to stop"; fi

status: venv ## show the local stack
	$(BIN)/python -m dev status

setup: stack-up ## register schemas, create topics and tables, write .pyiceberg.yaml
	$(IGFLOW) setup >/dev/null

demo: setup ## run the main job end to end: 10 tenants x 10,000 signals (5% duplicates, 2% invalid, tenant-03 drifts), the flow, the lake's small files compacted, the lake, the quarantine
	$(IGFLOW) produce --tenants 10 --count 10000 --duplicates 0.05 --invalid 0.02 --drift-tenant 3 --if-empty
	$(IGFLOW) run
	$(IGFLOW) compact
	$(IGFLOW) lake
	$(IGFLOW) quarantine list --rejects

wheel: venv ## build the wheel into dist/ (code, package data and the compiled psi._sodium)
	rm -rf build dist/intelgraph_streams-*.whl
	$(BIN)/python -m pip wheel --no-deps --wheel-dir dist .
	@ls dist/intelgraph_streams-*.whl

lint: venv ## ruff, and the layer contract (import-linter: layers only point down)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

typecheck: venv
	$(BIN)/mypy

schemas-check: setup ## the schema-governance gate: schemas/avro/ against the registry
	$(IGFLOW) schemas check

governance-check: venv ## contracts, field rules and the provenance schema agree (no services)
	$(IGFLOW) governance check

unit: venv ## fast tests only (no services; promtool checks and tests the SLO rules)
	$(UNIT_TESTS)

# The whole suite in two runs: the unit tests spread over the cores, then the integration tests
# one at a time on the local stack. A run that PYTEST_ARGS leaves without a test (pytest's exit
# code 5) is not a failure.
test: lint typecheck governance-check schemas-check ## set up everything, then run the whole test suite (what CI runs)
	$(UNIT_TESTS) || test $$? -eq 5
	$(BIN)/python -m pytest -m integration $(PYTEST_ARGS) || test $$? -eq 5

check: test

bench: setup ## benchmarks (figures for the README's Performance section and docs/performance.md)
	$(BIN)/python -m pip install --quiet -e '.[stack,dev,bench]'
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/stages.py
	$(BIN)/python benchmarks/sinks.py
	$(BIN)/python benchmarks/replay.py
	$(BIN)/python benchmarks/dedupe_memory.py --plot benchmarks/results/dedupe_memory.png --json benchmarks/results/dedupe_memory.json
	$(BIN)/python benchmarks/psi.py
	$(BIN)/python benchmarks/api.py

bench-clean: venv ## drop what the benchmarks left in the local stack (bench_* namespaces, bench.* topics, ...)
	$(BIN)/python benchmarks/cleanup.py

evidence: lint typecheck governance-check schemas-check ## the signed evidence bundle (dist/evidence/): the whole suite with JUnit and coverage, the SBOM, the latest benchmark results, the SLO report; exits with pytest's code
	rm -rf $(EVIDENCE_DIR)/run && mkdir -p $(EVIDENCE_DIR)/run
	@# The bundle is built and verified even when tests fail (it records the failures and
	@# pytest's exit code); make then fails with that exit code.
	status=0; export COVERAGE_FILE=$(EVIDENCE_DIR)/run/.coverage; \
	$(BIN)/python -m coverage run -m pytest $(PYTEST_ARGS) --junitxml=$(EVIDENCE_DIR)/run/junit.xml \
		|| status=$$?; \
	$(BIN)/python -m coverage json -q -o $(EVIDENCE_DIR)/run/coverage.json \
	&& $(IGFLOW) evidence build --out $(EVIDENCE_DIR)/evidence.tar.gz \
		--junit $(EVIDENCE_DIR)/run/junit.xml --coverage $(EVIDENCE_DIR)/run/coverage.json \
		--benchmarks benchmarks/results --slo $(EVIDENCE_SLO) --tests-exit-code $$status \
		--export-public-key $(EVIDENCE_DIR)/signing.pub \
	&& $(IGFLOW) evidence verify $(EVIDENCE_DIR)/evidence.tar.gz --public-key $(EVIDENCE_DIR)/signing.pub \
		--require sbom --require tests --require coverage --require policies --require schemas \
	&& exit $$status

clean: down
	rm -rf .stack $(VENV) build dist
