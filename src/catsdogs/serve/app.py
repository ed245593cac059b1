"""The FastAPI application factory. Nothing is loaded at import: ``create_app`` builds, the lifespan loads.

Run it with ``catsdogs serve`` (or ``uvicorn --factory catsdogs.serve.app:create_app``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import Route
from starlette.staticfiles import StaticFiles

from catsdogs import __version__
from catsdogs.core.cpus import available_cpus
from catsdogs.serve.admission import model_runners
from catsdogs.serve.batching import MicroBatcher
from catsdogs.serve.errors import install_error_handlers
from catsdogs.serve.logging import configure_logging
from catsdogs.serve.metrics import Metrics
from catsdogs.serve.middleware import AccessRecorder, BodyGuardMiddleware, RequestContextMiddleware, RouteTemplates
from catsdogs.serve.routes import admin, docs, health, info, metrics, predict, v2
from catsdogs.serve.settings import Settings
from catsdogs.serve.shedding import SHEDDER_STATE_KEY, AdmissionMiddleware, Shedder
from catsdogs.serve.shutdown import install_drain_handler
from catsdogs.serve.state import ServiceState

log = logging.getLogger("catsdogs.serve")

DESCRIPTION = """
Classifies pet photos as **cat** or **dog** with an ONNX model (onnxruntime, CPU).

* `POST /predict` with multipart field `file`; `POST /predict/batch` with repeated field `files`.
* Errors are `{"detail": "<what is wrong>", "code": "<machine code>"}` (FastAPI's convention, plus a code):
  400 not a usable image, 413 too large, 415 request not multipart, 503 model not ready; 422 is FastAPI's
  validation list (e.g. no `file` field) with `code` beside it.
* Every response carries `X-Request-ID` (yours, echoed, or a generated one).
"""


class OptionalStaticFiles(StaticFiles):
    """StaticFiles that answers 404 (not 500) while the web page's directory does not exist yet."""

    async def check_config(self) -> None:
        if self.directory is not None and not Path(self.directory).is_dir():
            return
        await super().check_config()


# Probes and scrapes must answer under overload: a busy pod is neither dead nor unready.
NEVER_SHED = frozenset({"/health", "/ready", "/metrics", *v2.PROBES})


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Shedder]]:
    state: ServiceState = app.state.service
    settings = state.settings
    configure_logging(settings.log_format, settings.log_level)
    threads = settings.inference_threads or available_cpus()
    runners = model_runners(threads)
    state.limiter = anyio.CapacityLimiter(state.admission.slots)
    if settings.micro_batch_size > 1:
        state.batcher = MicroBatcher(settings.micro_batch_size, runners, state.metrics)
    state.reload_lock = asyncio.Lock()
    log.info(
        "starting",
        extra={"model_path": settings.model_path, "backend": settings.backend, "threads": threads},
    )
    # Load in the background: /health answers at once, /ready says 503 until the model is loaded and warm.
    loader = asyncio.create_task(state.load_initial())
    restore_sigterm = install_drain_handler(state.begin_drain, settings.drain_delay_s)
    try:
        # The lifespan state reaches the HTTP protocol too (uvicorn's app_state): it sheds at the head.
        yield {SHEDDER_STATE_KEY: app.state.shedder}
    finally:
        restore_sigterm()
        loader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loader
        if state.batcher is not None:
            await state.batcher.close()
        state.metrics.mark_this_worker_dead()


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; the model is loaded by the lifespan when the server starts, never here."""
    settings = settings or Settings()
    app = FastAPI(
        title="Cats vs Dogs API",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # /docs and /redoc come from routes/docs.py, with locally served assets (no CDN)
        redoc_url=None,
    )
    app.state.service = ServiceState(settings=settings, metrics=Metrics())

    install_error_handlers(app)
    routers = [module.router for module in (info, health, predict, v2, admin, metrics, docs)]
    for router in routers:
        # A disabled admin API is no part of the API's docs (it still answers 404 with the hint to enable it).
        app.include_router(router, include_in_schema=router is not admin.router or settings.admin_enabled)
    app.mount("/static", OptionalStaticFiles(directory=info.STATIC_DIR, check_dir=False), name="static")
    templates = [r.path for router in routers for r in router.routes if isinstance(r, APIRoute)]
    templates += [r.path for r in app.router.routes if isinstance(r, Route)]  # /docs, /openapi.json, ...

    _install_middleware(app, settings, templates)
    return app


def _install_middleware(app: FastAPI, settings: Settings, templates: list[str]) -> None:
    per_file = f"images of at most {settings.max_upload_bytes:,} bytes are accepted"

    def body_limit(path: str) -> tuple[int, str]:
        if path == "/predict/batch":
            return settings.batch_body_limit, f"at most {settings.max_batch_files} {per_file}"
        if path.startswith(f"{v2.PREFIX}/models/"):  # a batch, base64 in JSON
            return v2.body_limit(settings), f"at most {settings.max_batch_files} {per_file}"
        return settings.body_limit, per_file

    state: ServiceState = app.state.service
    record = AccessRecorder(state.metrics, RouteTemplates(templates, mounts=["/static"]))
    app.state.shedder = Shedder(state.admission, NEVER_SHED, record, rewrite_body=v2.error_body_for)
    # Added last = outermost: the request context sees (and logs) the body guard's and the shedder's answers.
    app.add_middleware(BodyGuardMiddleware, limit_for=body_limit, timeout=settings.body_timeout_s)
    app.add_middleware(AdmissionMiddleware, metrics=state.metrics, shedder=app.state.shedder)
    app.add_middleware(RequestContextMiddleware, record=record, draining=lambda: state.draining)
    app.add_middleware(v2.ProtocolErrorBody)  # outermost: every error under /v2 gets the protocol's body
