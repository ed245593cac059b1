# --- serving (M2): API + web page, CLI predictions, benchmark -----------------------------
# MODEL: bundle directory or MLflow URI (default: the shipped models/); WORKERS: uvicorn worker processes.
MODEL ?=
WORKERS ?=
BENCH_ARGS ?=

.PHONY: serve run bench predict
serve: init ## Serve the API + web page on HOST:PORT, default 0.0.0.0:8000 (MODEL=dir or models:/catsdogs@champion, WORKERS=N)
	$(BIN)/catsdogs serve --host $(HOST) --port $(PORT) $(if $(MODEL),--model $(MODEL)) $(if $(WORKERS),--workers $(WORKERS))

run: install-serve ## One command from a fresh clone: serving-only venv (no torch), shipped model + web page on 0.0.0.0:8000
	$(BIN)/catsdogs serve --host $(HOST) --port $(PORT) $(if $(MODEL),--model $(MODEL)) $(if $(WORKERS),--workers $(WORKERS))

predict: install-serve ## Classify images from the shell: make predict IMAGES="a.jpg dir/" (FORMAT=table|csv|json)
	$(BIN)/catsdogs predict $(IMAGES) --format $(or $(FORMAT),table) $(if $(MODEL),--model $(MODEL))

bench: init ## API latency/throughput vs the seed-style baseline server (BENCH_ARGS="--requests 300 --json reports/bench.json")
	$(PY) scripts/bench.py $(if $(MODEL),--model $(MODEL)) $(BENCH_ARGS)
