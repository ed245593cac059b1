"""The Open Inference Protocol (KServe V2) routes in-process, on the tiny bundle: the contract, the binary tensor
data extension, every kind of bad input (a clear 4xx in the protocol's error body, never a 500), and that
/v2 inference shares /predict's limits, admission control and metrics.

The real client libraries (tritonclient, kserve) against a live server: test_v2_clients.py.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from apihelpers import BLUE, RED, RunSpy, encode, solid
from fastapi.testclient import TestClient
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from support import wait_until

ClientFactory = Callable[..., TestClient]
INFER = "/v2/models/catsdogs/infer"
HEADER = "Inference-Header-Content-Length"
OUTPUTS = ["label", "probability", "probabilities", "is_cat_or_dog", "uncertain", "reason"]  # no pet detector


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def json_request(images: list[bytes], **extra: Any) -> dict[str, Any]:
    tensor = {"name": "image", "shape": [len(images)], "datatype": "BYTES", "parameters": {"content_type": "base64"}}
    return {"inputs": [{**tensor, "data": [_b64(i) for i in images]}], **extra}


def binary_request(images: list[bytes], **extra: Any) -> tuple[bytes, dict[str, str]]:
    raw = b"".join(struct.pack("<I", len(i)) + i for i in images)
    tensor = {
        "name": "image",
        "shape": [len(images)],
        "datatype": "BYTES",
        "parameters": {"binary_data_size": len(raw)},
    }
    head = json.dumps({"inputs": [tensor], **extra}).encode()
    return head + raw, {HEADER: str(len(head)), "Content-Type": "application/octet-stream"}


def decode_binary(response: httpx.Response) -> dict[str, Any]:
    """The outputs of a response, binary ones decoded as the extension says, as {name: list}."""
    length = int(response.headers.get(HEADER, len(response.content)))
    head, raw = json.loads(response.content[:length]), response.content[length:]
    out: dict[str, Any] = {}
    for o in head["outputs"]:
        if "data" in o:
            out[o["name"]] = o["data"]
            continue
        size = o["parameters"]["binary_data_size"]
        chunk, raw = raw[:size], raw[size:]
        if o["datatype"] == "BYTES":
            values, offset = [], 0
            while offset < len(chunk):
                (n,) = struct.unpack_from("<I", chunk, offset)
                values.append(chunk[offset + 4 : offset + 4 + n].decode())
                offset += 4 + n
            out[o["name"]] = values
        else:
            out[o["name"]] = np.frombuffer(chunk, dtype="<f4" if o["datatype"] == "FP32" else "?").tolist()
    assert raw == b"", "bytes left after the last binary output"
    return out


def as_predict(outputs: dict[str, Any], k: int) -> dict[str, Any]:
    """Image ``k`` of the V2 outputs in /predict's field names."""
    return {
        "prediction": outputs["label"][k],
        "probability": outputs["probability"][k],
        "probabilities": dict(zip(("cat", "dog"), outputs["probabilities"][2 * k : 2 * k + 2], strict=True)),
        "is_cat_or_dog": outputs["is_cat_or_dog"][k],
        "uncertain": outputs["uncertain"][k],
        "reason": outputs["reason"][k] or None,
    }


def predict(client: TestClient, image: bytes) -> dict[str, Any]:
    r = client.post("/predict", files={"file": ("a.jpg", image, "image/jpeg")})
    assert r.status_code == 200, r.text
    keep = ("prediction", "probability", "probabilities", "is_cat_or_dog", "uncertain", "reason")
    return {k: r.json()[k] for k in keep}


def assert_protocol_error(r: httpx.Response, status: int, code: str, *words: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) >= {"error", "code"} and "detail" not in body, body
    assert body["code"] == code, body
    for word in words:
        assert word in body["error"], (word, body)


@pytest.fixture(scope="module")
def photos(uploads_dir: Path) -> list[bytes]:
    """Three real uploads, made small (the tiny model takes 32 px: small is fast)."""
    out = []
    for name in ("cat.4001.jpg", "dog.4001.jpg", "cat.4002.jpg"):
        with Image.open(uploads_dir / name) as im:
            im = im.convert("RGB")
            im.thumbnail((160, 160))
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=90)
            out.append(buf.getvalue())
    return out


# --- server and model routes ------------------------------------------------------------------------------
def test_server_routes(client: TestClient) -> None:
    assert client.get("/v2").json() == {"name": "catsdogs", "version": "1.0.0", "extensions": ["binary_tensor_data"]}
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2/models/catsdogs/ready").json() == {"name": "catsdogs", "ready": True}
    assert client.get("/v2/models/catsdogs/versions/1.0.0-test/ready").status_code == 200


def test_model_metadata_describes_the_tensors(client: TestClient) -> None:
    meta = client.get("/v2/models/catsdogs").json()
    assert meta["name"] == "catsdogs" and meta["versions"] == ["1.0.0-test"]
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
    assert [(o["name"], o["datatype"], o["shape"]) for o in meta["outputs"]] == [
        ("label", "BYTES", [-1]),
        ("probability", "FP32", [-1]),
        ("probabilities", "FP32", [-1, 2]),
        ("is_cat_or_dog", "BOOL", [-1]),
        ("uncertain", "BOOL", [-1]),
        ("reason", "BYTES", [-1]),
    ]
    assert meta["outputs"][2]["parameters"] == {"class_names": "cat,dog"}
    assert client.get("/v2/models/catsdogs/versions/1.0.0-test").json() == meta


@pytest.mark.parametrize(
    "path", ["/v2/models/dogscats", "/v2/models/dogscats/ready", "/v2/models/catsdogs/versions/7/ready"]
)
def test_unknown_model_or_version_is_404(client: TestClient, path: str) -> None:
    assert_protocol_error(client.get(path), 404, "model_not_found", "catsdogs")


def test_unknown_model_infer_is_404_and_routing_errors_have_the_protocol_body(client: TestClient) -> None:
    body = json_request([encode(solid(RED), "PNG")])
    assert_protocol_error(client.post("/v2/models/dogscats/infer", json=body), 404, "model_not_found", "dogscats")
    assert_protocol_error(client.post(INFER.replace("infer", "versions/9/infer"), json=body), 404, "model_not_found")
    assert_protocol_error(client.get(INFER), 405, "method_not_allowed")
    assert_protocol_error(client.get("/v2/nothing-here"), 404, "not_found")
    # our own API keeps its own shape
    assert set(client.get("/nothing-here").json()) == {"detail", "code"}


def test_not_ready_answers(make_client: ClientFactory, tmp_path: Path) -> None:
    client = make_client(wait=False, model_path=str(tmp_path / "no-bundle"))
    wait_until(lambda: client.app.state.service.status == "failed", "the model load to fail")  # type: ignore[attr-defined]
    live = client.get("/v2/health/live")
    assert live.status_code == 503 and live.json()["live"] is False and "failed to load" in live.json()["error"]
    ready = client.get("/v2/health/ready")
    assert ready.status_code == 503 and ready.json()["ready"] is False
    model = client.get("/v2/models/catsdogs/ready")
    assert model.status_code == 503 and model.json()["ready"] is False
    assert_protocol_error(client.get("/v2/models/catsdogs"), 503, "not_ready")
    assert_protocol_error(client.post(INFER, json=json_request([b"x"])), 503, "not_ready")


# --- inference --------------------------------------------------------------------------------------------
def test_json_infer_gives_predicts_answers(client: TestClient, photos: list[bytes]) -> None:
    r = client.post(INFER, json=json_request(photos, id="req-1"))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json" and HEADER.lower() not in r.headers
    body = r.json()
    assert body["model_name"] == "catsdogs" and body["model_version"] == "1.0.0-test" and body["id"] == "req-1"
    assert body["parameters"]["inference_time_ms"] >= 0
    outputs = {o["name"]: o["data"] for o in body["outputs"]}
    assert [o["name"] for o in body["outputs"]] == OUTPUTS
    assert [o["shape"] for o in body["outputs"]][:3] == [[3], [3], [3, 2]]
    assert [as_predict(outputs, k) for k in range(3)] == [predict(client, p) for p in photos]


def test_binary_in_and_out_give_the_same_answers(client: TestClient, photos: list[bytes]) -> None:
    expected = client.post(INFER, json=json_request(photos)).json()
    expected_outputs = {o["name"]: o["data"] for o in expected["outputs"]}
    content, headers = binary_request(photos, parameters={"binary_data_output": True})
    r = client.post(INFER, content=content, headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream" and int(r.headers[HEADER]) < len(r.content)
    got = decode_binary(r)
    assert got.keys() == expected_outputs.keys()
    for name, values in expected_outputs.items():
        if name in ("probability", "probabilities"):  # FP32 in binary
            assert got[name] == pytest.approx(values, abs=1e-6), name
        else:
            assert got[name] == values, name
    # a binary request whose answer is JSON (no output asked in binary)
    content, headers = binary_request(photos)
    assert client.post(INFER, content=content, headers=headers).json()["outputs"] == expected["outputs"]


def test_requested_outputs_only_and_in_the_encoding_asked(client: TestClient, photos: list[bytes]) -> None:
    outputs = [{"name": "probabilities", "parameters": {"binary_data": True}}, {"name": "label"}]
    r = client.post(INFER, json=json_request(photos[:2], outputs=outputs))
    head = json.loads(r.content[: int(r.headers[HEADER])])
    assert [o["name"] for o in head["outputs"]] == ["probabilities", "label"]
    assert head["outputs"][0]["parameters"] == {"binary_data_size": 16} and "data" not in head["outputs"][0]
    full = {o["name"]: o["data"] for o in client.post(INFER, json=json_request(photos[:2])).json()["outputs"]}
    got = decode_binary(r)
    assert got["label"] == full["label"]
    assert got["probabilities"] == pytest.approx(full["probabilities"], abs=1e-6)
    unknown = client.post(INFER, json=json_request(photos[:1], outputs=[{"name": "logits"}]))
    assert_protocol_error(unknown, 400, "wrong_output", "logits", "probabilities")


def test_the_red_image_is_a_cat_and_the_blue_one_a_dog(client: TestClient) -> None:
    # the tiny model's rule: checks that every image reaches the model, in order, in both encodings
    images = [encode(solid(c), "PNG") for c in (RED, BLUE, BLUE, RED)]
    content, headers = binary_request(images, parameters={"binary_data_output": True})
    assert decode_binary(client.post(INFER, content=content, headers=headers))["label"] == ["cat", "dog", "dog", "cat"]


# --- bad input: a clear 400 in the protocol's body, never a 500 -------------------------------------------------
PNG = encode(solid(RED), "PNG")
_T = {"name": "image", "shape": [1], "datatype": "BYTES", "parameters": {"content_type": "base64"}, "data": [_b64(PNG)]}
BAD_JSON: list[tuple[str, Any, str, tuple[str, ...]]] = [
    ("not json", b"{not json", "invalid_request", ("Invalid JSON",)),
    ("empty body", b"", "invalid_request", ("empty",)),
    ("a list", [1, 2], "invalid_request", ("not an inference request",)),
    ("no inputs", {"outputs": []}, "invalid_request", ("inputs",)),
    ("two inputs", {"inputs": [_T, _T]}, "wrong_input", ("exactly one input",)),
    ("another name", {"inputs": [{**_T, "name": "input_1"}]}, "wrong_input", ("input_1", "'image'")),
    ("FP32", {"inputs": [{**_T, "datatype": "FP32", "data": [0.5]}]}, "wrong_datatype", ("FP32", "BYTES")),
    ("UINT8", {"inputs": [{**_T, "datatype": "UINT8", "data": list(PNG[:4])}]}, "wrong_datatype", ("UINT8",)),
    ("2-D shape", {"inputs": [{**_T, "shape": [1, 1]}]}, "wrong_shape", ("[1, 1]", "[N]")),
    ("scalar shape", {"inputs": [{**_T, "shape": []}]}, "wrong_shape", ("[]",)),
    ("negative", {"inputs": [{**_T, "shape": [-1]}]}, "wrong_shape", ("[-1]",)),
    ("zero images", {"inputs": [{**_T, "shape": [0], "data": []}]}, "wrong_shape", ("at least one",)),
    ("shape vs data", {"inputs": [{**_T, "shape": [2]}]}, "wrong_shape", ("[2]", "1 data")),
    ("a number", {"inputs": [{**_T, "data": [7]}]}, "wrong_datatype", ("element 0", "int")),
    ("nested", {"inputs": [{**_T, "data": [[_b64(PNG)]]}]}, "wrong_datatype", ("element 0", "list")),
    ("no data", {"inputs": [{k: v for k, v in _T.items() if k != "data"}]}, "invalid_request", ("no data",)),
    ("bad base64", {"inputs": [{**_T, "data": ["%%%"]}]}, "bad_base64", ("element 0",)),
    ("not an image", {"inputs": [{**_T, "data": [_b64(b"hello")]}]}, "not_an_image", ("image 0",)),
    ("empty image", {"inputs": [{**_T, "data": [""]}]}, "empty", ("image 0",)),
    (
        "plain string",
        {"inputs": [{**_T, "parameters": {}, "data": ["hello"]}]},
        "not_an_image",
        ("content_type=base64",),
    ),
    ("too many", {"inputs": [{**_T, "shape": [17], "data": [_b64(PNG)] * 17}]}, "too_many_files", ("17", "16")),
    ("size as text", {"inputs": [{**_T, "parameters": {"binary_data_size": "4"}}]}, "bad_binary_data", ("'4'",)),
]


@pytest.mark.parametrize(("case", "body", "code", "words"), BAD_JSON, ids=[c[0] for c in BAD_JSON])
def test_bad_json_requests_are_400(client: TestClient, case: str, body: Any, code: str, words: tuple[str, ...]) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = client.post(INFER, content=content, headers={"Content-Type": "application/json"})
    assert_protocol_error(r, 400, code, *words)


def _binary(raw: bytes, size: int | None = None, shape: int = 1, header: str | None = None) -> tuple[bytes, dict]:
    tensor: dict[str, Any] = {"name": "image", "shape": [shape], "datatype": "BYTES"}
    tensor["parameters"] = {"binary_data_size": len(raw) if size is None else size}
    head = json.dumps({"inputs": [tensor]}).encode()
    return head + raw, {HEADER: header if header is not None else str(len(head))}


_ONE = struct.pack("<I", len(PNG)) + PNG
BAD_BINARY: list[tuple[str, tuple[bytes, dict], tuple[str, ...]]] = [
    ("header not a number", _binary(_ONE, header="twelve"), ("twelve",)),
    ("header past the body", _binary(_ONE, header="99999"), ("99999",)),
    ("size vs bytes", _binary(_ONE, size=5), ("5", f"{len(_ONE)} bytes")),
    ("truncated element", _binary(_ONE[:-10]), ("only",)),
    ("stray bytes", _binary(_ONE + b"\x01\x02"), ("stray",)),
    ("count vs shape", _binary(_ONE, shape=2), ("1 length-prefixed", "says 2")),
]


@pytest.mark.parametrize(("case", "request_", "words"), BAD_BINARY, ids=[c[0] for c in BAD_BINARY])
def test_bad_binary_requests_are_400(client: TestClient, case: str, request_: tuple, words: tuple[str, ...]) -> None:
    content, headers = request_
    assert_protocol_error(client.post(INFER, content=content, headers=headers), 400, "bad_binary_data", *words)


def test_binary_bytes_without_binary_data_size_or_with_data_too(client: TestClient) -> None:
    head = json.dumps(json_request([PNG])).encode()
    r = client.post(INFER, content=head + _ONE, headers={HEADER: str(len(head))})
    assert_protocol_error(r, 400, "bad_binary_data", "no input has binary_data_size")
    both = json_request([PNG])
    both["inputs"][0]["parameters"]["binary_data_size"] = len(_ONE)
    head = json.dumps(both).encode()
    r = client.post(INFER, content=head + _ONE, headers={HEADER: str(len(head))})
    assert_protocol_error(r, 400, "bad_binary_data", "both")


# --- the same limits, admission control and metrics as /predict ----------------------------------------------
def test_the_upload_and_pixel_limits_of_predict(make_client: ClientFactory) -> None:
    client = make_client(max_upload_bytes=4096, max_batch_files=2)
    big = encode(Image.effect_noise((128, 128), 64).convert("RGB"), "PNG")
    assert len(big) > 4096
    assert_protocol_error(client.post(INFER, json=json_request([PNG, big])), 413, "too_large", "image 1", "4,096")
    # the body limit, on Content-Length, before the body is read (the body guard middleware)
    r = client.post(INFER, content=b"x" * 20_000_000, headers={"Content-Type": "application/json"})
    assert_protocol_error(r, 413, "too_large", "at most 2 images")
    too_many = {"inputs": [{**_T, "shape": [3], "data": [_b64(PNG)] * 3}]}
    assert_protocol_error(client.post(INFER, json=too_many), 400, "too_many_files", "at most 2")


def test_a_pixel_bomb_is_refused_as_predict_refuses_it(client: TestClient) -> None:
    from apihelpers import png_bomb

    assert_protocol_error(client.post(INFER, json=json_request([png_bomb()])), 413, "too_many_pixels", "image 0")


def _metric(client: TestClient, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def test_predict_metrics_count_v2_answers_and_errors(client: TestClient, photos: list[bytes]) -> None:
    client.post(INFER, json=json_request(photos))
    client.post(INFER, json={"inputs": [{**_T, "datatype": "FP32"}]})
    client.post(INFER, json={"inputs": [{**_T, "data": [_b64(b"hello")]}]})
    assert _metric(client, "predictions_total") == 3
    assert _metric(client, "prediction_latency_seconds_count") == 1  # one model run for the batch
    assert _metric(client, "prediction_errors_total", reason="wrong_datatype") == 1
    assert _metric(client, "prediction_errors_total", reason="not_an_image") == 1
    route = "/v2/models/{model_name}/infer"
    assert _metric(client, "http_requests_total", route=route, status="200") == 1
    assert _metric(client, "http_requests_total", route=route, status="400") == 2


@pytest.fixture
def held_request(make_client: ClientFactory) -> Iterator[TestClient]:
    """A server with room for one request, and a /predict held inside the model."""
    client = make_client(max_pending_requests=1, max_queue_wait_s=30)
    predictor = client.app.state.service.predictor  # type: ignore[attr-defined]
    gate = threading.Event()
    predictor.session = spy = RunSpy(predictor.session, gate)
    held = threading.Thread(target=lambda: client.post("/predict", files={"file": ("a.png", PNG, "image/png")}))
    held.start()
    try:
        assert spy.started.wait(20), "the held request never reached the model"
        yield client
    finally:
        gate.set()
        held.join(20)


def test_v2_infer_is_shed_by_the_same_admission_control(held_request: TestClient) -> None:
    r = held_request.post(INFER, json=json_request([PNG]))
    assert_protocol_error(r, 503, "overloaded", "capacity")
    assert r.headers["retry-after"] == "1"
    for probe in ("/v2/health/live", "/v2/health/ready", "/v2/models/catsdogs/ready"):  # never shed
        assert held_request.get(probe).status_code == 200, probe
