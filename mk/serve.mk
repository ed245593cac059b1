##@ Serving: API + web page, predictions from the shell, benchmark
# MODEL: bundle directory or MLflow URI (default: the shipped models/); WORKERS: uvicorn worker processes.
MODEL ?=
WORKERS ?=
BENCH_ARGS ?=

.PHONY: run serve predict bench bench-overload
# The address to open: 0.0.0.0 listens everywhere, and localhost is one of those places.
OPEN_URL = http://$(if $(filter 0.0.0.0,$(HOST)),localhost,$(HOST)):$(PORT)

run: install-serve ## Start here: serving-only venv (no torch), shipped model + web page on http://127.0.0.1:8000
	@echo "Starting the Cats vs Dogs API: open $(OPEN_URL) in a browser once it says ready (Ctrl-C stops it)."
	@$(BIN)/catsdogs serve --host $(HOST) --port $(PORT) $(if $(MODEL),--model $(MODEL)) $(if $(WORKERS),--workers $(WORKERS))

serve: init ## The same server in the full venv, on HOST:PORT (127.0.0.1:8000; MODEL=dir or models:/catsdogs@champion, WORKERS=N)
	@echo "Starting the Cats vs Dogs API: open $(OPEN_URL) in a browser once it says ready (Ctrl-C stops it)."
	@$(BIN)/catsdogs serve --host $(HOST) --port $(PORT) $(if $(MODEL),--model $(MODEL)) $(if $(WORKERS),--workers $(WORKERS))

predict: install-serve ## Classify images from the shell: make predict IMAGES="a.jpg dir/" (FORMAT=table|csv|json)
	$(BIN)/catsdogs predict $(IMAGES) --format $(or $(FORMAT),table) $(if $(MODEL),--model $(MODEL))

bench: init bench-peers-venv ## Our API vs BentoML, LitServe and the seed-style server, with the physical bound (BENCH_ARGS="--requests 300 --json reports/bench.json")
	$(PY) scripts/bench.py $(if $(MODEL),--model $(MODEL)) $(BENCH_ARGS)

bench-overload: init ## 256 closed-loop clients of four kinds against catsdogs serve: accepted p50/p99, shed share, goodput (BENCH_ARGS="--json reports/overload_256.json")
	$(PY) scripts/bench_overload.py $(if $(MODEL),--model $(MODEL)) $(BENCH_ARGS)

# The Open Inference Protocol (KServe V2) clients that tests/api/test_v2_clients.py drives: tritonclient and kserve
# pin ml-dtypes and psutil below requirements/lock.txt, so they get a venv of their own (~500 MB, no torch).
OIP_VENV ?= .cache/oip-venv

$(OIP_VENV)/.installed: requirements/oip-clients.txt
	rm -rf $(OIP_VENV)
	$(PYTHON) -m venv $(OIP_VENV)
	$(OIP_VENV)/bin/pip install --disable-pip-version-check -q -r requirements/oip-clients.txt
	touch $@

.PHONY: oip-clients
oip-clients: $(OIP_VENV)/.installed ## tritonclient[http] + kserve in .cache/oip-venv (V2 protocol client tests; make test-tools)

# The peers of `make bench` (scripts/peers/): each framework in its own venv, every package pinned, so that
# our pins stay ours. --no-deps + pip check: nothing unpinned gets in. They run our src/ (bench.py sets PYTHONPATH).
BENCH_PEERS := bentoml litserve
.PHONY: bench-peers-venv
bench-peers-venv: $(foreach p,$(BENCH_PEERS),.cache/$(p)-venv/.installed) ## The peer servers' venvs for make bench (.cache/bentoml-venv, .cache/litserve-venv)

.cache/%-venv/.installed: requirements/bench-%.txt
	rm -rf .cache/$*-venv
	$(PYTHON) -m venv .cache/$*-venv
	.cache/$*-venv/bin/pip install --disable-pip-version-check -q --no-deps -r requirements/bench-$*.txt
	.cache/$*-venv/bin/pip check
	touch $@
