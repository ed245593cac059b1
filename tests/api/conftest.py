"""Fixtures of the API tests: tiny ONNX bundles, started app clients, images from the real uploads."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from apihelpers import IN_CI, wait_ready, write_tiny_bundle
from fastapi.testclient import TestClient
from PIL import Image

from catsdogs.core.paths import MODELS_DIR
from catsdogs.serve.app import create_app
from catsdogs.serve.settings import Settings


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bundle(tmp_path_factory.mktemp("bundle"))


@pytest.fixture(scope="session")
def tiny_bundle_v2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bundle(tmp_path_factory.mktemp("bundle-v2"), version="2.0.0-test", int8=False)


@pytest.fixture(scope="session")
def shipped_bundle() -> Path:
    """The real bundle in models/ (placeholder or trained)."""
    if not (MODELS_DIR / "model.json").is_file():
        message = f"no model bundle in {MODELS_DIR}: run `make export`"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return MODELS_DIR


@pytest.fixture
def make_client(tiny_bundle: Path) -> Iterator[Callable[..., TestClient]]:
    """``make_client(**settings)``: a started app (lifespan run, model ready unless wait=False)."""
    started: list[TestClient] = []

    def factory(wait: bool = True, **overrides: Any) -> TestClient:
        overrides.setdefault("model_path", str(tiny_bundle))
        client = TestClient(create_app(Settings(**overrides)))
        client.__enter__()
        started.append(client)
        if wait:
            wait_ready(client)
        return client

    yield factory
    for client in reversed(started):
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


@pytest.fixture(scope="session")
def photo(uploads_dir: Path) -> Image.Image:
    """A real upload, cropped small (fast to encode and decode)."""
    with Image.open(uploads_dir / "cat.4001.jpg") as im:
        return im.convert("RGB").crop((50, 40, 290, 200))


@pytest.fixture(autouse=True)
def _drop_service_log_handler() -> Iterator[None]:
    """The lifespan installs a stderr handler bound to this test's captured stream: remove it afterwards."""
    root = logging.getLogger()
    level = root.level
    yield
    root.setLevel(level)
    for h in list(root.handlers):
        if h.get_name() == "catsdogs-serve":
            root.removeHandler(h)
