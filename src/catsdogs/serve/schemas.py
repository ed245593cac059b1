"""Response bodies of the API (they drive the OpenAPI schema at /docs)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

_PREDICTION_EXAMPLE: dict[str, Any] = {
    "prediction": "cat",
    "probability": 0.875,
    "confidence": 0.875,
    "probabilities": {"cat": 0.875, "dog": 0.125},
    "inference_time_ms": 3.1,
    "is_cat_or_dog": True,
    "pet_score": 0.98,
    "uncertain": False,
    "reason": None,
    "looks_like": None,
    "looks_like_kind": None,
}


class ErrorDetail(BaseModel):
    """The error of one file inside a `/predict/batch` answer."""

    code: str = Field(description="Stable machine-readable reason, e.g. `not_an_image`, `too_large`.")
    message: str = Field(description="What is wrong, for humans.")


class ErrorResponse(BaseModel):
    """Every error the API itself produces (FastAPI's `HTTPException` shape, plus a machine-readable code)."""

    model_config = ConfigDict(extra="allow")
    detail: str = Field(description="What is wrong, as a sentence for humans.")
    code: str = Field(description="Stable machine-readable reason, e.g. `not_an_image`, `too_large`.")


class ValidationErrorResponse(BaseModel):
    """FastAPI's own validation error (unchanged), plus a machine-readable code.

    Routes that validate a body themselves (``/admin/reload``) answer 422 with a sentence instead.
    """

    detail: list[dict[str, Any]] | str = Field(
        description="FastAPI's list of validation errors (`loc`, `msg`, `type`), or one sentence."
    )
    code: str = Field(description="`missing_field` or `invalid_request`.")


class PredictionFields(BaseModel):
    prediction: str = Field(description="Predicted class.")
    probability: float = Field(ge=0, le=1, description="Probability of the predicted class.")
    confidence: float = Field(ge=0, le=1, description="Same as `probability` (kept for clients of the seed API).")
    probabilities: dict[str, float] = Field(description="Probability of every class.")
    inference_time_ms: float = Field(description="Model run time (for a batch: the one run of the whole batch).")
    is_cat_or_dog: bool = Field(
        True, description="False when the image does not look like a cat or a dog (then `prediction` is unreliable)."
    )
    pet_score: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Probability in [0, 1] that a cat or a dog is in the photo, from the ImageNet head "
        "(null when the model bundle has no such detector). Under the threshold: `is_cat_or_dog` is false.",
    )
    uncertain: bool = Field(
        False, description="The calibrated confidence is below the bundle's threshold (chosen on the validation set)."
    )
    reason: str | None = Field(
        None, description="A short sentence when `is_cat_or_dog` is false or `uncertain` is true, else null."
    )
    looks_like: str | None = Field(
        None,
        description="When `is_cat_or_dog` is false: what the image looks like instead, in a plain word "
        '(e.g. "horse", "person", "ant"), else null.',
    )
    looks_like_kind: str | None = Field(
        None, description="When `is_cat_or_dog` is false: animal, person, object, food, plant or scene, else null."
    )


class PredictionResponse(PredictionFields):
    model_config = ConfigDict(
        json_schema_extra={"example": {**_PREDICTION_EXAMPLE, "model_version": "1.0.0", "request_id": "3f2a9c"}}
    )
    model_version: str
    request_id: str


class BatchPrediction(PredictionFields):
    filename: str | None


class BatchError(BaseModel):
    filename: str | None
    error: ErrorDetail


class BatchResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "results": [
                    {"filename": "cat.jpg", **_PREDICTION_EXAMPLE},
                    {
                        "filename": "notes.jpg",
                        "error": {
                            "code": "not_an_image",
                            "message": "the file is not an image format that can be decoded",
                        },
                    },
                ],
                "model_version": "1.0.0",
                "request_id": "3f2a9c",
            }
        }
    )
    results: list[BatchPrediction | BatchError] = Field(description="One entry per file, in upload order.")
    model_version: str
    request_id: str


class InfoResponse(BaseModel):
    message: str = Field(examples=["Cats vs Dogs Classification API"], description="What this service is.")
    name: str
    version: str = Field(description="API version.")
    model_version: str | None = Field(description="Version of the loaded model (null while loading).")
    docs: str = Field(examples=["/docs"], description="Interactive API reference.")
    health: str = Field(examples=["/health"], description="Liveness probe.")
    predict: str = Field(examples=["/predict"], description="Classify one image.")
    links: dict[str, str] = Field(description="Every endpoint by name.")


class HealthResponse(BaseModel):
    status: str = Field(examples=["healthy"], description="`healthy` while the process serves requests.")
    model_loaded: bool = Field(description="A model is loaded (false while the first load is in progress).")
    timestamp: str = Field(examples=["2025-01-01T12:00:00.000000+00:00"], description="Now, ISO 8601, UTC.")
    version: str = Field(description="API version.")


class UnhealthyResponse(HealthResponse):
    reason: str
    detail: str = Field(description="Same as `reason` (the API's error shape).")
    code: str = Field(examples=["model_load_failed"])


class ReadyResponse(BaseModel):
    status: str = Field(examples=["ready"])
    ready: bool = Field(description="True once the model is loaded and warmed up.")
    device: str = Field("cpu", description="Where the model runs.")
    model: str | None = Field(None, examples=["catsdogs:1.0.0"], description="Loaded model, `name:version`.")
    model_version: str | None = None
    backend: str | None = None


class NotReadyResponse(BaseModel):
    status: str = Field(examples=["not ready"])
    ready: bool = Field(examples=[False])
    device: str = "cpu"
    reason: str = Field(examples=["the model is loading"])
    detail: str = Field(description="Same as `reason` (the API's error shape).")
    code: str = Field(examples=["not_ready"])


class ModelInfoResponse(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    version: str
    architecture: str | None
    backend: str
    class_names: list[str]
    preprocess: dict[str, Any]
    metrics: dict[str, Any] | None
    source: str
    loaded_at: str


class ReloadRequest(BaseModel):
    model_path: str | None = Field(
        None, description="Bundle directory or `models:/name@alias`; default: the configured model_path."
    )


class ReloadResponse(BaseModel):
    status: str = Field(examples=["reloaded"])
    previous_version: str | None
    model_version: str
    backend: str
    source: str
    load_time_ms: float
