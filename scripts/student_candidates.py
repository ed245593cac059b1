"""Model-only latency of untrained student candidates, to pick the student's architecture and input size.

Exports each candidate (random weights: latency does not depend on them) to ONNX and times it with the
serving backend, batch 1, as `scripts/model_latency.py` does for bundles. Usage:
    python scripts/student_candidates.py [--backend openvino] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from catsdogs.core.cpus import available_cpus, cpu_name
from catsdogs.inference.backends import latency_ms, open_session
from catsdogs.models.architectures import create_model

CANDIDATES = [  # (model, tuned_blocks, input size)
    ("resnet_small", 0, 96),
    ("resnet_small", 0, 128),
    ("efficientnet_lite0", 0, 160),  # the student: one path
    ("efficientnet_lite0", 0, 224),
    ("efficientnet_lite0", 3, 224),  # the teacher's two paths
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="openvino", help="onnx | openvino")
    parser.add_argument("--threads", type=int, default=0, help="0: the CPU quota")
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    threads = args.threads or available_cpus()
    print(cpu_name(), f"{args.backend}, {threads} threads, batch 1, model only")
    with tempfile.TemporaryDirectory() as tmp:
        for name, tuned, size in CANDIDATES:
            model = create_model(name, tuned_blocks=tuned).eval()
            path = Path(tmp) / f"{name}-{tuned}-{size}.onnx"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(model, (torch.zeros(1, 3, size, size),), str(path), input_names=["input"],
                                  output_names=["logits"], opset_version=18, dynamo=False)  # fmt: skip
            session = open_session(args.backend, path, threads)
            x = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
            lat = latency_ms(session, x, runs=args.runs, warmup=10)
            print(f"{name:20s} tuned_blocks={tuned} {size:4d} px  p50 {lat['p50']:6.2f} ms  p95 {lat['p95']:6.2f} ms")


if __name__ == "__main__":
    main()
