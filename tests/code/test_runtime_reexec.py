"""``reexec_with_malloc_tunables`` restarts only the catsdogs CLI, never another program that imports it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import catsdogs
from catsdogs import runtime


@pytest.fixture
def execs(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    calls: list[list[str]] = []
    monkeypatch.setattr(runtime.os, "execve", lambda exe, argv, env: calls.append([exe, *argv, env["GLIBC_TUNABLES"]]))
    monkeypatch.setattr(runtime.sys, "platform", "linux")
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    return calls


@pytest.mark.parametrize(
    "argv0", ["/venv/bin/catsdogs", str(Path(catsdogs.__file__).parent / "__main__.py")], ids=["script", "python -m"]
)
def test_the_cli_restarts_with_the_tunables(
    execs: list[list[str]], monkeypatch: pytest.MonkeyPatch, argv0: str
) -> None:
    monkeypatch.setattr(sys, "argv", [argv0, "calibrate", "--params", "p.yaml"])
    runtime.reexec_with_malloc_tunables()
    assert execs == [[sys.executable, sys.executable, "-m", "catsdogs", "calibrate", "--params", "p.yaml",
                      runtime.MALLOC_TUNABLES]]  # fmt: skip


@pytest.mark.parametrize("argv0", ["/venv/lib/python3.11/site-packages/pytest/__main__.py", "/venv/bin/pytest", "-c"])
def test_other_programs_are_left_alone(execs: list[list[str]], monkeypatch: pytest.MonkeyPatch, argv0: str) -> None:
    # `python -m pytest` runs pytest's own __main__.py: replacing it by `python -m catsdogs` killed the test run
    monkeypatch.setattr(sys, "argv", [argv0, "tests/"])
    runtime.reexec_with_malloc_tunables()
    assert execs == []


def test_a_user_choice_of_tunables_wins(execs: list[list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")
    monkeypatch.setattr(sys, "argv", ["/venv/bin/catsdogs", "train"])
    runtime.reexec_with_malloc_tunables()
    assert execs == []
