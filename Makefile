# catsdogs: one entry point for every stage. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
# On a laptop, set TORCH_INDEX=https://download.pytorch.org/whl/cpu to get the CPU build of torch.
TORCH_INDEX ?=
PIP_INSTALL = $(BIN)/pip install --disable-pip-version-check -c requirements/lock.txt $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
# Local runs listen on this machine only; the container image binds 0.0.0.0 itself. HOST=0.0.0.0 to share.
HOST ?= 127.0.0.1
PORT ?= 8000
# glibc malloc tunables for training: the `catsdogs` CLI sets them itself (catsdogs.training.runtime.MALLOC_TUNABLES).

.PHONY: help
help: ## List the targets by area (NO_COLOR=1 for plain text)
	@awk -f mk/help.awk Makefile

##@ Setup
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q --upgrade pip

$(VENV)/.serve-installed: pyproject.toml requirements/lock.txt | $(BIN)/python
	$(PIP_INSTALL) -e .
	touch $@

$(VENV)/.all-installed: pyproject.toml requirements/lock.txt | $(BIN)/python
	$(PIP_INSTALL) -e '.[train,ray,dev]'
	touch $(VENV)/.serve-installed $@

.PHONY: init install install-serve
init: $(VENV)/.all-installed ## Create .venv and install everything (training, serving, Ray batch scoring, dev tools)
install: $(VENV)/.all-installed ## Install the package with all extras into .venv
install-serve: $(VENV)/.serve-installed ## Install only the serving runtime (no torch)

-include mk/serve.mk

##@ Data, training and experiment tracking (full environment: make init)
.PHONY: download data-setup train evaluate export validate pipeline dvc-remote mlflow-ui mlflow-demo
download: init ## Download the Kaggle data (needs Kaggle credentials; DOWNLOAD_DEST=dir, default data/raw)
	$(BIN)/catsdogs data download $(if $(DOWNLOAD_DEST),--dest $(DOWNLOAD_DEST))

data-setup: init ## Validate, de-duplicate and split the raw images into a manifest
	$(BIN)/catsdogs data prepare

train: init ## Train with params.yaml (override: make train ARGS="--epochs 5")
	$(BIN)/catsdogs train $(ARGS)

evaluate: init ## Evaluate the best checkpoint on the test split
	$(BIN)/catsdogs evaluate

export: init ## Export the best checkpoint to ONNX (+ INT8) into models/
	$(BIN)/catsdogs export

validate: init ## Quality gate; on success sets the registry alias champion
	$(BIN)/catsdogs validate

pipeline: init ## Run the whole DVC pipeline (prepare -> train -> calibrate -> evaluate -> export -> robustness -> card)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

# The committed default remote is a folder beside the checkout (every clone on one machine shares it).
# A team points its clones at shared storage once: make dvc-remote DVC_REMOTE=s3://bucket/catsdogs
dvc-remote: init ## Use DVC_REMOTE (path, s3://, gs://, ssh://) for dvc push/pull in this clone (.dvc/config.local)
	@test -n "$(DVC_REMOTE)" || { echo "usage: make dvc-remote DVC_REMOTE=<path or URL>"; exit 2; }
	$(BIN)/dvc remote add --local --force --default team "$(DVC_REMOTE)"
	@echo "dvc push / dvc pull now use $(DVC_REMOTE) (this clone only; see .dvc/config.local)"

# The MLflow UI needs neither torch nor the training stack: its own small venv, one worker.
MLFLOW_VENV ?= .cache/mlflow-venv
MLFLOW_PORT ?= 5000
MLFLOW_VERSION := $(shell sed -n 's/^mlflow==//p' requirements/lock.txt)

$(MLFLOW_VENV)/.installed: requirements/lock.txt
	$(PYTHON) -m venv $(MLFLOW_VENV)
	$(MLFLOW_VENV)/bin/pip install --disable-pip-version-check -q -c requirements/lock.txt mlflow==$(MLFLOW_VERSION)
	touch $@

# Job execution serves MLflow's GenAI features (7 extra huey processes); experiment tracking does not use it.
mlflow-ui: $(MLFLOW_VENV)/.installed ## MLflow UI on http://127.0.0.1:5000 (own venv without torch, 2 processes; empty? make mlflow-demo)
	@echo "MLflow UI: open http://127.0.0.1:$(MLFLOW_PORT)/#/experiments?workflowType=machine_learning" \
		"(the classic view; 'Model training' at the top left switches to it for good). Ctrl-C stops it."
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(MLFLOW_VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlruns.db \
		--host 127.0.0.1 --port $(MLFLOW_PORT) --workers 1

mlflow-demo: init ## Fill a fresh MLflow store with a tiny real run + registered model (minutes; models/ untouched)
	scripts/mlflow_demo.sh

##@ Tests and code quality
.PHONY: test test-quick lint format
# Tiers: docs/testing.md. The venv's tools (node/npm, kubectl, hadolint, actionlint) come first on PATH.
QUICK_TESTS := not slow and not docker and not heavy
TEST_ENV = PATH="$(abspath $(BIN)):$$PATH"
# Extra pytest options, e.g. PYTEST_ARGS="-p randomly --randomly-seed=123" (random order; see docs/testing.md).
PYTEST_ARGS ?=
test: init test-tools ## Full test suite (unit, data, model, integration, API, web, ops, docker)
	@mkdir -p reports
	rc=0; $(TEST_ENV) $(BIN)/pytest -q --junitxml=reports/junit.xml --cov=catsdogs --cov-report=xml:reports/coverage.xml \
		--cov-report=term:skip-covered $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests (exit 5): a broken selection or collection, not a pass" >&2; fi; \
	exit $$rc

.PHONY: test-tools
test-tools: init checkov-venv oip-clients ## npm-groovy-lint (Jenkinsfile check), checkov's venv, the V2 clients' venv (other system tools: sudo scripts/ops/install-tools.sh)
	$(TEST_ENV) scripts/ops/install-tools.sh --npm-only

test-quick: init ## Fast tests only, under a minute, in random order (no training, servers, containers, full data)
	$(TEST_ENV) $(BIN)/pytest -q -m "$(QUICK_TESTS)" -p randomly $(PYTEST_ARGS)

lint: init ## Ruff lint and format check; the import contracts between stages (docs/architecture.md)
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts
	$(BIN)/lint-imports

format: init ## Format and autofix
	$(BIN)/ruff format src tests scripts
	$(BIN)/ruff check --fix src tests scripts

-include mk/docker.mk
-include mk/ops.mk
