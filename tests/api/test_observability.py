"""Prometheus metrics (exact names of the contract) and structured request logs."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from apihelpers import BLUE, RED, encode, solid
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from catsdogs.serve import metrics as metrics_mod
from catsdogs.serve.logging import JsonFormatter, TextFormatter, configure_logging

ClientFactory = Callable[..., TestClient]


def samples(client: TestClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = client.get("/metrics").text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(s: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return s.get((name, frozenset(labels.items())), 0.0)


def test_metrics_contract(client: TestClient) -> None:
    for color in (RED, RED, BLUE):
        assert (
            client.post("/predict", files={"file": ("x.png", encode(solid(color), "PNG"), "image/png")}).status_code
            == 200
        )
    client.post("/predict", files={"file": ("x.jpg", b"", "image/jpeg")})
    client.post("/predict", files={"file": ("x.txt", b"hi", "text/plain")})
    client.post("/predict", files={"nope": ("x.jpg", b"hi", "image/jpeg")})
    batch = [("files", ("a.png", encode(solid(BLUE), "PNG"), "image/png")), ("files", ("b.jpg", b"junk", "image/jpeg"))]
    client.post("/predict/batch", files=batch)
    client.get("/no/such/page")
    s = samples(client)

    assert value(s, "predictions_total", predicted_class="cat") == 2
    assert value(s, "predictions_total", predicted_class="dog") == 2
    assert value(s, "prediction_errors_total", reason="empty") == 1
    assert value(s, "prediction_errors_total", reason="unsupported_media_type") == 1
    assert value(s, "prediction_errors_total", reason="missing_field") == 1
    assert value(s, "prediction_errors_total", reason="not_an_image") == 1  # the bad file of the batch
    assert value(s, "prediction_latency_seconds_count") == 4  # 3 single runs + 1 batch run
    assert value(s, "prediction_confidence_count") == 4
    assert value(s, "http_requests_total", method="POST", route="/predict", status="200") == 3
    assert value(s, "http_requests_total", method="POST", route="/predict", status="400") == 2  # empty, text/plain
    assert value(s, "http_requests_total", method="POST", route="/predict/batch", status="200") == 1
    # Unknown paths share one label value: a scanner cannot blow up the series count.
    assert value(s, "http_requests_total", method="GET", route="<unmatched>", status="404") == 1
    assert not any(dict(labels).get("route") == "/no/such/page" for _, labels in s)
    assert value(s, "http_request_duration_seconds_count", method="POST", route="/predict") == 6
    assert value(s, "http_requests_in_progress") == 1  # the /metrics request itself
    assert value(s, "model_info", version="1.0.0-test", backend="onnx") == 1


def test_413_before_routing_is_counted_with_its_route(make_client: ClientFactory) -> None:
    client = make_client(max_upload_bytes=1000)
    r = client.post("/predict", content=b"\0" * 200_000, headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert r.status_code == 413
    s = samples(client)
    assert value(s, "http_requests_total", method="POST", route="/predict", status="413") == 1
    assert value(s, "prediction_errors_total", reason="too_large") == 1


def test_reap_dead_workers(tmp_path: Path) -> None:
    live = tmp_path / f"gauge_livesum_{__import__('os').getpid()}.db"
    dead = tmp_path / "gauge_livemax_999999999.db"
    counter = tmp_path / "counter_999999999.db"
    for f in (live, dead, counter):
        f.write_bytes(b"")
    assert metrics_mod.reap_dead_workers(tmp_path) == [999999999]
    assert live.exists() and not dead.exists()
    assert counter.exists()  # counters of dead workers still count


def _access_records(text: str) -> list[dict[str, object]]:
    records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return [r for r in records if r["logger"] == "catsdogs.access"]


def test_one_json_access_line_per_request(client: TestClient, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", "INFO")  # rebind the handler to this test's captured stderr
    capsys.readouterr()
    secret = b"SECRET-PIXELS-" * 20
    client.post(
        "/predict",
        files={"file": ("cat.png", encode(solid(RED), "PNG"), "image/png")},
        headers={"X-Request-ID": "req-1"},
    )
    client.post("/predict", files={"file": ("x.jpg", secret, "image/jpeg")}, headers={"X-Request-ID": "req-2"})
    client.get("/health")
    err = capsys.readouterr().err
    records = _access_records(err)
    assert len(records) == 3
    ok, bad, health = records
    assert ok["request_id"] == "req-1" and ok["method"] == "POST" and ok["route"] == "/predict"
    assert ok["status"] == 200 and isinstance(ok["latency_ms"], float)
    assert ok["prediction"] == "cat" and isinstance(ok["confidence"], float)
    assert bad["request_id"] == "req-2" and bad["status"] == 400 and bad["error"] == "not_an_image"
    assert health["route"] == "/health" and "prediction" not in health
    assert "SECRET-PIXELS" not in err  # no image bytes in the logs


def test_text_log_format(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("text", "INFO")
    logging.getLogger("catsdogs.access").info("request", extra={"route": "/predict", "status": 200})
    err = capsys.readouterr().err
    assert "INFO catsdogs.access: request route=/predict status=200" in err
    assert not err.lstrip().startswith("{")


def test_formatters_keep_extra_fields_and_exceptions() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "failed %s", ("here",), __import__("sys").exc_info()
        )
    record.route = "/predict"
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "failed here" and line["route"] == "/predict" and "ValueError: boom" in line["exception"]
    assert "route=/predict" in TextFormatter().format(record)


def test_configure_logging_is_idempotent() -> None:
    configure_logging("json", "INFO")
    configure_logging("json", "DEBUG")
    ours = [h for h in logging.getLogger().handlers if h.get_name() == "catsdogs-serve"]
    assert len(ours) == 1
    assert logging.getLogger("uvicorn.access").disabled
