"""A shed request's connection, against a real `catsdogs serve`: the 503 reaches a client still sending.

A request shed when its head arrives (503 + Connection: close) has most of its body still on the way.
Closing the socket with that body unread would send a reset, and a client that writes its whole body
before it reads (httpx, http.client) would lose the answer. The server half-closes instead, reads and
drops the rest of the body, then closes: the client gets the whole 503 and a clean end of stream.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from apihelpers import ServerProcess

from support import wait_until

pytestmark = pytest.mark.slow
BODY = 2 * 1024 * 1024  # far more than the socket buffers: most of it is sent after the answer came


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_bundle: Path) -> Iterator[ServerProcess]:
    env = {"CATSDOGS_MAX_PENDING_REQUESTS": "1", "CATSDOGS_BODY_TIMEOUT_S": "60", "CATSDOGS_DRAIN_DELAY_S": "0.2"}
    proc = ServerProcess(tmp_path_factory.mktemp("shed"), tiny_bundle, env=env)
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


def _head(port: int, length: int) -> bytes:
    return (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def _in_progress(server: ServerProcess) -> float:
    import httpx

    for line in httpx.get(f"{server.url}/metrics", timeout=10).text.splitlines():
        if line.startswith("http_requests_in_progress "):
            return float(line.split()[1])
    raise AssertionError("http_requests_in_progress is not exported")


def test_a_shed_request_still_sending_its_body_gets_the_whole_503(server: ServerProcess) -> None:
    holder = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    client = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    idle = _in_progress(server)  # the /metrics request itself, if it counts
    try:
        # One request admitted and reading a body that never ends: the worker's one place is taken.
        holder.sendall(_head(server.port, BODY) + b"--b\r\n")
        wait_until(lambda: _in_progress(server) > idle, "the first request to be admitted", timeout=20)
        client.sendall(_head(server.port, BODY) + b"x" * 1024)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = client.recv(65536)
            assert chunk, f"closed before the head of the answer: {answer!r}"
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 503"), answer
        assert b"connection: close" in answer.lower()
        client.sendall(b"x" * (BODY - 1024))  # as a client that writes its whole body before it reads
        while chunk := client.recv(65536):  # the rest of the answer, then a clean end of stream (no reset)
            answer += chunk
        assert b'"code":"overloaded"' in answer.replace(b" ", b"")
    finally:
        client.close()
        holder.close()


def _metric(server: ServerProcess, name: str) -> float:
    import httpx

    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def _answer(port: int, request: bytes) -> tuple[bytes, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.lower(), body


@pytest.mark.parametrize(
    ("path", "message_key"), [("/predict", b'"detail"'), ("/v2/models/catsdogs/infer", b'"error"')]
)
def test_a_request_shed_at_the_head_gets_the_apis_answer_and_is_counted(
    server: ServerProcess, path: str, message_key: bytes
) -> None:
    """Shed in the HTTP protocol (no ASGI task): the same answer as the middleware's, in the metrics and log."""
    holder = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    idle = _in_progress(server)
    shed_before = _metric(server, "catsdogs_requests_shed_total")
    try:
        holder.sendall(_head(server.port, BODY) + b"--b\r\n")
        wait_until(lambda: _in_progress(server) > idle, "the first request to be admitted", timeout=20)
        request = _head(server.port, 5).replace(b"POST /predict", b"POST " + path.encode())
        request = request.replace(b"\r\n\r\n", b"\r\nX-Request-ID: shed-test-1\r\n\r\n") + b"--b--"
        head, body = _answer(server.port, request)
        # Probes are never shed, even while the worker's one place is taken.
        assert _answer(server.port, b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")[0].startswith(
            b"http/1.1 200"
        )
    finally:
        holder.close()
    assert head.startswith(b"http/1.1 503"), head
    for field in (
        b"retry-after: 1",
        b"connection: close",
        b"x-request-id: shed-test-1",
        b"content-type: application/json",
    ):
        assert field in head, head
    assert message_key in body and b'"code": "overloaded"' in body, body
    assert _metric(server, "catsdogs_requests_shed_total") == shed_before + 1
    route = "/predict" if path == "/predict" else "/v2/models/{model_name}/infer"
    assert _metric(server, f'http_requests_total{{method="POST",route="{route}",status="503"}}') >= 1
    # Shed requests are logged at most once a second (the earlier test's was): the log says where.
    shed_lines = [r for r in server.log_records() if r.get("error") == "overloaded"]
    assert shed_lines and all(r["shed_in"] == "protocol" and r["status"] == 503 for r in shed_lines), shed_lines
