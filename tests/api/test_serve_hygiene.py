"""Log escaping, one log per exception, and `catsdogs serve` failing fast with one line."""

from __future__ import annotations

import logging
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from apihelpers import wait_ready
from fastapi.testclient import TestClient

from catsdogs.serve.logging import TextFormatter, escape_control

ClientFactory = Callable[..., TestClient]
FORGED = "2030-01-01 00:00:00 INFO catsdogs.access: request status=200"


def test_escape_control_keeps_one_line() -> None:
    assert escape_control("a\nb\r\x1b[31mc\x00\u2028") == "a\\nb\\r\\x1b[31mc\\x00\\u2028"
    assert escape_control("chat · naïve") == "chat · naïve"  # printable text is left alone


def test_text_log_of_a_hostile_path_is_one_line(make_client: ClientFactory, capsys: pytest.CaptureFixture[str]) -> None:
    client = make_client(log_format="text")
    capsys.readouterr()
    client.get("/x%0a" + FORGED.replace(" ", "%20") + "%1b[31m%0d")
    err = capsys.readouterr().err
    access = [line for line in err.splitlines() if re.match(r"^\S+ \S+ [A-Z]+ catsdogs\.access: ", line)]
    assert len(access) == 1, err  # the forged record did not become a line of its own
    assert not any(line.startswith("2030-01-01") for line in err.splitlines())
    assert "\x1b" not in err and "\\x1b[31m" in access[0] and "\\n2030-01-01" in access[0]


def test_text_traceback_lines_are_indented() -> None:
    try:
        raise ValueError("line one\n" + FORGED)
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    lines = TextFormatter().format(record).splitlines()
    assert lines[0].endswith("ERROR x: failed")
    assert all(line.startswith("  ") for line in lines[1:])


# --- catsdogs serve: fail fast, one line, exit 2 ---------------------------------------------------------
def _serve(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    cli = Path(sys.executable).with_name("catsdogs")
    return subprocess.run([str(cli), "serve", *args], capture_output=True, text=True, timeout=timeout, check=False)


def _error_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


def test_port_in_use_is_one_line_naming_the_port(tiny_bundle: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _serve("--host", "127.0.0.1", "--port", str(port), "--model", str(tiny_bundle))
    assert proc.returncode == 2
    [line] = _error_lines(proc)
    assert str(port) in line and "already in use" in line and "--port" in line and "PORT=" in line
    assert "Traceback" not in proc.stderr


def test_missing_model_fails_fast_with_one_line(tmp_path: Path) -> None:
    start = time.monotonic()
    proc = _serve("--host", "127.0.0.1", "--port", "1", "--model", str(tmp_path / "typo"))
    assert proc.returncode == 2
    [line] = _error_lines(proc)
    assert "typo" in line and "model.json" in line and "--wait-for-model" in line
    assert time.monotonic() - start < 30  # fails at once, not after a start-up


def test_wait_for_model_serves_not_ready_until_the_bundle_appears(
    make_client: ClientFactory, tmp_path: Path, tiny_bundle: Path
) -> None:
    import shutil

    target = tmp_path / "later"
    client = make_client(wait=False, model_path=str(target), wait_for_model=True)
    time.sleep(0.3)
    r = client.get("/ready")
    assert r.status_code == 503 and "waiting for the model" in r.json()["reason"]
    assert str(tmp_path) not in r.text  # no internal path to strangers
    assert client.get("/health").status_code == 200  # waiting is not failing: no restart loop
    shutil.copytree(tiny_bundle, target)
    wait_ready(client)


def test_a_client_that_disconnects_is_logged_as_499_without_a_traceback(caplog: pytest.LogCaptureFixture) -> None:
    import asyncio

    from starlette.requests import ClientDisconnect

    from catsdogs.serve.metrics import Metrics
    from catsdogs.serve.middleware import AccessRecorder, RequestContextMiddleware, RouteTemplates

    async def app(scope: dict, receive: object, send: object) -> None:
        raise ClientDisconnect()

    metrics = Metrics()
    middleware = RequestContextMiddleware(app, record=AccessRecorder(metrics, RouteTemplates(["/predict"], mounts=[])))
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/predict", "headers": []}
    with caplog.at_level(logging.INFO):
        asyncio.run(middleware(scope, None, send))  # type: ignore[arg-type]
    assert sent == []  # nobody to answer
    assert not any(r.exc_info for r in caplog.records)
    access = [r for r in caplog.records if r.name == "catsdogs.access"]
    assert access[0].status == 499 and access[0].error == "client_disconnected"  # type: ignore[attr-defined]
    labels = {"method": "POST", "route": "/predict", "status": "499"}
    assert metrics.registry.get_sample_value("http_requests_total", labels) == 1
