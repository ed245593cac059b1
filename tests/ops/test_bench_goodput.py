"""`make bench` counts answers of 200 only: a server that sheds (503) gets no req/s for what it turned away."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from catsdogs.core.paths import PROJECT_ROOT

WARM_UP = 10  # drive's warm-up answers (they must all be 200)


class Shedding(BaseHTTPRequestHandler):
    """/predict that answers 200 to the warm-up, then 503 to every other request."""

    protocol_version = "HTTP/1.1"
    lock: ClassVar[threading.Lock]
    answered: ClassVar[dict[int, int]]  # status -> answers sent; fresh per server (the fixture's subclass)

    chunked: ClassVar[bool] = False  # answer with Transfer-Encoding: chunked instead of Content-Length

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        with self.lock:
            seen = sum(self.answered.values())
            status = 200 if seen < WARM_UP or seen % 2 == 0 else 503
            self.answered[status] += 1
        body = json.dumps({"prediction": "cat", "probability": 0.9} if status == 200 else {"detail": "at capacity"})
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if self.chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            half = len(body) // 2
            for part in (body[:half], body[half:], ""):
                self.wfile.write(f"{len(part):x}\r\n{part}\r\n".encode())
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:  # keep the test output quiet
        pass


# how the server frames its answers: keep-alive with Content-Length, chunked, or HTTP/1.0 closing each connection
FRAMINGS = {
    "content-length": {},
    "chunked": {"chunked": True},
    "http/1.0 close": {"protocol_version": "HTTP/1.0"},
}


@pytest.fixture(params=list(FRAMINGS))
def shedding(request: pytest.FixtureRequest) -> Iterator[tuple[str, dict[int, int]]]:
    """(URL, status -> answers sent) of a shedding server that counts from zero, in each framing."""
    attrs = {"lock": threading.Lock(), "answered": {200: 0, 503: 0}} | FRAMINGS[request.param]
    handler = type("Counted", (Shedding,), attrs)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", handler.answered
    server.shutdown()
    server.server_close()


def test_req_per_s_counts_200_answers_only(
    shedding: tuple[str, dict[int, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, answered = shedding
    monkeypatch.syspath_prepend(str(PROJECT_ROOT / "scripts"))  # bench.py imports its sibling scripts
    import bench

    images = [("a.jpg", b"\xff\xd8 not decoded by this server")]
    phase, answers = asyncio.run(bench.drive(url, images, concurrency=4, n=30, max_seconds=30))
    timed_200 = answered[200] - WARM_UP
    assert answers == {"a.jpg": ("cat", 0.9)}
    assert phase.requests == timed_200 >= 30  # ran until 30 answers of 200, each counted once
    assert phase.errors == answered[503] >= 29  # every other answer was shed, counted apart
    assert phase.first_error.startswith("503 ")
    assert phase.rps == pytest.approx(phase.requests / phase.seconds)
    assert phase.client_cpu_ms_per_request > 0  # the client's own CPU is measured, not assumed away
    assert 0 <= phase.host_idle_pct <= 100 and 0 <= phase.host_steal_pct <= 100  # the host's shares, measured


class ShedOnceWithRetryAfter(BaseHTTPRequestHandler):
    """/predict that sheds the first timed request with ``Retry-After: 1``, then answers 200."""

    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[int]]

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append(1)
        shed = len(self.seen) == WARM_UP + 1
        body = json.dumps({"detail": "at capacity"} if shed else {"prediction": "dog", "probability": 0.8})
        self.send_response(503 if shed else 200)
        if shed:
            self.send_header("Retry-After", "1")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize("honour", [True, False])
def test_a_shed_connection_waits_its_retry_after(honour: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    handler = type("Once", (ShedOnceWithRetryAfter,), {"seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.syspath_prepend(str(PROJECT_ROOT / "scripts"))
    import bench

    try:
        url = f"http://127.0.0.1:{server.server_port}"
        images = [("b.jpg", b"\xff\xd8 not decoded")]
        phase, _ = asyncio.run(bench.drive(url, images, 1, n=WARM_UP, max_seconds=30, honour_retry_after=honour))
    finally:
        server.shutdown()
        server.server_close()
    assert (phase.requests, phase.errors) == (WARM_UP, 1)
    # one connection: honouring, it sat out the second the server asked for; ignoring, it re-sent at once
    assert (phase.seconds >= 1.0) is honour
