"""Fixtures shared by every test package (code, data, model, integration, api, web, ops, docker)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from catsdogs.core.paths import PROJECT_ROOT, SHARED_DATA_DIR
from support import IN_CI, mark_by_folder, register_ci_skip_guard, require_binary  # re-exported for older imports

__all__ = ["IN_CI", "require_binary"]


def pytest_configure(config: pytest.Config) -> None:
    # CI=true: a skip is a check that did not run, so it fails the run (tests/test_ci_skip_guard.py).
    register_ci_skip_guard(config)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    # pytest-randomly prints its seed in the header, which -q hides: a failure must be reproducible.
    seed = getattr(config.option, "randomly_seed", None)
    if config.pluginmanager.has_plugin("randomly") and seed is not None:
        terminalreporter.write_line(f"random test order: reproduce with -p randomly --randomly-seed={seed}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_by_folder(items, Path(__file__).parent)  # the tiers of docs/testing.md


@pytest.fixture(scope="session")
def project_root() -> Path:
    return PROJECT_ROOT


@pytest.fixture(scope="session")
def kaggle_train_dir() -> Path:
    """The 23,000 labelled Kaggle images (read-only, never copied into the repo)."""
    path = SHARED_DATA_DIR / "dogs-vs-cats" / "train"
    if not path.is_dir():
        pytest.fail(f"shared data not found at {path}: see ../shared/data/README.md")
    return path


@pytest.fixture(scope="session")
def uploads_dir() -> Path:
    """40 full-size photos (20 cats, 20 dogs) for realistic request payloads."""
    path = SHARED_DATA_DIR / "uploads"
    if not path.is_dir():
        pytest.fail(f"shared uploads not found at {path}")
    return path


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    """Undo logging set up by the code under test (the CLI's basicConfig(force=True) installs a RichHandler
    on the root logger that writes to whatever sys.stdout is later, e.g. another test's CliRunner output)."""
    root = logging.getLogger()
    level, before = root.level, [h for h in root.handlers if not _is_pytest_handler(h)]
    yield
    root.setLevel(level)
    for handler in list(root.handlers):
        if handler not in before and not _is_pytest_handler(handler):
            root.removeHandler(handler)
    for handler in before:
        if handler not in root.handlers:
            root.addHandler(handler)


def _is_pytest_handler(handler: logging.Handler) -> bool:
    return type(handler).__module__.startswith("_pytest")
