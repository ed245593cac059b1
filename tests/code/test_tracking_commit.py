"""The training commit in every checkpoint and bundle: "-dirty" means the code differed from the commit,
not that the pipeline was re-creating its own outputs (DVC deletes a stage's outputs before it runs)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from catsdogs.training import tracking


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    for rel in ("src/catsdogs/training/train.py", "params.yaml", "models/model.json", "reports/student.json"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("v1\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    monkeypatch.setattr(tracking, "PROJECT_ROOT", tmp_path)
    return tmp_path


def test_a_clean_tree_gives_the_bare_commit(repo: Path) -> None:
    assert len(tracking.git_commit()) == 40


@pytest.mark.parametrize("output", ["models/model.json", "reports/student.json"])
def test_outputs_being_recreated_are_not_dirty(repo: Path, output: str) -> None:
    (repo / output).unlink()
    (repo / "untracked.py").write_text("scratch\n")
    assert not tracking.git_commit().endswith("-dirty")


@pytest.mark.parametrize("code", ["src/catsdogs/training/train.py", "params.yaml"])
def test_changed_code_or_params_are_dirty(repo: Path, code: str) -> None:
    (repo / code).write_text("v2\n")
    assert tracking.git_commit().endswith("-dirty")
