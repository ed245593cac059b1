"""The seed's style of inference server, kept only as the benchmark's baseline (never deploy this).

What makes it slow, on purpose, as the seed did: PyTorch eager fp32 NCHW, full-size JPEG decode (no draft),
and the model called synchronously inside ``async def`` (every request blocks the event loop).
By default it runs the seed's model as the seed served it: ``SimpleCNN`` at 224x224 (random weights:
only the latency matters). ``--architecture same`` runs the bundle's architecture, input size and
weights (``model.pt``) instead, to separate the serving engineering from the model choice.

    python scripts/baseline_server.py --model models --port 8001 [--architecture same]
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import numpy as np
import torch
import uvicorn
from fastapi import FastAPI, File, UploadFile
from PIL import Image

from catsdogs.core.paths import MODELS_DIR
from catsdogs.models.architectures import create_model

SEED = ("simple_cnn", 224)


def build_app(bundle: Path, architecture: str = "seed") -> FastAPI:
    meta = json.loads((bundle / "model.json").read_text())
    pre = meta["preprocess"]
    same = architecture == "same"
    arch, size = (meta["architecture"], int(pre["image_size"])) if same else SEED
    mean = np.asarray(pre["mean"], dtype=np.float32)
    std = np.asarray(pre["std"], dtype=np.float32)
    classes = list(pre["class_names"])
    model = create_model(arch)
    weights = bundle / (meta.get("files", {}).get("torch") or "model.pt")
    if same and weights.is_file():
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        source = str(weights)
    else:
        source = "random weights"
    model.eval()
    app = FastAPI(title="seed-style baseline")

    @app.get("/health")
    async def health() -> dict[str, object]:
        return {
            "status": "healthy",
            "weights": source,
            "architecture": arch,
            "image_size": size,
            "torch_threads": torch.get_num_threads(),
        }

    @app.post("/predict")
    async def predict(file: UploadFile = File(...)) -> dict[str, object]:
        start = time.perf_counter()
        contents = await file.read()
        image = Image.open(io.BytesIO(contents)).convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
        x = (np.asarray(image, dtype=np.float32) / 255.0 - mean) / std
        tensor = torch.from_numpy(x.transpose(2, 0, 1)).unsqueeze(0)
        with torch.no_grad():  # synchronous, on the event loop: the seed's design
            probs = torch.softmax(model(tensor), dim=1)[0]
        best = int(probs.argmax())
        return {
            "prediction": classes[best],
            "confidence": float(probs[best]),
            "probabilities": {c: float(p) for c, p in zip(classes, probs, strict=True)},
            "inference_time_ms": (time.perf_counter() - start) * 1000,
        }

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=MODELS_DIR, help="bundle directory (model.json [+ model.pt])")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument(
        "--torch-threads", type=int, default=0, help="torch.set_num_threads (0: torch's default, as the seed)"
    )
    parser.add_argument(
        "--architecture",
        choices=["seed", "same"],
        default="seed",
        help="seed: SimpleCNN at 224 px, as the seed served it; same: the bundle's architecture and weights",
    )
    args = parser.parse_args()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    app = build_app(args.model, args.architecture)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
