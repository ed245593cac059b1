"""The registered model as an MLflow pyfunc that takes encoded image bytes.

A client of ``mlflow models serve``, MLServer or KServe's MLflow runtime sends the photo as it is; decoding,
resizing, normalising, calibration and the pet score run inside the model, in ``Predictor``, exactly as behind
``POST /predict``. Nobody outside has to know the mean, the std or the image size.

- Input: a DataFrame with a column ``image`` of encoded image bytes (JPEG, PNG, ...). Base64 strings are
  accepted too (the REST servers decode the JSON's base64 themselves, as the signature's ``binary`` type says).
- Output, one row per input: ``prediction``, ``probability``, ``is_cat_or_dog``, ``uncertain``, ``pet_score``,
  ``reason``, ``looks_like``; a photo that cannot be classified gets ``error`` (a short code) and ``error_message``.
- The model carries the bundle (ONNX files + model.json, no PyTorch weights) as the artifact ``bundle`` and the
  ``catsdogs`` package as its code; its pip requirements are the serving runtime: no torch.
"""

from __future__ import annotations

import base64
import binascii
import importlib.metadata
import shutil
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from catsdogs.inference.bundle import PYFUNC_BUNDLE_KEY, serving_files
from catsdogs.inference.predictor import Prediction, Predictor

INPUT_COLUMN = "image"
BUNDLE_KEY = PYFUNC_BUNDLE_KEY  # the name of the bundle among the model's artifacts
# (column, MLflow type, always set for a classified photo)
OUTPUTS: tuple[tuple[str, str, bool], ...] = (
    ("prediction", "string", True),
    ("probability", "double", True),
    ("is_cat_or_dog", "boolean", True),
    ("uncertain", "boolean", True),
    ("pet_score", "double", False),
    ("reason", "string", False),
    ("looks_like", "string", False),
    ("error", "string", False),
    ("error_message", "string", False),
)
# What Predictor imports, pinned to the versions that ran the quality gate (mlflow adds its own pin).
SERVING_DISTRIBUTIONS = ("numpy", "pillow", "pydantic", "onnxruntime", "openvino")

MODEL_CODE = """# The catsdogs pyfunc model: catsdogs.inference.pyfunc.ImageClassifier (package in code/).
import mlflow

from catsdogs.inference.pyfunc import ImageClassifier

mlflow.models.set_model(ImageClassifier())
"""

SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("binary", INPUT_COLUMN)]),
    outputs=Schema([ColSpec(kind, name, required=required) for name, kind, required in OUTPUTS]),
)


class ImageClassifier(mlflow.pyfunc.PythonModel):
    """``Predictor`` behind MLflow's pyfunc interface. ``model_config``: ``backend`` (default ``auto``),
    ``threads`` (default: the CPU quota)."""

    def load_context(self, context: Any) -> None:
        config = context.model_config or {}
        self.predictor = Predictor.load(
            context.artifacts[BUNDLE_KEY],
            backend=str(config.get("backend", "auto")),
            threads=int(config.get("threads", 0)),
        )

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        return classify(self.predictor, _image_column(model_input))


def _image_column(model_input: Any) -> list[Any]:
    if isinstance(model_input, pd.DataFrame) and INPUT_COLUMN in model_input.columns:
        return model_input[INPUT_COLUMN].tolist()
    if isinstance(model_input, dict) and INPUT_COLUMN in model_input:
        value = model_input[INPUT_COLUMN]
        return list(value) if isinstance(value, list | tuple | pd.Series) else [value]
    got = list(model_input.columns) if isinstance(model_input, pd.DataFrame) else type(model_input).__name__
    raise mlflow.exceptions.MlflowException.invalid_parameter_value(
        f"expected a DataFrame with a column {INPUT_COLUMN!r} of encoded image bytes (or base64 strings), got {got}"
    )


def as_bytes(value: Any) -> bytes | tuple[str, str]:
    """The encoded image in ``value``, or (error code, message) for a value that holds none."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        try:
            return base64.b64decode("".join(value.split()), validate=True)
        except (binascii.Error, ValueError):
            return "not_base64", "a string image must be the base64 encoding of the file's bytes"
    if value is None or (isinstance(value, float) and value != value):  # None or NaN: an empty cell
        return b""
    return "not_bytes", f"an image must be bytes or a base64 string, got {type(value).__name__}"


def classify(predictor: Predictor, values: list[Any]) -> pd.DataFrame:
    """One output row per value, in order; the valid images go through ONE ``predict_bytes`` call."""
    rows: list[dict[str, Any]] = [{} for _ in values]
    payloads: dict[int, bytes] = {}
    for i, value in enumerate(values):
        data = as_bytes(value)
        if isinstance(data, bytes):
            payloads[i] = data
        else:
            rows[i] = {"error": data[0], "error_message": data[1]}
    for i, result in zip(payloads, predictor.predict_bytes(list(payloads.values())), strict=True):
        if isinstance(result, Prediction):
            rows[i] = {
                "prediction": result.label,
                "probability": result.confidence,
                "is_cat_or_dog": result.is_cat_or_dog,
                "uncertain": result.uncertain,
                "pet_score": result.pet_score,
                "reason": result.reason,
                "looks_like": result.looks_like,
            }
        else:
            rows[i] = {"error": result.reason, "error_message": result.message}
    frame = pd.DataFrame(rows, columns=[name for name, _, _ in OUTPUTS])
    for column in frame.columns:  # None, not NaN, in empty cells: NaN is not JSON, and the REST servers write JSON
        if frame[column].isna().any():
            frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    return frame


def serving_requirements() -> list[str]:
    return [f"{name}=={importlib.metadata.version(name)}" for name in SERVING_DISTRIBUTIONS]


def log_pyfunc(bundle: Path, meta: dict[str, Any], name: str = "model") -> Any:
    """Log ``bundle`` as a pyfunc model into the active run; returns MLflow's ``ModelInfo``."""
    import catsdogs

    with tempfile.TemporaryDirectory(prefix="catsdogs-pyfunc-") as tmp:
        staged = Path(tmp) / "bundle"
        staged.mkdir()
        for f in serving_files(bundle, meta):
            shutil.copy2(f, staged / f.name)
        code = Path(tmp) / "catsdogs"  # the package this model runs, without caches
        shutil.copytree(Path(catsdogs.__file__).parent, code, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        entry = Path(tmp) / "image_classifier.py"  # "models from code": the model is this file, not a pickle
        entry.write_text(MODEL_CODE)
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(entry),
            artifacts={BUNDLE_KEY: str(staged)},
            code_paths=[str(code)],
            signature=SIGNATURE,
            pip_requirements=serving_requirements(),
            metadata={"bundle_version": str(meta.get("version")), "input": "encoded image bytes"},
        )
