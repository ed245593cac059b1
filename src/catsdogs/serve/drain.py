"""The end of a drain without losing a request: the listener and the idle connections close cleanly.

uvicorn's graceful shutdown closes the listener and every connection without a request in progress at
once. Two races lose requests that a client has already sent:

* the listener: connections the kernel has accepted but the server has not (the accept queue) are reset
  when the listening socket closes. A client that was told ``Connection: close`` reconnects at once and
  sends its next request into such a connection. So, first, new connections are refused at the kernel
  (a socket filter drops SYNs: the client's retry, a second later, finds no listener and is refused, so
  it knows nothing was sent), then the server accepts and serves what is queued, then the listener closes;
* an "idle" connection that was accepted for a request still on its way (or still in the kernel's buffer,
  not yet read): closing it resets that request. So at shutdown a connection that has not sent its first
  request, or is half-way through a head, keeps its head deadline (``HEADER_TIMEOUT_S``): its request is
  answered with ``Connection: close``. An idle keep-alive connection is closed at once, as uvicorn does
  (during the drain every answer said ``Connection: close``, so no client is about to reuse it).

With ``--workers N`` the parent holds the listening socket too (``catsdogs.serve.supervisor`` closes it).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import socket
import struct
import sys
import time
from typing import Any

from catsdogs.serve.protocol import HardenedHttpToolsProtocol

log = logging.getLogger("catsdogs.serve")

# The listener closes once its accept queue has stayed empty this long: handshakes already under way
# when SYNs started to be dropped complete (one round trip) and are accepted too.
QUEUE_EMPTY_FOR_S = 0.1
QUEUE_FLUSH_LIMIT_S = 2.0

_SO_ATTACH_FILTER = 26  # Linux, <asm-generic/socket.h>
# Classic BPF on a TCP socket sees the TCP header: drop segments with the SYN flag (new connections),
# keep the rest (the last ACK of a handshake under way, data of accepted connections).
_DROP_SYN = [
    (0x30, 0, 0, 13),  # ldb [13]        TCP flags
    (0x45, 0, 1, 0x02),  # jset #SYN     -> drop, else accept
    (0x06, 0, 0, 0),  # ret #0           drop
    (0x06, 0, 0, 0xFFFFFFFF),  # ret #-1 accept the whole segment
]
_TCPI_UNACKED = 24  # offset of tcpi_unacked in struct tcp_info: a listener's accept queue length


def refuse_new_connections(sock: Any) -> bool:
    """Make the kernel drop new connection attempts to this listening socket (Linux). False if it cannot."""
    if not sys.platform.startswith("linux"):
        return False
    code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *insn) for insn in _DROP_SYN))
    program = struct.pack("HL", len(_DROP_SYN), ctypes.addressof(code))  # struct sock_fprog
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, program)  # the kernel copies the program
    except OSError as exc:
        log.warning("cannot stop new connections before closing the listener: %s", exc)
        return False
    return True


def accept_queue_length(sock: Any) -> int | None:
    """Connections the kernel has accepted on this listening socket and the server not yet (Linux)."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    except (OSError, AttributeError):
        return None
    return int(struct.unpack_from("I", info, _TCPI_UNACKED)[0])


async def flush_listeners(sockets: list[Any]) -> None:
    """Refuse new connections, then let the event loop accept what is queued, before the listener closes."""
    tcp = [s for s in sockets if getattr(s, "type", None) == socket.SOCK_STREAM and s.family != socket.AF_UNIX]
    if not tcp or not all([refuse_new_connections(s) for s in tcp]):
        return  # no way to stop new connections: waiting would not empty the queue
    deadline = time.monotonic() + QUEUE_FLUSH_LIMIT_S
    empty_since: float | None = None
    while (now := time.monotonic()) < deadline:
        queued = sum(accept_queue_length(s) or 0 for s in tcp)
        empty_since = (empty_since or now) if queued == 0 else None
        if empty_since is not None and now - empty_since >= QUEUE_EMPTY_FOR_S:
            return
        await asyncio.sleep(0.01)
    log.warning("connections were still queued %.1f s after new ones were refused", QUEUE_FLUSH_LIMIT_S)


def listening_sockets(server: Any) -> list[Any]:
    """The listening sockets of a uvicorn ``Server`` (empty before it started)."""
    found: list[Any] = []
    for srv in getattr(server, "servers", None) or []:
        with contextlib.suppress(AttributeError, RuntimeError):
            found += list(srv.sockets or [])
    return found


class DrainingHttpToolsProtocol(HardenedHttpToolsProtocol):
    """The hardened protocol; at shutdown, a connection that has not sent its request yet is not cut off."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._requests = 0  # requests begun on this connection
        self._closing = False  # shutdown began: the next request is the last on this connection

    def shutdown(self) -> None:
        self._closing = True
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False  # busy: uvicorn closes it after this answer
        elif self._requests == 0 or self._head_bytes:
            # Accepted for a request that is on its way (or half read): it gets its answer, with
            # Connection: close; the head deadline (408, or a silent close if nothing came) still applies.
            return
        else:
            self.transport.close()  # idle keep-alive, nothing unread (during a drain: told Connection: close)

    def on_message_begin(self) -> None:
        self._requests += 1
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self._closing and self.cycle is not None:
            self.cycle.keep_alive = False  # uvicorn adds Connection: close and closes after the answer
