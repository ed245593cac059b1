"""HTTP latency/throughput benchmark: the real service against the seed-style baseline server.

Starts both servers on 127.0.0.1 (one at a time, so they never compete for the CPU), drives each
with the same uploads from an async httpx client, and prints p50/p95/p99 latency at concurrency 1
and requests/s at concurrency 8 and 32, plus the speed-up. Request counts and time are bounded, and
the servers are always stopped.

    python scripts/bench.py                       # shipped model, ../shared/data/uploads
    python scripts/bench.py --model DIR --images DIR --requests 300 --json reports/bench.json
    python scripts/bench.py --overload 60         # 2x capacity, open loop: shedding, p99, RSS
    python scripts/bench.py --raw-body            # our server gets the raw image body instead of multipart
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from catsdogs.core.cpus import cpu_name
from catsdogs.core.paths import MODELS_DIR, PROJECT_ROOT, SHARED_DATA_DIR
from catsdogs.core.transforms import IMAGE_SUFFIXES


@dataclass
class Phase:
    concurrency: int
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    cpu_ms_per_request: float = float("nan")  # server CPU time (all its processes): robust to a busy machine

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


@dataclass
class ServerResult:
    name: str
    phases: dict[int, Phase] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(
    cmd: list[str], url: str, ready_path: str, env: dict[str, str], timeout: float = 120
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server, wait until ``ready_path`` answers 200, and always stop it (whole process group)."""
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True, cwd=PROJECT_ROOT
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise SystemExit(f"server {cmd[:3]} exited with {proc.returncode}:\n{err[-3000:]}")
            try:
                if httpx.get(url + ready_path, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"server {cmd[:3]} not ready after {timeout}s")
            time.sleep(0.2)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its direct children (uvicorn workers), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat.parent.name == str(pid) or fields[1] == str(pid):  # fields[1]: the parent pid
            total += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return total


def percentile(sorted_ms: list[float], q: float) -> float:
    if not sorted_ms:
        return float("nan")
    k = min(len(sorted_ms) - 1, max(0, round(q / 100 * (len(sorted_ms) - 1))))
    return sorted_ms[k]


async def post_image(client: httpx.AsyncClient, name: str, data: bytes, raw: bool) -> httpx.Response:
    """POST /predict: multipart field ``file`` as the seed's clients send it, or the raw body (ours only)."""
    if raw:
        return await client.post("/predict", content=data, headers={"Content-Type": "image/jpeg"})
    return await client.post("/predict", files={"file": (name, data, "image/jpeg")})


async def drive(
    url: str, images: list[tuple[str, bytes]], concurrency: int, n: int, max_seconds: float, raw: bool = False
) -> Phase:
    """``n`` POST /predict requests (at most ``max_seconds``), ``concurrency`` in flight at a time."""
    latencies: list[float] = []
    errors = 0
    counter = iter(range(n))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        # Warm-up: open the connections and let both servers reach a steady state.
        for i in range(min(10, n)):
            name, data = images[i % len(images)]
            await post_image(client, name, data, raw)
        stop_at = time.perf_counter() + max_seconds

        async def worker() -> None:
            nonlocal errors
            for i in counter:
                if time.perf_counter() > stop_at:
                    return
                name, data = images[i % len(images)]
                start = time.perf_counter()
                r = await post_image(client, name, data, raw)
                latencies.append((time.perf_counter() - start) * 1000)
                if r.status_code != 200:
                    errors += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    lat = sorted(latencies)
    return Phase(
        concurrency=concurrency,
        requests=len(lat),
        errors=errors,
        seconds=elapsed,
        p50_ms=percentile(lat, 50),
        p95_ms=percentile(lat, 95),
        p99_ms=percentile(lat, 99),
    )


def bench_server(
    name: str, url: str, pid: int, images: list[tuple[str, bytes]], args: argparse.Namespace, raw: bool = False
) -> ServerResult:
    result = ServerResult(name)
    for c in args.concurrency:
        n = args.requests if c == 1 else args.requests * 2
        cpu_before = cpu_seconds(pid)
        phase = asyncio.run(drive(url, images, c, n, args.max_seconds, raw))
        # Includes the 10 warm-up requests of the phase.
        phase.cpu_ms_per_request = (cpu_seconds(pid) - cpu_before) * 1000 / (phase.requests + min(10, n))
        result.phases[c] = phase
        print(
            f"  {name:<28} c={c:<3} {phase.requests:>5} req in {phase.seconds:5.1f}s  {phase.rps:7.1f} req/s  "
            f"p50 {phase.p50_ms:6.1f}  p95 {phase.p95_ms:6.1f}  p99 {phase.p99_ms:6.1f} ms  "
            f"server CPU {phase.cpu_ms_per_request:5.1f} ms/req" + (f"  ERRORS {phase.errors}" if phase.errors else ""),
            flush=True,
        )
    return result


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its direct children (the workers), in MB, from /proc."""
    total = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        ppid = next((line.split()[1] for line in text.splitlines() if line.startswith("PPid:")), "")
        if status.parent.name == str(pid) or ppid == str(pid):
            total += next((int(line.split()[1]) for line in text.splitlines() if line.startswith("VmRSS:")), 0)
    return total / 1024


def raw_request(port: int, name: str, data: bytes) -> bytes:
    """A complete POST /predict (multipart) as bytes: the open-loop client only writes it, cheaply."""
    boundary = "benchboundary7d1f"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[int, bool]:
    """Send one request, read its response: (status, server keeps the connection open)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").lower().split("\r\n")
    status = int(lines[0].split()[1])
    length = next(int(v) for k, _, v in (h.partition(": ") for h in lines[1:]) if k == "content-length")
    await reader.readexactly(length)
    return status, "connection: close" not in lines


async def open_loop(port: int, images: list[tuple[str, bytes]], rate: float, seconds: float, pid: int) -> dict:
    """Requests sent at a fixed ``rate`` whatever the answers (open loop), for ``seconds``.

    A lean raw-socket client (keep-alive connections reused from a pool), so that the client is not the
    bottleneck; latency counts from the scheduled send time, so client-side lag is not hidden either.
    At most 2,000 requests are outstanding; later ones are counted as ``client_dropped``.
    """
    requests = [raw_request(port, name, data) for name, data in images]
    statuses: dict[str, int] = {}
    accepted: list[float] = []
    peak_rss = rss_mb(pid)
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    outstanding = 0

    async def one(i: int, scheduled: float) -> None:
        nonlocal outstanding
        while idle and idle[-1][0].at_eof():  # closed by the server while idle: a real client skips it too
            idle.pop()[1].close()
        reused = bool(idle)
        conn = idle.pop() if idle else await asyncio.open_connection("127.0.0.1", port)
        try:
            status, keep = await _exchange(*conn, requests[i % len(requests)])
            key = str(status)
            if status == 200:
                accepted.append((time.perf_counter() - scheduled) * 1000)
            if keep:
                idle.append(conn)
            else:
                conn[1].close()
        except (OSError, asyncio.IncompleteReadError) as exc:
            key = f"{type(exc).__name__} ({'reused' if reused else 'new'} connection)"
            conn[1].close()
        statuses[key] = statuses.get(key, 0) + 1
        outstanding -= 1

    tasks = set()
    start = time.perf_counter()
    for i in range(int(rate * seconds)):
        scheduled = start + i / rate
        await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
        if i % max(1, int(rate / 2)) == 0:
            peak_rss = max(peak_rss, rss_mb(pid))
        if outstanding >= 2000:
            statuses["client_dropped"] = statuses.get("client_dropped", 0) + 1
            continue
        outstanding += 1
        task = asyncio.create_task(one(i, scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    for _, writer in idle:
        writer.close()
    peak_rss = max(peak_rss, rss_mb(pid))
    lat = sorted(accepted)
    return {
        "offered_rps": round(rate, 1),
        "seconds": seconds,
        "statuses": statuses,
        "accepted_rps": round(len(lat) / seconds, 1),
        "accepted_p50_ms": round(percentile(lat, 50), 1),
        "accepted_p99_ms": round(percentile(lat, 99), 1),
        "peak_rss_mb": round(peak_rss, 1),
    }


async def closed_loop(port: int, images: list[tuple[str, bytes]], concurrency: int, seconds: float) -> float:
    """Capacity: req/s of ``concurrency`` raw keep-alive connections, each sending as soon as answered."""
    requests = [raw_request(port, name, data) for name, data in images]
    done = 0
    stop_at = time.perf_counter() + seconds

    async def worker(k: int) -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = k
        while time.perf_counter() < stop_at:
            status, _ = await _exchange(reader, writer, requests[i % len(requests)])
            done += status == 200
            i += concurrency
        writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return done / (time.perf_counter() - start)


def overload(url: str, pid: int, images: list[tuple[str, bytes]], args: argparse.Namespace) -> dict:
    """Capacity (closed loop, c=8, 15 s), then 2x that capacity offered open-loop for ``--overload`` s."""
    port = int(url.rsplit(":", 1)[1])
    capacity = asyncio.run(closed_loop(port, images, 8, 15.0))
    print(f"  capacity (closed loop c=8, 15 s): {capacity:.1f} req/s", flush=True)
    result = asyncio.run(open_loop(port, images, 2 * capacity, args.overload, pid))
    result["capacity_rps"] = capacity
    print(f"  open loop at 2x capacity: {json.dumps(result)}", flush=True)
    return result


def load_images(folder: Path) -> list[tuple[str, bytes]]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SystemExit(f"no images in {folder}")
    return [(p.name, p.read_bytes()) for p in files]


def cli_command() -> list[str]:
    script = Path(sys.executable).with_name("catsdogs")
    return [str(script)] if script.exists() else [sys.executable, "-m", "catsdogs"]


def print_table(ours: ServerResult, base: ServerResult | None, conc: list[int]) -> None:
    rows = [ours] + ([base] if base else [])
    header = f"| {'server':<34} | p50 ms c=1 | p95 ms c=1 | p99 ms c=1 | CPU ms/req |" + "".join(
        f" req/s c={c:<3}|" for c in conc if c != 1
    )
    print("\n" + header)
    print("|" + "|".join("-" * (len(col)) for col in header.split("|")[1:-1]) + "|")
    for r in rows:
        one = r.phases.get(1)
        cells = [f" {one.p50_ms:10.1f} ", f" {one.p95_ms:10.1f} ", f" {one.p99_ms:10.1f} "] if one else [" " * 12] * 3
        cells.append(f" {one.cpu_ms_per_request:10.1f} " if one else " " * 12)
        cells += [f" {r.phases[c].rps:10.1f} " for c in conc if c != 1]
        print(f"| {r.name:<34} |" + "|".join(cells) + "|")
    if base:
        cells = []
        if 1 in ours.phases:
            for attr in ("p50_ms", "p95_ms", "p99_ms", "cpu_ms_per_request"):
                cells.append(f" {getattr(base.phases[1], attr) / getattr(ours.phases[1], attr):9.1f}x ")
        cells += [f" {ours.phases[c].rps / base.phases[c].rps:9.1f}x " for c in conc if c != 1]
        print(f"| {'speed-up':<34} |" + "|".join(cells) + "|")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=MODELS_DIR, help="bundle directory (default: models/)")
    parser.add_argument("--images", type=Path, default=SHARED_DATA_DIR / "uploads", help="folder of upload images")
    parser.add_argument("--requests", type=int, default=200, help="requests at c=1 (twice that at c>1)")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="time cap per phase")
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32])
    parser.add_argument("--backend", default="auto", help="auto | onnx | onnx-int8 | openvino | openvino-bf16")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="CATSDOGS_INFERENCE_THREADS (0: CPU quota)")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument(
        "--raw-body",
        action="store_true",
        help="send our server the image as the request body (Content-Type: image/jpeg), not multipart; "
        "the baseline always gets multipart (the seed's API)",
    )
    parser.add_argument(
        "--baseline-threads",
        type=int,
        default=0,
        help="torch threads of the baseline (0: torch's default, as the seed)",
    )
    parser.add_argument(
        "--baseline",
        choices=["seed", "same"],
        default="seed",
        help="seed: SimpleCNN at 224 px as the seed served it (default); same: the bundle's model in PyTorch eager",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--overload",
        type=float,
        default=0,
        metavar="SECONDS",
        help="instead: measure capacity, then offer 2x it open-loop for SECONDS (admission control check)",
    )
    args = parser.parse_args()

    images = load_images(args.images)
    model = args.model.resolve()
    meta = json.loads((model / "model.json").read_text())
    print(
        f"model {meta.get('version')} ({meta.get('architecture')}, {meta['preprocess']['image_size']}px), "
        f"{len(images)} images from {args.images}, {os.cpu_count()} CPUs, {cpu_name()}",
        flush=True,
    )
    env = {**os.environ, "CATSDOGS_LOG_LEVEL": "WARNING", "CATSDOGS_INFERENCE_THREADS": str(args.threads)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [*cli_command(), "serve", "--host", "127.0.0.1", "--port", str(port), "--model", str(model)]
    cmd += ["--workers", str(args.workers), "--backend", args.backend]
    with running(cmd, url, "/ready", env) as proc:
        info = httpx.get(url + "/model").json()
        if args.overload:
            result = overload(url, proc.pid, images, args)
            if args.json:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(result, indent=2) + "\n")
            return
        label = f"catsdogs ({info['backend']}, {info['threads']} thr{', raw body' if args.raw_body else ''})"
        ours = bench_server(label, url, proc.pid, images, args, raw=args.raw_body)

    base = None
    if not args.skip_baseline:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, str(Path(__file__).with_name("baseline_server.py")), "--model", str(model)]
        cmd += ["--torch-threads", str(args.baseline_threads), "--architecture", args.baseline]
        with running([*cmd, "--port", str(port)], url, "/health", env) as proc:
            health = httpx.get(url + "/health").json()
            random_weights = ", random weights" if health["weights"] == "random weights" else ""
            model_desc = f"{health['architecture']} {health['image_size']}px"
            label = f"baseline ({model_desc}, torch fp32, {health['torch_threads']} thr{random_weights})"
            base = bench_server(label, url, proc.pid, images, args)

    print_table(ours, base, args.concurrency)
    one, eight = ours.phases.get(1), ours.phases.get(8)
    # The serving goals (README "Speed"): p50 <= 4 ms at c=1, >= 8x the baseline's req/s at c=8.
    if one:
        print(f"\ntarget p50 <= 4 ms at c=1: {one.p50_ms:.1f} ms -> {'MET' if one.p50_ms <= 4 else 'NOT MET'}")
    if base and eight and 8 in base.phases:
        ratio = eight.rps / base.phases[8].rps
        print(f"target >= 8x baseline req/s at c=8: {ratio:.1f}x -> {'MET' if ratio >= 8 else 'NOT MET'}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        out = {r.name: {c: {**asdict(p), "rps": p.rps} for c, p in r.phases.items()} for r in [ours, base] if r}
        args.json.write_text(json.dumps(out, indent=2) + "\n")
        print(f"results written to {args.json}")


if __name__ == "__main__":
    main()
