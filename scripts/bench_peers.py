"""The peers of ``make bench``: the servers a user would pick instead, serving the same bundle the same way.

BentoML 1.4 (adaptive batching) and LitServe (batching on), each from its own venv under .cache/
(``make bench-peers-venv``, pins in requirements/bench-<peer>.txt), with the project's src/ on PYTHONPATH:
the same ``catsdogs.predictor.Predictor``, bundle, backend, model threads and batch limit as our server.
The services themselves are scripts/peers/bentoml_service.py and scripts/peers/litserve_server.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from catsdogs.core.paths import PROJECT_ROOT

PEERS = ("bentoml", "litserve")  # the default run
EXTRA_PEERS = ("bentoml-composed",)  # on request: BentoML's one-object API (drops requests under load in 1.4.40)
PEER_DIR = Path(__file__).with_name("peers")
# How long LitServe waits to fill a batch: each lone request waits this long (0 makes its worker spin).
LITSERVE_BATCH_TIMEOUT_S = 0.002


@dataclass(frozen=True)
class PeerSpec:
    name: str
    cmd: list[str]
    ready_path: str
    env: dict[str, str]
    label: str


def framework(name: str) -> str:
    """The framework (and venv) of a peer: ``bentoml-composed`` -> ``bentoml``."""
    return name.split("-", 1)[0]


def venv(name: str) -> Path:
    return PROJECT_ROOT / ".cache" / f"{framework(name)}-venv"


def pinned_version(name: str) -> str:
    """The framework's version as requirements/bench-<name>.txt pins it."""
    name = framework(name)
    for line in (PROJECT_ROOT / "requirements" / f"bench-{name}.txt").read_text().splitlines():
        if line.lower().startswith(f"{name}=="):
            return line.split("==", 1)[1]
    return "?"


def parse_peers(text: str) -> list[str]:
    """``bentoml,litserve`` -> the names; ``none`` or empty -> no peers."""
    names = [n.strip().lower() for n in text.split(",") if n.strip() and n.strip().lower() != "none"]
    unknown = [n for n in names if n not in PEERS + EXTRA_PEERS]
    if unknown:
        choices = ", ".join(PEERS + EXTRA_PEERS)
        raise SystemExit(f"unknown peer {', '.join(unknown)}: choose from {choices} (or none)")
    return names


def check_venvs(names: list[str]) -> None:
    missing = [str(venv(n)) for n in names if not (venv(n) / ".installed").is_file()]
    if missing:
        raise SystemExit(f"peer venv {', '.join(missing)} missing: run `make bench-peers-venv` (or pass --peers none)")


def peer_spec(
    name: str, port: int, model: Path, backend: str, threads: int, batch: int, base_env: dict[str, str]
) -> PeerSpec:
    """How to start peer ``name`` on 127.0.0.1:``port`` with our model settings (``backend`` as resolved)."""
    bin_dir = venv(name) / "bin"
    env = {
        **base_env,
        "PYTHONPATH": str(PROJECT_ROOT / "src"),  # our code, their venv: catsdogs is not installed there
        "CATSDOGS_MODEL_PATH": str(model),
        "CATSDOGS_BACKEND": backend,
        "CATSDOGS_INFERENCE_THREADS": str(threads),
        "CATSDOGS_MICRO_BATCH_SIZE": str(batch),
        "BENTOML_HOME": str(PROJECT_ROOT / ".cache" / "bentoml-home"),  # not ~/bentoml
        "BENTOML_DO_NOT_TRACK": "True",  # no usage reports (and no network here)
    }
    version = pinned_version(name)
    if framework(name) == "bentoml":
        service, how = ("CatsDogsComposed", "composed, ") if name == "bentoml-composed" else ("CatsDogs", "")
        cmd = [str(bin_dir / "bentoml"), "serve", f"bentoml_service:{service}", "--working-dir", str(PEER_DIR)]
        cmd += ["--host", "127.0.0.1", "--port", str(port)]
        return PeerSpec(name, cmd, "/readyz", env, f"BentoML {version} ({how}adaptive batching <= {batch})")
    cmd = [str(bin_dir / "python"), str(PEER_DIR / "litserve_server.py"), "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--batch-timeout", str(LITSERVE_BATCH_TIMEOUT_S)]
    wait_ms = LITSERVE_BATCH_TIMEOUT_S * 1000
    return PeerSpec(name, cmd, "/health", env, f"LitServe {version} (batching <= {batch}, {wait_ms:g} ms wait)")
