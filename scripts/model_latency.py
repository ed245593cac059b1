"""Model-only, batch-1 latency of bundles through ``Predictor.run`` (what the API calls), p50/p95 in ms.

Usage: python scripts/model_latency.py models OTHER_BUNDLE [...]  (bundles are measured in turn, twice,
so a busy machine affects them alike).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from catsdogs.predictor import Predictor


def measure(bundle: str, runs: int) -> str:
    predictor = Predictor.load(bundle)
    size = predictor.image_size
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    for _ in range(20):
        predictor.run(x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        predictor.run(x)
        times.append((time.perf_counter() - start) * 1000)
    p50, p95 = np.median(times), np.percentile(times, 95)
    return f"{bundle}: {predictor.backend} {size}px p50 {p50:.2f} ms, p95 {p95:.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="+")
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    for _ in range(2):
        for bundle in args.bundles:
            print(measure(bundle, args.runs), flush=True)


if __name__ == "__main__":
    main()
