"""The CI skip guard (tests/support.py CiSkipGuard): under CI=true every kind of skip fails the run."""

from __future__ import annotations

import pytest

from support import CiSkipGuard, in_ci

pytest_plugins = ["pytester"]

# The wiring of tests/conftest.py, in a throw-away project.
CONFTEST = """
from support import register_ci_skip_guard

def pytest_configure(config):
    register_ci_skip_guard(config)
"""

SKIPPING_TESTS = """
import pytest

@pytest.fixture
def tool():
    pytest.skip("tool X is not installed")

def test_passes():
    pass

def test_skips_in_its_body():
    pytest.skip("the model is not trained")

def test_skips_in_a_fixture(tool):
    pass

@pytest.mark.skipif(True, reason="marked to skip")
def test_skipif_marker():
    pass

@pytest.mark.xfail(reason="a known bug", strict=True)
def test_expected_failure():
    assert False
"""

SKIPPED_MODULE = """
import pytest
pytest.importorskip("no_such_module_for_the_guard_test")

def test_never_collected():
    pass
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_skipping=SKIPPING_TESTS)
    return pytester


def test_under_ci_every_skip_fails_with_its_reason(project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    result = project.runpytest("-rA")
    # a skip in the body -> failed; in a fixture or by a skipif marker (setup) -> error; xfail untouched
    result.assert_outcomes(passed=1, failed=1, errors=2, xfailed=1, skipped=0)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    for reason in ("the model is not trained", "tool X is not installed", "marked to skip"):
        result.stdout.fnmatch_lines([f"*{CiSkipGuard.PREFIX}: *{reason}*"])
    result.stdout.fnmatch_lines(["*CI=true: any skip fails the run*"])


def test_under_ci_a_skipped_module_is_a_collection_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_skipped_module=SKIPPED_MODULE)
    monkeypatch.setenv("CI", "true")
    result = pytester.runpytest()
    result.assert_outcomes(errors=1, skipped=0)
    assert result.ret == pytest.ExitCode.INTERRUPTED  # a collection error stops the run before any test
    result.stdout.fnmatch_lines([f"*{CiSkipGuard.PREFIX}: *no_such_module_for_the_guard_test*"])


def test_outside_ci_skips_stay_skips(project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    result = project.runpytest()
    result.assert_outcomes(passed=1, skipped=3, xfailed=1)
    assert result.ret == pytest.ExitCode.OK
    assert CiSkipGuard.PREFIX not in result.stdout.str()


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("1", True), ("TRUE", True), ("false", False)])
def test_ci_detection(monkeypatch: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    monkeypatch.setenv("CI", value)
    assert in_ci() is expected


def test_this_session_has_the_guard_exactly_when_in_ci(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.pluginmanager.has_plugin("ci-skip-guard") is in_ci()
