"""One error shape for every failure: ``{"detail": {"code": ..., "message": ...}}``, plus its OpenAPI docs."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from catsdogs.serve.schemas import ErrorResponse

log = logging.getLogger("catsdogs.serve")

# InvalidImageError reasons -> HTTP status.
IMAGE_ERROR_STATUS = {"empty": 400, "not_an_image": 400, "corrupt": 400, "too_many_pixels": 413}

_DEFAULT_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    503: "not_ready",
}


class APIError(StarletteHTTPException):
    """An HTTP error with a stable ``code``; rendered as ``{"detail": {"code", "message"}}``."""

    def __init__(self, status_code: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(status_code=status_code, detail={"code": code, "message": message}, headers=headers)
        self.code = code
        self.message = message


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"detail": {"code": code, "message": message, **extra}}


def _remember(request: Request, code: str) -> None:
    # Read by the request middleware: the access log and prediction_errors_total use it.
    request.scope.setdefault("state", {})["error_code"] = code


async def http_exception_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc.detail, dict) and "code" in exc.detail:
        body = {"detail": exc.detail}
    else:
        # Framework errors (404 for unknown paths, 405, body parsing) get the same shape.
        body = error_body(_DEFAULT_CODES.get(exc.status_code, f"http_{exc.status_code}"), str(exc.detail))
    _remember(request, body["detail"]["code"])
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def validation_exception_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{k: v for k, v in e.items() if k in ("type", "loc", "msg")} for e in exc.errors()]
    missing = [".".join(str(p) for p in e["loc"][1:]) for e in errors if e.get("type") == "missing"]
    content_type = request.headers.get("content-type", "")
    if request.method == "POST" and not content_type.startswith("multipart/form-data"):
        code = "unsupported_media_type"
        message = f"send the image as multipart/form-data, not {content_type or 'an empty body'}"
        _remember(request, code)
        return JSONResponse(error_body(code, message), status_code=415)
    if missing:
        code = "missing_field"
        fields = ", ".join(f"'{m}'" for m in missing)
        message = f"required field {fields} is missing: send the image as multipart/form-data field {fields}"
    else:
        code = "invalid_request"
        message = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
    _remember(request, code)
    return JSONResponse(error_body(code, message, errors=jsonable_encoder(errors)), status_code=422)


async def unhandled_exception_handler(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    _remember(request, "internal_error")
    return JSONResponse(error_body("internal_error", "internal server error"), status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, http_exception_handler)
    app.add_exception_handler(RequestValidationError, validation_exception_handler)
    app.add_exception_handler(Exception, unhandled_exception_handler)


def error_example(code: str, message: str) -> dict[str, Any]:
    return {"summary": code, "value": error_body(code, message)}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` for a route: each status documented with its possible error codes."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        codes = ERROR_CATALOG[status]
        out[status] = {
            "model": ErrorResponse,
            "description": ERROR_DESCRIPTIONS[status],
            "content": {"application/json": {"examples": {c: error_example(c, m) for c, m in codes}}},
        }
    return out


ERROR_DESCRIPTIONS = {
    400: "The upload is not a usable image.",
    401: "Missing `Authorization: Bearer <token>` header.",
    403: "Wrong admin token.",
    404: "Not found (for /admin/reload: the admin API is disabled because no admin token is configured).",
    413: "Too large: the upload, the image's pixel count, or the number of files.",
    415: "The file's content type is not an image.",
    422: "The multipart field is missing or misnamed.",
    503: "The model is not loaded yet (or failed to load).",
}

ERROR_CATALOG: dict[int, list[tuple[str, str]]] = {
    400: [
        ("empty", "the file is empty"),
        ("not_an_image", "the file is not an image format that can be decoded"),
        ("corrupt", "the image data is corrupt or truncated: image file is truncated"),
        ("model_load_failed", "cannot load the requested model: /models/x is not a model bundle"),
    ],
    401: [("unauthorized", "send the admin token as 'Authorization: Bearer <token>'")],
    403: [("forbidden", "wrong admin token")],
    404: [("not_found", "admin API disabled: set CATSDOGS_ADMIN_TOKEN to enable it")],
    413: [
        ("too_large", "the upload is larger than 10485760 bytes"),
        ("too_many_pixels", "image is 30000x30000 pixels; at most 40,000,000 pixels are accepted"),
        ("too_many_files", "20 files sent; at most 16 per request"),
    ],
    415: [
        ("unsupported_media_type", "notes.txt has content type text/plain; send a JPEG, PNG, WebP, GIF or BMP image")
    ],
    422: [("missing_field", "required field 'file' is missing: send the image as multipart/form-data field 'file'")],
    503: [("not_ready", "the model is loading")],
}
