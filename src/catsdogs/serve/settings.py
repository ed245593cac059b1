"""Service configuration: one pydantic-settings class, environment variables prefixed ``CATSDOGS_``."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from catsdogs.core.paths import MODELS_DIR
from catsdogs.core.transforms import DEFAULT_MAX_PIXELS
from catsdogs.inference.predictor import Backend

MiB = 1024 * 1024


def _env(name: str) -> AliasChoices:
    """``CATSDOGS_<name>`` first, then the original deployment's plain ``<name>`` (e.g. ``MODEL_PATH``)."""
    return AliasChoices(f"CATSDOGS_{name}", name)


class Settings(BaseSettings):
    """Every knob of the inference service (``CATSDOGS_MODEL_PATH``, ``CATSDOGS_PORT``, ...)."""

    # populate_by_name: Settings(model_path=...) still works for the fields that have env aliases.
    model_config = SettingsConfigDict(
        env_prefix="CATSDOGS_", extra="ignore", protected_namespaces=(), populate_by_name=True
    )

    model_path: str = Field(
        str(MODELS_DIR),
        description="Bundle directory or MLflow URI models:/name@alias.",
        validation_alias=_env("MODEL_PATH"),
    )
    wait_for_model: bool = Field(
        False, description="Start without the model and retry loading it until it appears (else: fail fast)."
    )
    backend: Backend = Field("auto", description="auto = the bundle's default_backend.")
    host: str = Field("0.0.0.0", validation_alias=_env("HOST"))
    port: int = Field(8000, ge=1, le=65535, validation_alias=_env("PORT"))
    workers: int = Field(1, ge=1, le=64)
    inference_threads: int = Field(0, ge=0, description="onnxruntime intra-op threads; 0 = the cgroup CPU quota.")
    pet_threshold: float | None = Field(
        None, ge=0, le=1, description="Pet score below which the answer is 'not a cat or a dog'; unset = the bundle's."
    )
    max_upload_bytes: int = Field(10 * MiB, gt=0, description="Largest accepted image file (bytes).")
    max_batch_files: int = Field(16, ge=1, le=256)
    micro_batch_size: int = Field(
        4, ge=1, le=64, description="Most concurrent /predict images run as one model batch; 1 = no micro-batching."
    )
    max_image_pixels: int = Field(
        DEFAULT_MAX_PIXELS, gt=0, description="Decoded width x height above which a file is refused."
    )
    # Connection limits (docs/serving.md): slow or oversized requests must not hold a worker's connections.
    header_timeout_s: float = Field(10.0, gt=0, description="Deadline for a request's headers (else 408, close).")
    body_timeout_s: float = Field(15.0, gt=0, description="Longest wait for the next piece of a body (else 408).")
    keepalive_timeout_s: float = Field(5.0, gt=0, description="Idle keep-alive connections are closed after this.")
    max_header_bytes: int = Field(32 * 1024, ge=1024, description="Largest request head (else 431, close).")
    max_header_count: int = Field(100, ge=10, description="Most header fields in a request (else 431, close).")
    max_pending_requests: int = Field(
        32,
        ge=1,
        description="Requests per worker in the app (bodies in memory); one more gets 503 before its body is read.",
    )
    max_queue_wait_s: float = Field(
        0.1,
        gt=0,
        description="Latency budget: a request whose estimated wait for the model (from the measured service "
        "time) is longer is shed at once (503 + Retry-After); none waits longer once admitted.",
    )
    max_lossless_pixels: int = Field(
        16_000_000, gt=0, description="Pixel cap of formats decoded in full (PNG, BMP, GIF, WebP, TIFF); JPEG: above."
    )
    decode_memory_mb: int = Field(
        256, ge=16, description="Per-worker budget of decode memory: larger bursts of images wait their turn."
    )
    drain_delay_s: float = Field(
        5.0, ge=0, description="After SIGTERM: serve on (with /ready 503) this long before closing the listener."
    )
    shutdown_timeout_s: float = Field(15.0, gt=0, description="Then: the longest wait for requests in flight.")
    log_format: Literal["json", "text"] = "json"
    log_level: str = Field("INFO", pattern=r"(?i)^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$")
    admin_token: SecretStr | None = Field(None, description="Bearer token of POST /admin/reload; unset = disabled.")

    @property
    def admin_enabled(self) -> bool:
        return self.admin_token is not None and bool(self.admin_token.get_secret_value())

    @property
    def batch_body_limit(self) -> int:
        """Request-body limit of /predict/batch: every file at its maximum, plus multipart overhead."""
        return self.max_batch_files * self.max_upload_bytes + 64 * 1024

    @property
    def body_limit(self) -> int:
        """Request-body limit of every other route: one file plus the multipart boundary and headers."""
        return self.max_upload_bytes + 64 * 1024
