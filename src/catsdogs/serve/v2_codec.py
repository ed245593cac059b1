"""The Open Inference Protocol's tensors: the images out of a request, the answers into a response.

A request carries one ``BYTES`` input, ``image``, of shape ``[N]``: one encoded image file per element.
In JSON a BYTES element is a string, so images are sent base64-encoded with the input parameter
``content_type: base64`` (MLServer's convention), or as raw bytes with the binary tensor data extension:
the JSON is followed by the tensor's bytes (each element a 4-byte little-endian length, then the bytes),
the header ``Inference-Header-Content-Length`` says where the JSON ends, and the input's parameter
``binary_data_size`` how many bytes are its own. Outputs are sent in binary when the request asks
(``binary_data: true`` on an output, or ``binary_data_output: true`` for all of them).

Every problem is an ``APIError`` naming it: 400 for a request that breaks the protocol or the model's
contract, 413 for an image over the upload limit.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import ValidationError

from catsdogs.inference.predictor import Prediction
from catsdogs.serve.errors import APIError
from catsdogs.serve.v2_schemas import InferenceRequest, RequestInput

HEADER_LENGTH = "Inference-Header-Content-Length"
INPUT_NAME = "image"
BASE64_HINT = (
    "in JSON send each image base64-encoded with the input parameter content_type=base64, "
    "or send the bytes with the binary tensor data extension"
)
_LENGTH = struct.Struct("<I")
_NUMPY = {"FP32": "<f4", "BOOL": "?"}


@dataclass(frozen=True)
class ImageRequest:
    """A valid request: its images (encoded files), its id, and which outputs it wants, in binary or not."""

    images: list[bytes]
    id: str | None
    outputs: list[tuple[str, bool]] | None  # None: every output
    binary_default: bool
    plain_strings: bool = False  # JSON strings that were not base64: their UTF-8 bytes are the "files"


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON part and the binary part of a request (no header: the whole body is JSON)."""
    if header_length is None:
        return body, b""
    length = header_length.strip()
    if not length.isdigit() or int(length) > len(body):
        raise APIError(
            400,
            "bad_binary_data",
            f"{HEADER_LENGTH} is {header_length!r}: it must be the byte length of the JSON at the start "
            f"of the body ({len(body)} bytes)",
        )
    return body[: int(length)], body[int(length) :]


def _validated(json_part: bytes) -> InferenceRequest:
    if not json_part.strip():
        raise APIError(400, "invalid_request", "the body is empty: send an inference request (JSON)")
    try:
        return InferenceRequest.model_validate_json(json_part)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:5])
        raise APIError(400, "invalid_request", f"not an inference request: {problems}") from exc


def _image_input(request: InferenceRequest, max_images: int) -> tuple[RequestInput, int]:
    """The one input, checked against the model's contract; and the number of images."""
    names = [i.name for i in request.inputs]
    if names != [INPUT_NAME]:
        raise APIError(
            400, "wrong_input", f"inputs {names}: this model takes exactly one input, '{INPUT_NAME}' (BYTES, [N])"
        )
    tensor = request.inputs[0]
    if tensor.datatype != "BYTES":
        raise APIError(
            400,
            "wrong_datatype",
            f"input '{INPUT_NAME}' has datatype {tensor.datatype}: it must be BYTES (encoded image files)",
        )
    if len(tensor.shape) != 1 or tensor.shape[0] < 0:
        raise APIError(
            400, "wrong_shape", f"input '{INPUT_NAME}' has shape {tensor.shape}: it must be [N], one image per element"
        )
    n = tensor.shape[0]
    if n == 0:
        raise APIError(400, "wrong_shape", f"input '{INPUT_NAME}' has shape [0]: send at least one image")
    if n > max_images:
        raise APIError(400, "too_many_files", f"{n} images sent; at most {max_images} per request")
    return tensor, n


def _binary_elements(raw: bytes, n: int) -> list[bytes]:
    """The elements of a BYTES tensor in binary: each a 4-byte little-endian length, then the bytes."""
    out: list[bytes] = []
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            break
        (size,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise APIError(
                400, "bad_binary_data", f"image {len(out)} says it has {size} bytes but only {len(raw) - offset} follow"
            )
        out.append(raw[offset : offset + size])
        offset += size
    if offset != len(raw) or len(out) != n:
        raise APIError(
            400,
            "bad_binary_data",
            f"the binary data of '{INPUT_NAME}' holds {len(out)} length-prefixed elements"
            f"{' and stray bytes' if offset != len(raw) else ''}; its shape says {n}",
        )
    return out


def _json_elements(data: list[Any], n: int, encoded: bool) -> list[bytes]:
    if len(data) != n:
        raise APIError(400, "wrong_shape", f"input '{INPUT_NAME}' has shape [{n}] but {len(data)} data elements")
    out: list[bytes] = []
    for k, element in enumerate(data):
        if not isinstance(element, str):
            raise APIError(
                400, "wrong_datatype", f"element {k} of '{INPUT_NAME}' is {type(element).__name__}: BYTES are strings"
            )
        if not encoded:
            out.append(element.encode())
            continue
        try:
            out.append(base64.b64decode(element, validate=True))
        except (binascii.Error, ValueError):
            raise APIError(400, "bad_base64", f"element {k} of '{INPUT_NAME}' is not valid base64") from None
    return out


def _binary_size(tensor: RequestInput) -> int | None:
    size = (tensor.parameters or {}).get("binary_data_size")
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise APIError(400, "bad_binary_data", f"binary_data_size of '{INPUT_NAME}' is {size!r}: it must be a count")
    return size


def _images(tensor: RequestInput, n: int, binary: bytes) -> list[bytes]:
    size = _binary_size(tensor)
    if size is not None:
        if tensor.data is not None:
            raise APIError(400, "bad_binary_data", f"input '{INPUT_NAME}' has both data and binary_data_size")
        if size != len(binary):
            raise APIError(
                400,
                "bad_binary_data",
                f"binary_data_size of '{INPUT_NAME}' is {size} but {len(binary)} bytes follow the JSON",
            )
        return _binary_elements(binary, n)
    if binary:
        raise APIError(400, "bad_binary_data", f"{len(binary)} bytes follow the JSON but no input has binary_data_size")
    if tensor.data is None:
        raise APIError(400, "invalid_request", f"input '{INPUT_NAME}' has no data and no binary_data_size")
    encoded = (tensor.parameters or {}).get("content_type") == "base64"
    return _json_elements(tensor.data, n, encoded)


def parse_request(body: bytes, header_length: str | None, *, max_images: int, max_bytes: int) -> ImageRequest:
    """Blocking (JSON and base64 of up to the body limit): run it in a worker thread."""
    json_part, binary = split_body(body, header_length)
    request = _validated(json_part)
    tensor, n = _image_input(request, max_images)
    images = _images(tensor, n, binary)
    for k, data in enumerate(images):
        if len(data) > max_bytes:
            raise APIError(413, "too_large", f"image {k} is {len(data):,} bytes; at most {max_bytes:,} are accepted")
    wanted = None
    if request.outputs is not None:
        wanted = [(o.name, (o.parameters or {}).get("binary_data") is True) for o in request.outputs]
    binary_default = (request.parameters or {}).get("binary_data_output") is True
    plain = tensor.data is not None and (tensor.parameters or {}).get("content_type") != "base64"
    return ImageRequest(images, request.id, wanted, binary_default, plain_strings=plain)


# --- the answer -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OutputSpec:
    name: str
    datatype: str
    columns: int | None = None  # probabilities: one per class; None: one value per image


def output_specs(n_classes: int, pet_score: bool) -> list[OutputSpec]:
    """The model's outputs; ``pet_score`` only when the bundle has the detector."""
    specs = [
        OutputSpec("label", "BYTES"),
        OutputSpec("probability", "FP32"),
        OutputSpec("probabilities", "FP32", n_classes),
        OutputSpec("is_cat_or_dog", "BOOL"),
        OutputSpec("pet_score", "FP32"),
        OutputSpec("uncertain", "BOOL"),
        OutputSpec("reason", "BYTES"),
        OutputSpec("looks_like", "BYTES"),  # what a non-pet looks like instead ("" for cats and dogs)
    ]
    return [s for s in specs if pet_score or s.name not in ("pet_score", "looks_like")]


def _values(name: str, p: Prediction, class_names: Sequence[str]) -> Any:
    """One image's value of an output: the same numbers /predict answers with."""
    if name == "probabilities":
        return [p.probabilities[c] for c in class_names]
    return {
        "label": p.label,
        "probability": p.confidence,
        "is_cat_or_dog": p.is_cat_or_dog,
        "pet_score": p.pet_score,
        "uncertain": p.uncertain,
        "reason": p.reason or "",
        "looks_like": p.looks_like or "",
    }[name]


def _raw(spec: OutputSpec, data: list[Any]) -> bytes:
    if spec.datatype == "BYTES":
        return b"".join(_LENGTH.pack(len(b)) + b for b in (s.encode() for s in data))
    return np.asarray(data, dtype=_NUMPY[spec.datatype]).tobytes()


def select_outputs(request: ImageRequest, specs: list[OutputSpec]) -> list[tuple[OutputSpec, bool]]:
    """The outputs to send, each with whether it goes in binary (the request's choice, else all in JSON)."""
    by_name = {s.name: s for s in specs}
    if request.outputs is None:
        return [(s, request.binary_default) for s in specs]
    unknown = [name for name, _ in request.outputs if name not in by_name]
    if unknown:
        raise APIError(400, "wrong_output", f"unknown outputs {unknown}: this model has {list(by_name)}")
    return [(by_name[name], binary or request.binary_default) for name, binary in request.outputs]


def encode_response(
    head: dict[str, Any],
    outputs: list[tuple[OutputSpec, bool]],
    predictions: list[Prediction],
    class_names: Sequence[str],
) -> tuple[bytes, int | None]:
    """The response body, and the length of its JSON part when binary outputs follow it (else None)."""
    tensors: list[dict[str, Any]] = []
    raw: list[bytes] = []
    n = len(predictions)
    for spec, binary in outputs:
        rows = [_values(spec.name, p, class_names) for p in predictions]
        data = [v for row in rows for v in row] if spec.columns else rows
        tensor: dict[str, Any] = {
            "name": spec.name,
            "datatype": spec.datatype,
            "shape": [n, spec.columns] if spec.columns else [n],
        }
        if binary:
            raw.append(_raw(spec, data))
            tensor["parameters"] = {"binary_data_size": len(raw[-1])}
        else:
            tensor["data"] = data
        tensors.append(tensor)
    text = json.dumps({**head, "outputs": tensors}, separators=(",", ":"), allow_nan=False).encode()
    if not raw:
        return text, None
    return text + b"".join(raw), len(text)
