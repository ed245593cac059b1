"""schemathesis with every check (``--checks all``) against a live ``catsdogs serve`` on loopback.

It generates requests from /openapi.json, valid and invalid, and checks that every answer is documented
(status, content type, headers, body schema), that invalid input is refused and valid input accepted, that
auth is enforced, and that nothing is a 5xx. The number of examples is bounded and the seed fixed, so a run
takes seconds and a failure reproduces. ``schemathesis.toml`` beside this file states the few limits of what
a schema can say (random bytes are schema-valid but not an image).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from apihelpers import ServerProcess

pytestmark = pytest.mark.slow

CONFIG = Path(__file__).with_name("schemathesis.toml")
ADMIN_TOKEN = "schemathesis-admin-token"
MAX_EXAMPLES = 40
SEED = 20260101


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_bundle: Path) -> Iterator[ServerProcess]:
    # With an admin token, /admin/reload is exercised for real (401/403 without or with a wrong token).
    proc = ServerProcess(tmp_path_factory.mktemp("st"), tiny_bundle, env={"CATSDOGS_ADMIN_TOKEN": ADMIN_TOKEN})
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


def test_schemathesis_all_checks_are_clean(server: ServerProcess, tmp_path: Path) -> None:
    cli = Path(sys.executable).with_name("schemathesis")
    if not cli.is_file():
        pytest.fail(f"{cli} not found: schemathesis is a dev dependency, run `make init`")
    command = [
        str(cli),
        "--no-color",
        "--config-file",
        str(CONFIG),
        "run",
        f"{server.url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--header",
        f"Authorization: Bearer {ADMIN_TOKEN}",
    ]
    # cwd: schemathesis and hypothesis keep their caches in the working directory, not in the repository.
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    # Every documented operation was exercised, and the server is still up after the fuzzing.
    operations = sum(len(item) for item in httpx.get(f"{server.url}/openapi.json").json()["paths"].values())
    tested = re.search(r"Tested:\s+(\d+)", output)
    assert tested is not None and int(tested.group(1)) == operations >= 9, output[-3000:]
    assert httpx.get(f"{server.url}/ready").status_code == 200
