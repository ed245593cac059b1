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

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        with self.lock:
            seen = sum(self.answered.values())
            status = 200 if seen < WARM_UP or seen % 2 == 0 else 503
            self.answered[status] += 1
        body = json.dumps({"prediction": "cat", "probability": 0.9} if status == 200 else {"detail": "at capacity"})
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:  # keep the test output quiet
        pass


@pytest.fixture
def shedding() -> Iterator[tuple[str, dict[int, int]]]:
    """(URL, status -> answers sent) of a shedding server that counts from zero."""
    handler = type("Counted", (Shedding,), {"lock": threading.Lock(), "answered": {200: 0, 503: 0}})
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
