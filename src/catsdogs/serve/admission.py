"""Admission by estimated wait: a request is admitted only if it can start within the latency budget.

A fixed queue length is right for one model on one machine: 32 requests are 0.05 s of work for a
1.7 ms model and seconds for a slow one, or for the same model while the CPUs are busy shedding. So
the queue is sized from what the inference slots measure: each slot hold (decode + model run) feeds a
moving average ``service_s``, and a request that finds ``n`` others inside, with ``slots`` of them served
side by side, should start after about

    wait = (n - slots + 1) * service_s / slots        (0 while a slot is free)

It is shed at once (503, ``Retry-After``) when ``wait`` exceeds the budget, instead of queueing for
seconds. The decision is made when the request's head arrives, before its body is read: in the HTTP
protocol (serve/shedding.py), before any ASGI task exists, and again in ``AdmissionMiddleware``, which
admits. A refusal then costs little, which matters most when a flood of clients retries at once.
An admitted request that still waits for a slot past the budget (the estimate was optimistic) is shed
then (``ServiceState.infer``), so none waits longer. Pure bookkeeping, one per worker, on the event loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from catsdogs.core.cpus import available_cpus

# Until the first slot hold is measured: a pessimistic guess (a slow model), replaced within requests.
INITIAL_SERVICE_S = 0.05
# Weight of the newest hold: the estimate follows a change of load within ~10 requests, not one outlier.
SMOOTHING = 0.2


def model_runners(threads: int) -> int:
    """How many model runs fit side by side on the CPUs."""
    return max(1, available_cpus() // max(1, threads))


def inference_slots(threads: int, micro_batch_size: int) -> int:
    """How many requests may decode + run at once: enough to keep every CPU busy, no more.

    One run more than the CPUs can run side by side, so images are decoded while the model runs others;
    with micro-batching each of those runs is a batch.
    """
    return (model_runners(threads) + 1) * micro_batch_size


@dataclass
class Admission:
    budget_s: float  # the longest a request may wait for an inference slot
    slots: int  # requests decoded and run side by side (the inference limiter's size)
    limit: int  # requests in the worker at most, whatever the estimate: a bound on the bodies in memory
    service_s: float = INITIAL_SERVICE_S  # moving average of one slot hold, in seconds
    inside: int = 0  # requests admitted: reading their body, waiting for a slot or holding one

    def estimated_wait(self) -> float:
        """Seconds a request arriving now would wait for a slot."""
        ahead = self.inside - self.slots + 1
        return max(0, ahead) * self.service_s / self.slots

    @property
    def capacity(self) -> int:
        """The most requests inside whose newest still starts within the budget (and within ``limit``)."""
        return min(self.limit, self.slots + math.floor(self.budget_s * self.slots / self.service_s))

    def refusal(self) -> str | None:
        """Why a request arriving now would be refused (for the 503's message), or None: it would be admitted."""
        if self.inside >= self.limit:
            return f"{self.limit} requests are already in this worker"
        wait = self.estimated_wait()
        if wait > self.budget_s:
            return f"an answer would wait about {wait:.2f} s for the model, over the {self.budget_s:g} s budget"
        return None

    def try_enter(self) -> str | None:
        """Admit one request (``inside`` + 1), or say why not (``refusal``)."""
        refusal = self.refusal()
        if refusal is None:
            self.inside += 1
        return refusal

    def leave(self) -> None:
        self.inside -= 1

    def observe(self, held_s: float) -> None:
        """One slot hold finished after ``held_s`` seconds."""
        self.service_s += SMOOTHING * (held_s - self.service_s)

    def retry_after_s(self) -> int:
        """Whole seconds after which the queue ahead has been served (HTTP's Retry-After), at least 1."""
        return max(1, math.ceil(self.estimated_wait()))
