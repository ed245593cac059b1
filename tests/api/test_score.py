"""`catsdogs score`: Ray Data batch scoring in local mode with 2 CPUs (catsdogs.inference.score, docs/batch-scoring.md).

The shipped bundle scores real photos; its answers are compared with ``Predictor`` on the same files. One local
Ray instance serves the whole module (its start-up is the slow part) and must leave no process behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from catsdogs.cli import app
from catsdogs.core.paths import MODELS_DIR
from catsdogs.inference.score import MEMBER_SEP, run_score
from catsdogs.predictor import Prediction, Predictor
from support import free_port, wait_until

# Ray's actors batch the photos differently from one predict_bytes call: on the bundle's bf16 backend the pet
# score (a similarity of bf16 features) moves by a few thousandths with the batch; the rest is equal.
PET_SCORE_TOLERANCE = 0.01
VERSION = json.loads((MODELS_DIR / "model.json").read_text())["version"]


def ray_processes(temp_root: str) -> list[str]:
    """Command lines of the running processes that belong to the Ray instance under ``temp_root``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone, or not a process
            continue
        if proc.name.isdigit() and temp_root in cmdline and int(proc.name) != os.getpid():
            found.append(cmdline[:200])
    return found


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray with 2 CPUs for the module, in a temporary folder of its own (short: socket paths)."""
    import ray

    temp_root = tempfile.mkdtemp(prefix="cdray-", dir="/tmp")
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp_root, logging_level="WARNING")
    try:
        yield
    finally:
        ray.shutdown()
        try:
            wait_until(lambda: not ray_processes(temp_root), "Ray's processes to exit", timeout=30)
        finally:
            shutil.rmtree(temp_root, ignore_errors=True)


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory, uploads_dir) -> Path:
    """3 cats and 3 dogs in two sub-folders, a truncated JPEG, an empty file and a text file named .png."""
    root = tmp_path_factory.mktemp("photos")
    for kind in ("cat", "dog"):
        (root / kind).mkdir()
        for f in sorted(uploads_dir.glob(f"{kind}.*.jpg"))[:3]:
            shutil.copy(f, root / kind / f.name)
    (root / "broken.jpg").write_bytes((uploads_dir / "cat.4001.jpg").read_bytes()[:400])
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.png").write_text("not a picture")
    (root / "readme.txt").write_text("not a photo: not scored")
    return root


@pytest.fixture(scope="module")
def expected(photo_dir) -> dict[str, Any]:
    """Predictor's answer (or error code) for every image file of photo_dir, by sha256."""
    predictor = Predictor.load(MODELS_DIR)
    files = sorted(p for p in photo_dir.rglob("*") if p.suffix in (".jpg", ".png"))
    results = predictor.predict_bytes([f.read_bytes() for f in files])
    return {hashlib.sha256(f.read_bytes()).hexdigest(): r for f, r in zip(files, results, strict=True)}


def read_rows(output: Path) -> list[dict[str, Any]]:
    return pq.read_table(output).to_pylist()


def assert_equal_to_predictor(row: dict[str, Any], expected: dict[str, Any]) -> None:
    want = expected[row["sha256"]]
    assert row["model_version"] == VERSION and row["scored_at"] is not None
    if not isinstance(want, Prediction):
        assert (row["error"], row["label"]) == (want.reason, None), row
        assert row["error_message"] == want.message
        return
    assert row["error"] is None, row
    assert (row["label"], row["is_cat_or_dog"], row["uncertain"]) == (want.label, want.is_cat_or_dog, want.uncertain)
    assert row["confidence"] == pytest.approx(want.confidence, abs=1e-5)
    assert row["p_cat"] == pytest.approx(want.probabilities["cat"], abs=1e-5)
    assert row["p_dog"] == pytest.approx(want.probabilities["dog"], abs=1e-5)
    assert row["pet_score"] == pytest.approx(want.pet_score, abs=PET_SCORE_TOLERANCE)


@pytest.mark.slow
def test_a_folder_gives_one_row_per_file_bad_files_as_errors_and_predictors_answers(
    local_ray, photo_dir, expected, tmp_path
):
    output = tmp_path / "scores.parquet"
    seen: list[tuple[int, int]] = []
    summary = run_score([photo_dir], output, model=MODELS_DIR, on_progress=lambda d, t: seen.append((d, t)))
    rows = read_rows(output)
    images = sorted(str(p) for p in photo_dir.rglob("*") if p.suffix in (".jpg", ".png"))
    assert sorted(r["path"] for r in rows) == images  # 9 rows: readme.txt is not an image file
    assert (summary.files, summary.scored, summary.skipped, summary.errors) == (9, 9, 0, 3)
    assert seen[-1] == (9, 9)  # the progress reached the total
    for row in rows:
        assert row["sha256"] == hashlib.sha256(Path(row["path"]).read_bytes()).hexdigest()
        assert_equal_to_predictor(row, expected)
    errors = {Path(r["path"]).name: r["error"] for r in rows if r["error"]}
    assert errors == {"broken.jpg": "corrupt", "empty.jpg": "empty", "notes.png": "not_an_image"}
    assert {r["label"] for r in rows if "/cat/" in r["path"]} == {"cat"}
    assert {r["label"] for r in rows if "/dog/" in r["path"]} == {"dog"}


@pytest.mark.slow
def test_a_rerun_skips_what_is_done_and_scores_only_new_or_changed_files(local_ray, photo_dir, tmp_path):
    photos = tmp_path / "photos"
    shutil.copytree(photo_dir, photos)
    output = tmp_path / "scores.parquet"
    first = sorted((photos / "cat").iterdir())
    (tmp_path / "some.txt").write_text("# the job that was interrupted\n" + "".join(f"{p}\n" for p in first))
    done = run_score([tmp_path / "some.txt"], output, model=MODELS_DIR, batch_size=1, checkpoint_rows=2)
    assert (done.scored, done.parts) == (3, 2)  # parts of 2 rows: what a kill loses is bounded
    before = {r["path"]: r for r in read_rows(output)}
    (output / ".part-killed-00000.parquet.tmp").write_bytes(b"half a part, from a writer that was killed")

    resumed = run_score([photos], output, model=MODELS_DIR)
    assert (resumed.files, resumed.scored, resumed.skipped) == (9, 6, 3)
    rows = read_rows(output)
    assert len(rows) == 9 and len({r["path"] for r in rows}) == 9  # no file twice
    assert all(r == before[r["path"]] for r in rows if r["path"] in before)  # not re-scored
    assert not list(output.glob(".*.tmp"))

    changed = photos / "cat" / first[0].name
    changed.write_bytes((photos / "dog" / sorted(os.listdir(photos / "dog"))[0]).read_bytes())
    again = run_score([photos], output, model=MODELS_DIR)
    assert (again.scored, again.skipped) == (1, 8)  # only the file whose content changed
    latest = [r for r in read_rows(output) if r["path"] == str(changed)]
    assert sorted(r["label"] for r in latest) == ["cat", "dog"]  # the old row stays: it scored other bytes


@pytest.mark.slow
def test_zip_and_tar_archives_are_scored_member_by_member(local_ray, photo_dir, expected, tmp_path):
    members = sorted(p for p in photo_dir.rglob("*") if p.is_file())
    with zipfile.ZipFile(tmp_path / "photos.zip", "w") as z:
        for p in members:
            z.write(p, p.relative_to(photo_dir))
    with tarfile.open(tmp_path / "photos.tar", "w") as t:
        for p in members:
            t.add(p, str(p.relative_to(photo_dir)))
    output = tmp_path / "scores.parquet"
    summary = run_score([tmp_path / "photos.zip", tmp_path / "photos.tar"], output, model=MODELS_DIR)
    assert (summary.files, summary.errors) == (18, 6)
    rows = read_rows(output)
    for row in rows:
        assert_equal_to_predictor(row, expected)
    archive, _, member = rows[0]["path"].partition(MEMBER_SEP)
    assert Path(archive).name in ("photos.zip", "photos.tar") and (photo_dir / member).is_file()


@pytest.mark.slow
def test_the_cli_stopped_by_sigterm_keeps_its_rows_and_a_rerun_resumes(photo_dir, kaggle_train_dir, tmp_path):
    """A real interruption: `catsdogs score` gets SIGTERM mid-job, then runs again into the same folder."""
    photos = sorted(kaggle_train_dir.iterdir())[:240]
    listing = tmp_path / "photos.txt"
    listing.write_text("".join(f"{p}\n" for p in photos) + f"{photo_dir / 'broken.jpg'}\n")
    output = tmp_path / "out.parquet"
    temp_root = tempfile.mkdtemp(prefix="cdcli-", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_TMPDIR": temp_root}
    cli = shutil.which("catsdogs", path=str(Path(sys.executable).parent)) or "catsdogs"
    cmd = [cli, "score", str(listing), "-o", str(output), "--num-cpus", "2"]
    slow = ["--actors", "1", "--batch-size", "4", "--checkpoint-rows", "4"]  # seconds of work after the 1st part
    try:
        with subprocess.Popen([*cmd, *slow], stderr=subprocess.PIPE, text=True, env=env) as job:
            wait_until(lambda: list(output.glob("part-*.parquet")), "the first part", timeout=120, process=job)
            job.send_signal(signal.SIGTERM)
            _, stderr = job.communicate(timeout=60)
        assert job.returncode == 130, stderr[-3000:]
        assert "interrupted: the parts written so far stay in" in stderr and "scoring" in stderr
        first = read_rows(output)
        assert 0 < len(first) < 241
        wait_until(lambda: not ray_processes(temp_root), "the stopped CLI's Ray processes to exit", timeout=30)

        again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        assert again.returncode == 0, again.stderr[-3000:]
        rest = 241 - len(first)
        assert f"scored {rest} of 241 files" in again.stderr and f"skipped {len(first)} already" in again.stderr
        assert "241/241" in again.stderr and "Traceback" not in again.stderr  # the bar, at its end
        rows = read_rows(output)
        assert len(rows) == 241 and len({r["path"] for r in rows}) == 241
        assert [r["error"] for r in rows if r["error"]] == ["corrupt"]
        wait_until(lambda: not ray_processes(temp_root), "the CLI's Ray processes to exit", timeout=30)
    finally:
        shutil.rmtree(temp_root, ignore_errors=True)


def _bad_source(tmp: Path, kind: str) -> Path:
    path = tmp / {"missing": "nothing", "empty-folder": "empty", "compressed-tar": "a.tar.gz"}.get(kind, kind)
    if kind == "empty-folder":
        path.mkdir()
    elif kind != "missing":
        path.write_bytes(b"not what the name says")
    return path


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", "no such file or folder"),
        ("empty-folder", "no image files in this folder"),
        ("compressed-tar", "decompress it first"),
        ("a.zip", "not a readable zip archive"),
        ("a.tar", "not a readable uncompressed tar archive"),
        ("a.pdf", "not a folder, an image, a list"),
    ],
)
def test_a_source_without_photos_is_one_line(tmp_path, kind, message):
    source = _bad_source(tmp_path, kind)
    result = CliRunner().invoke(app, ["score", str(source), "--output", str(tmp_path / "out.parquet")])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_an_output_that_is_a_file_or_other_scores_is_one_line(tmp_path, uploads_dir):
    photo = str(uploads_dir / "cat.4001.jpg")
    (tmp_path / "out.parquet").write_text("a file")
    result = CliRunner().invoke(app, ["score", photo, "--output", str(tmp_path / "out.parquet")])
    assert result.exit_code == 2 and "is a file; give a folder name" in result.output
    other = tmp_path / "other"
    other.mkdir()
    pq.write_table(pa.table({"x": [1]}), other / "part-0.parquet")
    result = CliRunner().invoke(app, ["score", photo, "--output", str(other)])
    assert result.exit_code == 2 and "holds scores with other columns (x)" in result.output
    result = CliRunner().invoke(app, ["score", photo, "-o", str(tmp_path / "o"), "--backend", "tensorrt"])
    assert result.exit_code == 2 and "unknown backend 'tensorrt'" in result.output
    result = CliRunner().invoke(app, ["score", photo, "-o", str(tmp_path / "o"), "--model", str(tmp_path)])
    assert result.exit_code == 2 and "model.json is missing" in result.output
    result = CliRunner().invoke(app, ["score", photo, "-o", str(tmp_path / "out.parquet" / "inside")])
    assert result.exit_code == 2 and "cannot create or write this folder (Not a directory)" in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("127.0.0.1:{closed}", "no Ray cluster answers there (Connection refused); is `ray start --head` running?"),
        ("ray://127.0.0.1:10001", "the Ray Client (ray://) is not supported"),
        ("head-without-port", "expected auto or HOST:PORT"),
    ],
)
def test_an_address_without_a_cluster_is_one_line_at_once(tmp_path, uploads_dir, address, message):
    address = address.format(closed=free_port())  # nothing listens there: Ray itself would retry for minutes
    photo = str(uploads_dir / "cat.4001.jpg")
    result = CliRunner().invoke(app, ["score", photo, "-o", str(tmp_path / "o"), "--address", address])
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()  # refused before anything was written


@pytest.fixture
def ray_cluster() -> Iterator[tuple[str, dict[str, str], str]]:
    """A real Ray cluster head (`ray start --head --block`, 2 CPUs, token authentication) in a temporary folder:
    (its GCS address, the environment that reaches it, its temporary folder)."""
    temp_root = tempfile.mkdtemp(prefix="cdhead-", dir="/tmp")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16), "RAY_USAGE_STATS_ENABLED": "0"}
    head_env = env | {"RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}  # a test head stops at once, no 30 s drain
    ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
    cmd = [ray_cli, "start", "--head", "--block", "--num-cpus", "2", "--port", str(port), "--temp-dir", temp_root]
    cmd += ["--include-dashboard", "false", "--disable-usage-stats"]
    log = Path(temp_root) / "head.log"
    with log.open("wb") as out:  # its own process group: the head and every process it starts stop together
        head = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=head_env, start_new_session=True)
    try:
        wait_until(lambda: "Ray runtime started" in log.read_text(), "the Ray head", timeout=120, process=head)
        yield f"127.0.0.1:{port}", env, temp_root
    finally:
        head.terminate()  # `ray start` stops the processes it started (no drain: RAY_GRACEFUL_..._S=0)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        try:
            wait_until(lambda: not ray_processes(temp_root), "the Ray head's processes to exit", timeout=30)
        finally:
            shutil.rmtree(temp_root, ignore_errors=True)


@pytest.mark.slow
def test_the_cli_scores_on_a_cluster_with_address(ray_cluster, photo_dir, expected, tmp_path):
    address, env, head_root = ray_cluster
    output = tmp_path / "scores.parquet"
    cli = shutil.which("catsdogs", path=str(Path(sys.executable).parent)) or "catsdogs"
    cmd = [cli, "score", str(photo_dir), "-o", str(output), "--address", address]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "scored 9 of 9 files, 3 errors" in done.stderr
    rows = read_rows(output)
    assert len(rows) == 9
    for row in rows:
        assert_equal_to_predictor(row, expected)
    # The Scorer actors ran in the cluster's worker processes (their logs are the head's), not a local Ray.
    worker_logs = Path(head_root).glob("session_*/logs/worker-*.out")
    assert any("MapBatches(Scorer)" in f.read_text(errors="replace") for f in worker_logs)
