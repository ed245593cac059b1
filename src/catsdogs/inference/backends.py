"""Model runtimes behind ``Predictor``: ONNX Runtime and OpenVINO, behind ONNX Runtime's session interface.

Both read the bundle's ONNX files, so a backend is (runtime, file). Each runtime is imported only when
used: the serving image ships just the one its bundle defaults to (Dockerfile). OpenVINO is Intel's CPU runtime; it
folds the graph's shape arithmetic and runs the depthwise EfficientNet ~1.5x faster than ONNX Runtime
on the CPUs measured (README "Inference backends"). ``OpenVINOSession`` exposes the three methods the
predictor and the bundle checks use (``get_inputs``, ``get_outputs``, ``run``), so nothing else knows
which runtime it has.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    import onnxruntime as ort

# backend name -> (runtime, model.json ``files`` key of the ONNX file it runs)
BACKEND_FILES: dict[str, tuple[str, str]] = {
    "onnx": ("onnxruntime", "onnx"),
    "onnx-int8": ("onnxruntime", "onnx_int8"),
    "openvino": ("openvino", "onnx"),
    # The same fp32 file computed in bf16 where the CPU has it natively (AMX / AVX512-BF16); export keeps it
    # only if it changes almost no answers on val (README "Inference backends").
    "openvino-bf16": ("openvino", "onnx"),
}


class BackendUnavailable(RuntimeError):
    """The runtime a backend needs is not installed."""


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailable("the onnx backends need the onnxruntime package (pip install onnxruntime)") from exc
    return onnxruntime


class Session(Protocol):
    def get_inputs(self) -> list[Any]: ...
    def get_outputs(self) -> list[Any]: ...
    def run(self, output_names: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]: ...


def session_options(threads: int) -> ort.SessionOptions:
    ort = _import_onnxruntime()
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning threads burn the CPU between requests, which steals it from other workers/pods.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    # Denormals make CPU convolutions 10-100x slower and change nothing in the probabilities.
    so.add_session_config_entry("session.set_denormal_as_zero", "1")
    so.log_severity_level = 3
    return so


@dataclass(frozen=True)
class TensorInfo:
    """ONNX Runtime's ``NodeArg`` fields: symbolic dimensions are strings, as ONNX Runtime reports them."""

    name: str
    shape: list[int | str]
    type: str


_OV_TYPES = {"f32": "tensor(float)", "f16": "tensor(float16)", "u8": "tensor(uint8)", "i64": "tensor(int64)"}


class OpenVINOSession:
    """An OpenVINO compiled model with ONNX Runtime's ``run`` signature; safe to call from several threads."""

    def __init__(self, model_file: Path, threads: int, precision: str = "f32"):
        try:
            import openvino as ov
        except ImportError as exc:
            raise BackendUnavailable("the openvino backend needs the openvino package (pip install openvino)") from exc
        core = ov.Core()
        # Emulated bf16 is slower than f32: without native support the bf16 backend runs f32.
        self.precision = precision if precision == "f32" or _has_bf16(core) else "f32"
        config = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": threads,
            # f32 unless asked: OpenVINO would pick bf16 by itself on AMX CPUs, and that shifts the scores a little
            "INFERENCE_PRECISION_HINT": self.precision,
            # Several workers share the cores: pinning each one's threads to the same cores would serialise them.
            "ENABLE_CPU_PINNING": False,
        }
        self._compiled = core.compile_model(str(model_file), "CPU", config)
        self._local = threading.local()  # an infer request holds buffers: one per calling thread

    @staticmethod
    def _info(port: Any) -> TensorInfo:
        shape = [d.get_length() if d.is_static else f"d{i}" for i, d in enumerate(port.get_partial_shape())]
        return TensorInfo(port.get_any_name(), shape, _OV_TYPES.get(port.get_element_type().get_type_name(), "?"))

    def get_inputs(self) -> list[TensorInfo]:
        return [self._info(p) for p in self._compiled.inputs]

    def get_outputs(self) -> list[TensorInfo]:
        return [self._info(p) for p in self._compiled.outputs]

    def run(self, output_names: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        results = request.infer(feeds)  # releases the GIL; returns copies of the output buffers
        names = output_names or [o.get_any_name() for o in self._compiled.outputs]
        return [results[self._compiled.output(n)] for n in names]


def _has_bf16(core: Any) -> bool:
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def native_bf16() -> bool:
    """Whether OpenVINO is installed and this CPU computes bf16 natively (the ``openvino-bf16`` backend's gain)."""
    if not available("openvino"):
        return False
    import openvino as ov

    return _has_bf16(ov.Core())


def open_session(backend: str, model_file: Path, threads: int) -> Session:
    """A session running ``model_file`` with ``backend``'s runtime on ``threads`` threads."""
    runtime, _ = BACKEND_FILES[backend]
    if runtime == "openvino":
        return OpenVINOSession(model_file, threads, "bf16" if backend == "openvino-bf16" else "f32")
    options = session_options(threads)
    return _import_onnxruntime().InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])


def available(backend: str) -> bool:
    """Whether ``backend``'s runtime is installed."""
    runtime = BACKEND_FILES[backend][0]
    try:
        __import__(runtime)
    except ImportError:
        return False
    return True


def latency_ms(session: Session, x: np.ndarray, *, runs: int = 100, warmup: int = 5) -> dict[str, float]:
    """Model-only latency of ``x`` through ``session``, p50/p95 in ms: a measurement, never a test."""
    feeds = {session.get_inputs()[0].name: x}
    for _ in range(warmup):
        session.run(None, feeds)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - start) * 1000.0)
    return {"p50": round(float(np.median(times)), 3), "p95": round(float(np.percentile(times, 95)), 3)}
