"""Real `catsdogs serve` processes on 127.0.0.1: multi-worker metrics and streaming upload limits."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from apihelpers import RED, ServerProcess, encode, solid
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.slow
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_bundle: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("server"), tiny_bundle, workers=1)
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory, tiny_bundle: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("server2"), tiny_bundle, workers=2)
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


def _metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def _pids_that_predicted(server: ServerProcess) -> set[int]:
    return {
        r["pid"]
        for r in server.log_records()
        if r.get("logger") == "catsdogs.access" and r.get("route") == "/predict" and r.get("status") == 200
    }


def test_two_workers_metrics_count_every_request(two_workers: ServerProcess) -> None:
    image = encode(solid(RED), "JPEG")
    sent = 0
    # A new connection per request lets the kernel hand requests to either worker; go on until both answered.
    while sent < 10 or (len(_pids_that_predicted(two_workers)) < 2 and sent < 300):
        with httpx.Client(base_url=two_workers.url, timeout=10) as c:
            r = c.post("/predict", files={"file": ("red.jpg", image, "image/jpeg")})
        assert r.status_code == 200
        sent += 1
    assert len(_pids_that_predicted(two_workers)) == 2, "only one worker answered"
    for _ in range(4):  # each scrape may land on either worker: all of them must report the totals
        with httpx.Client(base_url=two_workers.url, timeout=10) as c:
            text = c.get("/metrics").text
        assert _metric(text, "predictions_total", predicted_class="cat") == sent
        assert _metric(text, "http_requests_total", method="POST", route="/predict", status="200") == sent
        assert _metric(text, "prediction_latency_seconds_count") == sent
        assert _metric(text, "model_info", version="1.0.0-test", backend="onnx") == 1


def _vm_hwm_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
    assert match
    return int(match.group(1))


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    sock.settimeout(15)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def _head(port: int, extra: str) -> bytes:
    return (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: multipart/form-data; boundary=xyz\r\n" + extra + "\r\n"
    ).encode()


def test_content_length_over_limit_is_refused_before_the_body_is_sent(server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=15) as sock:
        sock.sendall(_head(server.port, f"Content-Length: {60 * MiB}\r\n"))  # headers only: no body at all
        status, headers, body = _read_response(sock)
    assert status == 413
    assert headers.get("connection") == "close"
    assert json.loads(body)["code"] == "too_large"


def test_chunked_60mb_upload_is_cut_off_while_streaming(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        assert (
            c.post("/predict", files={"file": ("r.jpg", encode(solid(RED), "JPEG"), "image/jpeg")}).status_code == 200
        )
    peak_before = _vm_hwm_kb(server.proc.pid)
    sent = {"bytes": 0}
    part_head = (
        b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=15) as sock:
        sock.sendall(_head(server.port, "Transfer-Encoding: chunked\r\n"))

        def upload() -> None:
            payload = b"\xff" * MiB
            try:
                sock.sendall(f"{len(part_head):x}\r\n".encode() + part_head + b"\r\n")
                for _ in range(60):
                    sock.sendall(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
                    sent["bytes"] += len(payload)
            except OSError:  # the server answered 413 and closed the connection
                pass

        writer = threading.Thread(target=upload, daemon=True)
        writer.start()
        status, _headers, body = _read_response(sock)
        writer.join(timeout=30)
    assert status == 413 and json.loads(body)["code"] == "too_large"
    print(f"sent {sent['bytes'] / MiB:.0f} MiB before the 413")
    assert sent["bytes"] < 45 * MiB, "the server read the whole upload"  # ~10 MiB limit + socket buffers
    growth_mb = (_vm_hwm_kb(server.proc.pid) - peak_before) / 1024
    print(f"peak RSS growth {growth_mb:.1f} MB")
    assert growth_mb < 30, f"server peak memory grew by {growth_mb:.0f} MB for a 60 MB upload"
    # ... and it keeps serving.
    time.sleep(0.1)
    with httpx.Client(base_url=server.url, timeout=10) as c:
        assert (
            c.post("/predict", files={"file": ("r.jpg", encode(solid(RED), "JPEG"), "image/jpeg")}).status_code == 200
        )
        assert c.get("/health").status_code == 200
