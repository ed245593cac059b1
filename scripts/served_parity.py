"""Are the served model inputs and outputs of this tree bit-for-bit those of an older commit?

For a change meant to leave results alone (a faster preprocessing path, a refactor): each tree's code
(``PYTHONPATH`` puts its ``src`` ahead of the installed package; the older one in a temporary git worktree)
loads the same bundle, preprocesses the first ``--val`` validation images and the uploads through
``Predictor.preprocess``, and runs each one alone. Prints the inputs' SHA-256, the preprocessing CPU per image
and whether the outputs (probabilities, pet score) are identical. A check, not a test: it needs the real data.

    python scripts/served_parity.py --compare a30f272 [--model models] [--val 800]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def images(val: int) -> list[Path]:
    from catsdogs.core.config import load_params
    from catsdogs.core.paths import PROJECT_ROOT, SHARED_DATA_DIR

    params = load_params()
    source = (PROJECT_ROOT / params.data.source).resolve()
    with open(PROJECT_ROOT / params.data.prepared_dir / "manifest.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "val"][:val]
    return [source / r["path"] for r in rows] + sorted((SHARED_DATA_DIR / "uploads").glob("*.jpg"))


def measure(model: Path, files: list[Path], out: Path) -> None:
    """In the tree under test: inputs' hash, preprocessing CPU, outputs saved to ``out``."""
    from catsdogs.inference.predictor import Predictor

    predictor = Predictor.load(str(model))
    start = time.process_time()
    arrays = [predictor.preprocess(f.read_bytes()) for f in files]
    cpu_ms = (time.process_time() - start) / len(files) * 1000
    digest = hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)).hexdigest()
    rows = []
    for a in arrays:
        s = predictor.run_scores(a[np.newaxis])
        rows.append(np.concatenate([s.probs[0], s.pet if s.pet is not None else []]))
    np.save(out, np.array(rows))
    print(json.dumps({"inputs_sha256": digest, "preprocess_cpu_ms": round(cpu_ms, 3), "images": len(files)}))


def run_tree(src: Path, model: Path, listing: Path, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    cmd = [sys.executable, __file__, "--model", str(model), "--files", str(listing), "--measure", str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--compare", help="the older commit (required unless --measure)")
    ap.add_argument("--model", type=Path, default=Path("models").resolve())
    ap.add_argument("--val", type=int, default=800)
    ap.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # internal: run inside one tree
    ap.add_argument("--files", type=Path, help=argparse.SUPPRESS)  # internal: the image list, one path a line
    args = ap.parse_args()
    if args.measure:
        return measure(args.model, [Path(p) for p in args.files.read_text().splitlines()], args.measure)
    if not args.compare:
        ap.error("--compare REV is required")
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        worktree, listing = Path(tmp) / "old", Path(tmp) / "images.txt"
        listing.write_text("\n".join(map(str, images(args.val))))
        git = ["git", "-C", str(root), "worktree"]
        subprocess.run([*git, "add", "-q", "--detach", str(worktree), args.compare], check=True)
        try:
            old = run_tree(worktree / "src", args.model, listing, Path(tmp) / "old.npy")
            new = run_tree(root / "src", args.model, listing, Path(tmp) / "new.npy")
            same = np.array_equal(np.load(Path(tmp) / "old.npy"), np.load(Path(tmp) / "new.npy"))
        finally:
            subprocess.run([*git, "remove", "--force", str(worktree)], check=False)
    print(f"{args.compare}: {old}")
    print(f"this tree: {new}")
    print(f"inputs identical: {old['inputs_sha256'] == new['inputs_sha256']}; outputs identical: {same}")


if __name__ == "__main__":
    main()
