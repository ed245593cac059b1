"""Where a request's CPU goes before HTTP: decode, preprocessing and the model run, per backend.

CPU time (``time.process_time``) per image over the full-size uploads, so a busy machine changes the
numbers less than wall time would. Compare the total with ``make bench``'s "server CPU ms/req": the
difference is HTTP, multipart parsing, FastAPI, middleware, logging and metrics.

Usage: python scripts/cpu_breakdown.py [--model models] [--images ../shared/data/uploads] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from catsdogs.core.cpus import cpu_name
from catsdogs.core.paths import MODELS_DIR, SHARED_DATA_DIR
from catsdogs.core.transforms import load_image
from catsdogs.inference.backends import available, native_bf16
from catsdogs.inference.predictor import Predictor


def cpu_ms(fn, items: list, repeat: int) -> float:
    """Mean CPU milliseconds of ``fn(item)`` over ``items``, ``repeat`` times."""
    start = time.process_time()
    for _ in range(repeat):
        for item in items:
            fn(item)
    return (time.process_time() - start) * 1000 / (repeat * len(items))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(MODELS_DIR))
    parser.add_argument("--images", default=str(SHARED_DATA_DIR / "uploads"))
    parser.add_argument("--threads", type=int, default=1, help="model threads (the API's per-request share)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    files = [p.read_bytes() for p in sorted(Path(args.images).iterdir()) if p.is_file()]
    backends = [b for b in ("onnx", "openvino") if available(b)]
    backends += ["openvino-bf16"] if native_bf16() else []
    predictors = {b: Predictor.load(args.model, backend=b, threads=args.threads) for b in backends}
    first = predictors[backends[0]]
    size = first.image_size
    inputs = [first.preprocess(data)[np.newaxis] for data in files]
    for p in predictors.values():
        p.warmup()
    print(f"{len(files)} images, {first.meta.get('architecture')} {size}px, {args.threads} thread(s), {cpu_name()}")
    rows = [
        ("decode (JPEG draft) + RGB", cpu_ms(lambda d: load_image(d, target_size=size), files, args.repeat)),
        ("decode + resize + normalise", cpu_ms(first.preprocess, files, args.repeat)),
    ]
    rows += [(f"model run, {b}", cpu_ms(p.run, inputs, args.repeat)) for b, p in predictors.items()]
    for name, ms in rows:
        print(f"| {name} | {ms:.1f} |")


if __name__ == "__main__":
    main()
