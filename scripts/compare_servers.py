"""Compare ASGI servers on connection limits and speed, on 127.0.0.1, bounded in time (docs/serving.md).

The other servers are not dependencies of the project: install them aside first, then run one at a time:

    .venv/bin/pip install --target /tmp/srvcmp granian==2.8.7 hypercorn==0.18.0
    PYTHONPATH=/tmp/srvcmp .venv/bin/python scripts/compare_servers.py uvicorn-hardened 18801
    (names: uvicorn-hardened, uvicorn-plain, hypercorn, granian)
"""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

import httpx

from catsdogs.core.paths import MODELS_DIR, PROJECT_ROOT, SHARED_DATA_DIR

name, port = sys.argv[1], int(sys.argv[2])
py = sys.executable
env = dict(
    os.environ,
    CATSDOGS_MODEL_PATH=str(MODELS_DIR),
    CATSDOGS_LOG_LEVEL="WARNING",
    PYTHONPATH=os.pathsep.join([str(PROJECT_ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    CATSDOGS_INFERENCE_THREADS="1",
)
cmds = {
    "uvicorn-hardened": [py, "-m", "catsdogs", "serve", "--host", "127.0.0.1", "--port", str(port)],
    "uvicorn-plain": [
        py,
        "-m",
        "uvicorn",
        "--factory",
        "catsdogs.serve.app:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--http",
        "httptools",
    ],
    "hypercorn": [
        py,
        "-m",
        "hypercorn",
        "--bind",
        f"127.0.0.1:{port}",
        "--keep-alive",
        "5",
        "--read-timeout",
        "10",
        "catsdogs.serve.app:create_app()",
    ],
    "granian": [
        py,
        "-m",
        "granian",
        "--interface",
        "asgi",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--factory",
        "--http",
        "1",
        "--http1-header-read-timeout",
        "10000",
        "--no-log",
        "catsdogs.serve.app:create_app",
    ],
}
proc = subprocess.Popen(
    cmds[name], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
)
try:
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                break
        except Exception:
            pass
        time.sleep(0.3)

    def raw(payload, slow=None, limit=20.0):
        s = socket.create_connection(("127.0.0.1", port), timeout=limit)
        t = time.time()
        try:
            s.sendall(payload)
            if slow:
                for _ in range(int(limit)):
                    s.sendall(slow)
                    time.sleep(1)
            data = b""
            while d := s.recv(65536):
                data += d
        except TimeoutError:
            return f"held >{limit:.0f}s"
        except OSError as e:
            return f"closed after {time.time() - t:.1f}s ({type(e).__name__})"
        return f"{data.split(b' ', 2)[1].decode() if data else 'closed'} after {time.time() - t:.1f}s"

    res = {}
    res["slowloris(1 B/s, 20s cap)"] = raw(b"GET /health HTTP/1.1\r\nHost: x\r\n", slow=b"X", limit=20)
    res["1MB header"] = raw(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 1_000_000 + b"\r\n\r\n")
    res["300 headers"] = raw(
        b"GET /health HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-%d: a\r\n" % i for i in range(300))
        + b"Connection: close\r\n\r\n"
    )
    res["lying Content-Length"] = raw(
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        b"Content-Length: 5000\r\n\r\n--b\r\n",
        limit=25,
    )
    res["idle keep-alive"] = raw(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", limit=25)
    img = (SHARED_DATA_DIR / "uploads" / "cat.4001.jpg").read_bytes()

    async def load(c, secs):
        lat = []
        end = time.time() + secs
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=httpx.Limits(max_connections=c)) as cl:

            async def w():
                while time.time() < end:
                    t = time.perf_counter()
                    r = await cl.post("/predict", files={"file": ("a.jpg", img, "image/jpeg")})
                    lat.append(time.perf_counter() - t)
                    assert r.status_code == 200, r.text

            await asyncio.gather(*[w() for _ in range(c)])
        lat.sort()
        return len(lat) / secs, lat[len(lat) // 2] * 1000

    asyncio.run(load(2, 2))
    r1 = asyncio.run(load(1, 8))
    r8 = asyncio.run(load(8, 8))
    res["c=1 p50 ms"] = f"{r1[1]:.2f}"
    res["c=8 req/s"] = f"{r8[0]:.0f}"
    print(name, res, flush=True)
finally:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(20)
