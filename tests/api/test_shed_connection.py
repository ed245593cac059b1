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
