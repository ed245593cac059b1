"""The registered champion as an MLflow pyfunc that takes image bytes (catsdogs.inference.pyfunc, docs/api.md).

The shipped bundle in models/ is registered into a fresh SQLite store by the registration `catsdogs validate`
runs when the gate passes (``tracking.promote_bundle``; the gate itself is tests/integration/test_gate.py).
Its answers on real photos, in-process and through a real ``mlflow models serve``, are compared with the
answers of ``POST /predict`` of the API on the same bundle.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import mlflow
import pandas as pd
import pytest
import yaml
from fastapi.testclient import TestClient

from catsdogs.core.paths import MODELS_DIR, PROJECT_ROOT
from catsdogs.release import registry as tracking
from catsdogs.serve.app import create_app
from catsdogs.serve.settings import Settings
from support import free_port, require_binary, use_mlflow_store, wait_http, wait_until

CHAMPION = f"models:/{tracking.REGISTERED_MODEL}@champion"
# /predict classifies one image per model run, the pyfunc a batch: on the bundle's bf16 backend the pet score
# (a similarity of bf16 features) moves by a few thousandths with the batch size. Everything else is equal.
PET_SCORE_TOLERANCE = 0.01


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """A fresh store holding the shipped bundle, registered as the gate registers it, with alias champion."""
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        use_mlflow_store(mp, uri)
        meta = json.loads((MODELS_DIR / "model.json").read_text())
        version = tracking.promote_bundle(MODELS_DIR, meta, "champion")
    assert version == "1"
    return uri


@pytest.fixture(autouse=True)
def _use_store(_mlflow_store, monkeypatch, store) -> None:  # after the integration conftest's own store
    use_mlflow_store(monkeypatch, store)


@pytest.fixture(scope="module")
def photos(uploads_dir) -> dict[str, bytes]:
    """Real photos: cats, dogs, a picture with neither (scikit-image's scanned page) and a corrupt JPEG."""
    import skimage

    files = sorted(uploads_dir.glob("cat.*.jpg"))[:3] + sorted(uploads_dir.glob("dog.*.jpg"))[:3]
    out = {f.name: f.read_bytes() for f in files}
    out["page.png"] = (Path(skimage.__file__).parent / "data" / "page.png").read_bytes()
    out["truncated.jpg"] = files[0].read_bytes()[:300]
    return out


@pytest.fixture(scope="module")
def api_answers(photos) -> dict[str, dict[str, Any]]:
    """What POST /predict answers for each photo (the error code for one it rejects)."""
    answers: dict[str, dict[str, Any]] = {}
    with TestClient(create_app(Settings(model_path=str(MODELS_DIR)))) as client:
        wait_until(lambda: client.get("/ready").status_code == 200, "the API to load the bundle")
        for name, data in photos.items():
            r = client.post("/predict", content=data, headers={"Content-Type": "image/jpeg"})
            answers[name] = r.json() if r.status_code == 200 else {"error": r.json()["code"]}
    assert answers["truncated.jpg"]["error"] == "corrupt"
    assert answers["page.png"]["is_cat_or_dog"] is False  # the pet signal is part of what must match
    return answers


def assert_same_answer(row: dict[str, Any], expected: dict[str, Any], name: str) -> None:
    if "prediction" not in expected:
        assert row["error"] == expected["error"] and row["error_message"], (name, row)
        assert row["prediction"] is None and row["probability"] is None, (name, row)
        return
    for key in ("prediction", "probability", "is_cat_or_dog", "uncertain"):
        assert row[key] == expected[key], (name, key, row[key], expected[key])
    assert row["pet_score"] == pytest.approx(expected["pet_score"], abs=PET_SCORE_TOLERANCE), name
    assert (row["reason"] is None) == (expected["reason"] is None), (name, row["reason"], expected["reason"])
    assert row["error"] is None, (name, row)


def test_the_champion_is_a_pyfunc_over_image_bytes_without_torch(store, uploads_dir):
    client = mlflow.MlflowClient()
    version = client.get_model_version_by_alias(tracking.REGISTERED_MODEL, "champion")
    assert version.tags[tracking.FORMAT_TAG] == tracking.PYFUNC_FORMAT
    model_dir = Path(mlflow.artifacts.download_artifacts(artifact_uri=version.source))
    mlmodel = yaml.safe_load((model_dir / "MLmodel").read_text())
    assert list(mlmodel["flavors"]) == ["python_function"]  # not the pytorch flavor
    inputs = json.loads(mlmodel["signature"]["inputs"])
    assert inputs == [{"type": "binary", "name": "image", "required": True}]
    outputs = {c["name"] for c in json.loads(mlmodel["signature"]["outputs"])}
    assert {"prediction", "probability", "is_cat_or_dog", "uncertain", "pet_score", "error"} <= outputs
    requirements = (model_dir / "requirements.txt").read_text().split()
    assert not [r for r in requirements if r.startswith("torch")], requirements
    assert {"onnxruntime", "openvino", "pillow", "mlflow"} <= {r.split("==")[0] for r in requirements}
    bundle = model_dir / mlmodel["flavors"]["python_function"]["artifacts"]["bundle"]["path"]
    assert (bundle / "model.onnx").is_file() and not (bundle / "model.pt").exists()

    # Loaded and run in a process where torch cannot be imported at all.
    script = (
        "import sys; sys.modules['torch'] = None\n"
        "import mlflow, pandas as pd\n"
        f"model = mlflow.pyfunc.load_model({CHAMPION!r})\n"
        "frame = pd.DataFrame({'image': [open(sys.argv[1], 'rb').read()]})\n"
        "print(model.predict(frame).to_json(orient='records'))\n"
    )
    photo = str(uploads_dir / "dog.4001.jpg")
    done = subprocess.run([sys.executable, "-c", script, photo], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    [row] = json.loads(done.stdout.strip().splitlines()[-1])
    assert row["prediction"] == "dog" and row["error"] is None


def test_load_model_predict_gives_the_answers_of_the_api(photos, api_answers):
    model = mlflow.pyfunc.load_model(CHAMPION)
    names = list(photos)
    # raw bytes and base64 strings, mixed in one frame
    values = [data if i % 2 else base64.b64encode(data).decode() for i, data in enumerate(photos.values())]
    out = model.predict(pd.DataFrame({"image": values}))
    assert len(out) == len(names)
    for name, row in zip(names, out.to_dict(orient="records"), strict=True):
        assert_same_answer(row, api_answers[name], name)

    bad = model.predict(pd.DataFrame({"image": ["not base64!", b"", 42]})).to_dict(orient="records")
    assert [r["error"] for r in bad] == ["not_base64", "empty", "not_bytes"]
    with pytest.raises(mlflow.exceptions.MlflowException, match="image"):
        model.predict(pd.DataFrame({"picture": [next(iter(photos.values()))]}))


def _documented_request() -> str:
    """The shell block of docs/api.md that builds the request and sends it with curl."""
    text = (PROJECT_ROOT / "docs" / "api.md").read_text()
    match = re.search(r"test_mlflow_pyfunc\.py runs the next block.*?\n```bash\n(.*?)```", text, re.S)
    assert match, "docs/api.md lost its mlflow invocations example"
    return match.group(1)


@pytest.fixture(scope="module")
def mlflow_server(store, tmp_path_factory):
    """A real `mlflow models serve -m models:/catsdogs@champion --env-manager local` on 127.0.0.1."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("mlflow-serve") / "serve.log"
    # mlflow execs `uvicorn` by name: the venv's bin folder must be on PATH even when pytest runs unactivated
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "MLFLOW_TRACKING_URI": store, "PATH": path}
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", CHAMPION, "--env-manager", "local"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with log_path.open("wb") as log:
        # its own process group: mlflow starts uvicorn as a child, and both must go at the end
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", timeout=120, process=proc, logs=log_path.read_text)
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_mlflow_models_serve_answers_the_documented_curl(mlflow_server, photos, api_answers, tmp_path):
    curl = require_binary("curl", "apt-get install curl")
    cat, dog = "cat.4001.jpg", sorted(n for n in photos if n.startswith("dog."))[0]
    (tmp_path / "cat.jpg").write_bytes(photos[cat])
    (tmp_path / "dog.jpg").write_bytes(photos[dog])
    script = _documented_request().replace("5001", str(mlflow_server)).replace("curl ", f"{curl} ", 1)
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)["predictions"]
    assert len(rows) == 2
    assert_same_answer(rows[0], api_answers[cat], cat)
    assert_same_answer(rows[1], api_answers[dog], dog)
    assert (rows[0]["prediction"], rows[1]["prediction"]) == ("cat", "dog")


def test_mlflow_models_serve_rows_for_bad_images_and_400_without_the_column(mlflow_server, photos, api_answers):
    url = f"http://127.0.0.1:{mlflow_server}/invocations"
    names = list(photos)
    records = [{"image": base64.b64encode(data).decode()} for data in photos.values()]
    r = httpx.post(url, json={"dataframe_records": records}, timeout=120)
    assert r.status_code == 200, r.text
    for name, row in zip(names, r.json()["predictions"], strict=True):
        assert_same_answer(row, api_answers[name], name)
    missing = httpx.post(url, json={"dataframe_split": {"columns": ["photo"], "data": [["aGVsbG8="]]}}, timeout=60)
    assert missing.status_code == 400 and "image" in missing.json()["message"]


def test_catsdogs_resolves_the_pyfunc_champion_to_its_bundle(photos, api_answers):
    from catsdogs.predictor import Predictor

    predictor = Predictor.load(CHAMPION)
    assert predictor.source == CHAMPION and (predictor.bundle_dir / "model.json").is_file()
    assert predictor.version == json.loads((MODELS_DIR / "model.json").read_text())["version"]
    cat = predictor.predict_bytes([photos["cat.4001.jpg"]])[0]
    assert cat.label == api_answers["cat.4001.jpg"]["prediction"]
