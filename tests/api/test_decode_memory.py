"""Bounded decode memory: a lower pixel cap for formats decoded in full, and a per-worker decode budget."""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from apihelpers import RED, ServerProcess, encode, solid
from fastapi.testclient import TestClient
from PIL import Image

from catsdogs.serve.decode import DecodeBudget, inspect, jpeg_size

MP = 1_000_000


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (width, height), 90).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def test_a_large_jpeg_costs_its_draft_size_not_its_full_size() -> None:
    jpeg = encode(solid(RED, (4000, 3000)), "JPEG")
    cost, problem = inspect(jpeg, target=160, max_lossless_pixels=16 * MP, max_any_pixels=40 * MP)
    assert problem is None
    assert cost <= 4000 * 3000 * 8 // 16  # decoded at 1/8 or 1/4 scale


def test_jpeg_size_reads_the_frame_header_like_pillow(uploads_dir: Path) -> None:
    for path in sorted(uploads_dir.iterdir())[:20]:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as img:
            assert jpeg_size(data) == img.size, path.name
    progressive = encode(solid(RED, (321, 123)), "JPEG", progressive=True)
    assert jpeg_size(progressive) == (321, 123)
    for junk in (b"", b"\xff\xd8", b"\xff\xd8\xff\xe0\x00", encode(solid(RED), "PNG")):
        assert jpeg_size(junk) is None


def test_a_large_png_is_refused_from_its_header() -> None:
    cost, problem = inspect(_png(5000, 4000), target=160, max_lossless_pixels=16 * MP, max_any_pixels=40 * MP)
    assert problem is not None and problem.reason == "too_many_pixels"
    assert "5000x4000" in problem.message and "PNG" in problem.message
    cost, problem = inspect(_png(3000, 2000), target=160, max_lossless_pixels=16 * MP, max_any_pixels=40 * MP)
    assert problem is None and cost >= 3000 * 2000


def test_decode_budget_bounds_what_is_decoded_at_once() -> None:
    budget = DecodeBudget(100)
    peak, lock = 0, threading.Lock()

    def decode() -> None:
        nonlocal peak
        with budget.hold(60):
            with lock:
                peak = max(peak, budget.in_use)
            time.sleep(0.02)

    threads = [threading.Thread(target=decode) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert peak == 60  # never two 60s in a budget of 100
    with budget.hold(10_000):  # larger than the whole budget: runs alone, does not wait for ever
        assert budget.in_use == 100
    assert budget.in_use == 0


def test_png_over_the_lossless_cap_gets_413(client: TestClient) -> None:
    r = client.post("/predict", files={"file": ("big.png", _png(4100, 4000), "image/png")})
    assert r.status_code == 413
    assert "too_many_pixels" in r.text and "16,000,000" in r.text


# --- the burst of the issue, against a real worker -----------------------------------------------------
def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_bundle: Path) -> Iterator[ServerProcess]:
    saved = os.environ.pop("GLIBC_TUNABLES", None)  # the container does not set it: measure as it runs
    # A generous queue wait: on a busy CI machine the burst must not be shed (this test is about memory).
    env = {"CATSDOGS_INFERENCE_THREADS": "1", "CATSDOGS_DRAIN_DELAY_S": "0.2", "CATSDOGS_MAX_QUEUE_WAIT_S": "60"}
    try:
        proc = ServerProcess(tmp_path_factory.mktemp("decode"), tiny_bundle, env=env)
    finally:
        if saved is not None:
            os.environ["GLIBC_TUNABLES"] = saved
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


@pytest.mark.slow
def test_burst_of_40mp_pngs_stays_far_below_the_pod_limit(server: ServerProcess) -> None:
    """8 PNGs of 6300x6300 at once: 1.07 GB peak before (over the 768Mi limit); now refused from the header."""
    png = _png(6300, 6300)
    statuses: list[int] = []

    def post() -> None:
        r = httpx.post(server.url + "/predict", files={"file": ("big.png", png, "image/png")}, timeout=60)
        statuses.append(r.status_code)

    before = _peak_rss_mb(server.proc.pid)
    threads = [threading.Thread(target=post) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert statuses == [413] * 8
    assert _peak_rss_mb(server.proc.pid) - before < 100  # nothing was decoded (one would be ~300 MB)
