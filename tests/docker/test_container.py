"""The real serving image: built from the Dockerfile, run, and exercised over HTTP.

No registry is needed: scripts/docker/ starts a private dockerd (no bridge, host networking)
and builds a debootstrap stand-in for python:3.11-slim. The container runs the way
Kubernetes runs it: read-only root filesystem, /tmp as a scratch volume, 2 workers.
Everything started here (containers, and dockerd when this module started it) is stopped
at the end, on failure too.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from catsdogs.core.paths import MODELS_DIR, PROJECT_ROOT
from support import IN_CI, free_port, require_binary

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SCRIPTS = PROJECT_ROOT / "scripts" / "docker"
BASE_IMAGE = "catsdogs-base:bookworm"
IMAGE = "catsdogs-api:pytest"
IMAGE_SIZE_GOAL = 500 * 1000 * 1000  # bytes, the "under 500 MB" goal of the serving image
APP_UID = "10001"
BUILD_TIMEOUT_S = 900
STARTUP_TIMEOUT_S = 120


# How Kubernetes runs the pod (read-only root, /tmp as emptyDir, no capabilities): the container must work so.
HARDENED_RUN_ARGS = ("--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges")


def _version() -> str:
    with (PROJECT_ROOT / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


@dataclass
class Docker:
    """The docker CLI, pointed at the daemon the test uses."""

    env: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)

    def __call__(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["docker", *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"docker {' '.join(args[:3])} ... failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        return proc

    def inspect(self, *args: str) -> Any:
        return json.loads(self(*args).stdout)[0]

    def logs(self, container: str) -> str:
        proc = self("logs", "--tail", "60", container, check=False)
        return (proc.stdout + proc.stderr)[-6000:]


def _report(config: pytest.Config, line: str) -> None:
    """A line in the test output (timings, image size) even while output is captured."""
    capture = config.pluginmanager.get_plugin("capturemanager")
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if capture is None or reporter is None:
        print(f"[docker] {line}")
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(f"[docker] {line}")


def _run_script(name: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPTS / name)], env=env, capture_output=True, text=True, timeout=timeout, check=False, cwd=PROJECT_ROOT
    )


@pytest.fixture(scope="module")
def docker(pytestconfig: pytest.Config) -> Iterator[Docker]:
    """A running Docker daemon: an existing one, or a private dockerd stopped again at the end."""
    require_binary("docker", "apt-get install -y docker.io")
    require_binary("dockerd", "apt-get install -y docker.io")
    require_binary("debootstrap", "apt-get install -y debootstrap")

    env = dict(os.environ)
    # The classic builder: no buildx plugin needed, and `--network host` needs no BuildKit entitlement.
    env.setdefault("DOCKER_BUILDKIT", "0")
    up = _run_script("dockerd-up.sh", env, timeout=120)
    if up.returncode != 0:
        message = f"could not reach or start a Docker daemon:\n{up.stderr[-2000:]}"
        if not IN_CI and os.geteuid() != 0:
            pytest.skip(f"{message}\n(run as root, or point DOCKER_HOST at a running daemon)")
        pytest.fail(message)
    exports = dict(
        line.removeprefix("export ").split("=", 1) for line in up.stdout.splitlines() if line.startswith("export ")
    )
    env["DOCKER_HOST"] = exports["DOCKER_HOST"]
    started = exports.get("CATSDOGS_DOCKERD_STARTED") == "1"
    try:
        yield Docker(env)
    finally:
        if started:
            down = _run_script("dockerd-down.sh", env, timeout=120)
            _report(pytestconfig, f"dockerd stopped (rc {down.returncode}) {down.stderr.strip()}")
            leftover = subprocess.run(["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True, check=False)
            root = env.get("CATSDOGS_DOCKER_ROOT", "/var/tmp/catsdogs-docker")
            stale = [m for m in leftover.stdout.splitlines() if m.startswith(root)]
            assert down.returncode == 0, down.stderr
            assert not stale, f"mounts left under {root}: {stale}"


@pytest.fixture(scope="module")
def image(docker: Docker, pytestconfig: pytest.Config) -> dict[str, Any]:
    """The image built from the repository's Dockerfile on the stand-in base; its `docker image inspect`."""
    for name in ("model.json", "model.onnx"):
        if not (MODELS_DIR / name).is_file():
            pytest.fail(f"the image ships the model bundle, but {MODELS_DIR / name} is missing (make export)")

    start = time.perf_counter()
    base = _run_script("build-base.sh", docker.env, timeout=900)
    if base.returncode != 0 and not IN_CI and os.geteuid() != 0:
        pytest.skip(f"the stand-in base image needs root (debootstrap):\n{base.stderr[-1000:]}")
    assert base.returncode == 0, f"build-base.sh failed:\n{base.stderr[-3000:]}"
    docker.timings["base"] = time.perf_counter() - start
    _report(pytestconfig, f"base image {BASE_IMAGE}: {docker.timings['base']:.1f} s ({base.stderr.strip()})")

    revision = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False, cwd=PROJECT_ROOT
    )
    build_args = {
        "BASE_IMAGE": BASE_IMAGE,
        "VERSION": _version(),
        "REVISION": revision.stdout.strip() or "unknown",
        "CREATED": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    args = [arg for key, value in build_args.items() for arg in ("--build-arg", f"{key}={value}")]
    start = time.perf_counter()
    docker("build", "--network", "host", *args, "-t", IMAGE, str(PROJECT_ROOT), timeout=BUILD_TIMEOUT_S)
    docker.timings["build"] = time.perf_counter() - start
    _report(pytestconfig, f"image {IMAGE}: built in {docker.timings['build']:.1f} s")

    info: dict[str, Any] = docker.inspect("image", "inspect", IMAGE)
    info["build_args"] = build_args
    return info


@dataclass
class Container:
    name: str
    url: str


def _start(docker: Docker, name: str, *run_args: str) -> None:
    docker("rm", "-f", name, check=False)
    docker("run", "-d", "--name", name, "--network", "host", *run_args, IMAGE)


def _serve_hardened(docker: Docker, name: str, port: int, *run_args: str) -> None:
    """Start the image as Kubernetes runs it (HARDENED_RUN_ARGS) on ``port`` and wait until it serves."""
    _start(docker, name, *HARDENED_RUN_ARGS, "-e", "CATSDOGS_HOST=127.0.0.1", "-e", f"CATSDOGS_PORT={port}", *run_args)
    _wait_until_serving(docker, name, f"http://127.0.0.1:{port}")


def _wait_until_serving(docker: Docker, name: str, url: str) -> None:
    """Until every worker has its model: /ready answered 200 ten times in a row (any worker may answer)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    streak = 0
    while time.monotonic() < deadline and streak < 10:
        state = docker.inspect("inspect", name)["State"]
        if not state["Running"]:
            pytest.fail(f"container {name} exited ({state['ExitCode']}):\n{docker.logs(name)}")
        try:
            streak = streak + 1 if httpx.get(f"{url}/ready", timeout=2).status_code == 200 else 0
        except httpx.TransportError:
            streak = 0
        time.sleep(0.2 if streak else 0.5)
    if streak < 10:
        pytest.fail(f"{url}/ready did not settle on 200 within {STARTUP_TIMEOUT_S} s:\n{docker.logs(name)}")


@pytest.fixture(scope="module")
def container(docker: Docker, image: dict[str, Any], request: pytest.FixtureRequest) -> Iterator[Container]:
    """The image running like in Kubernetes: read-only root, /tmp a scratch mount, no capabilities, 2 workers."""
    name = f"catsdogs-pytest-{os.getpid()}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    failed_before = request.session.testsfailed
    try:
        start = time.perf_counter()
        _serve_hardened(docker, name, port, "-e", "CATSDOGS_WORKERS=2")
        _report(request.config, f"container {name} serving on {url} after {time.perf_counter() - start:.1f} s")
        yield Container(name, url)
    finally:
        if request.session.testsfailed > failed_before:
            _report(request.config, f"container {name} logs (tail):\n{docker.logs(name)}")
        docker("rm", "-f", name, check=False)


def _model_meta() -> dict[str, Any]:
    return json.loads((MODELS_DIR / "model.json").read_text())


def _photo(uploads_dir: Path, label: str) -> Path:
    photos = sorted(uploads_dir.glob(f"{label}.*.jpg"))
    assert photos, f"no {label} photos in {uploads_dir}"
    return photos[0]


def _predict(url: str, photo: Path) -> httpx.Response:
    """POST /predict; a 503 "not_ready" (a worker still loading its model) is retried for a while."""
    deadline = time.monotonic() + 30
    while True:
        response = httpx.post(
            f"{url}/predict", files={"file": (photo.name, photo.read_bytes(), "image/jpeg")}, timeout=30
        )
        if response.status_code != 503 or time.monotonic() > deadline:
            return response
        time.sleep(0.5)


def _prediction_counts(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "predictions_total"
    )


# --- the image ----------------------------------------------------------------------------


def test_image_metadata(image: dict[str, Any]) -> None:
    config = image["Config"]
    labels = config["Labels"]
    args = image["build_args"]
    assert labels["org.opencontainers.image.version"] == args["VERSION"]
    assert labels["org.opencontainers.image.revision"] == args["REVISION"]
    assert labels["org.opencontainers.image.created"] == args["CREATED"]
    assert labels["org.opencontainers.image.title"] == "catsdogs-api"
    assert config["User"] == f"{APP_UID}:{APP_UID}"
    assert "8000/tcp" in config["ExposedPorts"]
    assert config["Healthcheck"]["Test"][0] == "CMD"
    assert "/health" in " ".join(config["Healthcheck"]["Test"])
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/")
    assert env["MALLOC_ARENA_MAX"] == "2"  # bounds the decode threads' memory (docs/serving.md)


def test_image_size(
    image: dict[str, Any], docker: Docker, pytestconfig: pytest.Config, record_testsuite_property: Any
) -> None:
    size = int(docker("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout.strip())
    record_testsuite_property("docker_image_size_bytes", size)
    _report(
        pytestconfig, f"image {IMAGE} size: {size} bytes ({size / 1e6:.0f} MB; goal < {IMAGE_SIZE_GOAL / 1e6:.0f} MB)"
    )
    assert size == image["Size"]
    assert size < IMAGE_SIZE_GOAL


def test_image_holds_only_the_serving_runtime(image: dict[str, Any], docker: Docker) -> None:
    probe = (
        "import importlib.util, json, shutil; "
        "mods = ['torch', 'mlflow', 'dvc', 'onnx', 'pip', 'onnxruntime', 'openvino', 'fastapi', 'uvicorn', "
        "'catsdogs.serve']; "
        "tools = ['gcc', 'cc', 'g++', 'make', 'curl']; "
        "print(json.dumps({'mods': {m: importlib.util.find_spec(m.split('.')[0]) is not None for m in mods}, "
        "'tools': {t: shutil.which(t) for t in tools}}))"
    )
    out = docker("run", "--rm", "--network", "none", "--entrypoint", "/opt/venv/bin/python", IMAGE, "-c", probe)
    found = json.loads(out.stdout)
    assert {m: found["mods"][m] for m in ("torch", "mlflow", "dvc", "onnx", "pip")} == dict.fromkeys(
        ("torch", "mlflow", "dvc", "onnx", "pip"), False
    )
    assert all(found["mods"][m] for m in ("fastapi", "uvicorn", "catsdogs.serve")), found
    # one model runtime: the one the bundle defaults to (scripts/docker/serve-requirements.py)
    runtime = (
        "openvino"
        if json.loads((MODELS_DIR / "model.json").read_text())["default_backend"].startswith("openvino")
        else "onnxruntime"
    )
    assert found["mods"][runtime], found
    assert not found["mods"][({"openvino", "onnxruntime"} - {runtime}).pop()], found
    assert found["tools"] == dict.fromkeys(found["tools"]), f"build tools in the serving image: {found['tools']}"


# --- the running container ------------------------------------------------------------------


def test_health_and_ready(container: Container) -> None:
    health = httpx.get(f"{container.url}/health", timeout=5)
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "healthy" and body["model_loaded"] is True  # the seed clients' fields too
    assert set(body) == {"status", "model_loaded", "timestamp", "version"}
    ready = httpx.get(f"{container.url}/ready", timeout=5)
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"
    # the runtime the bundle was exported for is in the image (a trimmed OpenVINO still compiles for the CPU)
    default = json.loads((MODELS_DIR / "model.json").read_text())["default_backend"]
    assert ready.json()["backend"] == default


@pytest.mark.parametrize("label", ["cat", "dog"])
def test_predict_real_photo(container: Container, uploads_dir: Path, label: str) -> None:
    photo = _photo(uploads_dir, label)
    response = _predict(container.url, photo)
    assert response.status_code == 200, response.text
    body = response.json()
    meta = _model_meta()
    classes = meta["preprocess"]["class_names"]
    assert body["prediction"] in classes
    assert set(body["probabilities"]) == set(classes)
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert body["probability"] == pytest.approx(body["probabilities"][body["prediction"]], abs=1e-6)
    assert body["model_version"] == meta["version"]
    assert response.headers["X-Request-ID"] == body["request_id"]
    assert body["prediction"] == label


def test_bad_upload_gets_a_clear_4xx(container: Container) -> None:
    response = httpx.post(
        f"{container.url}/predict", files={"file": ("notes.jpg", b"this is not a JPEG", "image/jpeg")}, timeout=10
    )
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "not_an_image"
    assert isinstance(body["detail"], str) and body["detail"]


def test_metrics_add_up_across_workers(container: Container, uploads_dir: Path) -> None:
    """/metrics may be answered by either worker: only multiprocess mode (files in /tmp) counts all."""
    photo = _photo(uploads_dir, "cat")
    before = _prediction_counts(container.url)
    for _ in range(4):
        response = _predict(container.url, photo)
        assert response.status_code == 200, response.text
    assert _prediction_counts(container.url) - before == 4


def test_runs_as_non_root_on_a_read_only_root(container: Container, docker: Docker) -> None:
    uid = docker("exec", container.name, "id", "-u").stdout.strip()
    assert uid == APP_UID
    info = docker.inspect("inspect", container.name)
    assert info["Config"]["User"] == f"{APP_UID}:{APP_UID}"
    assert info["HostConfig"]["ReadonlyRootfs"] is True
    denied = docker("exec", container.name, "touch", "/app/x", check=False)
    assert denied.returncode != 0
    # The workers' metric files went to /tmp (the one writable place).
    listing = docker("exec", container.name, "ls", "/tmp/prometheus").stdout.split()
    assert any(name.endswith(".db") for name in listing), listing


def test_healthcheck_becomes_healthy(container: Container, docker: Docker) -> None:
    deadline = time.monotonic() + 90  # interval 10 s; the first probe runs 10 s after start
    status = ""
    while time.monotonic() < deadline:
        status = docker("inspect", "--format", "{{.State.Health.Status}}", container.name).stdout.strip()
        if status == "healthy":
            break
        assert status == "starting", f"health status {status}: {docker.inspect('inspect', container.name)['State']}"
        time.sleep(1)
    assert status == "healthy"


# --- lifecycle ------------------------------------------------------------------------------


def test_stops_cleanly_on_sigterm(image: dict[str, Any], docker: Docker) -> None:
    """`docker stop` / a Kubernetes rollout sends SIGTERM to PID 1: the server must exit by itself, 0."""
    name = f"catsdogs-pytest-stop-{os.getpid()}"
    port = free_port()
    try:
        _serve_hardened(docker, name, port)
        start = time.perf_counter()
        docker("stop", "-t", "20", name, timeout=60)
        elapsed = time.perf_counter() - start
        state = docker.inspect("inspect", name)["State"]
        assert state["ExitCode"] == 0, docker.logs(name)
        assert elapsed < 20, f"took {elapsed:.1f} s: SIGTERM was ignored until the SIGKILL"
    finally:
        docker("rm", "-f", name, check=False)


def test_refuses_to_start_without_a_writable_tmp(image: dict[str, Any], docker: Docker) -> None:
    """Read-only root and no /tmp volume: a clear startup error, not a 500 on the first large upload."""
    name = f"catsdogs-pytest-rotmp-{os.getpid()}"
    try:
        _start(docker, name, "--read-only", "-e", "CATSDOGS_HOST=127.0.0.1", "-e", f"CATSDOGS_PORT={free_port()}")
        exit_code = int(docker("wait", name, timeout=60).stdout.strip())
        assert exit_code != 0
        assert "/tmp is not writable" in docker.logs(name)
    finally:
        docker("rm", "-f", name, check=False)
