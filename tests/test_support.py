"""The shared port and readiness helpers of tests/support.py (every server test waits through them)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx
import pytest

from support import free_port, wait_http, wait_until


def test_free_port_can_be_bound() -> None:
    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_wait_until_returns_the_first_truthy_value_and_counts_transport_errors_as_not_yet() -> None:
    answers = iter([httpx.ConnectError("refused"), None, 0, "ready"])

    def check() -> str | int | None:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert wait_until(check, "the fake service", timeout=5) == "ready"


def test_wait_until_times_out_naming_what_it_waited_for() -> None:
    start = time.monotonic()
    with pytest.raises(AssertionError, match=r"timed out after 0 s waiting for the moon \(last: False\):\nlog tail"):
        wait_until(lambda: False, "the moon", timeout=0.3, logs=lambda: "log tail")
    assert time.monotonic() - start < 5


def test_wait_until_fails_at_once_when_the_process_exits() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait(timeout=30)
    start = time.monotonic()
    with pytest.raises(AssertionError, match="the process exited with 3"):
        wait_until(lambda: False, "a dead server", timeout=60, process=proc)
    assert time.monotonic() - start < 5  # not the 60 s deadline


def test_wait_http_reports_the_last_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(httpx, "get", lambda url, timeout: httpx.Response(503))
    with pytest.raises(AssertionError, match="last answer: HTTP 503"):
        wait_http("http://127.0.0.1:1/ready", timeout=0.3)
