"""The physical bound of serving a bundle: cores / (model CPU + decode CPU per image), measured now.

No server can answer more requests per second than the cores can decode and classify images: this is that
ceiling, for the served backend at the server's thread setting and for the same upload payloads.
``make bench`` runs it between its servers (nothing else of ours is running) and reports each server's
req/s at c=8 as a share of it. CPU time (``time.process_time``: every thread of this process, the model
runtime's included) is robust to a busy machine in a way wall time is not.

Two bounds: one image per model run (the definition), and batches of ``--batch`` images (what a
micro-batching server runs under load, cheaper per image).

    python scripts/bench_bound.py --model models --backend openvino-bf16 --threads 2 [--batch 4] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from catsdogs.core.cpus import available_cpus
from catsdogs.core.paths import MODELS_DIR, SHARED_DATA_DIR
from catsdogs.core.transforms import IMAGE_SUFFIXES
from catsdogs.predictor import Predictor


@dataclass
class Bound:
    cores: int
    backend: str
    threads: int
    images: int
    decode_cpu_ms: float  # decode + resize + normalise (Predictor.preprocess), per image
    model_cpu_ms: float  # Predictor.run of one image
    batch: int
    model_cpu_ms_batched: float  # Predictor.run of `batch` images, per image

    @property
    def rps(self) -> float:
        return self.cores * 1000 / (self.decode_cpu_ms + self.model_cpu_ms)

    @property
    def rps_batched(self) -> float:
        return self.cores * 1000 / (self.decode_cpu_ms + self.model_cpu_ms_batched)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rps": self.rps, "rps_batched": self.rps_batched}

    def describe(self) -> str:
        return (
            f"physical bound ({self.backend}, {self.threads} thr, {self.images} uploads): {self.cores} cores / "
            f"(model {self.model_cpu_ms:.1f} + decode {self.decode_cpu_ms:.1f} ms CPU per image) = {self.rps:.1f} "
            f"req/s; in batches of {self.batch} (model {self.model_cpu_ms_batched:.1f} ms per image): "
            f"{self.rps_batched:.1f} req/s"
        )


def cpu_ms_each(fn: Callable[[Any], object], items: Sequence[Any], rounds: int) -> float:
    """CPU milliseconds of one ``fn(item)``: the mean over ``items`` in the cheapest of ``rounds`` passes.

    A bound is what the cores can do at best: a pass slowed by another process or a clock change must not
    lower it (one pass of 40 images varied 5.4-7.6 ms per model run here in a day).
    """
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for item in items:
            fn(item)
        best = min(best, (time.process_time() - start) * 1000 / len(items))
    return best


def measure(
    model: Path, backend: str, threads: int, uploads: Sequence[bytes], batch: int = 4, repeat: int = 5
) -> Bound:
    """Load the bundle as the server does (``threads`` 0: the CPU quota) and time decode and model runs."""
    predictor = Predictor.load(model, backend=backend, threads=threads)
    predictor.warmup(batch_sizes=(1, batch))  # first runs of a shape allocate: not part of the cost
    decode_ms = cpu_ms_each(predictor.preprocess, uploads, repeat)
    inputs = [predictor.preprocess(data) for data in uploads]
    singles = [x[np.newaxis] for x in inputs]
    groups = [np.stack([inputs[(i + k) % len(inputs)] for k in range(batch)]) for i in range(0, len(inputs), batch)]
    return Bound(
        cores=available_cpus(),
        backend=predictor.backend,
        threads=predictor.threads,
        images=len(uploads),
        decode_cpu_ms=decode_ms,
        model_cpu_ms=cpu_ms_each(predictor.run, singles, repeat),
        batch=batch,
        model_cpu_ms_batched=cpu_ms_each(predictor.run, groups, repeat) / batch,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=MODELS_DIR)
    parser.add_argument("--images", type=Path, default=SHARED_DATA_DIR / "uploads", help="folder of upload images")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="model threads (0: the CPU quota, as the server)")
    parser.add_argument("--batch", type=int, default=4, help="images per run for the batched bound")
    parser.add_argument("--repeat", type=int, default=5, help="passes over the uploads; the cheapest counts")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a sentence")
    args = parser.parse_args()
    files = sorted(p for p in args.images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SystemExit(f"no images in {args.images}")
    bound = measure(args.model, args.backend, args.threads, [p.read_bytes() for p in files], args.batch, args.repeat)
    print(json.dumps(bound.to_dict()) if args.json else bound.describe())


if __name__ == "__main__":
    main()
