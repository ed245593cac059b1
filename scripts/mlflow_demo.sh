#!/usr/bin/env bash
# `make mlflow-demo`: a tiny but real pipeline run (train -> calibrate -> evaluate -> export) in the local MLflow
# store, so that `make mlflow-ui` has something to show on a fresh clone: one run with parameters,
# per-epoch metrics, plots, the serving bundle, and a registered model version (alias challenger).
#
# Everything else it writes (prepared data, cache, checkpoints, bundle) goes to a temporary folder:
# data/, artifacts/, reports/ and the shipped models/ are left alone. A few minutes on a laptop CPU.
# Needs the full environment (make init) and the images of data.source (params.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
read -r -a catsdogs <<<"${CATSDOGS:-.venv/bin/catsdogs}"
DEMO_LIMIT=${DEMO_LIMIT:-400}
DEMO_EPOCHS=${DEMO_EPOCHS:-2}

# The demo adds a (poor) version of the `catsdogs` model and moves its alias challenger: fine in a
# fresh store, not in one holding real runs unless asked.
runs_in_store() {  # 0 for a missing or empty store (`make mlflow-ui` creates an empty one)
    "$PY" -c 'import sqlite3, sys
try:
    print(sqlite3.connect(sys.argv[1]).execute("select count(*) from runs").fetchone()[0])
except sqlite3.Error:
    print(0)' "$1"
}
if [[ -z "${MLFLOW_TRACKING_URI:-}" && -e mlruns.db && "$(runs_in_store mlruns.db)" != 0 && "${FORCE:-0}" != 1 ]]; then
    echo "error: mlruns.db already holds runs; the demo would add a tiny model to it as a new version of" \
        "\`catsdogs\` (alias challenger). Use FORCE=1, or MLFLOW_TRACKING_URI=sqlite:///\$PWD/demo.db" >&2
    exit 2
fi

source_dir=$("$PY" -c 'from catsdogs.core.config import load_params; p = load_params(); print(p.path(p.data.source))')
if [[ ! -d "$source_dir" ]]; then
    echo "error: no images at $source_dir; run \`catsdogs data download\` and set" \
        "data.source: data/raw/dogs-vs-cats/train in params.yaml, or point it at a cat/dog folder" >&2
    exit 2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/catsdogs-mlflow-demo.XXXXXX")
trap 'rm -rf "$work"' EXIT
# Its own params file: relative paths in it resolve inside the temporary folder.
cat >"$work/params.yaml" <<YAML
data: {source: "$source_dir", prepared_dir: prepared, cache_dir: cache, limit: $DEMO_LIMIT}
model: {name: resnet_small, image_size: 64, dropout: 0.2}
train: {epochs: $DEMO_EPOCHS, batch_size: 32, output_dir: train}
export: {output_dir: bundle, calibration_images: 32}
YAML

# MLflow 3 opens experiments in its GenAI view unless the experiment says it is classic ML.
"$PY" - <<'PYTHON'
import mlflow

from catsdogs.training.tracking import setup_mlflow

experiment = setup_mlflow()
mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, "mlflow.experimentKind", "custom_model_development")
PYTHON

"${catsdogs[@]}" train --params "$work/params.yaml"
"${catsdogs[@]}" calibrate --params "$work/params.yaml" >/dev/null
"${catsdogs[@]}" evaluate --params "$work/params.yaml" >/dev/null
"${catsdogs[@]}" export --params "$work/params.yaml" >/dev/null
echo "MLflow store filled: one run of experiment catsdogs, model catsdogs with alias challenger." \
    "See it with: make mlflow-ui"
