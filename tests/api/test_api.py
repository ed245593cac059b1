"""HTTP API against create_app(Settings(...)) on the tiny bundle: contract, bad input, limits, reload, docs."""

from __future__ import annotations

import io
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
import numpy as np
import pytest
from apihelpers import BLUE, IMAGE_SIZE, RED, RunSpy, encode, model_input_of, png_bomb, solid, wait_ready
from fastapi.testclient import TestClient
from PIL import Image

import catsdogs
from catsdogs.inference.predictor import Predictor
from catsdogs.serve import app as app_module
from catsdogs.serve.app import create_app
from catsdogs.serve.routes import info as info_routes
from catsdogs.serve.settings import Settings
from support import wait_until

MiB = 1024 * 1024
ClientFactory = Callable[..., TestClient]


def post_image(client: TestClient, data: bytes, name: str = "x.jpg", ctype: str = "image/jpeg") -> httpx.Response:
    return client.post("/predict", files={"file": (name, data, ctype)})


def spy_on_model(client: TestClient, gate: threading.Event | None = None) -> RunSpy:
    predictor: Predictor = client.app.state.service.predictor  # type: ignore[attr-defined]
    spy = RunSpy(predictor.session, gate)
    predictor.session = spy  # type: ignore[assignment]
    return spy


@contextmanager
def prediction_held_in_model(client: TestClient) -> Iterator[tuple[RunSpy, dict[str, Any]]]:
    """One /predict from a thread, held inside the model until the block ends; its response is ``result["r"]``."""
    gate = threading.Event()
    spy = spy_on_model(client, gate)
    result: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: result.update(r=post_image(client, encode(solid(RED), "JPEG"))))
    worker.start()
    try:
        assert spy.started.wait(10)
        yield spy, result
    finally:
        gate.set()
        worker.join(10)


# --- info, health, readiness ------------------------------------------------------------------------------
def test_root_returns_api_info(client: TestClient) -> None:
    r = client.get("/", headers={"Accept": "application/json"})
    assert r.status_code == 200
    body = r.json()
    assert body["name"] == "Cats vs Dogs API" and body["message"] == "Cats vs Dogs Classification API"
    assert (body["docs"], body["health"], body["predict"]) == ("/docs", "/health", "/predict")
    assert body["model_version"] == "1.0.0-test"
    assert body["links"]["predict"] == "/predict" and body["links"]["ui"] == "/ui"


def test_page_served_for_browsers_and_at_ui(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = tmp_path / "index.html"
    page.write_text("<!doctype html><title>Cats vs Dogs</title>")
    monkeypatch.setattr(info_routes, "INDEX_HTML", page)
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    for r in (client.get("/", headers={"Accept": browser}), client.get("/ui")):
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/html")
        assert "Cats vs Dogs" in r.text
    assert client.get("/", headers={"Accept": "*/*"}).headers["content-type"] == "application/json"


def test_missing_page_is_503_not_a_crash(client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(info_routes, "INDEX_HTML", tmp_path / "absent.html")
    r = client.get("/ui")
    assert r.status_code == 503
    assert r.json()["code"] == "ui_not_available"
    assert client.get("/health").status_code == 200


def test_static_files_missing_directory_is_404(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(info_routes, "STATIC_DIR", tmp_path / "no-static-dir")
    with TestClient(create_app(Settings(model_path=str(tiny_bundle)))) as c:
        r = c.get("/static/app.js")
        assert r.status_code == 404 and r.json()["code"] == "not_found"
        assert 'route="/static",status="404"' in c.get("/metrics").text


def test_static_files_are_served(client: TestClient) -> None:
    static_dir = info_routes.STATIC_DIR
    files = [p for p in static_dir.glob("*") if p.is_file()] if static_dir.is_dir() else []
    assert files, f"no static files in {static_dir}: the web page's assets must ship with the package"
    r = client.get(f"/static/{files[0].name}")
    assert r.status_code == 200 and r.content == files[0].read_bytes()


def test_health(client: TestClient) -> None:
    r = client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"status", "model_loaded", "timestamp", "version"}
    assert body["status"] == "healthy" and body["model_loaded"] is True and body["version"] == catsdogs.__version__
    stamp = datetime.fromisoformat(body["timestamp"])
    assert stamp.utcoffset() == timedelta(0) and abs(datetime.now(UTC) - stamp) < timedelta(minutes=1)


def _ready_reason_is(client: TestClient, reason: str) -> httpx.Response | None:
    """The /ready answer once it gives ``reason``; until then it must be a 503."""
    r = client.get("/ready")
    assert r.status_code == 503, r.text
    return r if r.json()["reason"] == reason else None


def test_ready_503_until_loaded_and_warmed(make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    gate = threading.Event()
    real_warmup = Predictor.warmup

    def slow_warmup(self: Predictor, batch_sizes: Any = (1,)) -> float:
        assert gate.wait(timeout=30)
        return real_warmup(self, batch_sizes)

    monkeypatch.setattr(Predictor, "warmup", slow_warmup)
    client = make_client(wait=False)
    try:
        r = wait_until(lambda: _ready_reason_is(client, "the model is warming up"), "/ready to report the warm-up")
        assert r.status_code == 503 and r.json()["status"] == "not ready" and r.json()["ready"] is False
        assert r.json()["code"] == "not_ready" and r.json()["detail"] == "the model is warming up"
        health = client.get("/health")
        assert health.status_code == 200 and health.json()["model_loaded"] is False  # alive while loading
        p = post_image(client, encode(solid(RED), "JPEG"))
        assert p.status_code == 503 and p.json()["code"] == "not_ready"
        assert "Retry-After" in p.headers
    finally:
        gate.set()
    wait_ready(client)
    assert client.get("/ready").json() == {
        "status": "ready",
        "ready": True,
        "device": "cpu",
        "model": "catsdogs:1.0.0-test",
        "model_version": "1.0.0-test",
        "backend": "onnx",
    }


def test_failed_load_is_reported_by_ready_and_health(make_client: ClientFactory, tmp_path: Path) -> None:
    client = make_client(wait=False, model_path=str(tmp_path / "nothing-here"))
    wait_until(lambda: client.get("/ready").json()["reason"] != "the model is loading", "the load to end")
    ready = client.get("/ready")
    assert ready.status_code == 503 and "does not exist" in ready.json()["reason"]
    health = client.get("/health")
    assert health.status_code == 503 and health.json()["status"] == "unhealthy"
    assert health.json()["code"] == "model_load_failed" and health.json()["model_loaded"] is False
    assert post_image(client, encode(solid(RED), "JPEG")).status_code == 503


def test_model_info(client: TestClient) -> None:
    body = client.get("/model").json()
    assert body["version"] == "1.0.0-test"
    assert body["backend"] == "onnx"
    assert body["class_names"] == ["cat", "dog"]
    assert body["preprocess"]["image_size"] == IMAGE_SIZE
    assert body["metrics"]["accuracy"] == 0.5


def test_no_model_loaded_at_import_or_create_app(tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    monkeypatch.setattr(Predictor, "load", classmethod(lambda cls, *a, **k: calls.append(a)))
    create_app(Settings(model_path=str(tiny_bundle)))
    assert calls == []


# --- predictions ------------------------------------------------------------------------------------------
def test_predict_contract(client: TestClient) -> None:
    r = post_image(client, encode(solid(RED), "JPEG"), "red.jpg")
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {
        "prediction",
        "probability",
        "confidence",
        "probabilities",
        "inference_time_ms",
        "is_cat_or_dog",
        "pet_score",
        "uncertain",
        "reason",
        "looks_like",
        "looks_like_kind",
        "model_version",
        "request_id",
    }
    assert isinstance(body["is_cat_or_dog"], bool) and isinstance(body["uncertain"], bool)
    assert body["prediction"] == "cat" and body["confidence"] == body["probability"] > 0.99
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert body["model_version"] == "1.0.0-test"
    assert body["inference_time_ms"] >= 0
    assert r.headers["X-Request-ID"] == body["request_id"] and len(body["request_id"]) >= 16
    assert post_image(client, encode(solid(BLUE), "PNG"), "blue.png", "image/png").json()["prediction"] == "dog"


@pytest.mark.parametrize("ctype", ["image/jpeg", "image/png", "application/octet-stream"])
def test_raw_body_upload_gives_the_same_answer_as_multipart(client: TestClient, ctype: str) -> None:
    spy = spy_on_model(client)
    data = encode(solid(BLUE), "PNG")
    raw = client.post("/predict", content=data, headers={"Content-Type": ctype})
    multipart = post_image(client, data, "blue.png", "image/png")
    assert raw.status_code == multipart.status_code == 200, raw.text
    fields = ("prediction", "probability", "probabilities")
    assert [raw.json()[f] for f in fields] == [multipart.json()[f] for f in fields]
    assert raw.json()["prediction"] == "dog"
    np.testing.assert_array_equal(spy.batches[0], spy.batches[1])  # the model saw the same pixels


def test_raw_body_over_the_file_limit_is_413(make_client: ClientFactory) -> None:
    client = make_client(max_upload_bytes=1000)
    r = client.post("/predict", content=b"\xff" * 1500, headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 413 and r.json()["code"] == "too_large" and "1,500 bytes" in r.json()["detail"]


def test_request_id_is_echoed(client: TestClient) -> None:
    r = client.post(
        "/predict",
        files={"file": ("a.jpg", encode(solid(RED), "JPEG"), "image/jpeg")},
        headers={"X-Request-ID": "abc-123"},
    )
    assert r.headers["X-Request-ID"] == "abc-123" and r.json()["request_id"] == "abc-123"
    # Unsafe ids (log injection) are replaced.
    assert client.get("/health", headers={"X-Request-ID": "a b\nc"}).headers["X-Request-ID"] != "a b\nc"


def test_inference_runs_in_a_worker_thread_and_never_blocks_the_loop(client: TestClient) -> None:
    with prediction_held_in_model(client) as (spy, result):
        start = time.perf_counter()
        assert client.get("/health").status_code == 200  # the loop answers while the model "runs"
        assert time.perf_counter() - start < 2
    assert result["r"].status_code == 200
    assert spy.threads and spy.threads[0] != threading.main_thread().name


def test_real_photo(client: TestClient, uploads_dir: Path) -> None:
    r = post_image(client, (uploads_dir / "dog.4001.jpg").read_bytes(), "dog.4001.jpg")
    assert r.status_code == 200 and r.json()["prediction"] in ("cat", "dog")


# --- bad input: a clear 4xx, never a 500, and the server keeps serving ----------------------------------------
def _truncated_jpeg(uploads_dir: Path) -> bytes:
    data = (uploads_dir / "cat.4002.jpg").read_bytes()
    return data[: len(data) // 2]


BAD_UPLOADS: list[tuple[str, Callable[[Path], dict[str, Any]], int, str]] = [
    ("empty file", lambda _: {"files": {"file": ("a.jpg", b"", "image/jpeg")}}, 400, "empty"),
    ("text as jpeg", lambda _: {"files": {"file": ("a.jpg", b"hello, world" * 10, "image/jpeg")}}, 400, "not_an_image"),
    ("truncated jpeg", lambda u: {"files": {"file": ("a.jpg", _truncated_jpeg(u), "image/jpeg")}}, 400, "corrupt"),
    # A part that is not an image by its declared type: 400, with the machine code that says why.
    ("text type", lambda _: {"files": {"file": ("a.txt", b"hello", "text/plain")}}, 400, "unsupported_media_type"),
    (
        "pdf type",
        lambda _: {"files": {"file": ("a.pdf", b"%PDF-1.4", "application/pdf")}},
        400,
        "unsupported_media_type",
    ),
    ("missing field", lambda _: {"files": {"note": (None, b"hello")}}, 422, "missing_field"),
    ("no body at all", lambda _: {}, 422, "missing_field"),
    # The request itself is not multipart: 415.
    ("form urlencoded", lambda _: {"data": {"file": "x"}}, 415, "unsupported_media_type"),
    ("wrong field name", lambda _: {"files": {"image": ("a.jpg", b"x", "image/jpeg")}}, 422, "missing_field"),
    ("json body", lambda _: {"json": {"file": "x"}}, 415, "unsupported_media_type"),
    (
        "raw text body",
        lambda _: {"content": b"hello", "headers": {"Content-Type": "text/plain"}},
        415,
        "unsupported_media_type",
    ),
    (
        "raw body, not an image",
        lambda _: {"content": b"hello" * 10, "headers": {"Content-Type": "image/png"}},
        400,
        "not_an_image",
    ),
    ("raw body, empty", lambda _: {"content": b"", "headers": {"Content-Type": "image/jpeg"}}, 400, "empty"),
    ("png bomb 30000x30000", lambda _: {"files": {"file": ("b.png", png_bomb(), "image/png")}}, 413, "too_many_pixels"),
    (
        "png 8000x6000",
        lambda _: {"files": {"file": ("b.png", png_bomb(8000, 6000), "image/png")}},
        413,
        "too_many_pixels",
    ),
]


@pytest.mark.parametrize(("case", "request_kwargs", "status", "code"), BAD_UPLOADS, ids=[c[0] for c in BAD_UPLOADS])
def test_bad_input_is_a_clear_4xx(
    client: TestClient, uploads_dir: Path, case: str, request_kwargs: Any, status: int, code: str
) -> None:
    r = client.post("/predict", **request_kwargs(uploads_dir))
    assert r.status_code == status, r.text
    body = r.json()
    assert body["code"] == code
    if status == 422:  # FastAPI's own validation list, naming the missing field
        assert [e["loc"] for e in body["detail"]] == [["body", "file"]]
    else:  # a sentence, FastAPI's HTTPException convention
        assert isinstance(body["detail"], str) and len(body["detail"]) > 10
    # ... and the server keeps serving.
    assert post_image(client, encode(solid(RED), "JPEG")).status_code == 200


def test_bomb_is_refused_before_decoding(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[Any] = []
    real_load = Image.Image.load
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(self.size) or real_load(self))
    r = post_image(client, png_bomb(), "bomb.png", "image/png")
    assert r.status_code == 413 and "pixels" in r.json()["detail"]
    assert (30000, 30000) not in decoded


def test_message_names_the_limit(client: TestClient) -> None:
    r = post_image(client, png_bomb(8000, 6000), "b.png", "image/png")
    assert "8000x6000" in r.json()["detail"] and "40,000,000" in r.json()["detail"]


@pytest.mark.parametrize(
    ("fmt", "ctype", "kwargs"),
    [
        ("PNG", "image/png", {}),
        ("WEBP", "image/webp", {"lossless": True}),
        ("GIF", "image/gif", {}),
        ("BMP", "image/bmp", {}),
    ],
)
def test_other_formats_are_accepted(client: TestClient, fmt: str, ctype: str, kwargs: dict[str, Any]) -> None:
    r = post_image(client, encode(solid(RED), fmt, **kwargs), f"red.{fmt.lower()}", ctype)
    assert r.status_code == 200, r.text
    assert r.json()["prediction"] == "cat"


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animated_image_uses_the_first_frame(client: TestClient, fmt: str) -> None:
    frames = [solid(RED), solid(BLUE), solid((30, 220, 30))]
    kwargs: dict[str, Any] = {"save_all": True, "append_images": frames[1:], "duration": 100, "loop": 0}
    if fmt == "WEBP":
        kwargs["lossless"] = True
    data = encode(frames[0], fmt, **kwargs)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    r = post_image(client, data, f"anim.{fmt.lower()}", f"image/{fmt.lower()}")
    assert r.status_code == 200 and r.json()["prediction"] == "cat"  # red first frame; blue and green afterwards


def test_octet_stream_is_sniffed(client: TestClient) -> None:
    r = post_image(client, encode(solid(BLUE), "PNG"), "blob", "application/octet-stream")
    assert r.status_code == 200 and r.json()["prediction"] == "dog"


@pytest.mark.parametrize("mode", ["CMYK", "L", "RGBA", "LA", "P", "I;16"])
def test_any_colour_mode_reaches_the_model_as_rgb(client: TestClient, photo: Image.Image, mode: str) -> None:
    spy = spy_on_model(client)
    img = photo.convert(mode) if mode != "I;16" else photo.convert("L").convert("I;16")
    fmt = "JPEG" if mode in ("CMYK", "L") else "PNG"
    if mode == "I;16":
        fmt = "PNG"
    r = post_image(client, encode(img, fmt), f"x.{fmt.lower()}", f"image/{fmt.lower()}")
    assert r.status_code == 200, r.text
    assert spy.batches[-1].shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE)


def test_transparent_pixels_are_composited_on_white(client: TestClient) -> None:
    clear_blue = Image.new("RGBA", (40, 40), (*BLUE, 0))
    r = post_image(client, encode(clear_blue, "PNG"), "clear.png", "image/png")
    # White background (high red) -> "cat"; dropping alpha would leave blue -> "dog".
    assert r.status_code == 200 and r.json()["prediction"] == "cat"


def test_exif_rotated_photo_reaches_the_model_upright(client: TestClient, photo: Image.Image) -> None:
    spy = spy_on_model(client)
    exif = Image.Exif()
    exif[0x0112] = 6
    r = post_image(client, encode(photo, "PNG", exif=exif.tobytes()), "sideways.png", "image/png")
    assert r.status_code == 200
    np.testing.assert_array_equal(spy.batches[-1][0], model_input_of(photo.transpose(Image.Transpose.ROTATE_270)))


# --- size limits --------------------------------------------------------------------------------------------
def test_file_over_max_upload_bytes_is_413(make_client: ClientFactory) -> None:
    client = make_client(max_upload_bytes=100_000)
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8))
    big = encode(noise, "PNG")
    assert len(big) > 100_000 + 64 * 1024  # over the request-body limit too
    r = post_image(client, big, "noise.png", "image/png")
    assert r.status_code == 413 and r.json()["code"] == "too_large"
    assert r.headers.get("connection") == "close"
    # Between the file limit and the body limit (multipart overhead allowance): the per-file check.
    medium = encode(noise.crop((0, 0, 190, 190)), "PNG")
    assert 100_000 < len(medium) < 100_000 + 64 * 1024
    r = post_image(client, medium, "noise.png", "image/png")
    assert r.status_code == 413 and r.json()["code"] == "too_large"
    assert post_image(client, encode(solid(RED), "JPEG")).status_code == 200


def _counting(app: Any) -> tuple[Any, dict[str, int]]:
    """Wrap an ASGI app to count the request-body bytes it pulls."""
    seen = {"bytes": 0}

    async def wrapper(scope: Any, receive: Any, send: Any) -> None:
        async def counted() -> Any:
            message = await receive()
            seen["bytes"] += len(message.get("body", b""))
            return message

        await app(scope, counted, send)

    return wrapper, seen


def test_60mb_upload_with_content_length_is_refused_unread(tiny_bundle: Path) -> None:
    app = create_app(Settings(model_path=str(tiny_bundle)))
    wrapped, seen = _counting(app)
    calls: list[int] = []
    with TestClient(wrapped) as c:
        wait_ready(c)
        app.state.service.predictor.predict_bytes = lambda images: calls.append(len(images))  # type: ignore[method-assign]
        body = b"\0" * (60 * MiB)
        r = c.post("/predict", content=body, headers={"Content-Type": "multipart/form-data; boundary=xyz"})
        assert r.status_code == 413 and r.json()["code"] == "too_large"
        message = r.json()["detail"]
        assert "62,914,560 bytes" in message and "10,485,760 bytes" in message
        assert seen["bytes"] == 0  # not a byte of the body was read
        assert calls == []
        assert c.get("/health").status_code == 200


def test_60mb_chunked_upload_is_cut_off_while_streaming(tiny_bundle: Path) -> None:
    """No Content-Length: the limit counts streamed bytes and stops reading at ~10 MiB, not 60 MiB."""
    settings = Settings(model_path=str(tiny_bundle))
    app = create_app(settings)
    pulled = {"chunks": 0}
    boundary = "xyz"

    async def body() -> Any:
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        for _ in range(60):
            pulled["chunks"] += 1
            yield b"\xff" * MiB

    async def main() -> httpx.Response:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                # Ready first: a server that is not ready answers 503 before reading any of the body.
                for _ in range(500):
                    if (await c.get("/ready")).status_code == 200:
                        break
                    await anyio.sleep(0.01)
                return await c.post(
                    "/predict", content=body(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
                )

    r = anyio.run(main)
    assert r.status_code == 413, r.text
    assert r.json()["code"] == "too_large"
    assert "images of at most 10,485,760 bytes are accepted" in r.json()["detail"]
    assert pulled["chunks"] <= settings.body_limit // MiB + 1  # stopped right after the limit


def test_batch_has_its_own_body_limit(make_client: ClientFactory) -> None:
    client = make_client(max_upload_bytes=200_000, max_batch_files=4)
    noise = Image.fromarray(np.random.default_rng(1).integers(0, 255, (220, 220, 3), dtype=np.uint8))
    files = [("files", (f"n{i}.png", encode(noise, "PNG"), "image/png")) for i in range(3)]  # ~145 KB each
    r = client.post("/predict/batch", files=files)
    assert r.status_code == 200 and all("prediction" in x for x in r.json()["results"])


# --- batch ------------------------------------------------------------------------------------------------
def test_batch_mixed_results_in_order_with_one_model_run(client: TestClient, uploads_dir: Path) -> None:
    spy = spy_on_model(client)
    files = [
        ("files", ("red.jpg", encode(solid(RED), "JPEG"), "image/jpeg")),
        ("files", ("empty.jpg", b"", "image/jpeg")),
        ("files", ("blue.png", encode(solid(BLUE), "PNG"), "image/png")),
        ("files", ("notes.txt", b"hello", "text/plain")),
        ("files", ("junk.jpg", b"junk" * 50, "image/jpeg")),
        ("files", ("cut.jpg", _truncated_jpeg(uploads_dir), "image/jpeg")),
        ("files", ("bomb.png", png_bomb(), "image/png")),
        ("files", ("real.jpg", (uploads_dir / "dog.4002.jpg").read_bytes(), "image/jpeg")),
    ]
    r = client.post("/predict/batch", files=files)
    assert r.status_code == 200
    body = r.json()
    results = body["results"]
    assert [x["filename"] for x in results] == [f[1][0] for f in files]
    assert results[0]["prediction"] == "cat" and results[2]["prediction"] == "dog"
    assert "prediction" in results[7]
    codes = [x.get("error", {}).get("code") for x in results]
    assert codes == [None, "empty", None, "unsupported_media_type", "not_an_image", "corrupt", "too_many_pixels", None]
    assert len(spy.batches) == 1 and spy.batches[0].shape[0] == 3  # one model run for the 3 valid images
    assert body["model_version"] == "1.0.0-test" and body["request_id"] == r.headers["X-Request-ID"]


def test_batch_all_invalid_is_still_200(client: TestClient) -> None:
    r = client.post("/predict/batch", files=[("files", ("a.jpg", b"", "image/jpeg"))])
    assert r.status_code == 200 and r.json()["results"][0]["error"]["code"] == "empty"


def test_batch_too_many_files(make_client: ClientFactory) -> None:
    client = make_client(max_batch_files=3)
    files = [("files", (f"{i}.jpg", encode(solid(RED), "JPEG"), "image/jpeg")) for i in range(4)]
    r = client.post("/predict/batch", files=files)
    assert r.status_code == 413
    assert r.json() == {"detail": "4 files sent; at most 3 per request", "code": "too_many_files"}
    assert client.post("/predict/batch", files=files[:3]).status_code == 200


def test_batch_missing_field(client: TestClient) -> None:
    r = client.post("/predict/batch", files={"file": ("a.jpg", b"x", "image/jpeg")})
    assert r.status_code == 422 and r.json()["code"] == "missing_field"
    assert [e["loc"] for e in r.json()["detail"]] == [["body", "files"]]  # FastAPI's own validation list


# --- admin reload -----------------------------------------------------------------------------------------
def test_reload_disabled_without_token(client: TestClient) -> None:
    r = client.post("/admin/reload", headers={"Authorization": "Bearer anything"})
    assert r.status_code == 404 and r.json()["code"] == "not_found"


def test_reload_auth(make_client: ClientFactory) -> None:
    client = make_client(admin_token="s3cret")
    r = client.post("/admin/reload")
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
    r = client.post("/admin/reload", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 403 and r.json()["code"] == "forbidden"


def test_reload_swaps_atomically_in_flight_requests_finish_on_the_old_model(
    make_client: ClientFactory, tiny_bundle_v2: Path
) -> None:
    # No micro-batching: with it the new model's request would queue for the runner the held one occupies.
    client = make_client(admin_token="s3cret", micro_batch_size=1)
    auth = {"Authorization": "Bearer s3cret"}
    with prediction_held_in_model(client) as (_, result):  # a request is inside the old model
        r = client.post("/admin/reload", json={"model_path": str(tiny_bundle_v2)}, headers=auth)
        assert r.status_code == 200, r.text
        assert r.json()["previous_version"] == "1.0.0-test" and r.json()["model_version"] == "2.0.0-test"
        # New requests already use the new model while the old one is still busy.
        assert post_image(client, encode(solid(BLUE), "JPEG")).json()["model_version"] == "2.0.0-test"
    assert result["r"].status_code == 200 and result["r"].json()["model_version"] == "1.0.0-test"
    assert client.get("/model").json()["version"] == "2.0.0-test"
    metrics = client.get("/metrics").text
    assert 'model_info{backend="onnx",version="2.0.0-test"} 1.0' in metrics
    assert 'version="1.0.0-test"} 1.0' not in metrics


def test_reload_failure_keeps_the_old_model(make_client: ClientFactory, tmp_path: Path) -> None:
    client = make_client(admin_token="s3cret")
    r = client.post(
        "/admin/reload", json={"model_path": str(tmp_path / "missing")}, headers={"Authorization": "Bearer s3cret"}
    )
    assert r.status_code == 400 and r.json()["code"] == "model_load_failed"
    assert client.get("/ready").status_code == 200
    assert post_image(client, encode(solid(RED), "JPEG")).json()["model_version"] == "1.0.0-test"


@pytest.mark.parametrize("path", ["~no-such-user/bundle", "bundle\x00", "x" * 5000], ids=["tilde", "nul", "long"])
def test_reload_to_an_unusable_path_is_400_not_500(make_client: ClientFactory, path: str) -> None:
    """Found by schemathesis: these made pathlib raise RuntimeError/ValueError/OSError (a 500)."""
    client = make_client(admin_token="s3cret")
    r = client.post("/admin/reload", json={"model_path": path}, headers={"Authorization": "Bearer s3cret"})
    assert r.status_code == 400 and r.json()["code"] == "model_load_failed", r.text
    assert "not a usable model path" in r.json()["detail"]
    assert post_image(client, encode(solid(RED), "JPEG")).json()["model_version"] == "1.0.0-test"


def test_reload_default_path(make_client: ClientFactory) -> None:
    client = make_client(admin_token="s3cret")
    r = client.post("/admin/reload", headers={"Authorization": "Bearer s3cret"})
    assert r.status_code == 200 and r.json()["model_version"] == "1.0.0-test"


# --- docs -------------------------------------------------------------------------------------------------
def test_openapi_documents_every_error(make_client: ClientFactory) -> None:
    client = make_client(admin_token="s3cret")
    spec = client.get("/openapi.json").json()
    predict = spec["paths"]["/predict"]["post"]
    assert {"200", "400", "413", "415", "422", "503"} <= set(predict["responses"])
    examples = predict["responses"]["400"]["content"]["application/json"]["examples"]
    assert {"empty", "not_an_image", "corrupt"} <= set(examples)
    assert "example" in spec["components"]["schemas"]["PredictionResponse"]
    batch = spec["paths"]["/predict/batch"]["post"]
    assert {"200", "400", "413", "415", "422", "503"} <= set(batch["responses"])
    reload = spec["paths"]["/admin/reload"]["post"]
    assert {"200", "400", "401", "403", "404", "413", "415", "422"} <= set(reload["responses"])
    assert "503" in spec["paths"]["/model"]["get"]["responses"] and "503" in spec["paths"]["/"]["get"]["responses"]
    # The documented error bodies are the ones the API sends.
    error = spec["components"]["schemas"]["ErrorResponse"]
    assert error["properties"]["detail"]["type"] == "string" and set(error["required"]) == {"detail", "code"}
    assert predict["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ValidationErrorResponse"
    )
    assert client.get("/docs").status_code == 200


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_every_asset_from_this_server(client: TestClient, page: str) -> None:
    r = client.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    urls = re.findall(r"""(?:src|href|url)\s*[:=]\s*['"]([^'"]+)['"]""", r.text)
    assert urls and all(u.startswith("/") and not u.startswith("//") for u in urls), urls
    assert "https://" not in r.text and "http://" not in r.text
    for url in urls:
        asset = client.get(url)
        assert asset.status_code == 200, url
        if url.endswith(".js"):
            assert asset.headers["content-type"].startswith("text/javascript") and len(asset.content) > 100_000


def test_disabled_admin_api_is_not_documented(client: TestClient) -> None:
    assert "/admin/reload" not in client.get("/openapi.json").json()["paths"]
    r = client.post("/admin/reload")
    assert r.status_code == 404 and "CATSDOGS_ADMIN_TOKEN" in r.json()["detail"]


def test_unknown_docs_asset_is_404(client: TestClient) -> None:
    r = client.get("/docs/assets/../../etc/passwd")
    assert r.status_code == 404
    r = client.get("/docs/assets/secrets.txt")
    assert r.status_code == 404 and r.json()["code"] == "not_found"


def test_inference_limiter_is_bounded(client: TestClient) -> None:
    limiter = client.app.state.service.limiter  # type: ignore[attr-defined]
    batch = client.app.state.service.settings.micro_batch_size  # type: ignore[attr-defined]
    # one batch per model run the CPUs fit, plus one being decoded
    assert 1 <= limiter.total_tokens <= (app_module.available_cpus() + 1) * batch
