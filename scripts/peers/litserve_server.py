"""The shipped bundle served by LitServe with batching on: a peer for ``make bench`` only (never deploy).

Runs in its own venv (``make bench-peers-venv``, pins in requirements/bench-litserve.txt), with the project's
``src`` on PYTHONPATH, so it serves the same bundle through the same ``catsdogs.predictor.Predictor``.
``POST /predict`` takes the multipart field ``file`` (the seed's upload) and answers one JSON object with
the same fields as catsdogs's /predict. LitServe's inference worker decodes each request
(``Predictor.preprocess``), stacks up to ``CATSDOGS_MICRO_BATCH_SIZE`` of them and runs the model once.

``--batch-timeout`` is how long LitServe waits to fill a batch (every request waits for it when alone);
0 would make its worker poll the queue without sleeping, burning a core while idle.

    PYTHONPATH=src CATSDOGS_MODEL_PATH=models .cache/litserve-venv/bin/python scripts/peers/litserve_server.py \
        --port 3001
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import litserve as ls
import numpy as np
from fastapi import HTTPException

from catsdogs.core.transforms import InvalidImageError
from catsdogs.predictor import Predictor

BATCH = int(os.environ.get("CATSDOGS_MICRO_BATCH_SIZE", "4"))


class CatsDogsAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.predictor = Predictor.load(
            os.environ.get("CATSDOGS_MODEL_PATH", "models"),
            backend=os.environ.get("CATSDOGS_BACKEND", "auto"),
            threads=int(os.environ.get("CATSDOGS_INFERENCE_THREADS", "0")),
        )
        self.predictor.warmup(batch_sizes=range(1, BATCH + 1))  # as catsdogs warms every micro-batch size

    # No annotation on `request`: LitServe reads it as the request type; unannotated, it parses the form itself.
    def decode_request(self, request) -> np.ndarray:  # the parsed multipart form
        upload = request.get("file")
        if upload is None or isinstance(upload, str):
            raise HTTPException(422, "send the image as multipart field 'file'")
        try:
            return self.predictor.preprocess(upload.file.read())
        except InvalidImageError as exc:
            raise HTTPException(400, f"{exc.reason}: {exc.message}") from exc

    def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
        return np.stack(inputs)

    def predict(self, batch: np.ndarray) -> list[dict[str, Any]]:
        return [p.to_dict() for p in self.predictor.predict_array(batch)]

    def unbatch(self, output: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return output

    def encode_response(self, output: dict[str, Any]) -> dict[str, Any]:
        return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3001)
    parser.add_argument("--batch-timeout", type=float, default=0.002, help="seconds to wait to fill a batch")
    args = parser.parse_args()
    api = CatsDogsAPI(max_batch_size=BATCH, batch_timeout=args.batch_timeout, api_path="/predict")
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, timeout=60)
    server.run(host=args.host, port=args.port, num_api_servers=1, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()
