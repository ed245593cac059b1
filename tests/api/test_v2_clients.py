"""The real Open Inference Protocol clients, ``tritonclient[http]`` and ``kserve``'s ``InferenceRESTClient``,
against a live ``catsdogs serve`` of the shipped model, on real photos: they get /predict's answers, in JSON
and with the binary tensor data extension, and a clear 400 (404) for bad input.

The clients run from their own venv (``make oip-clients``; their pins clash with the project's lock) as a
subprocess: tests/api/v2_clients.py is the client program.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from apihelpers import ServerProcess
from prometheus_client.parser import text_string_to_metric_families

from catsdogs.core.paths import PROJECT_ROOT, SHARED_DATA_DIR

pytestmark = pytest.mark.slow

CLIENT = Path(__file__).with_name("v2_clients.py")
OIP_PYTHON = PROJECT_ROOT / ".cache" / "oip-venv" / "bin" / "python"
MAX_BATCH = 4
# Cats, dogs and one photo without either (the pet signal), in two requests of at most MAX_BATCH.
PHOTOS = ["cat.4001.jpg", "cat.4002.jpg", "dog.4001.jpg", "dog.4002.jpg", "cat.4003.jpg", "dog.4003.jpg"]
NON_PET = SHARED_DATA_DIR / "nonpet-dev" / "train__ants__0013035.jpg"


@dataclass
class Run:
    server: ServerProcess
    photos: list[Path]
    expected: list[dict[str, Any]]  # /predict's answers, in the clients' field names
    got: dict[str, Any]  # what v2_clients.py printed
    metrics_before: str
    metrics_after: str


def oip_python() -> Path:
    # make is the one place that builds the venv (and rebuilds it when requirements/oip-clients.txt changes).
    result = subprocess.run(
        ["make", "-s", "oip-clients"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900, check=False
    )
    assert result.returncode == 0, f"make oip-clients failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    assert OIP_PYTHON.is_file(), f"{OIP_PYTHON} missing after make oip-clients"
    return OIP_PYTHON


def predict_answer(url: str, photo: Path) -> dict[str, Any]:
    r = httpx.post(f"{url}/predict", files={"file": (photo.name, photo.read_bytes(), "image/jpeg")}, timeout=30)
    assert r.status_code == 200, r.text
    a = r.json()
    return {
        "label": a["prediction"],
        "probability": a["probability"],
        "probabilities": [a["probabilities"]["cat"], a["probabilities"]["dog"]],
        "is_cat_or_dog": a["is_cat_or_dog"],
        "pet_score": a["pet_score"],
        "uncertain": a["uncertain"],
        "reason": a["reason"] or "",
        "looks_like": a["looks_like"] or "",
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, shipped_bundle: Path, uploads_dir: Path) -> Iterator[Run]:
    python = oip_python()
    # ONNX Runtime fp32: the same answer for an image alone (/predict) or in a batch (V2), to the 6th decimal.
    env = {"CATSDOGS_BACKEND": "onnx", "CATSDOGS_MAX_BATCH_FILES": str(MAX_BATCH), "CATSDOGS_MICRO_BATCH_SIZE": "1"}
    server = ServerProcess(tmp_path_factory.mktemp("v2"), shipped_bundle, env=env)
    try:
        server.wait_ready()
        photos = [uploads_dir / name for name in PHOTOS] + [NON_PET]
        expected = [predict_answer(server.url, p) for p in photos]
        plan = {
            "url": server.url,
            "batches": [[str(p) for p in photos[:MAX_BATCH]], [str(p) for p in photos[MAX_BATCH:]]],
            "too_many": [str(p) for p in photos[: MAX_BATCH + 1]],
        }
        before = httpx.get(f"{server.url}/metrics").text
        result = subprocess.run(
            [str(python), str(CLIENT)], input=json.dumps(plan), capture_output=True, text=True, timeout=300, check=False
        )
        assert result.returncode == 0, f"{result.stderr[-4000:]}\nserver log:\n{server.logs()[-3000:]}"
        after = httpx.get(f"{server.url}/metrics").text
        yield Run(server, photos, expected, json.loads(result.stdout), before, after)
    finally:
        server.stop()


FLOATS = ("probability", "probabilities", "pet_score")


def assert_same_answers(got: list[dict[str, Any]], expected: list[dict[str, Any]], what: str) -> None:
    assert len(got) == len(expected), what
    for k, (g, e) in enumerate(zip(got, expected, strict=True)):
        # FP32 on the wire vs /predict's JSON numbers (rounded to 6 decimals)
        for name in FLOATS:
            assert g[name] == pytest.approx(e[name], abs=2e-6), (what, k, name)
        others = {n: v for n, v in g.items() if n not in FLOATS}
        assert others == {n: v for n, v in e.items() if n not in FLOATS}, (what, k)


@pytest.mark.parametrize(
    ("client", "encoding"),
    [("triton", "binary"), ("triton", "json"), ("kserve", "json"), ("kserve", "binary")],
)
def test_the_clients_get_predicts_answers(run: Run, client: str, encoding: str) -> None:
    assert_same_answers(run.got[client][encoding], run.expected, f"{client} {encoding}")


def test_the_answers_are_the_models(run: Run) -> None:
    # Not vacuous: the real model tells the photos apart, and the ants are "not a cat or a dog", so the
    # comparisons above carry both values of the BOOL outputs and a reason string.
    assert [a["label"] for a in run.expected[:-1]] == [name.split(".")[0] for name in PHOTOS]
    assert all(a["is_cat_or_dog"] for a in run.expected[:-1])
    assert run.expected[-1]["is_cat_or_dog"] is False and "cat or a dog" in run.expected[-1]["reason"]
    assert run.expected[-1]["looks_like"] == "ant" and all(not a["looks_like"] for a in run.expected[:-1])


def test_triton_with_a_model_version(run: Run) -> None:
    assert_same_answers(run.got["triton"]["versioned"], run.expected[:MAX_BATCH], "triton versioned")


def test_health_and_metadata_as_the_clients_read_them(run: Run) -> None:
    for client in ("triton", "kserve"):
        assert run.got[client]["live"] is True and run.got[client]["ready"] is True, client
        assert run.got[client]["model_ready"] is True, client
    assert run.got["triton"]["server_metadata"]["extensions"] == ["binary_tensor_data"]
    meta = run.got["triton"]["model_metadata"]
    version = httpx.get(f"{run.server.url}/ready").json()["model_version"]
    assert meta["name"] == "catsdogs" and meta["versions"] == [version]
    assert meta["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
    outputs = {o["name"]: (o["datatype"], o["shape"]) for o in meta["outputs"]}
    assert outputs == {
        "label": ("BYTES", [-1]),
        "probability": ("FP32", [-1]),
        "probabilities": ("FP32", [-1, 2]),
        "is_cat_or_dog": ("BOOL", [-1]),
        "pet_score": ("FP32", [-1]),
        "uncertain": ("BOOL", [-1]),
        "reason": ("BYTES", [-1]),
        "looks_like": ("BYTES", [-1]),
    }


BAD = [
    ("triton", "wrong_datatype", 400, ("datatype FP32", "BYTES")),
    ("triton", "wrong_shape", 400, ("shape [1, 1]", "[N]")),
    ("triton", "non_image", 400, ("image 0", "not an image")),
    ("triton", "too_many", 400, (f"{MAX_BATCH + 1} images", f"at most {MAX_BATCH}")),
    ("triton", "unknown_model", 404, ("no-such-model",)),
    ("kserve", "wrong_datatype", 400, ("datatype FP32", "BYTES")),
    ("kserve", "wrong_shape", 400, ("shape [1, 1]",)),
    ("kserve", "non_image", 400, ("image 0", "not an image")),
    ("kserve", "too_many", 400, (f"{MAX_BATCH + 1} images",)),
    ("kserve", "bad_base64", 400, ("not valid base64",)),
]


@pytest.mark.parametrize(("client", "case", "status", "words"), BAD, ids=[f"{c[0]}-{c[1]}" for c in BAD])
def test_bad_input_is_a_clear_4xx_for_the_clients(
    run: Run, client: str, case: str, status: int, words: tuple[str, ...]
) -> None:
    error = run.got[client]["errors"][case]
    assert error["status"] == status, error
    for word in words:  # the clients show the protocol's "error" message
        assert word in error["message"], (word, error)


def _samples(text: str, name: str, **labels: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_the_clients_show_up_in_predicts_metrics(run: Run) -> None:
    n = len(run.photos)
    images = 4 * n + MAX_BATCH  # four full passes and the versioned batch

    def delta(name: str, **labels: str) -> float:
        return _samples(run.metrics_after, name, **labels) - _samples(run.metrics_before, name, **labels)

    assert delta("predictions_total") == images
    assert delta("prediction_errors_total", reason="wrong_datatype") == 2
    assert delta("prediction_errors_total", reason="too_many_files") == 2
    assert delta("http_requests_total", route="/v2/models/{model_name}/infer", status="200") == 4 * 2
    assert delta("http_requests_total", route="/v2/models/{model_name}/versions/{model_version}/infer") == 1
