"""SIGTERM with 1 and 2 workers: readiness 503 first, requests in flight finish, exit status 0.

The client plays the load balancer: it sends traffic until /ready says 503, then stops sending new
requests. A slow upload is still in flight when the drain delay ends and the listener closes.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from apihelpers import RED, ServerProcess, encode, solid

pytestmark = pytest.mark.slow
DRAIN_DELAY = 3.0
MULTIPART_BOUNDARY = "drainboundary"


def _slow_multipart(image: bytes, pieces: int, pause: float) -> Iterator[bytes]:
    body = (
        (
            f'--{MULTIPART_BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + image
        + f"\r\n--{MULTIPART_BOUNDARY}--\r\n".encode()
    )
    step = -(-len(body) // pieces)
    for i in range(0, len(body), step):
        yield body[i : i + step]
        time.sleep(pause)


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_drains_and_exits_zero(tmp_path: Path, tiny_bundle: Path, workers: int) -> None:
    env = {
        "CATSDOGS_DRAIN_DELAY_S": str(DRAIN_DELAY),
        "CATSDOGS_SHUTDOWN_TIMEOUT_S": "15",
        "CATSDOGS_MAX_QUEUE_WAIT_S": "30",  # no shedding on a busy CI machine: this test is about draining
    }
    server = ServerProcess(tmp_path, tiny_bundle, workers=workers, env=env)
    try:
        server.wait_ready()
        image = encode(solid(RED), "PNG")
        routed = threading.Event()  # set when the "load balancer" saw /ready 503
        outcomes: list[str] = []

        def traffic() -> None:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                while not routed.is_set():
                    try:
                        r = client.post("/predict", files={"file": ("a.png", image, "image/png")})
                        outcomes.append(str(r.status_code))
                    except httpx.HTTPError as exc:
                        outcomes.append(repr(exc))

        clients = [threading.Thread(target=traffic) for _ in range(4)]
        for t in clients:
            t.start()
        time.sleep(0.5)  # traffic flowing on keep-alive connections
        server.proc.send_signal(signal.SIGTERM)
        sigterm_at = time.monotonic()
        with httpx.Client(base_url=server.url, timeout=10) as probe:
            while probe.get("/ready").status_code == 200:  # with 2 workers the parent forwards SIGTERM
                assert time.monotonic() - sigterm_at < 15, "readiness never turned 503"
                time.sleep(0.05)
            routed.set()  # the balancer stops sending new requests; those in flight must still succeed
            ready = probe.get("/ready")  # still answering: the listener stays open during the drain
            assert ready.status_code == 503 and "shutting down" in ready.json()["reason"]
            # A slow upload starts now and is still being sent when the drain delay ends.
            slow = probe.post(
                "/predict",
                content=_slow_multipart(image, pieces=8, pause=(DRAIN_DELAY + 1.0) / 8),
                headers={"Content-Type": f"multipart/form-data; boundary={MULTIPART_BOUNDARY}"},
            )
        for t in clients:
            t.join(30)
        assert slow.status_code == 200, slow.text
        assert slow.json()["prediction"] == "cat"
        assert outcomes and set(outcomes) == {"200"}, outcomes
        assert server.proc.wait(timeout=30) == 0
    finally:
        server.stop()
