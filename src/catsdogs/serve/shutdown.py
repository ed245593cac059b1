"""Graceful shutdown on SIGTERM, in every worker: readiness 503 first, drain, then exit 0.

uvicorn alone closes its listener about 0.1 s after SIGTERM, while a load balancer may still send new
connections, and it re-raises the signal after its shutdown (exit status 143). Here, in each worker:

1. SIGTERM marks the service draining: ``/ready`` answers 503 (the balancer stops sending traffic) and
   every response says ``Connection: close`` (clients leave their keep-alive connections), while the
   worker keeps serving for ``drain_delay_s``;
2. then new connections are refused and those already queued are accepted (``drain.flush_listeners``),
   and uvicorn's graceful shutdown runs: the listener closes, requests in flight finish (at most
   ``shutdown_timeout_s``, uvicorn's ``timeout_graceful_shutdown``), idle connections get a last call
   (``drain.DrainingHttpToolsProtocol``), the lifespan ends;
3. the process exits 0. A second SIGTERM skips the rest of the delay, unless it comes within
   ``DUPLICATE_SIGTERM_S`` of the first: that is the same stop delivered twice (a SIGTERM to the whole
   process group reaches a worker directly and again through the parent).

With ``--workers N`` the parent (``catsdogs.serve.supervisor``) forwards SIGTERM to every worker and waits.
SIGINT (Ctrl-C) is left to uvicorn: a developer wants the server gone at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from catsdogs.serve.drain import flush_listeners, listening_sockets

log = logging.getLogger("catsdogs.serve")
# uvicorn's parent looks at its signals every 0.5 s: its forwarded copy of a group SIGTERM comes later.
DUPLICATE_SIGTERM_S = 1.5

Handler = Callable[[int, FrameType | None], Any] | int | None


def _stop_server(previous: Handler, sig: int, frame: FrameType | None) -> None:
    """Start uvicorn's graceful shutdown without the signal re-raise that would make the exit status 143."""
    server = getattr(previous, "__self__", None)
    if server is not None and hasattr(server, "should_exit"):
        server.should_exit = True  # what uvicorn's handle_exit does, minus recording the signal
    elif callable(previous):
        previous(sig, frame)
    else:
        raise SystemExit(0)


def install_drain_handler(begin_drain: Callable[[], None], drain_delay_s: float) -> Callable[[], None]:
    """Wrap the current SIGTERM handler (uvicorn's) with a drain phase. Returns a function that undoes it.

    Only in the main thread (a server process); under a test client the lifespan runs elsewhere: no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(signal.SIGTERM)
    timer: list[asyncio.TimerHandle] = []
    tasks: set[asyncio.Task[None]] = set()
    first_sigterm: float | None = None

    async def finish() -> None:
        await flush_listeners(listening_sockets(getattr(previous, "__self__", None)))
        log.info("drained: closing the listener and finishing requests in flight")
        _stop_server(previous, signal.SIGTERM, None)

    def stop() -> None:
        for t in timer:
            t.cancel()
        if not tasks:  # once: a second SIGTERM during the flush changes nothing
            task = loop.create_task(finish())
            tasks.add(task)

    def on_sigterm(sig: int, frame: FrameType | None) -> None:
        nonlocal first_sigterm
        if first_sigterm is not None:
            if time.monotonic() - first_sigterm >= DUPLICATE_SIGTERM_S:  # a second SIGTERM: no more waiting
                loop.call_soon_threadsafe(stop)
            return
        first_sigterm = time.monotonic()
        begin_drain()
        log.info("SIGTERM: draining for %.1f s (readiness 503, Connection: close)", drain_delay_s)
        # A signal handler runs between two bytecodes of the loop's thread: schedule, do not act here.
        loop.call_soon_threadsafe(lambda: timer.append(loop.call_later(drain_delay_s, stop)))

    signal.signal(signal.SIGTERM, on_sigterm)

    def undo() -> None:
        for t in timer:
            t.cancel()
        if signal.getsignal(signal.SIGTERM) is on_sigterm:
            signal.signal(signal.SIGTERM, previous)

    return undo
