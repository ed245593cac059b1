"""Helpers of the API tests (imported by conftest.py and the test modules).

The tiny bundle's model is ``logits = [k*r, -k*r]`` with ``r`` the mean normalised red channel, so
a red image is a confident "cat" and a blue one a confident "dog": tests can check which pixels the
model saw (first GIF frame, EXIF rotation, batch order) without depending on a trained model.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from catsdogs.core.transforms import PreprocessConfig, create_transform
from support import IN_CI, free_port, wait_http, wait_until

__all__ = ["IN_CI", "free_port"]  # re-exported: the API tests import them from here
IMAGE_SIZE = 32
RED = (220, 30, 30)
BLUE = (30, 30, 220)


PET_THRESHOLD = 0.5  # the tiny pet bundle's threshold: green photos are pets, red ones are not
LOOKS_LIKE = 339  # what the tiny pet bundle says a non-pet looks like: ImageNet's "sorrel", a horse


def _pet_nodes(helper: Any, TensorProto: Any) -> tuple[list[Any], list[Any], list[Any]]:
    """pet_score = sigmoid(mean green), looks_like = 339 for every image: nodes, initializers, outputs."""
    nodes = [
        helper.make_node("Gather", ["flat", "green"], ["g"], axis=1),
        helper.make_node("Sigmoid", ["g"], ["pet_score"]),
        helper.make_node("Mul", ["g", "zero"], ["g0"]),
        helper.make_node("Add", ["g0", "horse"], ["looks_f"]),
        helper.make_node("Cast", ["looks_f"], ["looks_like"], to=TensorProto.INT64),
    ]
    inits = [
        helper.make_tensor("green", TensorProto.INT64, [], [1]),
        helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
        helper.make_tensor("horse", TensorProto.FLOAT, [], [float(LOOKS_LIKE)]),
    ]
    outputs = [
        helper.make_tensor_value_info("pet_score", TensorProto.FLOAT, ["N"]),
        helper.make_tensor_value_info("looks_like", TensorProto.INT64, ["N"]),
    ]
    return nodes, inits, outputs


def write_tiny_bundle(
    path: Path, *, version: str = "1.0.0-test", default_backend: str = "onnx", int8: bool = True, pet: bool = False
) -> Path:
    """A valid bundle (same contract as the shipped one) around a 6-weight ONNX model.

    ``pet``: also the pet score and looks_like outputs (``_pet_nodes``), with threshold ``PET_THRESHOLD``.
    """
    import onnx
    from onnx import TensorProto, helper

    path.mkdir(parents=True, exist_ok=True)
    k = 4.0
    weights = helper.make_tensor("W", TensorProto.FLOAT, [3, 2], [k, -k, 0, 0, 0, 0])
    bias = helper.make_tensor("B", TensorProto.FLOAT, [2], [0.0, 0.0])
    pet_nodes, pet_inits, pet_outputs = _pet_nodes(helper, TensorProto) if pet else ([], [], [])
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
            helper.make_node("Gemm", ["flat", "W", "B"], ["logits"]),
            *pet_nodes,
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, IMAGE_SIZE, IMAGE_SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2]), *pet_outputs],
        initializer=[weights, bias, *pet_inits],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    onnx.checker.check_model(model)
    onnx.save(model, path / "model.onnx")
    if int8:  # same graph under the INT8 file name: the tests check which file is chosen, not quantisation
        onnx.save(model, path / "model.int8.onnx")
    meta = {
        "name": "catsdogs",
        "version": version,
        "architecture": "tiny_test",
        "parameters": 8,
        "preprocess": PreprocessConfig(image_size=IMAGE_SIZE).to_dict(),
        "metrics": {"accuracy": 0.5, "precision": 0.5, "recall": 0.5, "f1": 0.5, "roc_auc": 0.5},
        "files": {"onnx": "model.onnx", "onnx_int8": "model.int8.onnx" if int8 else None},
        "default_backend": default_backend,
        "trained_at": "2025-01-01T00:00:00Z",
        "git_commit": "0" * 40,
        "mlflow_run_id": None,
        "registered_version": None,
    }
    if pet:
        meta |= {"outputs": ["logits", "pet_score", "looks_like"], "thresholds": {"pet_score": PET_THRESHOLD}}
    (path / "model.json").write_text(json.dumps(meta, indent=2))
    (path / "MODEL_CARD.md").write_text("# tiny test model\n")
    return path


def wait_ready(client: TestClient | httpx.Client) -> None:
    wait_until(lambda: client.get("/ready").status_code == 200, "the service's /ready to answer 200")


# --- images ---------------------------------------------------------------------------------------------
def encode(img: Image.Image, fmt: str, **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def solid(color: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> Image.Image:
    return Image.new("RGB", size, color)


def png_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A ~70-byte PNG whose header declares ``width`` x ``height`` pixels."""
    small = encode(Image.new("L", (8, 8)), "PNG")
    ihdr = 8  # after the signature: length(4) b"IHDR"(4) data(13) crc(4)
    data = bytearray(small[ihdr + 8 : ihdr + 8 + 13])
    data[0:8] = struct.pack(">II", width, height)
    chunk = b"IHDR" + bytes(data)
    return small[: ihdr + 4] + chunk + struct.pack(">I", zlib.crc32(chunk)) + small[ihdr + 4 + 4 + 13 + 4 :]


def model_input_of(image: Image.Image) -> np.ndarray:
    """What the tiny model must receive for ``image`` (upright RGB), via the serving preprocessing."""
    return create_transform(PreprocessConfig(image_size=IMAGE_SIZE))(image)


# --- real servers (slow tests) ----------------------------------------------------------------------------
class ServerProcess:
    """``catsdogs serve`` in a subprocess on 127.0.0.1; its output (JSON logs) goes to a file."""

    def __init__(
        self,
        tmp: Path,
        bundle: Path,
        workers: int = 1,
        env: dict[str, str] | None = None,
        own_process_group: bool = False,
    ):
        self.port = free_port()
        self.workers = workers
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"server-{self.port}.log"
        cli = shutil.which("catsdogs", path=str(Path(sys.executable).parent)) or "catsdogs"
        full_env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        full_env.update({"CATSDOGS_LOG_FORMAT": "json", **(env or {})})
        self._log = self.log_path.open("wb")
        args = ["serve", "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(workers)]
        self.proc = subprocess.Popen(
            [cli, *args, "--model", str(bundle)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=full_env,
            start_new_session=own_process_group,  # a process group of its own, for a signal to all of it
        )

    def wait_ready(self) -> None:
        """/ready answers 200 *and* every worker has its model: /ready reaches one worker, and a sibling
        still loading would answer the next requests 503 not_ready."""
        wait_http(f"{self.url}/ready", process=self.proc, logs=self.logs)
        wait_until(
            lambda: sum(r.get("message") == "model ready" for r in self.log_records()) >= self.workers,
            f"all {self.workers} workers to log 'model ready'",
        )

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.logs().splitlines() if line.startswith("{")]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


class RunSpy:
    """Wraps an InferenceSession to see every model run (the C++ session cannot be patched).

    ``gate``: when set, each run waits for it, to hold a request "in flight" inside the model.
    """

    def __init__(self, session: Any, gate: Any = None):
        self.session = session
        self.gate = gate
        self.batches: list[np.ndarray] = []
        self.threads: list[str] = []
        self.started = threading.Event()

    def run(self, outputs: Any, feeds: dict[str, np.ndarray]) -> Any:
        self.batches.append(next(iter(feeds.values())).copy())
        self.threads.append(threading.current_thread().name)
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(timeout=30), "test gate never opened"
        return self.session.run(outputs, feeds)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)
