##@ Serving: API + web page, predictions from the shell, benchmark
# MODEL: bundle directory or MLflow URI (default: the shipped models/); WORKERS: uvicorn worker processes.
MODEL ?=
WORKERS ?=
BENCH_ARGS ?=

.PHONY: run serve predict bench
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

bench: init ## API latency/throughput vs the seed-style baseline server (BENCH_ARGS="--requests 300 --json reports/bench.json")
	$(PY) scripts/bench.py $(if $(MODEL),--model $(MODEL)) $(BENCH_ARGS)
