"""Load shedding's answer (503 + Retry-After), given where it is cheapest: in the HTTP protocol.

Under a flood almost every request is refused (98 % with 256 clients retrying at once). Through the ASGI
stack each refusal cost a task, the middleware chain and a JSONResponse, about 0.5 ms of the CPUs the
model needs, and a client's next head waited behind a whole round of them: the accepted requests' p99
was mostly that round (scripts/bench_overload.py; docs/serving.md). So ``catsdogs serve``'s protocol asks
``Shedder.answer_at_head`` when a head is complete, and writes the refusal itself; the metrics and the
(sampled) access log are the same as the middleware's. ``AdmissionMiddleware`` still admits, and sheds
what the protocol let through (a plain ``uvicorn`` run, or a request that lost the race for the last place).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from catsdogs.serve.admission import Admission
from catsdogs.serve.errors import error_body
from catsdogs.serve.metrics import Metrics
from catsdogs.serve.middleware import AccessRecorder, request_id_for

SHED_CODE = "overloaded"
SHEDDER_STATE_KEY = "catsdogs.shedder"  # in the lifespan state, where the HTTP protocol finds it


@dataclass(frozen=True)
class Refusal:
    reason: str  # why, from Admission
    retry_after: int  # whole seconds

    def body(self) -> bytes:
        message = f"the server is at capacity: {self.reason}; retry shortly"
        return json.dumps(error_body(SHED_CODE, message, retry_after=self.retry_after)).encode()

    def headers(self, body_length: int) -> list[tuple[bytes, bytes]]:
        return [
            (b"content-type", b"application/json"),
            (b"content-length", str(body_length).encode()),
            (b"retry-after", str(self.retry_after).encode()),
            # The connection is closed: a client that ignores Retry-After pays a reconnect (instant retries
            # on kept-alive connections halved the worker's goodput: docs/serving.md), and behind a
            # balancer the reconnect may land on another replica.
            (b"connection", b"close"),
        ]


class Shedder:
    """Decides whether a request is shed, without admitting it (``AdmissionMiddleware`` admits)."""

    def __init__(
        self,
        admission: Admission,
        exempt: frozenset[str],
        record: AccessRecorder,
        rewrite_body: Callable[[str, bytes], bytes] = lambda path, body: body,
    ):
        self.admission = admission
        self.exempt = exempt  # probes and scrapes: an overloaded pod is busy, not dead or unready
        self.record = record
        self.rewrite_body = rewrite_body  # (path, body) -> the body that path's protocol expects (/v2)

    def refusal(self, path: str) -> Refusal | None:
        if path in self.exempt:
            return None
        reason = self.admission.refusal()
        return None if reason is None else Refusal(reason, self.admission.retry_after_s())

    def answer_at_head(self, scope: Scope, default_headers: list[tuple[bytes, bytes]]) -> bytes | None:
        """The whole HTTP/1.1 answer to a request that is shed, counted and logged; None if not shed.

        ``default_headers``: the server's (date, server), as on its other answers.
        """
        start = time.perf_counter()
        refusal = self.refusal(scope["path"])
        if refusal is None:
            return None
        incoming = next((value for name, value in scope["headers"] if name == b"x-request-id"), b"")
        request_id = request_id_for(incoming.decode("latin-1"))
        body = self.rewrite_body(scope["path"], refusal.body())
        fields = [*default_headers, *refusal.headers(len(body)), (b"x-request-id", request_id.encode())]
        head = STATUS_LINE[503] + b"".join(name + b": " + value + b"\r\n" for name, value in fields) + b"\r\n"
        self.record.metrics.requests_shed.inc()
        state = {"error_code": SHED_CODE, "log_fields": {"shed_in": "protocol"}}  # where: for the operator
        self.record(scope, state, request_id, 503, time.perf_counter() - start)
        return head + body


class AdmissionMiddleware:
    """Admits a request when its head arrives, before its body is read, or sheds it (503 + Retry-After).

    A request whose estimated wait for the model is over the budget, or one more than ``admission.limit``
    (a bound on the bodies in memory), is answered 503 at once with ``Retry-After`` and the code
    ``overloaded``: the accepted ones keep their latency, and a caller learns at once to retry (or to go
    to another replica). Admitted requests leave the count when their answer is sent.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, shedder: Shedder):
        self.app = app
        self.metrics = metrics
        self.shedder = shedder
        self.admission = shedder.admission

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.shedder.exempt:
            await self.app(scope, receive, send)
            return
        reason = self.admission.try_enter()
        if reason is not None:
            await self._shed(Refusal(reason, self.admission.retry_after_s()), scope, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.admission.leave()

    async def _shed(self, refusal: Refusal, scope: Scope, send: Send) -> None:
        self.metrics.requests_shed.inc()
        scope.setdefault("state", {})["error_code"] = SHED_CODE  # the access log and metrics read it
        body = refusal.body()
        await send({"type": "http.response.start", "status": 503, "headers": refusal.headers(len(body))})
        await send({"type": "http.response.body", "body": body})
