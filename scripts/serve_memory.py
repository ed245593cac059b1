"""Peak memory of a real ``catsdogs serve`` worker: idle, under upload load, and in the worst decode burst.

Starts the server (one worker, one model thread, no ``GLIBC_TUNABLES``, as in the container) once per
micro-batch size, and reads the worker's ``VmHWM`` after each phase: idle; 200 real uploads sent 8 at a
time; then 8 PNGs of 12 MP at once (a lossless format is decoded in full: the costliest upload allowed).
``--one-cpu`` pins the server to one CPU, as a pod with a CPU limit of 1 runs it; ``--arena-max`` sets
``MALLOC_ARENA_MAX`` as the container image does (2; 0 = glibc's default, one arena per thread up to
8 x cores). A measurement, not a test.

    python scripts/serve_memory.py --one-cpu --micro-batch 1,4 --arena-max 2,0
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from bench import cli_command, free_port, running  # scripts/ is on sys.path when run as a script
from PIL import Image

from catsdogs.core.paths import MODELS_DIR, SHARED_DATA_DIR
from catsdogs.core.transforms import IMAGE_SUFFIXES


def vm_hwm_mib(pid: int) -> int:
    """Peak RSS of ``pid`` or of its children (the CLI may re-execute itself), whichever is larger."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    peaks = []
    for p in [pid, *map(int, children)]:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peaks.append(int(line.split()[1]) // 1024)
    return max(peaks)


def big_png(width: int = 4000, height: int = 3000) -> bytes:
    """A 12 MP PNG of 10x10 blocks of noise: small on the wire (~0.6 MB), 12 MP to decode like any other."""
    noise = np.random.default_rng(0).integers(0, 255, (height // 10, width // 10, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).resize((width, height), Image.Resampling.NEAREST).save(buf, "PNG")
    return buf.getvalue()


def post_all(url: str, uploads: list[tuple[bytes, str]]) -> list[int]:
    """Send the uploads at once (one thread each); their status codes."""

    def post(upload: tuple[bytes, str]) -> int:
        data, ctype = upload
        return httpx.post(url + "/predict", files={"file": ("x", data, ctype)}, timeout=120).status_code

    with ThreadPoolExecutor(len(uploads)) as pool:
        return list(pool.map(post, uploads))


def measure(model: Path, micro_batch: int, arena_max: int, one_cpu: bool, jpegs: list[bytes], png: bytes) -> str:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "CATSDOGS_INFERENCE_THREADS": "1", "CATSDOGS_MICRO_BATCH_SIZE": str(micro_batch)}
    env |= {"CATSDOGS_LOG_LEVEL": "WARNING"}
    env.pop("GLIBC_TUNABLES", None)
    env.pop("MALLOC_ARENA_MAX", None)
    if arena_max:
        env["MALLOC_ARENA_MAX"] = str(arena_max)
    cmd = [*cli_command(), "serve", "--host", "127.0.0.1", "--port", str(port), "--model", str(model)]
    if one_cpu:
        cmd = ["taskset", "-c", "0", *cmd]
    with running(cmd, url, "/ready", env) as proc:
        idle = vm_hwm_mib(proc.pid)
        statuses = []
        for i in range(0, 200, 8):  # 200 real uploads, 8 at a time
            statuses += post_all(url, [(jpegs[(i + k) % len(jpegs)], "image/jpeg") for k in range(8)])
        loaded = vm_hwm_mib(proc.pid)
        burst = post_all(url, [(png, "image/png")] * 8)
        peak = vm_hwm_mib(proc.pid)
    ok = sum(s == 200 for s in statuses)
    return (
        f"MICRO_BATCH_SIZE={micro_batch} MALLOC_ARENA_MAX={arena_max or 'default'}: idle {idle} MiB, "
        f"after 200 uploads 8 at a time {loaded} MiB ({ok} x 200), "
        f"8 PNGs of 12 MP at once {peak} MiB (statuses {sorted(burst)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=MODELS_DIR)
    parser.add_argument("--images", type=Path, default=SHARED_DATA_DIR / "uploads")
    parser.add_argument("--micro-batch", type=lambda s: [int(x) for x in s.split(",")], default=[4])
    parser.add_argument(
        "--arena-max",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[2],
        help="MALLOC_ARENA_MAX values (0: glibc's default)",
    )
    parser.add_argument("--one-cpu", action="store_true", help="pin the server to CPU 0 (a pod with limits.cpu 1)")
    args = parser.parse_args()
    files = sorted(p for p in args.images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        sys.exit(f"no images in {args.images}")
    jpegs = [p.read_bytes() for p in files]
    png = big_png()
    print(f"{len(jpegs)} uploads from {args.images}; burst PNG {len(png):,} bytes", flush=True)
    for arena_max in args.arena_max:
        for size in args.micro_batch:
            print(measure(args.model.resolve(), size, arena_max, args.one_cpu, jpegs, png), flush=True)


if __name__ == "__main__":
    main()
