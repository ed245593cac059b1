"""``POST /predict`` (one image) and ``POST /predict/batch`` (several images, one model run)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Request, UploadFile

from catsdogs.predictor import Prediction, PredictionError, PredictionResult
from catsdogs.serve.dependencies import PredictorDep, StateDep, request_id
from catsdogs.serve.errors import IMAGE_ERROR_STATUS, APIError, responses
from catsdogs.serve.metrics import Metrics
from catsdogs.serve.schemas import BatchResponse, PredictionResponse

router = APIRouter(tags=["predict"])

_IMAGE_ERRORS = {"empty", "not_an_image", "corrupt", "unsupported_media_type", "too_many_pixels"}
# Error codes each route can answer with (its OpenAPI responses); a batch reports bad images per file instead.
PREDICT_ERRORS = {"bad_request", *_IMAGE_ERRORS, "too_large", "not_ready"}
BATCH_ERRORS = {"bad_request", "too_large", "too_many_files", "unsupported_media_type", "not_ready"}

ACCEPTED_TYPES = "JPEG, PNG, WebP, GIF or BMP"
# Generic types that clients send when they do not know better: the bytes decide.
_GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})


def check_upload(upload: UploadFile, max_bytes: int) -> PredictionError | None:
    """Cheap checks before decoding: declared content type and size."""
    content_type = (upload.content_type or "").split(";")[0].strip().lower()
    if content_type not in _GENERIC_TYPES and not content_type.startswith("image/"):
        return PredictionError(
            "unsupported_media_type",
            f"{upload.filename or 'the file'} has content type {content_type}; send a {ACCEPTED_TYPES} image",
        )
    if upload.size is not None and upload.size > max_bytes:
        return PredictionError(
            "too_large", f"{upload.filename or 'the file'} is {upload.size:,} bytes; at most {max_bytes:,} are accepted"
        )
    return None


def _status(reason: str) -> int:
    # A part that is not an image (declared type or content) is a 400, as the original API answered; 415 is
    # kept for a request whose own Content-Type is wrong (see errors.py).
    return 413 if reason == "too_large" else IMAGE_ERROR_STATUS.get(reason, 400)


def _record(metrics: Metrics, results: list[PredictionResult]) -> None:
    timed: set[float] = set()
    for r in results:
        if isinstance(r, Prediction):
            metrics.predictions.labels(r.label).inc()
            metrics.prediction_confidence.observe(r.confidence)
            timed.add(r.inference_time_ms)
    for ms in timed:  # one observation per model run, not per image of a batch
        metrics.prediction_latency.observe(ms / 1000.0)


@router.post(
    "/predict",
    response_model=PredictionResponse,
    summary="Classify one image",
    responses=responses(400, 413, 415, 422, 503, only=PREDICT_ERRORS),
)
async def predict(
    request: Request,
    state: StateDep,
    predictor: PredictorDep,
    file: Annotated[UploadFile, File(description=f"The image ({ACCEPTED_TYPES}); multipart field `file`.")],
) -> dict[str, Any]:
    # Few dependencies on the hot path: FastAPI's dependency solving is a large share of its per-request cost.
    settings, metrics = state.settings, state.metrics
    problem = check_upload(file, settings.max_upload_bytes)
    if problem is not None:
        raise APIError(_status(problem.reason), problem.reason, problem.message)
    data = await file.read()
    [result] = await state.infer(predictor, [data])
    if isinstance(result, PredictionError):
        raise APIError(_status(result.reason), result.reason, result.message)
    _record(metrics, [result])
    request.scope["state"]["log_fields"] = {
        "prediction": result.label,
        "confidence": result.confidence,
        "inference_ms": result.inference_time_ms,
    }
    return {**result.to_dict(), "model_version": predictor.version, "request_id": request_id(request)}


@router.post(
    "/predict/batch",
    response_model=BatchResponse,
    summary="Classify several images in one model run",
    description="A file that cannot be classified gets its own `error` entry; the others are still classified.",
    responses=responses(400, 413, 415, 422, 503, only=BATCH_ERRORS),
)
async def predict_batch(
    request: Request,
    state: StateDep,
    predictor: PredictorDep,
    files: Annotated[
        list[UploadFile], File(min_length=1, description="The images; repeat the multipart field `files`.")
    ],
) -> dict[str, Any]:
    settings, metrics = state.settings, state.metrics
    if len(files) > settings.max_batch_files:
        raise APIError(
            413, "too_many_files", f"{len(files)} files sent; at most {settings.max_batch_files} per request"
        )
    results: list[PredictionResult | None] = []
    to_run: list[bytes] = []
    for upload in files:
        problem = check_upload(upload, settings.max_upload_bytes)
        results.append(problem)
        if problem is None:
            to_run.append(await upload.read())
    ran = iter(await state.infer(predictor, to_run) if to_run else [])
    merged = [r if r is not None else next(ran) for r in results]
    _record(metrics, merged)
    out: list[dict[str, Any]] = []
    for upload, r in zip(files, merged, strict=True):
        if isinstance(r, PredictionError):
            metrics.prediction_errors.labels(r.reason).inc()
        out.append({"filename": upload.filename, **r.to_dict()})
    request.scope["state"]["log_fields"] = {
        "files": len(files),
        "predictions": [r.label if isinstance(r, Prediction) else None for r in merged],
        "confidences": [r.confidence if isinstance(r, Prediction) else None for r in merged],
        "errors": [r.reason for r in merged if isinstance(r, PredictionError)],
    }
    return {"results": out, "model_version": predictor.version, "request_id": request_id(request)}
