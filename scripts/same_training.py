"""Prove that a code change leaves the training stage's outputs unchanged: the same tiny run, old and new code.

Runs ``catsdogs data prepare`` and ``catsdogs train`` with the project's recipe (params.yaml) scaled down
(``--limit`` images, small input, one epoch, one thread, same seeds) once with the code at ``--against``
(a git revision, checked out into a temporary worktree) and once with this checkout, then compares the
prepared manifests and every tensor of the checkpoints bit for bit. Equal outputs mean the stage's code
change is a refactor, so ``dvc commit train`` may record the new code hashes without re-training.

Usage: python scripts/same_training.py --against 81abd0c [--limit 160]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]


def tiny_params(tree: Path, root: Path, limit: int) -> Path:
    """The tree's own params.yaml (each revision validates its own), scaled down the same way for both."""
    params = yaml.safe_load((tree / "params.yaml").read_text())
    params["data"].update(source=str((ROOT / params["data"]["source"]).resolve()), limit=limit,
                          prepared_dir=str(root / "prepared"), cache_dir=str(root / "cache"))  # fmt: skip
    params["model"]["image_size"] = 64
    params["train"].update(epochs=1, batch_size=32, threads=1, output_dir=str(root / "train"))
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def run_stage(src: Path, root: Path, limit: int) -> dict[str, torch.Tensor]:
    root.mkdir(parents=True)
    params = tiny_params(src.parent, root, limit)
    env = {**os.environ, "PYTHONPATH": str(src), "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
           "CATSDOGS_HOME": str(src.parent), "OMP_NUM_THREADS": "1"}  # fmt: skip
    cli = [sys.executable, "-m", "catsdogs"]
    for args in (["data", "prepare"], ["train"]):
        subprocess.run([*cli, *args, "--params", str(params)], env=env, check=True, cwd=root)
    ckpt = torch.load(root / "train" / "best.pt", map_location="cpu", weights_only=False)
    state = ckpt["model_state"]  # Checkpoint.save: a dict of its fields
    return {"manifest": (root / "prepared" / "manifest.csv").read_text(), **state}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", required=True, help="git revision of the code that made dvc.lock's train stage")
    ap.add_argument("--limit", type=int, default=160, help="class-balanced images in the tiny run")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old_tree = Path(tmp) / "old"
        subprocess.run(["git", "worktree", "add", "--detach", str(old_tree), args.against], cwd=ROOT, check=True)
        try:
            old = run_stage(old_tree / "src", Path(tmp) / "run-old", args.limit)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old_tree)], cwd=ROOT, check=True)
        new = run_stage(ROOT / "src", Path(tmp) / "run-new", args.limit)
    differ = [k for k in old.keys() | new.keys() if k not in old or k not in new or not _equal(old[k], new[k])]
    print(f"compared {len(new) - 1} checkpoint tensors and the prepared manifest: {len(differ)} differ {differ[:5]}")
    sys.exit(1 if differ else 0)


def _equal(a: object, b: object) -> bool:
    return torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b


if __name__ == "__main__":
    main()
