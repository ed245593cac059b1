"""What the tuned copy of the top and the input size cost: served graphs timed beside the shipped bundle.

The served Lite0 runs its top blocks twice: once as trained (the tuned copy, ``model.tuned_blocks``) and once
untouched, for the ImageNet head the pet score reads. Each graph here is the shipped bundle's serving graph
(its calibration and pet score) on ImageNet weights with ``k`` tuned blocks, exported at each input size and
timed through ``Predictor.latency_ms`` on the served backend (weights do not change the time). The copy's
weights are scaled by 1.001 so they differ from the original's: OpenVINO merges two identical paths, and an
untrained copy would time as one path.

Usage: python scripts/path_cost.py [--bundle models] [--blocks 0,1,2,3] [--sizes 288,272,256] [--rounds 5]
[--json FILE]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import torch

from catsdogs.core.cpus import cpu_name
from catsdogs.inference.predictor import Predictor
from catsdogs.models.architectures import create_model
from catsdogs.models.serving import serving_model
from catsdogs.release.calibrate import Calibration
from catsdogs.release.export import export_onnx


def build(bundle: Path, blocks: int, size: int, cal: Calibration, meta: dict, out: Path) -> Path:
    """A servable copy of ``bundle`` with ``blocks`` tuned blocks at ``size`` px (ImageNet weights, copy perturbed)."""
    model = create_model("efficientnet_lite0", pretrained=True, tuned_blocks=blocks, dropout=0.2)
    with torch.no_grad():
        for p in model.tuned.parameters() if model.tuned is not None else []:
            p.mul_(1.001)
    graph = serving_model(model, temperature=cal.temperature, tta=meta["tta"], pet=cal.pet_score())
    out.mkdir(parents=True, exist_ok=True)
    export_onnx(graph, out / "model.onnx", size, meta.get("opset", 18))
    shutil.copy(bundle / "model.pt", out / "model.pt")
    (out / "model.json").write_text(json.dumps(meta | {"preprocess": meta["preprocess"] | {"image_size": size}}))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=Path("models"))
    parser.add_argument("--calibration", type=Path, default=Path("artifacts/train/calibration.json"))
    parser.add_argument("--blocks", default="0,1,2,3", help="tuned block counts to time")
    parser.add_argument("--sizes", help="comma-separated input sizes (default: the bundle's)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (a noisy host moves them alike)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the p50s here")
    args = parser.parse_args()
    meta = json.loads((args.bundle / "model.json").read_text())
    cal = Calibration.load(args.calibration)
    sizes = [int(s) for s in (args.sizes or str(meta["preprocess"]["image_size"])).split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        dirs = {"shipped": args.bundle} | {
            f"{size} px, {k} tuned": build(args.bundle, k, size, cal, meta, Path(tmp) / f"s{size}tb{k}")
            for size in sizes
            for k in map(int, args.blocks.split(","))
        }
        predictors = {name: Predictor.load(d, backend=meta["default_backend"], threads=args.threads)
                      for name, d in dirs.items()}  # fmt: skip
        p50 = {name: [] for name in dirs}
        for _ in range(args.rounds):
            for name, predictor in predictors.items():
                p50[name].append(round(predictor.latency_ms(runs=300, warmup=30)["p50"], 2))
    for name, values in p50.items():
        print(f"{name:>18}: p50 {min(values):.2f}-{max(values):.2f} ms  {values}")
    if args.json:
        report = {"cpu": cpu_name(), "backend": meta["default_backend"], "threads": args.threads, "p50_ms": p50}
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
