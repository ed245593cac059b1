"""Model-only, batch-1 latency of bundles through ``Predictor.run`` (what the API calls), p50/p95 in ms.

Usage: python scripts/model_latency.py models OTHER_BUNDLE [...] [--backends onnx,openvino]
(each bundle x backend is measured in turn, twice, so a busy machine affects them alike).
"""

from __future__ import annotations

import argparse

from catsdogs.core.cpus import cpu_name
from catsdogs.inference.predictor import Predictor


def measure(bundle: str, backend: str, runs: int, threads: int) -> str:
    predictor = Predictor.load(bundle, backend=backend, threads=threads)
    lat = predictor.latency_ms(runs=runs, warmup=20)
    return (
        f"{bundle}: {predictor.backend} {predictor.image_size}px {predictor.threads} threads "
        f"p50 {lat['p50']:.2f} ms, p95 {lat['p95']:.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="+")
    parser.add_argument(
        "--backends", default="auto", help="comma-separated, from: auto onnx onnx-int8 openvino openvino-bf16"
    )
    parser.add_argument("--threads", type=int, default=0, help="0: the CPU quota, as the API does")
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    print(cpu_name())
    for _ in range(2):
        for bundle in args.bundles:
            for backend in args.backends.split(","):
                print(measure(bundle, backend, args.runs, args.threads), flush=True)


if __name__ == "__main__":
    main()
