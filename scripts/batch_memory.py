"""Peak memory and /predict/batch time of a real ``catsdogs serve``, for this tree and optionally an older commit.

Each round starts the server (default settings, shipped model), waits for /ready and reads its ``VmHWM``:
idle; after 30 ``/predict/batch`` requests of 16 uploads (their p50); after 400 ``/predict`` 8 at a time.
``--compare REV`` checks REV out in a temporary git worktree and runs its code the same way (``PYTHONPATH``
puts its ``src`` ahead of the installed package), alternating with this tree's. A measurement, not a test.

    python scripts/batch_memory.py --compare a30f272 --rounds 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from bench import cli_command, free_port  # scripts/ is on sys.path when run as a script

from catsdogs.core.paths import PROJECT_ROOT, SHARED_DATA_DIR


def vm_mb(pid: int, field: str) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split(f"{field}:")[1].split()[0]) / 1024


def wait_ready(client: httpx.Client, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if client.get("/ready").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit("the server never became ready")


def measure(src: Path, images: list[bytes]) -> dict[str, float]:
    """One server on the code under ``src``: its peak RSS after each phase and the batch p50."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(src), "CATSDOGS_LOG_LEVEL": "WARNING", "CATSDOGS_PORT": str(port)}
    proc = subprocess.Popen([*cli_command(), "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            wait_ready(client)
            out = {"idle_mb": vm_mb(proc.pid, "VmHWM")}
            files = [("files", (f"{i}.jpg", data, "image/jpeg")) for i, data in enumerate(images[:16])]
            times = []
            for _ in range(30):
                start = time.perf_counter()
                assert client.post("/predict/batch", files=files).status_code == 200
                times.append((time.perf_counter() - start) * 1000)
            out |= {"batch16_p50_ms": statistics.median(times), "after_batches_mb": vm_mb(proc.pid, "VmHWM")}

        def one(i: int) -> int:
            upload = {"file": ("x.jpg", images[i % len(images)], "image/jpeg")}
            return httpx.post(f"{url}/predict", files=upload, timeout=60).status_code

        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(one, range(400))) == {200}
        return out | {"after_load_mb": vm_mb(proc.pid, "VmHWM")}
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--compare", help="an older commit whose serving code to measure alternately")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--images", type=Path, default=SHARED_DATA_DIR / "uploads")
    args = ap.parse_args()
    images = [p.read_bytes() for p in sorted(args.images.glob("*.jpg"))]
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"this tree": PROJECT_ROOT / "src"}
        if args.compare:
            worktree = Path(tmp) / "old"
            subprocess.run(["git", "worktree", "add", "-q", "--detach", str(worktree), args.compare], check=True)
            trees = {args.compare: worktree / "src", **trees}
        try:
            for r in range(args.rounds):
                for label, src in trees.items():
                    m = measure(src, images)
                    print(
                        f"round {r + 1}, {label}: VmHWM idle {m['idle_mb']:.0f} MB, after 30 batches of 16 "
                        f"{m['after_batches_mb']:.0f} MB (p50 {m['batch16_p50_ms']:.1f} ms), after 400 /predict "
                        f"8 at a time {m['after_load_mb']:.0f} MB",
                        flush=True,
                    )
        finally:
            if args.compare:
                subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], check=False)


if __name__ == "__main__":
    main()
