"""The tiers of docs/testing.md: `make test-quick`'s selection leaves out whole heavy folders."""

from __future__ import annotations

import re
import tomllib

import pytest

from catsdogs.core.paths import PROJECT_ROOT
from support import FOLDER_MARKERS

pytest_plugins = ["pytester"]

QUICK = re.search(r"^QUICK_TESTS := (.+)$", (PROJECT_ROOT / "Makefile").read_text(), re.M)
CONFTEST = """
from pathlib import Path
from support import mark_by_folder

def pytest_collection_modifyitems(items):
    mark_by_folder(items, Path(__file__).parent)
"""


def test_quick_tier_leaves_out_the_heavy_folders(pytester: pytest.Pytester) -> None:
    assert QUICK, "Makefile has no QUICK_TESTS selection"
    pytester.makeconftest(CONFTEST)
    with (PROJECT_ROOT / "pyproject.toml").open("rb") as f:
        markers = tomllib.load(f)["tool"]["pytest"]["ini_options"]["markers"]
    pytester.makeini("[pytest]\nmarkers =\n" + "".join(f"    {m}\n" for m in markers))  # unknown names fail
    for folder in [*FOLDER_MARKERS, "code", "api"]:
        # unique module names: the real suite's test_api, test_model... may already be imported
        pytester.mkdir(folder).joinpath(f"test_probe_{folder}.py").write_text("def test_it():\n    pass\n")
    pytester.path.joinpath("code", "test_probe_marked.py").write_text(
        "import pytest\n\n@pytest.mark.heavy\ndef test_full_data():\n    pass\n"
    )
    result = pytester.runpytest("--strict-markers", "-m", QUICK.group(1), "-v")
    result.assert_outcomes(passed=2, deselected=5)
    for quick_test in ("code/test_probe_code.py::test_it", "api/test_probe_api.py::test_it"):
        result.stdout.fnmatch_lines([f"*{quick_test} PASSED*"])
