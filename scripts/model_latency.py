"""Model-only, batch-1 latency of bundles through ``Predictor.run`` (what the API calls), p50/p95 in ms.

Usage: python scripts/model_latency.py models OTHER_BUNDLE [...]  (bundles are measured in turn, twice,
so a busy machine affects them alike).
"""

from __future__ import annotations

import argparse

from catsdogs.predictor import Predictor


def measure(bundle: str, runs: int) -> str:
    predictor = Predictor.load(bundle)
    lat = predictor.latency_ms(runs=runs, warmup=20)
    return f"{bundle}: {predictor.backend} {predictor.image_size}px p50 {lat['p50']:.2f} ms, p95 {lat['p95']:.2f} ms"


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
