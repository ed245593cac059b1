"""`catsdogs predict` and `catsdogs serve` (argument handling; the server itself is in test_server.py)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from apihelpers import BLUE, RED, encode, solid
from typer.testing import CliRunner

from catsdogs.cli import app
from catsdogs.serve.commands import setup_multiprocess_dir

runner = CliRunner()


@pytest.fixture
def images(tmp_path: Path) -> Path:
    d = tmp_path / "imgs"
    (d / "sub").mkdir(parents=True)
    (d / "red.jpg").write_bytes(encode(solid(RED), "JPEG"))
    (d / "sub" / "blue.png").write_bytes(encode(solid(BLUE), "PNG"))
    (d / "notes.txt").write_text("not an image, and skipped in directories")
    return d


def test_predict_json_over_a_directory(images: Path, tiny_bundle: Path) -> None:
    r = runner.invoke(app, ["predict", str(images), "--format", "json", "--model", str(tiny_bundle)])
    assert r.exit_code == 0, r.output
    rows = {Path(x["file"]).name: x for x in json.loads(r.stdout)}
    assert set(rows) == {"red.jpg", "blue.png"}
    assert rows["red.jpg"]["prediction"] == "cat" and rows["blue.png"]["prediction"] == "dog"
    assert rows["red.jpg"]["cat"] + rows["red.jpg"]["dog"] == pytest.approx(1.0, abs=1e-5)


def test_predict_csv_with_a_bad_file_exits_1(images: Path, tiny_bundle: Path) -> None:
    r = runner.invoke(
        app, ["predict", str(images / "red.jpg"), str(images / "notes.txt"), "-f", "csv", "-m", str(tiny_bundle)]
    )
    assert r.exit_code == 1
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [row["prediction"] for row in rows] == ["cat", ""]
    assert rows[1]["error"] == "not_an_image"


def test_predict_table(images: Path, tiny_bundle: Path) -> None:
    r = runner.invoke(app, ["predict", str(images / "red.jpg"), "--model", str(tiny_bundle)], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "red.jpg" in r.stdout and "cat" in r.stdout and "1.0.0-test" in r.stdout


def test_predict_missing_path_and_bad_model(images: Path, tmp_path: Path) -> None:
    r = runner.invoke(app, ["predict", str(tmp_path / "nope.jpg")])
    assert r.exit_code == 2 and "nope.jpg: no such file or folder" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = runner.invoke(app, ["predict", str(images), "--model", str(tmp_path)])
    assert r.exit_code == 2 and "model.json is missing" in r.output


def test_predict_empty_folder_names_it_and_the_extensions(tmp_path: Path) -> None:
    empty = tmp_path / "holiday"
    empty.mkdir()
    (empty / "notes.txt").write_text("no photos here")
    r = runner.invoke(app, ["predict", str(empty)])
    assert r.exit_code == 2
    [line] = r.stderr.strip().splitlines()
    assert str(empty) in line and ".jpg" in line and ".png" in line and "Traceback" not in r.output


def test_predict_mixed_good_and_bad_paths_classifies_the_good_ones(images: Path, tiny_bundle: Path) -> None:
    missing = images / "missing.jpg"
    empty = images.parent / "empty"
    empty.mkdir()
    args = [str(images / "red.jpg"), str(missing), str(images / "notes.txt"), str(empty), str(images / "sub")]
    r = runner.invoke(app, ["predict", *args, "-f", "json", "-m", str(tiny_bundle)])
    assert r.exit_code == 1
    rows = json.loads(r.stdout)
    # One row per argument (a folder gives one per image), in argument order.
    assert [Path(row["file"]).name for row in rows] == ["red.jpg", "missing.jpg", "notes.txt", "empty", "blue.png"]
    assert [row.get("prediction") for row in rows] == ["cat", None, None, None, "dog"]
    assert [row.get("error") for row in rows] == [None, "not_found", "not_an_image", "no_images", None]
    assert r.stderr.strip().splitlines()[-1] == "classified 2 images (1 cat, 1 dog); 3 failed (see the error column)"


def test_predict_table_puts_errors_in_a_note_column(images: Path, tiny_bundle: Path) -> None:
    r = runner.invoke(
        app,
        ["predict", str(images / "red.jpg"), str(images / "gone.png"), "-m", str(tiny_bundle)],
        env={"COLUMNS": "200"},
    )
    assert r.exit_code == 1
    header = next(line for line in r.stdout.splitlines() if "prediction" in line)
    row = next(line for line in r.stdout.splitlines() if "gone.png" in line)
    cells = [c.strip() for c in row.strip("│┃ ").split("│")]
    names = [c.strip() for c in header.strip("│┃ ").split("┃")]
    by_name = dict(zip(names, cells, strict=True))
    assert by_name["prediction"] == "error" and by_name["confidence"] == ""
    assert by_name["note"] == "not_found: no such file or folder"
    assert "classified 1 image (1 cat); 1 failed" in r.stderr


def test_serve_help() -> None:
    r = runner.invoke(app, ["serve", "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0
    for option in ("--host", "--port", "--model", "--workers"):
        assert option in r.stdout


def test_multiprocess_dir_is_fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")  # records the original value, restored afterwards
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    assert setup_multiprocess_dir(1) is None
    made = setup_multiprocess_dir(2)
    assert made is not None and made.is_dir() and not any(made.iterdir())
    given = tmp_path / "prom"
    given.mkdir()
    (given / "counter_123.db").write_bytes(b"stale")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(given))
    assert setup_multiprocess_dir(1) == given and not (given / "counter_123.db").exists()


@pytest.mark.slow
def test_serving_never_imports_the_training_stack(tiny_bundle: Path, images: Path) -> None:
    """The serving image has no torch or mlflow: the CLI, the app and a prediction must not import them."""
    code = (
        "import sys\n"
        "import catsdogs.cli\n"
        "from catsdogs.serve.app import create_app\n"
        "from catsdogs.serve.settings import Settings\n"
        "from catsdogs.inference.predictor import Predictor\n"
        "create_app(Settings(model_path=sys.argv[1]))\n"
        "Predictor.load(sys.argv[1]).predict_bytes([open(sys.argv[2], 'rb').read()])\n"
        "print(sorted(m for m in ('torch', 'mlflow', 'sklearn', 'onnx') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tiny_bundle), str(images / "red.jpg")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
