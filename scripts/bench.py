"""HTTP latency/throughput benchmark: the real service against its peers and the seed-style baseline server.

Starts each server on 127.0.0.1 (one at a time, so they never compete for the CPU): catsdogs, then
BentoML and LitServe serving the same bundle through the same Predictor (scripts/bench_peers.py), then
the seed-style baseline. Drives each with the same uploads from an async httpx client and prints one
table: p50/p99 latency at concurrency 1, requests/s at concurrency 8 and 32, server CPU per request
(the server's whole process tree) and peak RSS. Between the servers it measures the physical bound
(scripts/bench_bound.py: cores / (model + decode CPU per image)) and reports req/s at c=8 as a share
of it. Request counts and time are bounded, and the servers are always stopped.

    python scripts/bench.py                       # shipped model, ../shared/data/uploads, peers, baseline
    python scripts/bench.py --model DIR --images DIR --requests 300 --json reports/bench.json
    python scripts/bench.py --peers none --skip-baseline   # catsdogs and the bound only
    python scripts/bench.py --url http://127.0.0.1:8000 --server-pid PID   # a running server (the image)
    python scripts/bench.py --overload 60         # 2x capacity, open loop: shedding, p99, RSS
    python scripts/bench.py --raw-body            # our server gets the raw image body instead of multipart
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from bench_bound import Bound  # scripts/ is on sys.path when run as a script
from bench_peers import PEERS, check_venvs, parse_peers, peer_spec
from bench_report import report
from proc_tree import cpu_seconds, host_cpu_ticks, host_shares, peak_rss_mb, rss_mb

from catsdogs.core.cpus import cpu_name
from catsdogs.core.paths import MODELS_DIR, PROJECT_ROOT, SHARED_DATA_DIR
from catsdogs.core.transforms import IMAGE_SUFFIXES
from catsdogs.serve.settings import Settings

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass
class Phase:
    concurrency: int
    requests: int  # answered 200: req/s, latency and CPU per request count these only
    errors: int  # every other answer (e.g. the 503s of admission control at c=32)
    seconds: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    cpu_ms_per_request: float = float("nan")  # server CPU (all its processes) per 200, shed answers' CPU included
    first_error: str = ""  # status and start of the body of the first non-200 answer
    client_cpu_ms_per_request: float = float("nan")  # the bench client's own CPU per 200 (on the same cores)
    host_idle_pct: float = float("nan")  # share of the machine's cores idle during the phase
    host_steal_pct: float = float("nan")  # share taken by other guests (hypervisor steal): a noisy host

    @property
    def rps(self) -> float:
        """Goodput: answers of 200 per second (a shed 503 is quick, and no answer to the client)."""
        return self.requests / self.seconds if self.seconds else 0.0


@dataclass
class ServerResult:
    name: str
    phases: dict[int, Phase] = field(default_factory=dict)
    peak_rss_mb: float = float("nan")  # sum of the tree's per-process peaks, start-up included
    answers: dict[str, tuple[str, float]] = field(default_factory=dict)  # warm-up image -> (prediction, prob.)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(
    cmd: list[str], url: str, ready_path: str, env: dict[str, str], timeout: float = 120
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server, wait until ``ready_path`` answers 200, and always stop it (whole process group).

    Its output goes to a temporary file, not a pipe: a pipe nobody reads fills and blocks a chatty server.
    """
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=PROJECT_ROOT
        )
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    err = log.read().decode(errors="replace")
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
            stop_group(proc)


def stop_group(proc: subprocess.Popen[bytes], grace_s: float = 15) -> None:
    """SIGTERM to the server's process group; SIGKILL to whatever is left of it after ``grace_s``.

    The whole group, not only the first process: a multi-process server (BentoML, LitServe) must be gone
    before the next server's numbers start.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader, or the group never empties
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


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


async def warm_up(
    client: httpx.AsyncClient, images: list[tuple[str, bytes]], n: int, raw: bool, expect: tuple[str, ...]
) -> dict[str, tuple[str, float]]:
    """``n`` requests one by one (open the connections, reach a steady state): image name -> its answer.

    Every answer must be a 200 with the ``expect`` JSON fields (an object, or a list of one: BentoML's batchable
    API): a server that answers something else is not serving the same API, and its speed would mean nothing.
    """
    answers = {}
    for i in range(n):
        name, data = images[i % len(images)]
        r = await post_image(client, name, data, raw)
        body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
        if isinstance(body, list) and len(body) == 1:  # a batchable BentoML API answers a list of one
            body = body[0]
        if r.status_code != 200 or not all(k in body for k in expect):
            raise SystemExit(f"{client.base_url}/predict answered {r.status_code} {r.text[:300]!r} to {name}")
        answers[name] = (body["prediction"], float(body.get("probability", body.get("confidence", "nan"))))
    return answers


async def drive(
    url: str,
    images: list[tuple[str, bytes]],
    concurrency: int,
    n: int,
    max_seconds: float,
    raw: bool = False,
    pid: int | None = None,
    expect: tuple[str, ...] = ("prediction", "probability"),
    honour_retry_after: bool = True,
) -> tuple[Phase, dict[str, tuple[str, float]]]:
    """POST /predict until ``n`` answers of 200 (at most ``max_seconds``), ``concurrency`` in flight, after a warm-up.

    The warm-up (httpx) checks the answers; the timed requests go out on ``concurrency`` raw keep-alive
    connections, prebuilt bytes written as they are, so that the client, on the same cores as the server,
    takes as little of their CPU as it can (its CPU per 200 is reported). A non-200 answer (a shed 503) is
    counted apart and does not count toward ``n``; its connection waits the ``Retry-After`` it names, as
    HTTP clients' retry policies do (urllib3's ``Retry``, most SDKs), unless ``honour_retry_after`` is off
    (it then re-sends at once: a retry storm on the same cores). With ``pid``, the server tree's CPU time
    over the timed requests gives server CPU per 200.
    """
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        answers = await warm_up(client, images, min(10, n), raw, expect)
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    requests = [raw_request(port, name, data, raw) for name, data in images]
    stop_at = time.perf_counter() + max_seconds
    tally = Tally(stop_at=stop_at, honour_retry_after=honour_retry_after)
    sent = itertools.count()

    async def worker() -> None:
        conn = await asyncio.open_connection(host, port)
        while len(tally.latencies) < n and time.perf_counter() < stop_at:
            conn = await tally.one(conn, requests[next(sent) % len(requests)], host, port)
        conn[1].close()

    cpu_before, client_before = (cpu_seconds(pid) if pid else float("nan")), time.process_time()
    host_before = host_cpu_ticks()
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    cpu = cpu_seconds(pid) - cpu_before if pid else float("nan")
    phase = tally.phase(concurrency, elapsed, cpu, time.process_time() - client_before)
    host = host_shares(host_before, host_cpu_ticks())
    phase.host_idle_pct, phase.host_steal_pct = host.idle_pct, host.steal_pct
    return phase, answers


@dataclass
class Tally:
    """What the timed requests of one phase got back."""

    stop_at: float  # perf_counter time the phase ends (no wait runs past it)
    honour_retry_after: bool = True
    latencies: list[float] = field(default_factory=list)  # ms, answers of 200 only
    errors: int = 0
    first_error: str = ""

    async def one(self, conn: Connection, request: bytes, host: str, port: int) -> Connection:
        """One request on ``conn``; the connection to use next (a new one where the server closed it)."""
        start = time.perf_counter()
        try:
            status, body, keep, headers = await exchange(*conn, request)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            status, body, keep, headers = 0, repr(exc).encode(), False, {}
        if status == 200:
            self.latencies.append((time.perf_counter() - start) * 1000)
        else:
            self.errors += 1
            self.first_error = self.first_error or f"{status} {body[:120].decode('utf-8', 'replace')!r}"
            if self.honour_retry_after and headers.get("retry-after", "").isdigit():
                await asyncio.sleep(min(int(headers["retry-after"]), max(0.0, self.stop_at - time.perf_counter())))
        if keep:
            return conn
        conn[1].close()
        return await asyncio.open_connection(host, port)

    def phase(self, concurrency: int, seconds: float, server_cpu: float, client_cpu: float) -> Phase:
        lat = sorted(self.latencies)
        per_200 = 1000 / len(lat) if lat else float("nan")
        return Phase(
            concurrency=concurrency,
            requests=len(lat),
            errors=self.errors,
            first_error=self.first_error,
            seconds=seconds,
            p50_ms=percentile(lat, 50),
            p95_ms=percentile(lat, 95),
            p99_ms=percentile(lat, 99),
            cpu_ms_per_request=server_cpu * per_200,
            client_cpu_ms_per_request=client_cpu * per_200,
        )


def bench_server(
    name: str,
    url: str,
    pid: int | None,
    images: list[tuple[str, bytes]],
    args: argparse.Namespace,
    raw: bool = False,
    expect: tuple[str, ...] = ("prediction", "probability"),
) -> ServerResult:
    """Every concurrency phase against one server; ``pid`` (None: not on this machine) for CPU and memory."""
    result = ServerResult(name)
    for c in args.concurrency:
        n = args.requests if c == 1 else args.requests * 2
        run = drive(url, images, c, n, args.max_seconds, raw, pid, expect, not args.ignore_retry_after)
        phase, answers = asyncio.run(run)
        result.answers.update(answers)
        result.phases[c] = phase
        print(
            f"  {name[:40]:<40} c={c:<3} {phase.requests:>5} x 200 in {phase.seconds:5.1f}s  {phase.rps:7.1f} req/s  "
            f"p50 {phase.p50_ms:6.1f}  p95 {phase.p95_ms:6.1f}  p99 {phase.p99_ms:6.1f} ms  "
            f"server CPU {phase.cpu_ms_per_request:5.1f} ms/req  client CPU {phase.client_cpu_ms_per_request:4.1f}  "
            f"host idle {phase.host_idle_pct:4.1f} %  steal {phase.host_steal_pct:4.1f} %"
            + (f"  non-200: {phase.errors}, first: {phase.first_error}" if phase.errors else ""),
            flush=True,
        )
    if pid:
        result.peak_rss_mb = peak_rss_mb(pid)
    return result


def raw_request(port: int, name: str, data: bytes, raw: bool = False) -> bytes:
    """A complete POST /predict as bytes (multipart field ``file``, or the raw JPEG body): written as is, cheaply."""
    boundary = "benchboundary7d1f"
    if raw:
        body, ctype = data, "image/jpeg"
    else:
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
                "Content-Type: image/jpeg\r\n\r\n"
            ).encode()
            + data
            + f"\r\n--{boundary}--\r\n".encode()
        )
        ctype = f"multipart/form-data; boundary={boundary}"
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes, bool, dict[str, str]]:
    """Send one request, read its response: (status, body, server keeps the connection open, headers)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").lower().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k: v for k, _, v in (h.partition(": ") for h in lines[1:] if h)}
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        body = await _read_chunked(reader)
    else:  # the body runs to the end of the connection
        return status, await reader.read(), False, headers
    keep = headers.get("connection") != "close" and not lines[0].startswith("http/1.0")
    return status, body, keep, headers


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks = []
    while size := int((await reader.readline()).split(b";")[0], 16):
        chunks.append(await reader.readexactly(size))
        await reader.readline()  # the CRLF after each chunk
    await reader.readline()  # the CRLF after the last, empty chunk (no trailers)
    return b"".join(chunks)


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
            status, _, keep, _ = await exchange(*conn, requests[i % len(requests)])
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
            status, *_ = await exchange(reader, writer, requests[i % len(requests)])
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


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=MODELS_DIR, help="bundle directory (default: models/)")
    parser.add_argument("--images", type=Path, default=SHARED_DATA_DIR / "uploads", help="folder of upload images")
    parser.add_argument("--requests", type=int, default=200, help="requests at c=1 (twice that at c>1)")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="time cap per phase")
    parser.add_argument(
        "--ignore-retry-after",
        action="store_true",
        help="re-send a shed request at once instead of waiting its Retry-After (a retry storm on the same cores)",
    )
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32])
    parser.add_argument("--backend", default="auto", help="auto | onnx | onnx-int8 | openvino | openvino-bf16")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="CATSDOGS_INFERENCE_THREADS (0: CPU quota)")
    parser.add_argument(
        "--url",
        help="benchmark the catsdogs server already running there (e.g. the container) instead of starting one",
    )
    parser.add_argument(
        "--server-pid",
        type=int,
        help="with --url: the server's process id on this machine, for its CPU and memory "
        "(the container: docker inspect -f '{{.State.Pid}}' catsdogs-api)",
    )
    parser.add_argument(
        "--peers",
        default=",".join(PEERS),
        help=f"peer servers on the same bundle and Predictor, comma-separated: {', '.join(PEERS)} or none "
        "(their venvs: make bench-peers-venv)",
    )
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument(
        "--raw-body",
        action="store_true",
        help="send our server the image as the request body (Content-Type: image/jpeg), not multipart; "
        "the peers and the baseline always get multipart (the seed's API)",
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
    if args.server_pid and not args.url:
        parser.error("--server-pid goes with --url (a server this script did not start)")
    if args.overload and args.url and not args.server_pid:
        parser.error("--overload with --url needs --server-pid (it samples the server's memory)")
    return args


@contextlib.contextmanager
def our_server(args: argparse.Namespace, model: Path, env: dict[str, str]) -> Iterator[tuple[str, int | None]]:
    """(URL, process id or None) of the catsdogs server: the one at ``--url``, or one started here."""
    if args.url:
        yield args.url.rstrip("/"), args.server_pid
        return
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [*cli_command(), "serve", "--host", "127.0.0.1", "--port", str(port), "--model", str(model)]
    cmd += ["--workers", str(args.workers), "--backend", args.backend]
    with running(cmd, url, "/ready", env) as proc:
        yield url, proc.pid


def measure_bound(model: Path, info: dict, batch: int, args: argparse.Namespace, env: dict[str, str]) -> Bound:
    """The physical bound for the served backend and threads, in a process of its own (no server running):
    the bench client stays free of a loaded model and its runtime's threads."""
    cmd = [sys.executable, str(Path(__file__).with_name("bench_bound.py")), "--model", str(model), "--json"]
    cmd += ["--images", str(args.images), "--backend", info["backend"], "--threads", str(info["threads"])]
    cmd += ["--batch", str(batch)]
    done = subprocess.run(cmd, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"bench_bound.py failed ({done.returncode}):\n{done.stderr[-3000:]}")
    data = json.loads(done.stdout.splitlines()[-1])
    bound = Bound(**{k: data[k] for k in Bound.__dataclass_fields__})
    print(f"  {bound.describe()}", flush=True)
    return bound


def bench_peer(
    name: str, model: Path, info: dict, batch: int, images: list[tuple[str, bytes]], args: argparse.Namespace, env
) -> ServerResult:
    """One peer on the same bundle, backend, threads and batch limit as our server."""
    port = free_port()
    spec = peer_spec(name, port, model, info["backend"], info["threads"], batch, env)
    url = f"http://127.0.0.1:{port}"
    with running(spec.cmd, url, spec.ready_path, spec.env) as proc:
        return bench_server(spec.label, url, proc.pid, images, args)


def bench_baseline(model: Path, images: list[tuple[str, bytes]], args: argparse.Namespace, env) -> ServerResult:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, str(Path(__file__).with_name("baseline_server.py")), "--model", str(model)]
    cmd += ["--torch-threads", str(args.baseline_threads), "--architecture", args.baseline]
    with running([*cmd, "--port", str(port)], url, "/health", env) as proc:
        health = httpx.get(url + "/health").json()
        random_weights = ", random weights" if health["weights"] == "random weights" else ""
        model_desc = f"{health['architecture']} {health['image_size']}px"
        label = f"seed-style ({model_desc}, torch fp32, {health['torch_threads']} thr{random_weights})"
        return bench_server(label, url, proc.pid, images, args, expect=("prediction", "confidence"))


def write_json(path: Path, rows: list[ServerResult], bound: Bound) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    servers = {
        r.name: {
            "phases": {c: {**asdict(p), "rps": p.rps} for c, p in r.phases.items()},
            "peak_rss_mb": r.peak_rss_mb,
        }
        for r in rows
    }
    path.write_text(json.dumps({"servers": servers, "bound": bound.to_dict()}, indent=2) + "\n")
    print(f"results written to {path}")


def main() -> None:
    args = parse_args()
    peers = [] if args.overload else parse_peers(args.peers)
    check_venvs(peers)
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

    with our_server(args, model, env) as (url, pid):
        info = httpx.get(url + "/model").json()
        if args.overload:
            result = overload(url, pid, images, args)
            if args.json:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(result, indent=2) + "\n")
            return
        where = f" at {args.url}" if args.url else ""
        label = f"catsdogs{where} ({info['backend']}, {info['threads']} thr{', raw body' if args.raw_body else ''})"
        ours = bench_server(label, url, pid, images, args, raw=args.raw_body)

    batch = Settings().micro_batch_size  # the server's micro-batch limit (CATSDOGS_MICRO_BATCH_SIZE), for all
    bound = measure_bound(model, info, batch, args, env)
    rows = [ours] + [bench_peer(name, model, info, batch, images, args, env) for name in peers]
    base = None if args.skip_baseline else bench_baseline(model, images, args, env)
    report([*rows, *([base] if base else [])], rows[1:], base, bound, args.concurrency)
    if args.json:
        write_json(args.json, [*rows, *([base] if base else [])], bound)


if __name__ == "__main__":
    main()
