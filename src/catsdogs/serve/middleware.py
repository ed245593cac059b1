"""Pure ASGI middleware (cheaper than BaseHTTPMiddleware, and it can see the raw body stream).

``RequestContextMiddleware`` (outermost): request id, access log, HTTP metrics.
(``AdmissionMiddleware``, which sheds load, is in serve/shedding.py.)
``BodyGuardMiddleware``: refuses oversized (413) and stalled (408) bodies while they stream in.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from fastapi.routing import APIRoute
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from catsdogs.serve.errors import APIError, error_body
from catsdogs.serve.logging import request_id_var
from catsdogs.serve.metrics import Metrics

access_log = logging.getLogger("catsdogs.access")
log = logging.getLogger("catsdogs.serve")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
UNMATCHED_ROUTE = "<unmatched>"


class RouteTemplates:
    """Maps a request to its route template ("/predict", "/static"), never the raw path: labels stay bounded.

    Routed requests carry their route in the scope; this also names requests refused before routing
    (413 on Content-Length) and mounted apps.
    """

    def __init__(self, templates: list[str], mounts: list[str]):
        self._patterns = [(compile_path(t)[0], t) for t in templates]
        self._patterns += [(compile_path(m.rstrip("/") + "/{path:path}")[0], m) for m in mounts]

    def __call__(self, scope: Scope) -> str:
        route = scope.get("route")
        if isinstance(route, APIRoute):
            return route.path
        path = scope["path"]
        for regex, template in self._patterns:
            if regex.match(path):
                return template
        return UNMATCHED_ROUTE


class LogSampler:
    """At most one log line per ``period_s``: under a flood of shed requests (thousands a second), one
    access-log line each would spend the CPU the accepted ones need. The metrics still count every one."""

    def __init__(self, period_s: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.period_s = period_s
        self.clock = clock
        self._next_at = float("-inf")
        self._skipped = 0

    def take(self) -> int | None:
        """None: skip this line. Else log it, with the count of lines skipped since the last one."""
        now = self.clock()
        if now < self._next_at:
            self._skipped += 1
            return None
        self._next_at = now + self.period_s
        skipped, self._skipped = self._skipped, 0
        return skipped


def request_id_for(incoming: str) -> str:
    """The client's X-Request-ID if it is a sane one, else a new one."""
    return incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex


class AccessRecorder:
    """A request's metrics and its access-log line, for the middleware and for refusals made in the protocol."""

    def __init__(self, metrics: Metrics, routes: RouteTemplates):
        self.metrics = metrics
        self.routes = routes
        self.shed_log = LogSampler()

    def __call__(self, scope: Scope, state: dict[str, Any], request_id: str, status: int, elapsed: float) -> None:
        method = scope["method"]
        route = self.routes(scope)
        m = self.metrics
        m.http_requests.labels(method, route, str(status)).inc()
        m.http_duration.labels(method, route).observe(elapsed)
        error_code = state.get("error_code")
        if error_code and status >= 400 and (route.startswith("/predict") or route.endswith("/infer")):
            m.prediction_errors.labels(error_code).inc()
        fields: dict[str, Any] = {
            "request_id": request_id,
            "method": method,
            "route": route,
            "path": scope["path"],
            "status": status,
            "latency_ms": round(elapsed * 1000.0, 2),
        }
        if client := scope.get("client"):
            fields["client"] = client[0]
        if error_code:
            fields["error"] = error_code
        if error_code == "overloaded":
            skipped = self.shed_log.take()
            if skipped is None:
                return
            fields["shed_not_logged"] = skipped  # shed since the last line logged (all in the metrics)
        fields.update(state.get("log_fields", {}))
        access_log.info("request", extra=fields)


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, record: AccessRecorder, draining: Callable[[], bool] = lambda: False):
        self.app = app
        self.metrics = record.metrics
        self.record = record
        self.draining = draining  # True once SIGTERM arrived: clients are asked to leave keep-alive connections

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_for(Headers(scope=scope).get("x-request-id", ""))
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        token = request_id_var.set(request_id)
        status = 500
        start = time.perf_counter()

        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                headers = MutableHeaders(scope=message)
                headers["X-Request-ID"] = request_id
                if (status >= 500 and status != 503) or self.draining():
                    # The server drops the connection after an unhandled error (and soon, when draining):
                    # say so, so that the client does not send its next request into a closing socket.
                    headers["Connection"] = "close"
            await send(message)

        self.metrics.in_progress.inc()
        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            # The client went away mid-upload: nobody to answer, nothing broken (nginx's 499).
            status = 499 if not started else status
            state["error_code"] = "client_disconnected"
        except Exception:
            # The app's error handler has logged it and sent the 500 already: re-raising would make the
            # server log it a second time. Only an error before any response is logged (once) here.
            if not started:
                log.exception("unhandled error on %s %s", scope["method"], scope["path"])
                state["error_code"] = "internal_error"
                await _send_500(send_with_id)
        finally:
            self.metrics.in_progress.dec()
            self.record(scope, state, request_id, status, time.perf_counter() - start)
            request_id_var.reset(token)


async def _send_500(send: Send) -> None:
    response = JSONResponse(error_body("internal_error", "internal server error"), status_code=500)
    await send({"type": "http.response.start", "status": 500, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


class BodyGuardMiddleware:
    """Guards the request body while it streams in, before it is in memory.

    * 413 for bodies above the route's limit: at once on Content-Length, else as soon as the count passes
      it, so a 60 MB upload costs at most the limit in memory, never the whole upload;
    * 408 when the next piece of the body does not arrive within ``timeout`` seconds (a body shorter than
      its Content-Length would otherwise hold the request, and its admission slot, for ever).
    """

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], tuple[int, str]], timeout: float = 15.0):
        self.app = app
        self.limit_for = limit_for  # path -> (body limit in bytes, what is allowed, for the message)
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        limit, allowed = self.limit_for(scope["path"])
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            scope.setdefault("state", {})["error_code"] = "too_large"
            response = JSONResponse(
                error_body("too_large", too_large_message(int(declared), allowed)),
                status_code=413,
                headers={"Connection": "close"},  # do not read (or wait for) the rest of the body
            )
            await response(scope, receive, send)
            return
        received = 0
        timeout = self.timeout

        async def guarded_receive() -> Message:
            nonlocal received
            try:
                async with asyncio.timeout(timeout):
                    message = await receive()
            except TimeoutError:
                # An HTTPException passes through FastAPI's body parsing to our error handler.
                raise APIError(
                    408,
                    "body_timeout",
                    f"the request body stalled: no data for {timeout:g} s",
                    headers={"Connection": "close"},
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise APIError(413, "too_large", too_large_message(None, allowed), headers={"Connection": "close"})
            return message

        await self.app(scope, guarded_receive, send)


def too_large_message(size: int | None, allowed: str) -> str:
    got = f" ({size:,} bytes)" if size is not None else ""
    return f"the upload is too large{got}: {allowed}"
