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
    """FastAPI's own validation error (unchanged), plus a machine-readable code."""

    detail: list[dict[str, Any]] = Field(description="FastAPI's list of validation errors (`loc`, `msg`, `type`).")
    code: str = Field(description="`missing_field` or `invalid_request`.")


class PredictionFields(BaseModel):
    prediction: str = Field(description="Predicted class.")
    probability: float = Field(ge=0, le=1, description="Probability of the predicted class.")
    confidence: float = Field(ge=0, le=1, description="Same as `probability` (kept for clients of the seed API).")
    probabilities: dict[str, float] = Field(description="Probability of every class.")
    inference_time_ms: float = Field(description="Model run time (for a batch: the one run of the whole batch).")


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
    name: str
    version: str = Field(description="API version.")
    model_version: str | None = Field(description="Version of the loaded model (null while loading).")
    links: dict[str, str]


class HealthResponse(BaseModel):
    status: str = Field(examples=["healthy"])


class ReadyResponse(BaseModel):
    status: str = Field(examples=["ready"])
    model_version: str | None = None
    backend: str | None = None
    reason: str | None = None


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
