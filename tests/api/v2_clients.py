"""Calls a live ``catsdogs serve`` through the Open Inference Protocol with the real client libraries.

Run by tests/api/test_v2_clients.py with the Python of ``.cache/oip-venv`` (``make oip-clients``: tritonclient
and kserve pin packages below the project's lock). It imports neither catsdogs nor pytest: it is a client,
as a platform team would write one. Reads a plan (JSON) on stdin, prints what the clients got (JSON).
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import tritonclient.http as triton
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from tritonclient.utils import InferenceServerException

MODEL = "catsdogs"


def _scalar(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    return value.item() if isinstance(value, np.generic) else value


def answers(outputs: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """One dict per image from the output tensors, whatever the client and the encoding."""
    n = len(outputs["label"])
    rows = []
    for k in range(n):
        row = {name: _scalar(arr[k]) for name, arr in outputs.items() if name != "probabilities"}
        row["probabilities"] = [float(p) for p in outputs["probabilities"][k]]
        rows.append(row)
    return rows


def _images(paths: list[str]) -> np.ndarray:
    return np.array([Path(p).read_bytes() for p in paths], dtype=np.object_)


# --- tritonclient ----------------------------------------------------------------------------------------------
def _triton_input(data: np.ndarray, datatype: str = "BYTES", binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput("image", list(data.shape), datatype)
    tensor.set_data_from_numpy(data, binary_data=binary)
    return tensor


def _triton_error(call: Callable[[], Any]) -> dict[str, Any]:
    try:
        call()
    except InferenceServerException as exc:
        return {"status": int(exc.status() or 0), "message": exc.message()}
    return {"status": 200, "message": "no error"}


def triton_side(plan: dict[str, Any]) -> dict[str, Any]:
    client = triton.InferenceServerClient(url=plan["url"].removeprefix("http://"))
    meta = client.get_model_metadata(MODEL)
    names = [o["name"] for o in meta["outputs"]]

    def infer(paths: list[str], **kwargs: Any) -> list[dict[str, Any]]:
        result = client.infer(MODEL, [_triton_input(_images(paths))], **kwargs)
        return answers({name: result.as_numpy(name) for name in names})

    json_outputs = [triton.InferRequestedOutput(name, binary_data=False) for name in names]
    one = _images(plan["batches"][0][:1])
    bad = {
        "wrong_datatype": lambda: client.infer(MODEL, [_triton_input(np.array([1.0], dtype=np.float32), "FP32")]),
        "wrong_shape": lambda: client.infer(MODEL, [_triton_input(one.reshape(1, 1))]),
        "non_image": lambda: client.infer(MODEL, [_triton_input(np.array([b"hello, not an image"], dtype=object))]),
        "too_many": lambda: client.infer(MODEL, [_triton_input(_images(plan["too_many"]))]),
        "unknown_model": lambda: client.infer("no-such-model", [_triton_input(one)]),
    }
    return {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(MODEL),
        "server_metadata": client.get_server_metadata(),
        "model_metadata": meta,
        "binary": [row for batch in plan["batches"] for row in infer(batch)],
        "json": [row for batch in plan["batches"] for row in infer(batch, outputs=json_outputs)],
        "versioned": infer(plan["batches"][0], model_version=meta["versions"][0]),
        "errors": {case: _triton_error(call) for case, call in bad.items()},
    }


# --- kserve ------------------------------------------------------------------------------------------------------
def _kserve_json_input(data: list[bytes], datatype: str = "BYTES") -> InferInput:
    encoded = [base64.b64encode(d).decode() for d in data]
    return InferInput("image", [len(data)], datatype, data=encoded, parameters={"content_type": "base64"})


def _kserve_binary_input(data: np.ndarray) -> InferInput:
    tensor = InferInput("image", list(data.shape), "BYTES")
    tensor.set_data_from_numpy(data, binary_data=True)
    return tensor


async def _kserve_error(call: Awaitable[Any]) -> dict[str, Any]:
    try:
        await call
    except httpx.HTTPStatusError as exc:
        return {"status": exc.response.status_code, "message": str(exc)}
    return {"status": 200, "message": "no error"}


async def kserve_side(plan: dict[str, Any]) -> dict[str, Any]:
    url = plan["url"]
    async with InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=60)) as client:

        async def infer(tensor: InferInput, **params: Any) -> list[dict[str, Any]]:
            request = InferRequest(MODEL, [tensor], request_id="kserve-test", parameters=params or None)
            response = await client.infer(url, request, model_name=MODEL)
            assert response.id == "kserve-test", response.id
            return answers({o.name: o.as_numpy() for o in response.outputs})

        batches = [[Path(p).read_bytes() for p in batch] for batch in plan["batches"]]
        json_rows = [row for batch in batches for row in await infer(_kserve_json_input(batch))]
        binary_rows = []
        for batch in batches:
            tensor = _kserve_binary_input(np.array(batch, dtype=np.object_))
            binary_rows += await infer(tensor, binary_data_output=True)
        wrong_type = InferInput("image", [1], "FP32", data=[1.0])
        not_base64 = InferInput(
            "image", [1], "BYTES", data=["not base64 at all!"], parameters={"content_type": "base64"}
        )
        bad = {
            "wrong_datatype": InferRequest(MODEL, [wrong_type]),
            "wrong_shape": InferRequest(MODEL, [InferInput("image", [1, 1], "BYTES", data=["aGVsbG8="])]),
            "non_image": InferRequest(MODEL, [_kserve_json_input([b"hello, not an image"])]),
            "too_many": InferRequest(MODEL, [_kserve_json_input([Path(p).read_bytes() for p in plan["too_many"]])]),
            "bad_base64": InferRequest(MODEL, [not_base64]),
        }
        return {
            "live": await client.is_server_live(url),
            "ready": await client.is_server_ready(url),
            "model_ready": await client.is_model_ready(url, MODEL),
            "json": json_rows,
            "binary": binary_rows,
            "errors": {
                case: await _kserve_error(client.infer(url, req, model_name=MODEL)) for case, req in bad.items()
            },
        }


def main() -> None:
    plan = json.load(sys.stdin)
    print(json.dumps({"triton": triton_side(plan), "kserve": asyncio.run(kserve_side(plan))}))


if __name__ == "__main__":
    main()
