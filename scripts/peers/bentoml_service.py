"""The shipped bundle served by BentoML 1.4 with adaptive batching: a peer for ``make bench`` only (never deploy).

Runs in its own venv (``make bench-peers-venv``, pins in requirements/bench-bentoml.txt), with the project's
``src`` on PYTHONPATH, so it serves the same bundle through the same ``catsdogs.predictor.Predictor``.

``CatsDogs`` (the peer ``make bench`` runs): one service whose ``POST /predict`` is batchable, BentoML's
"adaptive batching in a single Service". It takes the same multipart field ``file`` as catsdogs's /predict;
BentoML's dispatcher groups concurrent requests (up to ``CATSDOGS_MICRO_BATCH_SIZE`` images, as catsdogs's
micro-batcher) into one ``Predictor.predict_bytes`` call: decode + one model run. A batchable API answers
each request with a list, so the answer is a JSON list of one object with catsdogs's fields.

``CatsDogsComposed`` (peer ``bentoml-composed``): the same API answering one object, as BentoML composes
batching behind a one-item endpoint (an entry service calling a batchable ``Model`` service through
``bentoml.depends``). Not in the default run: in 1.4.40 the entry's client to ``Model`` closes its HTTP
session every 100 calls with the calls still in flight, so under concurrency some requests fail with 500
(ServerDisconnectedError; docs/serving.md).

    PYTHONPATH=src CATSDOGS_MODEL_PATH=models .cache/bentoml-venv/bin/bentoml serve \
        bentoml_service:CatsDogs --working-dir scripts/peers --host 127.0.0.1 --port 3000
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import anyio
import bentoml
from bentoml.exceptions import InvalidArgument

from catsdogs.predictor import Prediction, Predictor

BATCH = int(os.environ.get("CATSDOGS_MICRO_BATCH_SIZE", "4"))
# Access logs off, as catsdogs runs in the benchmark (CATSDOGS_LOG_LEVEL=WARNING); metrics stay on, as ours.
QUIET = {"access": {"enabled": False}}


def load_predictor() -> Predictor:
    """The bundle as catsdogs serves it (called in the worker process, where BentoML builds the service)."""
    predictor = Predictor.load(
        os.environ.get("CATSDOGS_MODEL_PATH", "models"),
        backend=os.environ.get("CATSDOGS_BACKEND", "auto"),
        threads=int(os.environ.get("CATSDOGS_INFERENCE_THREADS", "0")),
    )
    predictor.warmup(batch_sizes=range(1, BATCH + 1))  # as catsdogs warms every micro-batch size
    return predictor


def answers(predictor: Predictor, images: list[bytes]) -> list[dict[str, Any]]:
    results = predictor.predict_bytes(images)
    return [r.to_dict() if isinstance(r, Prediction) else {"error": r.reason, "message": r.message} for r in results]


@bentoml.service(workers=1, logging=QUIET)
class CatsDogs:
    def __init__(self) -> None:
        self.predictor = load_predictor()

    # A sync API runs on BentoML's pool of `threads` (1): one batch at a time, as catsdogs's one model runner.
    @bentoml.api(route="/predict", batchable=True, max_batch_size=BATCH)
    def predict(self, file: list[Path]) -> list[dict[str, Any]]:
        return answers(self.predictor, [f.read_bytes() for f in file])


@bentoml.service(workers=1, logging=QUIET)
class Model:
    def __init__(self) -> None:
        self.predictor = load_predictor()

    @bentoml.api(batchable=True, max_batch_size=BATCH)
    def classify(self, images: list[bytes]) -> list[dict[str, Any]]:
        return answers(self.predictor, images)


@bentoml.service(workers=1, logging=QUIET)
class CatsDogsComposed:
    model = bentoml.depends(Model)

    @bentoml.api(route="/predict")
    async def predict(self, file: Path) -> dict[str, Any]:
        # async: a sync API would run on BentoML's pool of `threads` (1), one request at a time, and Model
        # would never see two requests to batch. The upload is in a temporary file: read it off the loop.
        data = await anyio.to_thread.run_sync(file.read_bytes)
        [answer] = await self.model.to_async.classify([data])
        if "error" in answer:
            raise InvalidArgument(f"{answer['error']}: {answer['message']}")
        return answer
