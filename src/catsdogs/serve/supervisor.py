"""How ``catsdogs serve`` runs uvicorn: in this process (1 worker) or under uvicorn's worker supervisor (N).

``uvicorn.run`` with ``workers > 1`` binds the listening socket in the parent, hands it to the workers and
keeps its own copy open until the parent exits. So after the workers have drained and closed theirs, the
socket still listens: the kernel keeps accepting connections that no process will ever serve, clients
send their requests into them (one per keep-alive client: the reconnect after its last
``Connection: close``), and the parent's exit resets them all. ``DrainingMultiprocess`` closes the parent's
copy as soon as it has forwarded SIGTERM to the workers: the socket then stops listening when the last
worker closes its listener, and a late client is refused (nothing sent) instead of reset (request lost).
"""

from __future__ import annotations

import contextlib
import os
import sys

from uvicorn import Config, Server
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess


class DrainingMultiprocess(Multiprocess):
    def terminate_all(self) -> None:
        super().terminate_all()  # SIGTERM to every worker: each drains, then closes its listener
        for sock in self.sockets:
            sock.close()  # the workers hold their own copies: the socket listens as long as one of them does


def run(config: Config) -> None:
    """``uvicorn.run`` for an app given as an import string, with the parent's listener closed at shutdown."""
    if config.workers > 1:
        sock = config.bind_socket()
        try:
            DrainingMultiprocess(config, sockets=[sock]).run()
        finally:
            sock.close()
            if config.uds and os.path.exists(config.uds):
                os.remove(config.uds)
        return
    server = Server(config=config)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises Ctrl-C after its shutdown (as uvicorn.run)
        server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)
