"""A drain under keep-alive clients that never stop: no request that was sent goes unanswered.

Eight closed-loop clients (``http.client`` or ``httpx``, one keep-alive connection each) send /predict
until the server is gone; SIGTERM arrives while they do. A request counts as *lost* when it was sent
(the connection was open) and no answer came: a reset or a close under it. A connection attempt that
is refused is not a loss: nothing was sent, and the client knows it may retry elsewhere. With 1 and 2
workers (the supervisor ``catsdogs serve`` ships) the server must answer every request it got, say
``Connection: close`` on every answer once its worker drains, and exit 0.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from apihelpers import ServerProcess

from catsdogs.serve.drain import accept_queue_length, refuse_new_connections
from support import wait_until

pytestmark = pytest.mark.slow
CLIENTS = 8
DRAIN_DELAY = 1.0
ENV = {
    "CATSDOGS_DRAIN_DELAY_S": str(DRAIN_DELAY),
    "CATSDOGS_SHUTDOWN_TIMEOUT_S": "15",
    "CATSDOGS_MAX_QUEUE_WAIT_S": "30",  # no shedding on a busy CI machine: this is about draining
}


@dataclass
class ClientLog:
    """What one closed-loop client saw, in order."""

    statuses: list[int] = field(default_factory=list)
    closes: list[bool] = field(default_factory=list)  # the answer said Connection: close
    lost: list[str] = field(default_factory=list)
    refused: bool = False


def _http_client_loop(port: int, image: bytes, out: ClientLog, stop: threading.Event) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while not stop.is_set():
        if conn.sock is None:
            try:
                conn.connect()
            except ConnectionRefusedError:
                out.refused = True
                return
        try:  # the connection is open: from here on, no answer is a lost request
            conn.request("POST", "/predict", body=image, headers={"Content-Type": "image/jpeg"})
            response = conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException) as exc:
            out.lost.append(repr(exc))
            conn.close()
            continue
        out.statuses.append(response.status)
        out.closes.append((response.getheader("connection") or "").lower() == "close")


def _httpx_loop(port: int, image: bytes, out: ClientLog, stop: threading.Event) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        while not stop.is_set():
            try:
                response = client.post("/predict", content=image, headers={"Content-Type": "image/jpeg"})
            except httpx.ConnectError:  # refused: nothing was sent
                out.refused = True
                return
            except httpx.TransportError as exc:
                out.lost.append(repr(exc))
                continue
            out.statuses.append(response.status_code)
            out.closes.append(response.headers.get("connection", "").lower() == "close")


LOOPS = {"http.client": _http_client_loop, "httpx": _httpx_loop}


def _run_clients(
    server: ServerProcess, image: bytes, library: str, send_sigterm: Callable[[], None]
) -> tuple[list[ClientLog], int]:
    logs = [ClientLog() for _ in range(CLIENTS)]
    stop = threading.Event()  # only if the test fails: the clients end when the server refuses them
    threads = [
        threading.Thread(target=LOOPS[library], args=(server.port, image, out, stop), daemon=True) for out in logs
    ]
    for t in threads:
        t.start()
    try:
        _wait(server, lambda: all(len(out.statuses) >= 3 for out in logs), "every client to be answered")
        send_sigterm()
        exit_status = server.proc.wait(timeout=60)
        for t in threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in threads), "a client still waits for an answer after the server exited"
    finally:
        stop.set()
    return logs, exit_status


def _wait(server: ServerProcess, condition: Callable[[], bool], what: str) -> None:
    wait_until(condition, what, process=server.proc, logs=server.logs)


def _assert_nothing_lost(logs: list[ClientLog], exit_status: int) -> None:
    assert exit_status == 0
    lost = [e for out in logs for e in out.lost]
    assert lost == [], f"{len(lost)} requests sent and never answered: {lost[:4]}"
    for i, out in enumerate(logs):
        assert set(out.statuses) == {200}, (i, out.statuses)
        assert out.refused, f"client {i} ended without being refused"
        # Once its worker drains, every answer says Connection: close (reconnects land on draining workers).
        first_close = out.closes.index(True) if True in out.closes else None
        assert first_close is not None, f"client {i} never got Connection: close"
        assert all(out.closes[first_close:]), (i, out.closes)


@pytest.mark.parametrize("library", sorted(LOOPS))
@pytest.mark.parametrize("workers", [1, 2])
def test_keepalive_clients_lose_no_request_when_sigterm_comes(
    tmp_path: Path, tiny_bundle: Path, uploads_dir: Path, workers: int, library: str
) -> None:
    server = ServerProcess(tmp_path, tiny_bundle, workers=workers, env=ENV)
    try:
        server.wait_ready()
        image = (uploads_dir / "cat.4001.jpg").read_bytes()
        logs, exit_status = _run_clients(server, image, library, lambda: server.proc.send_signal(signal.SIGTERM))
        _assert_nothing_lost(logs, exit_status)
    finally:
        server.stop()


def test_sigterm_to_the_whole_process_group_drains_once(tmp_path: Path, tiny_bundle: Path, uploads_dir: Path) -> None:
    # systemd (KillMode=control-group) or `kill -TERM -- -PGID`: each worker gets SIGTERM directly and
    # again from the parent. The second copy must not cut the drain short.
    server = ServerProcess(tmp_path, tiny_bundle, workers=2, env=ENV, own_process_group=True)
    try:
        server.wait_ready()
        image = (uploads_dir / "cat.4001.jpg").read_bytes()
        logs, exit_status = _run_clients(
            server, image, "http.client", lambda: os.killpg(server.proc.pid, signal.SIGTERM)
        )
        _assert_nothing_lost(logs, exit_status)
        records = server.log_records()
        for pid in {r["pid"] for r in records if r.get("message", "").startswith("SIGTERM: draining")}:
            began = _when(records, pid, "SIGTERM: draining")
            drained = _when(records, pid, "drained: closing the listener")
            assert drained - began >= DRAIN_DELAY - 0.05, f"worker {pid} drained for {drained - began:.2f} s only"
    finally:
        server.stop()


def _when(records: list[dict], pid: int, message: str) -> float:
    ts = next(r["ts"] for r in records if r.get("pid") == pid and r.get("message", "").startswith(message))
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def test_a_connection_whose_request_comes_late_is_answered_at_shutdown(
    tmp_path: Path, tiny_bundle: Path, uploads_dir: Path
) -> None:
    # A connection accepted during the drain whose request is still on its way when uvicorn's shutdown
    # begins (a client across a network, or one slow to write): uvicorn closed it as idle, resetting the
    # request. It keeps its head deadline instead, and its request is answered.
    server = ServerProcess(tmp_path, tiny_bundle, env=ENV)
    try:
        server.wait_ready()
        image = (uploads_dir / "cat.4001.jpg").read_bytes()
        server.proc.send_signal(signal.SIGTERM)
        _wait(server, lambda: _logged(server, "SIGTERM: draining"), "the drain to begin")
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            _wait(server, lambda: _logged(server, "Shutting down"), "uvicorn's shutdown to begin")
            time.sleep(0.3)  # well after uvicorn's shutdown closed the idle connections
            head = f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: {len(image)}"
            sock.sendall(head.encode() + b"\r\n\r\n" + image)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        status_line, _, rest = answer.partition(b"\r\n")
        assert status_line == b"HTTP/1.1 200 OK", answer[:300]
        head_lines = rest.split(b"\r\n\r\n")[0].lower().split(b"\r\n")
        assert b"connection: close" in head_lines
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["prediction"] in ("cat", "dog")
        assert server.proc.wait(timeout=30) == 0
    finally:
        server.stop()


def _logged(server: ServerProcess, message: str) -> bool:
    return any(r.get("message", "").startswith(message) for r in server.log_records())


def test_a_listener_that_refuses_new_connections_still_hands_out_the_queued_ones() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as queued:
            queued.sendall(b"sent before the filter")
            assert accept_queue_length(listener) == 1
            assert refuse_new_connections(listener)
            late = socket.socket()
            late.settimeout(0.5)  # the SYN is dropped: no handshake, however long we wait
            with late, pytest.raises(TimeoutError):
                late.connect(("127.0.0.1", port))
            accepted, _ = listener.accept()
            with accepted:
                assert accepted.recv(100) == b"sent before the filter"
            assert accept_queue_length(listener) == 0
