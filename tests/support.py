"""Helpers importable from any test package (conftest.py names clash across folders).

- ``require_binary``: a system tool, or a skip on a laptop / a failure in CI.
- ``free_port`` and ``wait_until`` / ``wait_http``: the one way tests pick a port and wait for a server.
- ``CiSkipGuard``: under ``CI=true`` every skip becomes a failure (registered by tests/conftest.py).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

# A server start on a loaded 2-core machine (model load + warm-up while other jobs train) can take
# tens of seconds: a deadline is there to end a hang, not to measure start-up speed.
READY_TIMEOUT_S = 60.0
POLL_MAX_INTERVAL_S = 0.2

T = TypeVar("T")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


IN_CI = in_ci()


def require_binary(name: str, install_hint: str) -> str:
    """Path of a system binary. Missing: skip on a laptop (saying how to install it), fail in CI."""
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed; install it with: {install_hint}"
    if IN_CI:
        pytest.fail(f"CI must install every tool the tests need: {message}")
    pytest.skip(message)


# --- ports and readiness ------------------------------------------------------------------------------------
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    condition: Callable[[], T],
    what: str,
    *,
    timeout: float = READY_TIMEOUT_S,
    process: subprocess.Popen[Any] | None = None,
    logs: Callable[[], str] | None = None,
) -> T:
    """Poll ``condition()`` until it returns a truthy value, and return that value.

    Polls every 10 ms at first, backing off to every 0.2 s (cheap for in-process apps, light on a
    busy machine). An ``httpx.TransportError`` (not listening yet) counts as "not yet". When
    ``process`` exits first, fail at once instead of waiting out the deadline; ``logs()`` is shown
    with any failure.
    """
    deadline = time.monotonic() + timeout
    interval = 0.01
    last = "never checked"
    while True:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"{what}: the process exited with {process.returncode}{_tail(logs)}")
        try:
            value = condition()
            if value:
                return value
            last = repr(value)
        except httpx.TransportError as exc:
            last = repr(exc)
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last}){_tail(logs)}")
        time.sleep(interval)
        interval = min(interval * 2, POLL_MAX_INTERVAL_S)


def wait_http(
    url: str,
    *,
    status: int = 200,
    timeout: float = READY_TIMEOUT_S,
    process: subprocess.Popen[Any] | None = None,
    logs: Callable[[], str] | None = None,
) -> None:
    """Until GET ``url`` answers ``status`` (e.g. a server's /ready answering 200)."""
    answers: list[str] = []

    def answered() -> bool:
        code = httpx.get(url, timeout=5).status_code
        answers.append(f"HTTP {code}")
        return code == status

    def context() -> str:
        return f"last answer: {answers[-1] if answers else 'none'}\n" + (logs() if logs is not None else "")

    wait_until(answered, f"{url} to answer {status}", timeout=timeout, process=process, logs=context)


def _tail(logs: Callable[[], str] | None) -> str:
    return f":\n{logs()[-4000:]}" if logs is not None else ""


# --- tiers ----------------------------------------------------------------------------------------------------
# The tier of every test in a folder (docs/testing.md), so that a new test there cannot land in the quick
# tier by a forgotten marker. Single heavy tests elsewhere carry their own marker.
FOLDER_MARKERS = {
    "docker": ("docker", "slow"),
    "integration": ("slow",),
    "web": ("slow",),
    "model": ("heavy",),
}


def mark_by_folder(items: list[pytest.Item], tests_dir: Path) -> None:
    for item in items:
        if not item.path.is_relative_to(tests_dir):
            continue
        folder = item.path.relative_to(tests_dir).parts[0]
        for name in FOLDER_MARKERS.get(folder, ()):
            if item.get_closest_marker(name) is None:
                item.add_marker(name)


# --- CI: no silent skips --------------------------------------------------------------------------------------
class CiSkipGuard:
    """Turns every skip (of a test, a fixture or a whole module) into a failure.

    Registered only under ``CI=true``: in CI a skipped test is a check that silently did not run
    (a tool not installed, a model not trained), so it must fail the build and say why. xfail is
    not a skip and is left alone.
    """

    PREFIX = "skipped under CI=true (in CI every test must run)"

    def _fail(self, report: pytest.TestReport | pytest.CollectReport) -> None:
        if report.skipped and not hasattr(report, "wasxfail"):
            longrepr = report.longrepr
            reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
            report.outcome = "failed"
            report.longrepr = f"{self.PREFIX}: {reason}"

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
        report = yield
        self._fail(report)
        return report

    @pytest.hookimpl(wrapper=True)
    def pytest_make_collect_report(self, collector: pytest.Collector) -> Any:
        report = yield
        self._fail(report)
        return report

    def pytest_report_header(self) -> str:
        return "CI=true: any skip fails the run (tests/support.py CiSkipGuard)"


def register_ci_skip_guard(config: pytest.Config) -> None:
    if in_ci() and not config.pluginmanager.has_plugin("ci-skip-guard"):
        config.pluginmanager.register(CiSkipGuard(), "ci-skip-guard")


def use_mlflow_store(monkeypatch: pytest.MonkeyPatch, uri: str) -> None:
    """Point MLflow at ``uri`` for one test (restored afterwards).

    ``mlflow.set_tracking_uri`` (called by the code under test) sets a process-wide URI that
    outranks ``MLFLOW_TRACKING_URI``; it is reset too, so a store set by an earlier test never leaks.
    """
    from mlflow.tracking._tracking_service import utils as tracking_utils

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)
