"""Every mistake a new user makes with the CLI: one line on stderr with the fix, exit 2, never a traceback.

The serving-only venv that `make run` creates has no torch/tqdm/mlflow; it is simulated here by a
subprocess whose import system refuses those packages.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from catsdogs.cli import app
from catsdogs.cli.common import FULL_ENV_HINT, TRAINING_STACK

runner = CliRunner()

# Runs the CLI in a fresh interpreter where the training stack cannot be imported, one command at a time,
# and prints [exit code, stderr] per command as JSON.
WITHOUT_TRAINING_STACK = """
import importlib.abc, json, sys
BLOCKED = set(json.loads(sys.argv[1]))

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

for name in list(sys.modules):
    if name.split(".")[0] in BLOCKED:
        del sys.modules[name]
sys.meta_path.insert(0, Blocker())
from typer.testing import CliRunner
from catsdogs.cli import app
out = []
for args in json.loads(sys.argv[2]):
    r = CliRunner().invoke(app, args)
    out.append([r.exit_code, r.stderr, repr(r.exception) if r.exit_code not in (0, 2) else ""])
print(json.dumps(out))
"""


def _one_line_error(result, *needles: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def raw_dir(tmp_path: Path) -> Path:
    d = tmp_path / "raw"
    d.mkdir()
    return d


def test_training_commands_in_the_serving_only_venv_say_make_init() -> None:
    commands = [
        ["train"],
        ["train", "--model", "resnet", "--data-dir", "/missing"],
        ["evaluate"],
        ["export"],
        ["validate"],
        ["tune-inference"],
        ["data", "prepare"],
    ]
    proc = subprocess.run(
        [sys.executable, "-c", WITHOUT_TRAINING_STACK, json.dumps(sorted(TRAINING_STACK)), json.dumps(commands)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, "GLIBC_TUNABLES": "glibc.malloc.mmap_max=0"},
    )
    assert proc.returncode == 0, proc.stderr
    for args, (code, stderr, exception) in zip(commands, json.loads(proc.stdout), strict=True):
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert code == 2, (args, code, stderr, exception)
        assert len(lines) == 1 and FULL_ENV_HINT in lines[0] and "make init" in lines[0], (args, stderr)


def test_serving_commands_still_work_without_the_training_stack(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            WITHOUT_TRAINING_STACK,
            json.dumps(sorted(TRAINING_STACK)),
            json.dumps([["--help"], ["predict", str(tmp_path / "missing.jpg")]]),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    (help_code, _, _), (predict_code, predict_err, _) = json.loads(proc.stdout)
    assert help_code == 0
    # predict reaches its own argument check: it does not need the training stack.
    assert predict_code == 2 and "no such file or folder" in predict_err


def test_train_with_a_missing_data_dir(tmp_path: Path) -> None:
    r = runner.invoke(app, ["train", "--data-dir", str(tmp_path / "missing")])
    _one_line_error(r, str(tmp_path / "missing"), "does not exist", "catsdogs data download", "data.source")


def test_default_data_source_missing_names_the_download_and_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("data:\n  source: not-downloaded\n")
    r = runner.invoke(app, ["data", "prepare", "--params", str(params)])
    _one_line_error(r, "not-downloaded", "catsdogs data download", "data.source in params.yaml")


def test_model_typo_fails_before_any_data_is_read(raw_dir: Path) -> None:
    # raw_dir is empty: if the command got as far as preparing data it would fail with another message.
    r = runner.invoke(app, ["train", "--model", "resnet", "--data-dir", str(raw_dir)])
    line = _one_line_error(r, "unknown model 'resnet'", "resnet_small", "simple_cnn")
    assert "prepar" not in line


def test_invalid_value_names_the_setting(raw_dir: Path) -> None:
    r = runner.invoke(app, ["train", "--epochs", "0", "--data-dir", str(raw_dir)])
    _one_line_error(r, "train.epochs", "greater than or equal to 1")


@pytest.mark.parametrize("command", ["evaluate", "export", "tune-inference"])
def test_stages_before_training_say_train_first(command: str, tmp_path: Path) -> None:
    r = runner.invoke(app, [command, "--checkpoint", str(tmp_path / "best.pt")])
    _one_line_error(r, "no checkpoint at", "catsdogs train")


def test_distill_without_calibration_says_calibrate_first(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "best.pt").write_bytes(b"not read before the calibration is found")
    (tmp_path / "raw").mkdir()
    params = tmp_path / "params.yaml"
    params.write_text(f"data:\n  source: {tmp_path / 'raw'}\ntrain:\n  output_dir: runs\n")
    r = runner.invoke(app, ["distill", "--params", str(params)])
    _one_line_error(r, "no calibration at", "catsdogs calibrate")


def test_teacher_without_its_data_names_the_folder(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(f"data:\n  source: {tmp_path / 'nowhere'}\n")
    r = runner.invoke(app, ["teacher", "--params", str(params)])
    _one_line_error(r, str(tmp_path / "nowhere"), "data.source in params.yaml")
    assert not (tmp_path / "models").exists()  # it stopped before building anything


@pytest.mark.parametrize("command", ["evaluate", "distill"])
def test_default_checkpoint_missing(command: str, tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("train:\n  output_dir: runs\n")
    r = runner.invoke(app, [command, "--params", str(params)])
    _one_line_error(r, str(tmp_path / "runs" / "best.pt"), "catsdogs train")


def test_missing_params_file(tmp_path: Path) -> None:
    r = runner.invoke(app, ["export", "--params", str(tmp_path / "params.yml")])
    _one_line_error(r, "params.yml does not exist")


def test_help_has_no_type_noise_and_shows_params_defaults() -> None:
    from catsdogs.core.config import load_params

    p = load_params()
    for args in (["--help"], ["train", "--help"], ["predict", "--help"], ["data", "prepare", "--help"]):
        r = runner.invoke(app, args, env={"COLUMNS": "250"})
        assert r.exit_code == 0
        for noise in ("<bool>", "<int>", "<str>", "<float>", "<path>"):
            assert noise not in r.stdout, (args, noise)
    r = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "250"})
    assert f"default: {p.train.epochs}, from params.yaml train.epochs" in r.stdout
    assert f"default: {p.model.name}, from params.yaml model.name" in r.stdout


def test_download_prints_the_setting_that_prepare_and_train_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import catsdogs.data.download

    def fake_download(dest: Path, source: str) -> list[Path]:
        (dest / "dogs-vs-cats" / "train").mkdir(parents=True)
        return [dest / "dogs-vs-cats"]

    monkeypatch.setattr(catsdogs.data.download, "download", fake_download)
    r = runner.invoke(app, ["data", "download", "--dest", str(tmp_path)])
    assert r.exit_code == 0, r.output
    train_dir = tmp_path / "dogs-vs-cats" / "train"
    assert f"next: set data.source: {train_dir} in params.yaml" in r.stdout
    # ... and that setting is what prepare reads.
    params = tmp_path / "params.yaml"
    params.write_text(f"data:\n  source: {train_dir}\n")
    from catsdogs.core.config import load_params

    assert load_params(params).path(load_params(params).data.source) == train_dir
