"""Bodies of the Open Inference Protocol (KServe V2) routes: the request is validated with them, and they
drive the routes' OpenAPI schema. Field names and shapes follow the protocol; extension fields are ignored.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# A protocol $parameter: a string, a number or a boolean.
Parameters = dict[str, str | bool | int | float]

_TENSOR_DATA = "The elements, flattened in row-major order (BYTES: strings)."


class RequestInput(BaseModel):
    name: str = Field(examples=["image"])
    shape: list[int] = Field(examples=[[1]], description="`[N]`: one element per image.")
    datatype: str = Field(examples=["BYTES"])
    parameters: Parameters | None = Field(
        None,
        description="`content_type: base64` when `data` holds base64 strings; "
        "`binary_data_size` when the images follow the JSON (binary tensor data extension).",
    )
    data: list[Any] | None = Field(None, description=_TENSOR_DATA)


class RequestOutput(BaseModel):
    name: str = Field(examples=["label"])
    parameters: Parameters | None = Field(None, description="`binary_data: true` for this output in binary.")


class InferenceRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "id": "42",
                "inputs": [
                    {
                        "name": "image",
                        "shape": [1],
                        "datatype": "BYTES",
                        "parameters": {"content_type": "base64"},
                        "data": ["<the image file, base64>"],
                    }
                ],
            }
        }
    )
    id: str | None = Field(None, description="Echoed in the answer.")
    parameters: Parameters | None = Field(None, description="`binary_data_output: true` for binary outputs.")
    inputs: list[RequestInput] = Field(description="One input, `image`.")
    outputs: list[RequestOutput] | None = Field(None, description="The outputs wanted (default: all of them).")


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = Field(None, description="`binary_data_size` for an output sent in binary.")
    data: list[Any] | None = Field(None, description=_TENSOR_DATA + " Absent for an output sent in binary.")


class InferenceResponse(BaseModel):
    model_name: str = Field(examples=["catsdogs"])
    model_version: str | None = None
    id: str = Field(description="The request's `id`, else its X-Request-ID.")
    parameters: Parameters | None = Field(None, description="`inference_time_ms`: the model run.")
    outputs: list[ResponseOutput]


class MetadataTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1: any size (the number of images).")
    parameters: Parameters | None = None


class ModelMetadataResponse(BaseModel):
    name: str = Field(examples=["catsdogs"])
    versions: list[str]
    platform: str = Field(examples=["openvino"], description="The runtime: `onnxruntime_onnx` or `openvino`.")
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]


class ServerMetadataResponse(BaseModel):
    name: str = Field(examples=["catsdogs"])
    version: str = Field(description="API version.")
    extensions: list[str] = Field(examples=[["binary_tensor_data"]])


class ServerLiveResponse(BaseModel):
    live: bool
    error: str | None = Field(None, description="Why not (the model failed to load: restart the process).")


class ServerReadyResponse(BaseModel):
    ready: bool
    error: str | None = Field(None, description="Why not (loading, warming up, shutting down).")


class ModelReadyResponse(BaseModel):
    name: str = Field(examples=["catsdogs"])
    ready: bool
    error: str | None = None


class ProtocolErrorResponse(BaseModel):
    """The protocol's error body, with the API's machine-readable code beside it."""

    model_config = ConfigDict(extra="allow")
    error: str = Field(description="What is wrong, for humans.")
    code: str = Field(description="Stable machine-readable reason, e.g. `wrong_datatype`, `not_an_image`.")
