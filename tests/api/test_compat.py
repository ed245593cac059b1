"""The original assignment's API contract, kept alongside ours (issue 12).

Written for this project, not copied: every field and status code that clients of the original API read is
asserted against a LIVE ``catsdogs serve`` subprocess on a free loopback port, with a plain HTTP client.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from apihelpers import ServerProcess
from PIL import Image

import catsdogs
from catsdogs.serve.settings import Settings


# --- environment variables of the original deployment ---------------------------------------------------------
@pytest.mark.parametrize(
    ("plain", "field", "value", "expected"),
    [
        ("MODEL_PATH", "model_path", "/srv/bundle", "/srv/bundle"),
        ("PORT", "port", "9123", 9123),
        ("HOST", "host", "127.0.0.9", "127.0.0.9"),
    ],
)
def test_original_env_names_are_aliases(
    monkeypatch: pytest.MonkeyPatch, plain: str, field: str, value: str, expected: object
) -> None:
    for name in (plain, f"CATSDOGS_{plain}"):
        monkeypatch.delenv(name, raising=False)
    default = getattr(Settings(), field)
    monkeypatch.setenv(plain, value)
    assert getattr(Settings(), field) == expected != default
    # Ours stays primary when both are set.
    monkeypatch.setenv(f"CATSDOGS_{plain}", str(default))
    assert getattr(Settings(), field) == default
    # Keyword arguments (tests, create_app callers) still use the field name.
    assert getattr(Settings(**{field: expected}), field) == expected


# --- a live server ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, tiny_bundle: Path) -> Iterator[httpx.Client]:
    server = ServerProcess(tmp_path_factory.mktemp("compat"), tiny_bundle)
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=10) as client:
            yield client
    finally:
        server.stop()


def _jpeg_1x1() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (1, 1), (200, 120, 40)).save(buf, "JPEG")
    return buf.getvalue()


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _assert_error(r: httpx.Response, status: int, code: str) -> None:
    """The original API's error body: ``detail`` is a sentence; our machine code sits beside it."""
    assert r.status_code == status, r.text
    body = r.json()
    assert isinstance(body["detail"], str) and len(body["detail"]) > 5
    assert body["code"] == code


@pytest.mark.slow
def test_root(live: httpx.Client) -> None:
    r = live.get("/")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["message"] == "Cats vs Dogs Classification API"
    assert body["version"] == catsdogs.__version__
    assert (body["docs"], body["health"], body["predict"]) == ("/docs", "/health", "/predict")
    assert live.get(body["docs"]).status_code == 200 and live.get(body["health"]).status_code == 200


@pytest.mark.slow
def test_health(live: httpx.Client) -> None:
    r = live.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "healthy"
    assert body["model_loaded"] is True
    assert body["version"] == catsdogs.__version__
    stamp = datetime.fromisoformat(body["timestamp"])  # ISO 8601, timezone-aware, UTC
    assert stamp.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - stamp) < timedelta(minutes=1)


@pytest.mark.slow
def test_ready(live: httpx.Client, tiny_bundle: Path) -> None:
    r = live.get("/ready")
    assert r.status_code == 200
    body = r.json()
    assert body["ready"] is True and body["status"] == "ready"
    assert body["device"] == "cpu"
    assert body["model"] == f"catsdogs:{body['model_version']}" == "catsdogs:1.0.0-test"
    # A model identifier, never the filesystem path of the bundle.
    assert not any(str(tiny_bundle) in s or s.startswith("/") for s in _strings(body))


@pytest.mark.slow
def test_predict_success_schema(live: httpx.Client, uploads_dir: Path) -> None:
    photo = (uploads_dir / "cat.4001.jpg").read_bytes()
    r = live.post("/predict", files={"file": ("cat.4001.jpg", photo, "image/jpeg")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["prediction"] in ("cat", "dog")
    assert isinstance(body["probability"], float) and 0.5 <= body["probability"] <= 1.0
    assert body["confidence"] == body["probability"]
    assert set(body["probabilities"]) == {"cat", "dog"}
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert body["probabilities"][body["prediction"]] == pytest.approx(body["probability"])
    assert isinstance(body["inference_time_ms"], float) and body["inference_time_ms"] > 0


@pytest.mark.slow
def test_no_file_at_all_is_422_with_fastapis_list(live: httpx.Client) -> None:
    for r in (live.post("/predict"), live.post("/predict", files={"image": ("a.jpg", _jpeg_1x1(), "image/jpeg")})):
        assert r.status_code == 422, r.text
        detail = r.json()["detail"]
        assert isinstance(detail, list) and detail[0]["loc"] == ["body", "file"] and detail[0]["type"] == "missing"
        assert r.json()["code"] == "missing_field"


@pytest.mark.slow
def test_a_part_that_is_not_an_image_is_400(live: httpx.Client) -> None:
    # By declared type ...
    r = live.post("/predict", files={"file": ("notes.txt", b"buy cat food", "text/plain")})
    _assert_error(r, 400, "unsupported_media_type")
    assert "text/plain" in r.json()["detail"]
    # ... and by content.
    _assert_error(
        live.post("/predict", files={"file": ("a.jpg", b"not a jpeg" * 20, "image/jpeg")}), 400, "not_an_image"
    )


@pytest.mark.slow
def test_truncated_1x1_jpeg_is_400_corrupt_not_500(live: httpx.Client) -> None:
    """The one deliberate difference: the original accepted a 500 for this; a truncated file is the client's error."""
    data = _jpeg_1x1()
    assert live.post("/predict", files={"file": ("one.jpg", data, "image/jpeg")}).status_code == 200
    _assert_error(live.post("/predict", files={"file": ("one.jpg", data[:-10], "image/jpeg")}), 400, "corrupt")


@pytest.mark.slow
def test_every_error_of_ours_has_the_fastapi_shape(live: httpx.Client) -> None:
    _assert_error(live.get("/no/such/path"), 404, "not_found")
    _assert_error(live.post("/admin/reload"), 404, "not_found")  # no admin token configured
    _assert_error(live.post("/predict", json={"file": "x"}), 415, "unsupported_media_type")
    _assert_error(live.delete("/predict"), 405, "method_not_allowed")
    big = {"file": ("big.jpg", b"\xff" * (11 * 1024 * 1024), "image/jpeg")}
    _assert_error(live.post("/predict", files=big), 413, "too_large")
