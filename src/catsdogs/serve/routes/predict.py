"""``POST /predict`` (one image) and ``POST /predict/batch`` (several images, run in micro-batches)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from starlette.datastructures import UploadFile as FormFile

from catsdogs.inference.predictor import Prediction, PredictionError, PredictionResult
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


def check_upload(upload: FormFile, max_bytes: int) -> PredictionError | None:
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


def error_status(reason: str) -> int:
    # A part that is not an image (declared type or content) is a 400, as the original API answered; 415 is
    # kept for a request whose own Content-Type is wrong (see errors.py).
    return 413 if reason == "too_large" else IMAGE_ERROR_STATUS.get(reason, 400)


def record_predictions(metrics: Metrics, results: list[PredictionResult]) -> None:
    # The model latency is observed where the model runs (ServiceState, MicroBatcher): once per run.
    for r in results:
        if isinstance(r, Prediction):
            metrics.predictions.labels(r.label).inc()
            metrics.prediction_confidence.observe(r.confidence)
            if r.is_cat_or_dog:
                metrics.pet_decisions.labels("cat_or_dog", "pet").inc()
            else:
                metrics.pet_decisions.labels("not_cat_or_dog", r.looks_like_kind or "unknown").inc()
            if not r.is_cat_or_dog:
                metrics.not_cat_or_dog.inc()
            elif r.uncertain:
                metrics.uncertain.inc()


# /predict reads its body itself: multipart (field `file`) as before, or the raw image bytes as the body, which
# skips multipart parsing and FastAPI's form handling (the cheapest upload for clients that can send it).
_BINARY = {"type": "string", "contentMediaType": "application/octet-stream"}
PREDICT_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {
                    "file": {**_BINARY, "description": f"The image ({ACCEPTED_TYPES}); multipart field `file`."}
                },
            }
        },
        "image/*": {"schema": _BINARY, "example": "(the image file's bytes, e.g. with Content-Type: image/jpeg)"},
        "application/octet-stream": {"schema": _BINARY},
    },
}


def _missing_file() -> RequestValidationError:
    # The same 422 FastAPI makes for a missing required field.
    return RequestValidationError(
        [{"type": "missing", "loc": ("body", "file"), "msg": "Field required", "input": None}]
    )


async def read_image_body(request: Request, max_bytes: int) -> bytes:
    """The uploaded image: multipart field ``file``, or the whole body for an image/octet-stream Content-Type."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not media:  # no body at all: the required file is missing
        raise _missing_file()
    if media == "multipart/form-data":
        async with request.form() as form:
            upload = form.get("file")
            if not isinstance(upload, FormFile):  # Starlette's class (FastAPI's UploadFile subclasses it)
                raise _missing_file()
            problem = check_upload(upload, max_bytes)
            if problem is not None:
                raise APIError(error_status(problem.reason), problem.reason, problem.message)
            return await upload.read()
    if media.startswith("image/") or media in _GENERIC_TYPES:
        data = await request.body()  # bounded by the body-limit middleware
        if len(data) > max_bytes:
            raise APIError(413, "too_large", f"the image is {len(data):,} bytes; at most {max_bytes:,} are accepted")
        return data
    raise APIError(
        415,
        "unsupported_media_type",
        f"send the image as multipart/form-data field 'file', or as the body with Content-Type image/*, not {media}",
    )


@router.post(
    "/predict",
    response_model=PredictionResponse,
    summary="Classify one image",
    description="Send the image as multipart field `file`, or as the request body with `Content-Type: image/jpeg` "
    "(or another image type, or `application/octet-stream`): the raw body is the cheaper of the two.",
    responses=responses(400, 413, 415, 422, 503, only=PREDICT_ERRORS),
    openapi_extra={"requestBody": PREDICT_BODY},
)
async def predict(request: Request, state: StateDep, predictor: PredictorDep) -> dict[str, Any]:
    # Few dependencies on the hot path: FastAPI's dependency solving is a large share of its per-request cost.
    settings, metrics = state.settings, state.metrics
    data = await read_image_body(request, settings.max_upload_bytes)
    [result] = await state.infer(predictor, [data])
    if isinstance(result, PredictionError):
        raise APIError(error_status(result.reason), result.reason, result.message)
    record_predictions(metrics, [result])
    request.scope["state"]["log_fields"] = {
        "prediction": result.label,
        "confidence": result.confidence,
        "inference_ms": result.inference_time_ms,
    }
    return {**result.to_dict(), "model_version": predictor.version, "request_id": request_id(request)}


@router.post(
    "/predict/batch",
    response_model=BatchResponse,
    summary="Classify several images",
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
    record_predictions(metrics, merged)
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
