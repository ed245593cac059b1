"""uvicorn's httptools protocol with the limits uvicorn lacks: header read timeout, header size and count.

uvicorn has an idle keep-alive timeout (``timeout_keep_alive``) but no deadline for the request head, so a
slowloris client (headers at 1 byte/s) holds a connection for ever, and httptools buffers a header of any
size. These limits act before the ASGI app sees the request, where no middleware can:

* the head (request line + headers) must arrive within ``header_timeout_s`` of the connection being ready
  for a request (accepted, or the previous response sent): else 408 and close;
* at most ``max_header_bytes`` of head (431 and close), and at most ``max_header_count`` fields (431);
* a request the load shedder refuses (serve/shedding.py) is answered 503 here, with no ASGI task;
* an early answer (503, 413) lingers: the rest of its body is dropped before the socket closes.

The body read timeout (408) is in the ASGI middleware (``BodyGuardMiddleware``): the app reads the body.
``catsdogs serve`` runs its subclass ``catsdogs.serve.drain.DrainingHttpToolsProtocol`` (uvicorn's ``http=``).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from catsdogs.serve.errors import error_body
from catsdogs.serve.settings import Settings
from catsdogs.serve.shedding import SHEDDER_STATE_KEY

log = logging.getLogger("catsdogs.serve")
_END_OF_HEAD = b"\r\n\r\n"


@functools.cache
def _settings() -> Settings:
    # One per worker process: ``catsdogs serve`` passes its options to the workers through the environment.
    return Settings()


class _HeaderLimitExceeded(Exception):
    pass


# After an early answer with Connection: close (503 shed, 413), the rest of the body is read and dropped
# for at most this long before the socket closes: closing with unread data sends a reset, and a client
# still sending its body would lose the answer (httpx did, in scripts/bench_overload.py). nginx's
# lingering_close does the same. It also stops after one largest accepted body: a client sending more
# than any route accepts gets the reset, and the server's bandwidth is not spent on it.
LINGER_S = 2.0


class _LingeringClose:
    """The transport as a request's cycle sees it: ``close()`` before the request was read half-closes.

    The answer and a FIN go out at once; the socket closes when the body has been read (dropped), after
    ``LINGER_S``, or after ``linger_max_bytes`` (one largest accepted upload) were dropped.
    """

    def __init__(self, transport: asyncio.Transport, protocol: HardenedHttpToolsProtocol):
        self._transport = transport
        self._protocol = protocol

    def close(self) -> None:
        protocol = self._protocol
        if protocol._request_read or self._transport.is_closing() or not self._transport.can_write_eof():
            self._transport.close()
            return
        self._transport.write_eof()
        protocol._linger()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class HardenedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, settings: Settings | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        s = settings or _settings()
        self.header_timeout = s.header_timeout_s
        self.max_header_bytes = s.max_header_bytes
        self.max_header_count = s.max_header_count
        self.linger_max_bytes = s.body_limit
        self._lingered_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._awaiting_head = True
        self._head_bytes = 0
        self._tail = b""
        self._rejection: tuple[int, str, str] | None = None
        self._request_read = True  # the parser has seen the whole of the current request (body included)
        self._lingering: asyncio.TimerHandle | None = None  # half-closed: reading the rest of a body

    # --- the head deadline ----------------------------------------------------------------------------
    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._awaiting_head, self._head_bytes, self._tail = True, 0, b""
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport is None or self.transport.is_closing():
            return
        if self._head_bytes:  # a request was started but its head never finished: tell the client
            message = f"the request headers did not arrive within {self.header_timeout:g} s"
            self._reject(408, "header_timeout", message)
        else:  # an idle connection: just close it
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        if self._lingering is not None:
            self._lingering.cancel()
        super().connection_lost(exc)

    # --- lingering close --------------------------------------------------------------------------------
    def _linger(self) -> None:
        self._cancel_head_timer()
        if self._lingering is None:
            self._lingering = self.loop.call_later(LINGER_S, self.transport.close)

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)  # a queued request starts now: its head is already complete
        super().on_response_complete()
        # An early answer (503 shed, 413) can complete before the request body was read: the rest of that
        # body is not the next request's head. The head deadline starts once the request has been read.
        if not pipelined and not self.transport.is_closing() and self._request_read:
            self._arm_head_timer()  # the next request's head has the same deadline

    def on_message_begin(self) -> None:
        self._request_read = False
        super().on_message_begin()

    def on_message_complete(self) -> None:
        self._request_read = True
        if self._lingering is not None:  # the body of an answered request is read: now close
            self.transport.close()
            return
        super().on_message_complete()
        cycle = self.cycle
        if cycle is not None and cycle.response_complete and not self.pipeline and not self.transport.is_closing():
            self._arm_head_timer()  # answered before its body was read: now the connection waits for a head

    # --- size and count ---------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._lingering is not None:
            self._lingered_bytes += len(data)
            if self._lingered_bytes > self.linger_max_bytes:
                self.transport.close()
                return
        if self._awaiting_head:
            end = (self._tail + data).find(_END_OF_HEAD)
            head_part = len(data) if end < 0 else end + len(_END_OF_HEAD) - len(self._tail)
            self._head_bytes += max(0, head_part)
            self._tail = (self._tail + data)[-3:]
            if self._head_bytes > self.max_header_bytes:
                self._reject(431, "headers_too_large", f"the request headers exceed {self.max_header_bytes:,} bytes")
                return
        super().data_received(data)

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(self.headers) >= self.max_header_count:
            self._rejection = (
                431,
                "too_many_headers",
                f"the request has more than {self.max_header_count} header fields",
            )
            raise _HeaderLimitExceeded  # httptools aborts the parse; send_400_response sends our answer
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._awaiting_head = False
        self._cancel_head_timer()
        super().on_headers_complete()
        self.cycle.transport = _LingeringClose(self.transport, self)  # type: ignore[assignment]

    # --- load shedding at the head -----------------------------------------------------------------------
    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        """A request the shedder refuses is answered here, with no ASGI task: the cheapest refusal."""
        shedder = (self.app_state or {}).get(SHEDDER_STATE_KEY)
        answer = None if shedder is None else shedder.answer_at_head(cycle.scope, self.server_state.default_headers)
        if answer is None:
            super()._start_asgi_task(cycle, app)
            return
        cycle.response_complete = True  # the parser now drops the rest of this request's body
        cycle.keep_alive = False
        self.transport.write(answer)
        _LingeringClose(self.transport, self).close()

    def send_400_response(self, msg: str) -> None:
        if self._rejection is not None:
            self._reject(*self._rejection)
            return
        super().send_400_response(msg)

    def _reject(self, status: int, code: str, message: str) -> None:
        """Answer ``status`` with our JSON error body and close; the app never sees the request."""
        self._cancel_head_timer()
        self._awaiting_head = False
        body = json.dumps(error_body(code, message)).encode()
        head = [
            STATUS_LINE[status],
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        log.warning("refused a request: %s", message, extra={"status": status, "error": code})
        self.transport.write(b"".join(head) + body)
        self.transport.close()
