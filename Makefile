# fhirgraph: `make demo` runs a transfer end to end on the local stack; `make test` runs the suite.
# Both install what they need (Debian packages, the venv, Maven artifacts) on first use.

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTHON ?= python3
stackvar = $(shell bash -c 'source stack/config.env && printf %s "$$$(1)"')
HAPI_SOURCE_PORT := $(call stackvar,HAPI_SOURCE_PORT)
HAPI_TARGET_PORT := $(call stackvar,HAPI_TARGET_PORT)
NEO4J_BOLT_PORT := $(call stackvar,NEO4J_BOLT_PORT)
NEO4J_HTTP_PORT := $(call stackvar,NEO4J_HTTP_PORT)
NEO4J_USER := $(call stackvar,NEO4J_USER)
NEO4J_PASSWORD := $(call stackvar,NEO4J_PASSWORD)
SOURCE_URL := http://127.0.0.1:$(HAPI_SOURCE_PORT)/fhir
TARGET_URL := http://127.0.0.1:$(HAPI_TARGET_PORT)/fhir
DEMO_PATIENTS ?= 3
DEMO_SEED ?= 42

.PHONY: help setup system-deps stack stack-down test lint unit integration demo clean

help:
	@echo "make demo    start the stack, load Synthea patients into the source, transfer them, print the report"
	@echo "make test    start the stack and run lint, type checks, unit and integration tests"
	@echo "make stack   start the local stack (stack/up); make stack-down stops it"

system-deps:
	@stack/install-deps

$(STAMP): pyproject.toml
	@$(MAKE) --no-print-directory system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

setup: $(STAMP)

stack: setup
	stack/up

stack-down:
	stack/down

lint: setup
	$(BIN)/ruff check fhirgraph tests bench
	$(BIN)/ruff format --check fhirgraph tests bench
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest -q tests/unit

integration: stack
	$(BIN)/pytest -q tests/integration

test: setup lint stack
	$(BIN)/pytest tests

demo: stack
	@set -euo pipefail; \
	export NEO4J_URI=bolt://127.0.0.1:$(NEO4J_BOLT_PORT) NEO4J_USER=$(NEO4J_USER) NEO4J_PASSWORD='$(NEO4J_PASSWORD)'; \
	export FHIRGRAPH_SOURCE_URL=$(SOURCE_URL) FHIRGRAPH_TARGET_URL=$(TARGET_URL); \
	echo "== loading $(DEMO_PATIENTS) Synthea patients into the source (once)"; \
	ids=$$($(PY) -m fhirgraph.testing.synthea --patients $(DEMO_PATIENTS) --seed $(DEMO_SEED) --source $(SOURCE_URL)); \
	seeds=$$(for id in $$ids; do printf 'Patient/%s/$$everything ' "$$id"; done); \
	name=demo-$$(date +%Y%m%d-%H%M%S); \
	echo "== fhirgraph transfer --transfer $$name $$seeds"; \
	$(BIN)/fhirgraph transfer --transfer $$name $$seeds --progress; \
	echo "== fhirgraph verify --transfer $$name"; \
	$(BIN)/fhirgraph verify --transfer $$name; \
	$(BIN)/fhirgraph report --transfer $$name --out .stack/$$name.html; \
	echo "HTML report: .stack/$$name.html"; \
	echo; \
	echo "Neo4j Browser: a patient's neighbourhood (log in as $(NEO4J_USER), password from stack/config.env):"; \
	first=$$(echo $$ids | cut -d' ' -f1); \
	$(BIN)/fhirgraph browse patient --transfer $$name --param key=Patient/$$first

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
