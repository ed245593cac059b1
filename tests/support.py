"""Helpers importable from any test package (conftest.py names clash across folders)."""

from __future__ import annotations

import os
import shutil

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_binary(name: str, install_hint: str) -> str:
    """Path of a system binary. Missing: skip on a laptop (saying how to install it), fail in CI."""
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed; install it with: {install_hint}"
    if IN_CI:
        pytest.fail(f"CI must install every tool the tests need: {message}")
    pytest.skip(message)


def use_mlflow_store(monkeypatch: pytest.MonkeyPatch, uri: str) -> None:
    """Point MLflow at ``uri`` for one test (restored afterwards).

    ``mlflow.set_tracking_uri`` (called by the code under test) sets a process-wide URI that
    outranks ``MLFLOW_TRACKING_URI``; it is reset too, so a store set by an earlier test never leaks.
    """
    from mlflow.tracking._tracking_service import utils as tracking_utils

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)
