"""Overload benchmark: many closed-loop clients against a real `catsdogs serve`, as an attacker would.

Starts the server on 127.0.0.1 with its default settings (or takes ``--url`` and ``--server-pid``), then
runs ``--clients`` clients for ``--seconds`` each: every client sends its next upload as soon as it has
an answer. Four kinds of client, because they load a server differently:

* ``keepalive``: one raw keep-alive connection per client (a lean client, like wrk or hey);
* ``close``: a new connection per request (``Connection: close``), like curl in a loop;
* ``httpx``: one shared ``httpx.AsyncClient`` sized for every client, as a Python user writes it;
* ``threads``: one thread per client with ``http.client`` (like locust or a thread pool with requests).

For each it reports the answers by status, the accepted (200) p50/p99/max latency from the client's
send, the shed share, the goodput (200s per second) and the server's CPU per answer and peak RSS.

    python scripts/bench_overload.py                          # 256 clients x 20 s, every kind
    python scripts/bench_overload.py --kinds keepalive,close --clients 256 --seconds 20 --json reports/overload.json
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import resource
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from bench import cli_command, free_port, load_images, percentile, raw_request, running
from proc_tree import cpu_seconds, peak_rss_mb

from catsdogs.core.paths import MODELS_DIR, SHARED_DATA_DIR

KINDS = ("keepalive", "close", "httpx", "threads")


class Tally:
    """Answers by status and the latency of the accepted ones; safe to use from threads."""

    def __init__(self) -> None:
        self.statuses: Counter[str] = Counter()
        self.accepted_ms: list[float] = []
        self.shed_ms: list[float] = []
        self.loop_lag_ms: list[float] = []  # asyncio clients: how late their own event loop ran (client-bound?)
        self._lock = threading.Lock()

    def add(self, status: str, ms: float) -> None:
        with self._lock:
            self.statuses[status] += 1
            if status == "200":
                self.accepted_ms.append(ms)
            elif status == "503":
                self.shed_ms.append(ms)


async def watch_loop_lag(tally: Tally, stop_at: float, period_s: float = 0.01) -> None:
    """How late the client's event loop wakes: time a client's answer waited in its own process."""
    while (start := time.perf_counter()) < stop_at:
        await asyncio.sleep(period_s)
        tally.loop_lag_ms.append((time.perf_counter() - start - period_s) * 1000)


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").lower().split("\r\n")
    length = next(int(v) for k, _, v in (h.partition(": ") for h in lines[1:]) if k == "content-length")
    await reader.readexactly(length)
    return int(lines[0].split()[1]), "connection: close" not in lines


async def raw_clients(port: int, requests: list[bytes], clients: int, seconds: float, keep: bool) -> Tally:
    tally = Tally()
    stop_at = time.perf_counter() + seconds
    if not keep:
        requests = [r.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1) for r in requests]

    async def client(k: int) -> None:
        conn = None
        i = k
        while time.perf_counter() < stop_at:
            start = time.perf_counter()
            try:
                if conn is None:
                    conn = await asyncio.open_connection("127.0.0.1", port)
                conn[1].write(requests[i % len(requests)])
                status, open_ = await _read_response(conn[0])
                key = str(status)
            except (OSError, asyncio.IncompleteReadError) as exc:
                key, open_ = type(exc).__name__, False
            tally.add(key, (time.perf_counter() - start) * 1000)
            if not (open_ and keep) and conn is not None:
                conn[1].close()
                conn = None
            i += clients
        if conn is not None:
            conn[1].close()

    await asyncio.gather(watch_loop_lag(tally, stop_at), *(client(k) for k in range(clients)))
    return tally


async def httpx_clients(url: str, images: list[tuple[str, bytes]], clients: int, seconds: float) -> Tally:
    tally = Tally()
    stop_at = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http:

        async def client(k: int) -> None:
            i = k
            while time.perf_counter() < stop_at:
                name, data = images[i % len(images)]
                start = time.perf_counter()
                try:
                    r = await http.post("/predict", files={"file": (name, data, "image/jpeg")})
                    key = str(r.status_code)
                except httpx.TransportError as exc:
                    key = type(exc).__name__
                tally.add(key, (time.perf_counter() - start) * 1000)
                i += clients

        await asyncio.gather(watch_loop_lag(tally, stop_at), *(client(k) for k in range(clients)))
    return tally


def thread_clients(port: int, requests: list[bytes], clients: int, seconds: float) -> Tally:
    tally = Tally()
    stop_at = time.perf_counter() + seconds

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        i = k
        while time.perf_counter() < stop_at:
            head, _, body = requests[i % len(requests)].partition(b"\r\n\r\n")
            headers = dict(h.split(": ", 1) for h in head.decode().split("\r\n")[1:] if h.lower() != "host")
            start = time.perf_counter()
            try:
                conn.request("POST", "/predict", body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                key = str(response.status)
            except (OSError, http.client.HTTPException) as exc:
                key = type(exc).__name__
                conn.close()
            tally.add(key, (time.perf_counter() - start) * 1000)
            i += clients
        conn.close()

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 120)
    return tally


def run_kind(kind: str, url: str, images: list[tuple[str, bytes]], args: argparse.Namespace) -> Tally:
    port = int(url.rsplit(":", 1)[1])
    requests = [raw_request(port, name, data) for name, data in images]
    if kind in ("keepalive", "close"):
        return asyncio.run(raw_clients(port, requests, args.clients, args.seconds, keep=kind == "keepalive"))
    if kind == "httpx":
        return asyncio.run(httpx_clients(url, images, args.clients, args.seconds))
    return thread_clients(port, requests, args.clients, args.seconds)


def summary(kind: str, tally: Tally, seconds: float, cpu_s: float, client_cpu_s: float) -> dict[str, Any]:
    total = sum(tally.statuses.values())
    lat = sorted(tally.accepted_ms)
    shed = sorted(tally.shed_ms)
    return {
        "client": kind,
        "answers": dict(tally.statuses),
        "accepted_p50_ms": round(percentile(lat, 50), 1),
        "accepted_p99_ms": round(percentile(lat, 99), 1),
        "accepted_max_ms": round(lat[-1], 1) if lat else float("nan"),
        "shed_p99_ms": round(percentile(shed, 99), 1),
        "shed_share": round(tally.statuses["503"] / total, 3) if total else float("nan"),
        "goodput_rps": round(len(lat) / seconds, 1),
        "server_cpu_ms_per_answer": round(1000 * cpu_s / total, 2) if total else float("nan"),
        # the client shares the machine's cores: a client that needs more CPU per answer than the server
        # is what limits (and delays) its own requests
        "client_cpu_ms_per_answer": round(1000 * client_cpu_s / total, 2) if total else float("nan"),
        "client_loop_lag_p99_ms": round(percentile(sorted(tally.loop_lag_ms), 99), 1) if tally.loop_lag_ms else None,
    }


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bench(url: str, pid: int, images: list[tuple[str, bytes]], args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for kind in args.kinds:
        cpu0, own0 = cpu_seconds(pid), own_cpu_seconds()
        tally = run_kind(kind, url, images, args)
        row = summary(kind, tally, args.seconds, cpu_seconds(pid) - cpu0, own_cpu_seconds() - own0)
        row["server_peak_rss_mb"] = round(peak_rss_mb(pid), 1)
        print(json.dumps(row), flush=True)
        rows.append(row)
        time.sleep(args.pause)  # let the last answers and closes settle before the next kind
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    print("\n| client | 200 | 503 | other | accepted p50 | accepted p99 | shed share | goodput | client loop lag p99 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        a = r["answers"]
        other = sum(v for k, v in a.items() if k not in ("200", "503"))
        lag = "-" if r["client_loop_lag_p99_ms"] is None else f"{r['client_loop_lag_p99_ms']:.0f} ms"
        print(
            f"| {r['client']} | {a.get('200', 0)} | {a.get('503', 0)} | {other} | {r['accepted_p50_ms']:.0f} ms "
            f"| {r['accepted_p99_ms']:.0f} ms | {100 * r['shed_share']:.1f} % | {r['goodput_rps']:.1f} req/s "
            f"| {lag} |"
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=MODELS_DIR)
    parser.add_argument("--images", type=Path, default=SHARED_DATA_DIR / "uploads")
    parser.add_argument("--clients", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--kinds", type=lambda s: s.split(","), default=list(KINDS), help=",".join(KINDS))
    parser.add_argument("--pause", type=float, default=3.0, help="seconds between client kinds")
    parser.add_argument("--url", help="a running server (with --server-pid) instead of starting one")
    parser.add_argument("--server-pid", type=int)
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the server (repeatable)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    if unknown := set(args.kinds) - set(KINDS):
        parser.error(f"unknown client kind(s) {sorted(unknown)}; choose from {','.join(KINDS)}")
    if bool(args.url) != bool(args.server_pid):
        parser.error("--url and --server-pid go together")
    return args


def main() -> None:
    args = parse_args()
    images = load_images(args.images)
    if args.url:
        rows = bench(args.url, args.server_pid, images, args)
    else:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, **dict(e.split("=", 1) for e in args.env)}  # default settings, logging included
        cmd = [*cli_command(), "serve", "--model", str(args.model), "--host", "127.0.0.1", "--port", str(port)]
        with running(cmd, url, "/ready", env) as proc:
            rows = bench(url, proc.pid, images, args)
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps({"clients": args.clients, "seconds": args.seconds, "rows": rows}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
