"""One error shape for every failure our code produces: ``{"detail": "<sentence>", "code": "<code>"}``.

``detail`` is FastAPI's ``HTTPException`` convention (a client that prints ``detail`` prints a sentence);
``code`` is the stable machine-readable reason beside it. FastAPI's own 422 validation list stays as
FastAPI makes it (``{"detail": [...]}``), with ``code`` added beside it.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

from fastapi import FastAPI, Request, params
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from catsdogs.serve.schemas import ErrorResponse, ValidationErrorResponse

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
    """An HTTP error with a stable ``code``; rendered as ``{"detail": message, "code": code, **extra}``."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ):
        super().__init__(status_code=status_code, detail=message, headers=headers)
        self.code = code
        self.message = message
        self.extra = extra


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"detail": message, "code": code, **extra}


def _remember(request: Request, code: str) -> None:
    # Read by the request middleware: the access log and prediction_errors_total use it.
    request.scope.setdefault("state", {})["error_code"] = code


async def http_exception_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc, APIError):
        body = error_body(exc.code, exc.message, **exc.extra)
    else:
        # Framework errors (404 for unknown paths, 405, body parsing) get the same shape.
        body = error_body(_DEFAULT_CODES.get(exc.status_code, f"http_{exc.status_code}"), str(exc.detail))
    _remember(request, body["code"])
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


def _takes_form(request: Request) -> bool:
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return False
    if route.body_field is not None:
        return isinstance(route.body_field.field_info, params.Form)
    # A route that reads its body itself (POST /predict) declares it in openapi_extra.
    content = ((route.openapi_extra or {}).get("requestBody") or {}).get("content", {})
    return "multipart/form-data" in content


def _wrong_media_type(request: Request) -> str | None:
    """The request's Content-Type when the route cannot read it (415), else None.

    No Content-Type at all is not a media-type problem: the body is simply missing (422, FastAPI's convention).
    """
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if request.method != "POST" or not content_type:
        return None
    if _takes_form(request):
        return None if content_type == "multipart/form-data" else content_type
    subtype = content_type.partition("/")[2]
    json_like = content_type.startswith("application/") and (subtype == "json" or subtype.endswith("+json"))
    return None if json_like else content_type


async def validation_exception_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    wrong = _wrong_media_type(request)
    if wrong is not None:
        expected = "multipart/form-data" if _takes_form(request) else "JSON"
        _remember(request, "unsupported_media_type")
        body = error_body("unsupported_media_type", f"send the request as {expected}, not {wrong}")
        return JSONResponse(body, status_code=415)
    errors = exc.errors()
    missing = any(e.get("type") == "missing" for e in errors)
    code = "missing_field" if missing else "invalid_request"
    _remember(request, code)
    # FastAPI's own body, unchanged, plus our code beside it.
    return JSONResponse({"detail": jsonable_encoder(errors), "code": code}, status_code=422)


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


def responses(*statuses: int, only: Collection[str] | None = None) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` for a route: each status with its possible error codes (``only``: this route's)."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        if status == 422:
            out[422] = {
                "model": ValidationErrorResponse,
                "description": ERROR_DESCRIPTIONS[422],
                "content": {"application/json": {"examples": {"missing_field": {"value": VALIDATION_EXAMPLE}}}},
            }
            continue
        codes = [(c, m) for c, m in ERROR_CATALOG[status] if only is None or c in only]
        assert codes, f"no error code of status {status} in {only}"
        out[status] = {
            "model": ErrorResponse,
            "description": ERROR_DESCRIPTIONS[status],
            "content": {"application/json": {"examples": {c: error_example(c, m) for c, m in codes}}},
        }
    return out


ERROR_DESCRIPTIONS = {
    400: "The upload is not a usable image (empty, not an image by declared type or content, corrupt), "
    "the multipart body cannot be parsed, or (for /admin/reload) the model cannot be loaded.",
    401: "Missing `Authorization: Bearer <token>` header.",
    403: "Wrong admin token.",
    404: "Not found (for /admin/reload: the admin API is disabled because no admin token is configured).",
    413: "Too large: the request body, the upload, the image's pixel count, or the number of files.",
    415: "The request's Content-Type cannot be read here (the upload routes take multipart/form-data).",
    422: "FastAPI's validation error: a required field (e.g. the multipart field `file`) is missing or invalid.",
    408: "The request body did not arrive within the body timeout.",
    431: "The request headers are too large or too many.",
    503: "Not available: `not_ready` = the model is loading or failed to load; `overloaded` = the answer would "
    "wait for the model longer than the latency budget, or this worker holds its most requests (load "
    "shedding; the connection is closed); retry after `Retry-After` seconds. `ui_not_available` = no web page.",
}

ERROR_CATALOG: dict[int, list[tuple[str, str]]] = {
    400: [
        ("bad_request", "There was an error parsing the body"),
        ("empty", "the file is empty"),
        ("not_an_image", "the file is not an image format that can be decoded"),
        ("corrupt", "the image data is corrupt or truncated: image file is truncated"),
        (
            "unsupported_media_type",
            "notes.txt has content type text/plain; send a JPEG, PNG, WebP, GIF or BMP image",
        ),
        ("model_load_failed", "cannot load the requested model: models/x is not a model bundle"),
    ],
    401: [("unauthorized", "send the admin token as 'Authorization: Bearer <token>'")],
    403: [("forbidden", "wrong admin token")],
    404: [("not_found", "admin API disabled: set CATSDOGS_ADMIN_TOKEN to enable it")],
    413: [
        ("too_large", "the upload is larger than 10485760 bytes"),
        ("too_many_pixels", "image is 30000x30000 pixels; at most 40,000,000 pixels are accepted"),
        ("too_many_files", "20 files sent; at most 16 per request"),
    ],
    415: [("unsupported_media_type", "send the request as multipart/form-data, not application/json")],
    408: [("body_timeout", "the request body did not arrive within 10 s")],
    431: [
        ("headers_too_large", "the request headers are larger than 16384 bytes"),
        ("too_many_headers", "more than 100 request headers"),
    ],
    503: [
        ("not_ready", "the model is loading"),
        ("overloaded", "the server is at capacity; retry after 1 s"),
        ("ui_not_available", "the web page is not installed"),
    ],
}

VALIDATION_EXAMPLE = {
    "detail": [{"type": "missing", "loc": ["body", "file"], "msg": "Field required", "input": None}],
    "code": "missing_field",
}
