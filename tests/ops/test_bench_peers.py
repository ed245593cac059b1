"""`make bench`'s peers and physical bound: pins that keep the comparison fair, and the bound's script.

The peer servers themselves run only in `make bench` (their venvs are built by `make bench-peers-venv`,
not by `make test`); what is checked here needs neither.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from catsdogs.core.paths import MODELS_DIR, PROJECT_ROOT, SHARED_DATA_DIR
from catsdogs.predictor import Predictor

REQUIREMENTS = PROJECT_ROOT / "requirements"
# What Predictor imports: the peers must run the model with exactly our versions of these.
PREDICTOR_RUNTIME = ("numpy", "pillow", "onnxruntime", "openvino", "pydantic", "pydantic-core")
PEER_FRAMEWORKS = {"bentoml": r"1\.4\.\d+", "litserve": r"\d+\.\d+\.\d+"}


def pins(path: Path) -> dict[str, str]:
    """Requirement lines of a pip file as {normalised name: version}; anything not `name==version` fails."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9._-]+)==([A-Za-z0-9.+!-]+)", line)
        assert m, f"{path.name}: {line!r} is not pinned exactly (name==version)"
        out[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(2)
    return out


@pytest.mark.parametrize("peer", sorted(PEER_FRAMEWORKS))
def test_peer_venv_pins_everything_and_runs_our_predictor_runtime(peer: str) -> None:
    peer_pins = pins(REQUIREMENTS / f"bench-{peer}.txt")
    lock = pins(REQUIREMENTS / "lock.txt")
    assert re.fullmatch(PEER_FRAMEWORKS[peer], peer_pins.get(peer, "")), f"{peer} pin: {peer_pins.get(peer)}"
    for name in PREDICTOR_RUNTIME:
        assert peer_pins.get(name) == lock[name], (
            f"bench-{peer}.txt pins {name} {peer_pins.get(name)}, lock {lock[name]}"
        )
    assert "catsdogs" not in peer_pins  # our code comes from src/, never from an installed copy


def test_bench_bound_measures_the_served_backend(tmp_path: Path) -> None:
    uploads = sorted((SHARED_DATA_DIR / "uploads").glob("*.jpg"))[:4]
    assert uploads, f"no uploads in {SHARED_DATA_DIR / 'uploads'}"
    for p in uploads:
        shutil.copy(p, tmp_path / p.name)
    cmd = [sys.executable, str(PROJECT_ROOT / "scripts" / "bench_bound.py"), "--model", str(MODELS_DIR), "--json"]
    cmd += ["--images", str(tmp_path), "--threads", "1", "--batch", "2", "--repeat", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    bound = json.loads(done.stdout)
    # "auto" resolves as the server resolves it: the bundle's default backend where it runs here.
    assert bound["backend"] == Predictor.load(MODELS_DIR, threads=1).backend
    assert (bound["threads"], bound["images"], bound["batch"]) == (1, len(uploads), 2)
    assert bound["decode_cpu_ms"] > 0 and bound["model_cpu_ms"] > 0 and bound["model_cpu_ms_batched"] > 0
    per_image = bound["decode_cpu_ms"] + bound["model_cpu_ms"]
    assert bound["rps"] == pytest.approx(bound["cores"] * 1000 / per_image)


def test_bench_bound_refuses_an_empty_folder(tmp_path: Path) -> None:
    script = PROJECT_ROOT / "scripts" / "bench_bound.py"
    done = subprocess.run(
        [sys.executable, str(script), "--images", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert done.stderr.strip() == f"no images in {tmp_path}"
