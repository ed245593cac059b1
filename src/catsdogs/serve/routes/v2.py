"""The Open Inference Protocol (KServe V2 / Triton HTTP) beside our own API, for ``tritonclient``, KServe's
``InferenceRESTClient`` and any other V2 client.

``GET /v2``, ``/v2/health/live``, ``/v2/health/ready``; ``GET /v2/models/catsdogs`` (metadata),
``/v2/models/catsdogs/ready`` and ``POST /v2/models/catsdogs/infer`` (also under ``/versions/<version>``).
Inference runs exactly as ``/predict/batch``'s: the same admission control, inference slots, decode limits,
upload and batch limits, and the same Prometheus metrics. Tensors in and out: ``catsdogs.serve.v2_codec``.
Errors under ``/v2`` have the protocol's body, ``{"error": "<what is wrong>"}`` (plus our ``code``), also
those answered by the middleware before a route runs (413, 503 overloaded): ``ProtocolErrorBody``.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import anyio
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from catsdogs import __version__
from catsdogs.inference.predictor import PET_OUTPUT, Prediction, PredictionError, Predictor
from catsdogs.serve.dependencies import StateDep, get_predictor, request_id
from catsdogs.serve.errors import APIError
from catsdogs.serve.routes.predict import error_status, record_predictions
from catsdogs.serve.settings import Settings
from catsdogs.serve.state import ServiceState
from catsdogs.serve.v2_codec import (
    BASE64_HINT,
    HEADER_LENGTH,
    INPUT_NAME,
    ImageRequest,
    encode_response,
    output_specs,
    parse_request,
    select_outputs,
)
from catsdogs.serve.v2_schemas import (
    InferenceRequest,
    InferenceResponse,
    ModelMetadataResponse,
    ModelReadyResponse,
    ProtocolErrorResponse,
    ServerLiveResponse,
    ServerMetadataResponse,
    ServerReadyResponse,
)

PREFIX = "/v2"
MODEL_NAME = "catsdogs"
# Probes are never shed by admission control (app.NEVER_SHED), as /health and /ready are not.
PROBES = frozenset({f"{PREFIX}/health/live", f"{PREFIX}/health/ready", f"{PREFIX}/models/{MODEL_NAME}/ready"})

router = APIRouter(prefix=PREFIX, tags=["open inference protocol (v2)"])


def body_limit(settings: Settings) -> int:
    """Request-body limit of the infer routes: a full batch, base64-encoded in JSON (4/3 of the bytes)."""
    return settings.batch_body_limit * 4 // 3 + 64 * 1024


def _error(status: int, what: str) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ProtocolErrorResponse, "description": what}}


_NOT_FOUND = _error(404, "No such model (or version) on this server.")
_NOT_READY = _error(503, "`not_ready`: the model is loading; `overloaded`: the worker is at capacity (Retry-After).")


async def _model(state: ServiceState, name: str, version: str | None = None) -> Predictor:
    if name != MODEL_NAME:
        raise APIError(404, "model_not_found", f"model '{name}' is not served here; this server serves '{MODEL_NAME}'")
    predictor = await get_predictor(state)  # 503 not_ready, as /predict answers
    if version is not None and version != predictor.version:
        raise APIError(
            404,
            "model_not_found",
            f"model '{name}' has no version '{version}'; this server serves version '{predictor.version}'",
        )
    return predictor


def _has_pet_score(predictor: Predictor) -> bool:
    return PET_OUTPUT in {o.name for o in predictor.session.get_outputs()}


# --- server -------------------------------------------------------------------------------------------------
@router.get("", response_model=ServerMetadataResponse, summary="V2 server metadata")
async def server_metadata() -> ServerMetadataResponse:
    return ServerMetadataResponse(name=MODEL_NAME, version=__version__, extensions=["binary_tensor_data"])


@router.get(
    "/health/live",
    response_model=ServerLiveResponse,
    response_model_exclude_none=True,
    summary="V2 liveness (as /health: false only when the model failed to load)",
    responses={503: {"model": ServerLiveResponse, "description": "The model failed to load: restart the process."}},
)
async def server_live(state: StateDep) -> Any:
    if state.status == "failed":
        return JSONResponse({"live": False, "error": state.reason}, status_code=503)
    return ServerLiveResponse(live=True)


@router.get(
    "/health/ready",
    response_model=ServerReadyResponse,
    response_model_exclude_none=True,
    summary="V2 readiness (as /ready: the model is loaded and warm, and the server is not shutting down)",
    responses={503: {"model": ServerReadyResponse, "description": "Not ready, with the reason."}},
)
async def server_ready(state: StateDep) -> Any:
    if state.draining:
        return JSONResponse({"ready": False, "error": "the server is shutting down"}, status_code=503)
    if not state.ready:
        return JSONResponse({"ready": False, "error": state.reason}, status_code=503)
    return ServerReadyResponse(ready=True)


# --- model --------------------------------------------------------------------------------------------------
async def _metadata(state: ServiceState, name: str, version: str | None) -> ModelMetadataResponse:
    predictor = await _model(state, name, version)
    classes = ",".join(predictor.class_names)
    outputs = [
        {
            "name": s.name,
            "datatype": s.datatype,
            "shape": [-1, s.columns] if s.columns else [-1],
            **({"parameters": {"class_names": classes}} if s.columns else {}),
        }
        for s in output_specs(len(predictor.class_names), _has_pet_score(predictor))
    ]
    return ModelMetadataResponse.model_validate(
        {
            "name": MODEL_NAME,
            "versions": [predictor.version],
            "platform": "openvino" if predictor.backend.startswith("openvino") else "onnxruntime_onnx",
            "inputs": [{"name": INPUT_NAME, "datatype": "BYTES", "shape": [-1]}],
            "outputs": outputs,
        }
    )


_METADATA = {
    "response_model": ModelMetadataResponse,
    "response_model_exclude_none": True,
    "summary": "V2 model metadata: the input and output tensors",
    "responses": {**_NOT_FOUND, **_NOT_READY},
}


@router.get("/models/{model_name}", **_METADATA)
async def model_metadata(state: StateDep, model_name: str) -> ModelMetadataResponse:
    return await _metadata(state, model_name, None)


@router.get("/models/{model_name}/versions/{model_version}", **_METADATA)
async def model_version_metadata(state: StateDep, model_name: str, model_version: str) -> ModelMetadataResponse:
    return await _metadata(state, model_name, model_version)


async def _model_ready(state: ServiceState, name: str, version: str | None) -> Any:
    try:
        await _model(state, name, version)
    except APIError as exc:
        if exc.status_code != 503:
            raise
        return JSONResponse({"name": name, "ready": False, "error": exc.message}, status_code=503)
    return ModelReadyResponse(name=name, ready=True)


_READY = {
    "response_model": ModelReadyResponse,
    "response_model_exclude_none": True,
    "summary": "V2 model readiness",
    "responses": {**_NOT_FOUND, 503: {"model": ModelReadyResponse, "description": "Not ready, with the reason."}},
}


@router.get("/models/{model_name}/ready", **_READY)
async def model_ready(state: StateDep, model_name: str) -> Any:
    return await _model_ready(state, model_name, None)


@router.get("/models/{model_name}/versions/{model_version}/ready", **_READY)
async def model_version_ready(state: StateDep, model_name: str, model_version: str) -> Any:
    return await _model_ready(state, model_name, model_version)


# --- inference ----------------------------------------------------------------------------------------------
def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema with its ``$defs`` written in place (OpenAPI resolves refs from its own root)."""
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {k: resolve(v) for k, v in node.items()}
        return [resolve(v) for v in node] if isinstance(node, list) else node

    return resolve(schema)


_BINARY = {"type": "string", "format": "binary"}
_INFER_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": _inline(InferenceRequest.model_json_schema())},
            "application/octet-stream": {
                "schema": {
                    **_BINARY,
                    "description": f"Binary tensor data extension: the JSON request, then the bytes of '{INPUT_NAME}' "
                    f"(each image: a 4-byte little-endian length, then the file); {HEADER_LENGTH} = the JSON's length.",
                }
            },
        },
    },
    "parameters": [
        {
            "name": HEADER_LENGTH,
            "in": "header",
            "required": False,
            "schema": {"type": "integer", "minimum": 0},
            "description": "Binary tensor data extension: the byte length of the JSON at the start of the body.",
        }
    ],
}
_INFER = {
    "response_model": None,
    "summary": "V2 inference: classify N images (a BYTES tensor of encoded files)",
    "responses": {
        200: {
            "model": InferenceResponse,
            "description": "The outputs; with binary outputs the JSON is followed by their bytes "
            f"({HEADER_LENGTH} = the JSON's length).",
            "content": {"application/octet-stream": {"schema": _BINARY}},
        },
        **_error(
            400,
            "Not an inference request for this model (datatype, shape, input, outputs), "
            "too many images, bad base64 or binary data, or an image that cannot be decoded.",
        ),
        **_NOT_FOUND,
        **_error(413, "The body, an image or its pixel count is over the limit."),
        **_NOT_READY,
    },
    "openapi_extra": _INFER_DOC,
}


def _refuse(parsed: ImageRequest, results: list[Any]) -> None:
    """All or nothing, as a tensor is: the first image that cannot be classified fails the request."""
    for k, r in enumerate(results):
        if isinstance(r, PredictionError):
            hint = f" ({BASE64_HINT})" if parsed.plain_strings and r.reason in ("not_an_image", "empty") else ""
            raise APIError(error_status(r.reason), r.reason, f"image {k}: {r.message}{hint}")


async def _infer(request: Request, state: ServiceState, name: str, version: str | None) -> Response:
    predictor = await _model(state, name, version)
    settings = state.settings
    body = await request.body()  # bounded by the body-limit middleware (body_limit above)
    parse = functools.partial(
        parse_request,
        body,
        request.headers.get(HEADER_LENGTH),
        max_images=settings.max_batch_files,
        max_bytes=settings.max_upload_bytes,
    )
    parsed = await anyio.to_thread.run_sync(parse)
    # Checked before the model runs: a wrong output name costs no inference.
    outputs = select_outputs(parsed, output_specs(len(predictor.class_names), _has_pet_score(predictor)))
    results = await state.infer(predictor, parsed.images)
    _refuse(parsed, results)
    predictions = [r for r in results if isinstance(r, Prediction)]
    record_predictions(state.metrics, results)  # all of them are predictions now
    request.scope["state"]["log_fields"] = {
        "images": len(predictions),
        "predictions": [p.label for p in predictions],
        "confidences": [p.confidence for p in predictions],
    }
    head = {
        "model_name": MODEL_NAME,
        "model_version": predictor.version,
        "id": parsed.id if parsed.id is not None else request_id(request),
        "parameters": {"inference_time_ms": predictions[0].inference_time_ms},
    }
    content, json_length = encode_response(head, outputs, predictions, predictor.class_names)
    if json_length is None:
        return Response(content, media_type="application/json")
    return Response(content, media_type="application/octet-stream", headers={HEADER_LENGTH: str(json_length)})


@router.post("/models/{model_name}/infer", **_INFER)
async def infer(request: Request, state: StateDep, model_name: str) -> Response:
    return await _infer(request, state, model_name, None)


@router.post("/models/{model_name}/versions/{model_version}/infer", **_INFER)
async def infer_version(request: Request, state: StateDep, model_name: str, model_version: str) -> Response:
    return await _infer(request, state, model_name, model_version)


# --- the protocol's error body ------------------------------------------------------------------------------
def protocol_error_body(body: bytes) -> bytes:
    """``{"detail": msg, "code": c, ...}`` (the API's shape) -> ``{"error": msg, "code": c, ...}``."""
    try:
        content = json.loads(body)
    except ValueError:
        return body
    if not isinstance(content, dict) or "error" in content or "detail" not in content:
        return body
    detail = content.pop("detail")
    return json.dumps({"error": detail if isinstance(detail, str) else json.dumps(detail), **content}).encode()


def error_body_for(path: str, body: bytes) -> bytes:
    """The error body for ``path``: the protocol's under /v2, the API's elsewhere."""
    return protocol_error_body(body) if is_protocol_path(path) else body


def is_protocol_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


class ProtocolErrorBody:
    """Error answers under /v2, whoever made them (a route, the body guard, admission control, routing),
    get the protocol's body: V2 clients read the message from ``error``."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not is_protocol_path(path):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def send_protocol(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and message["status"] >= 400:
                start = message  # held until the (small) error body is complete
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = protocol_error_body(b"".join(chunks))
            MutableHeaders(scope=start)["content-length"] = str(len(body))
            await send(start)
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, send_protocol)
