"""Adaptive micro-batching: images that arrive together share model runs, on a fixed pool of runners.

Nothing waits for a batch to fill (as Triton's dynamic batcher with no queue delay, or BentoML's adaptive
batching): an image runs at once when a model runner is free; while every runner is busy, new images queue,
and the next free runner takes up to ``max_size`` of them as one batch. So a lone request pays nothing, and
a burst is served by as many runs as there are runners, never more.

Every model run of a worker goes through here: ``/predict/batch`` and the V2 infer route queue their images
too, so a 16-image request runs as batches of at most ``max_size`` beside everyone else's, not as one big
run in a thread of its own (which would oversubscribe the cores, and cost more per image: docs/serving.md).

Everything here runs on the event loop; the model runs go to a pool of ``runners`` threads of their own:
OpenVINO keeps an infer request (buffers for the largest batch it ran) per calling thread, so a fixed pool
and the cap on a run's size bound the model's memory, whichever of the shared worker threads decoded the images.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from catsdogs.inference.predictor import Prediction, Predictor
from catsdogs.serve.metrics import Metrics


@dataclass
class _Waiting:
    predictor: Predictor  # the model the request started with: a reload never mixes two models in one run
    image: np.ndarray  # float32 (3, S, S)
    answer: asyncio.Future[Prediction]


class MicroBatcher:
    def __init__(self, max_size: int, runners: int, metrics: Metrics):
        self.max_size = max_size
        self.free_runners = runners  # model runs allowed at once (CPUs // threads per run)
        self.metrics = metrics
        self._queue: deque[_Waiting] = deque()
        self._running: set[asyncio.Task[None]] = set()
        self._threads = ThreadPoolExecutor(max_workers=runners, thread_name_prefix="catsdogs-model")

    @property
    def queued(self) -> int:
        """Images waiting for a free model runner."""
        return len(self._queue)

    async def predict(self, predictor: Predictor, image: np.ndarray) -> Prediction:
        """One preprocessed image -> its answer, from a model run it may share with concurrent requests."""
        [answer] = await self.predict_many(predictor, [image])
        return answer

    async def predict_many(self, predictor: Predictor, images: Sequence[np.ndarray]) -> list[Prediction]:
        """Preprocessed images -> their answers, in order: queued together, so they run in batches of at most
        ``max_size`` (a 16-image request is 4 runs of 4, on the same runners as everyone else)."""
        loop = asyncio.get_running_loop()
        answers: list[asyncio.Future[Prediction]] = [loop.create_future() for _ in images]
        self._queue.extend(_Waiting(predictor, image, answer) for image, answer in zip(images, answers, strict=True))
        self._dispatch()
        try:
            return [await answer for answer in answers]
        finally:  # the request went away or a run failed: its images still queued are skipped
            for answer in answers:
                answer.cancel()

    def _dispatch(self) -> None:
        while self.free_runners and (batch := self._take()):
            self.free_runners -= 1
            task = asyncio.create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _take(self) -> list[_Waiting]:
        """Up to ``max_size`` queued images of the same model, oldest first; requests gone are dropped."""
        batch: list[_Waiting] = []
        while self._queue and len(batch) < self.max_size:
            head = self._queue[0]
            if head.answer.done():  # the client went away while it waited
                self._queue.popleft()
            elif batch and head.predictor is not batch[0].predictor:
                break
            else:
                batch.append(self._queue.popleft())
        return batch

    async def _run(self, batch: list[_Waiting]) -> None:
        try:
            images = [w.image for w in batch]
            loop = asyncio.get_running_loop()
            answers = await loop.run_in_executor(self._threads, _predict, batch[0].predictor, images)
        except asyncio.CancelledError:
            for w in batch:
                w.answer.cancel()
            raise
        except Exception as exc:  # the model run failed: every request of the batch gets the error
            for w in batch:
                if not w.answer.done():
                    w.answer.set_exception(exc)
        else:
            self.metrics.batch_size.observe(len(batch))
            self.metrics.prediction_latency.observe(answers[0].inference_time_ms / 1000.0)
            for w, answer in zip(batch, answers, strict=True):
                if not w.answer.done():
                    w.answer.set_result(answer)
        finally:
            self.free_runners += 1
            self._dispatch()

    async def close(self) -> None:
        """Cancel what is still queued or running (at shutdown, after the drain)."""
        for w in self._queue:
            w.answer.cancel()
        self._queue.clear()
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        self._threads.shutdown(wait=False, cancel_futures=True)


def _predict(predictor: Predictor, images: list[np.ndarray]) -> list[Prediction]:
    """Blocking (a worker thread): (3, S, S) images -> one (N, 3, S, S) model run."""
    batch = images[0][np.newaxis] if len(images) == 1 else np.stack(images)
    return predictor.predict_array(batch)
