"""OpenVINO INT8 (NNCF post-training quantization) of bundles against their f32/bf16 graphs, on val.

Usage (NNCF is not a project dependency: ``pip install -r requirements/int8.txt`` first):
    python scripts/int8_candidates.py models [OTHER_BUNDLE ...] [--json reports/int8_candidates.json]

Per bundle: the fp32 ONNX file read by OpenVINO; NNCF ``quantize`` with the ``performance`` (symmetric)
and ``mixed`` presets on 300 training images; each INT8 graph compiled with the rest of the graph in
bf16 (AMX) and in f32. Reported per variant: val accuracy, share of val cats and dogs the pet score turns
away, answers changed against f32 (label, pet verdict) and model-only p50 at batch 1 on 2 threads
(two rounds of 200 runs). A measurement for the README frontier; nothing here is shipped.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
import torch

from catsdogs.core.config import Params, load_params
from catsdogs.core.cpus import cpu_name
from catsdogs.core.paths import PROJECT_ROOT
from catsdogs.core.transforms import PreprocessConfig, create_transform
from catsdogs.data.loaders import load_split
from catsdogs.data.prepare import ensure_prepared
from catsdogs.inference.backends import OpenVINOSession, latency_ms

THREADS = 2  # the issue measures batch 1 on both cores


def split_inputs(params: Params, meta: dict[str, Any], split: str, n: int | None = None):
    """A split as the bundle's model input (N, 3, S, S); ``n`` images spread over it when given."""
    prepared = ensure_prepared(params, fallback_dir=params.path(params.train.output_dir) / "prepared")
    pre = meta["preprocess"]
    data = load_split(params, prepared, PreprocessConfig(image_size=pre["image_size"]), split)
    step = max(1, len(data.labels) // n) if n else 1
    pixels = np.ascontiguousarray(data.pixels[::step][:n])
    cfg = PreprocessConfig(image_size=pre["image_size"], mean=tuple(pre["mean"]), std=tuple(pre["std"]))
    return create_transform(cfg).batch(torch.from_numpy(pixels)).numpy(), data.labels[::step][:n]


def variant(name: str, session: OpenVINOSession, x: np.ndarray, y: np.ndarray, thr: float, ref: Any = None):
    """One graph's val report, run by the serving session (``OpenVINOSession``) as the API runs it."""
    feed = session.get_inputs()[0].name
    runs = [session.run(None, {feed: x[i : i + 64]}) for i in range(0, len(x), 64)]
    logits, pet = (np.concatenate([r[k] for r in runs]) for k in (0, 1))
    row = {"variant": name, "val_accuracy": round(float((logits.argmax(1) == y).mean()), 4)}
    row["val_rejected"] = round(float((pet < thr).mean()), 4)
    if ref is not None:
        row["changed_label"] = round(float((logits.argmax(1) != ref[0].argmax(1)).mean()), 4)
        row["changed_pet_verdict"] = round(float(((pet >= thr) != (ref[1] >= thr)).mean()), 4)
    row["model_ms_p50"] = [latency_ms(session, x[:1], runs=200, warmup=20)["p50"] for _ in range(2)]
    print(json.dumps(row), flush=True)
    return row, (logits, pet)


def measure(bundle: Path, params: Params, workdir: Path) -> list[dict[str, Any]]:
    import nncf

    meta = json.loads((bundle / "model.json").read_text())
    x, y = split_inputs(params, meta, "val")
    calibration = nncf.Dataset(list(split_inputs(params, meta, "train", 300)[0]), lambda image: image[None])
    thr, onnx_file = meta["thresholds"]["pet_score"], bundle / "model.onnx"
    ref_row, ref = variant("f32", OpenVINOSession(onnx_file, THREADS, "f32"), x, y, thr)
    rows = [ref_row, variant("bf16", OpenVINOSession(onnx_file, THREADS, "bf16"), x, y, thr, ref)[0]]
    for preset in ("performance", "mixed"):
        # fast bias correction fails on this graph's scalar outputs (NNCF 3.4: "iteration over a 0-d tensor")
        model = ov.Core().read_model(str(onnx_file))
        q = nncf.quantize(model, calibration, preset=nncf.QuantizationPreset(preset), subset_size=300,
                          fast_bias_correction=False)  # fmt: skip
        ov.save_model(q, str(workdir / f"{preset}.xml"))
        for rest in ("bf16", "f32"):
            session = OpenVINOSession(workdir / f"{preset}.xml", THREADS, rest)
            rows.append(variant(f"int8 {preset}, rest {rest}", session, x, y, thr, ref)[0])
    return [{"bundle": str(bundle)} | r for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="+", type=Path)
    parser.add_argument("--params", type=Path, default=PROJECT_ROOT / "params.yaml")
    parser.add_argument("--json", type=Path, default=PROJECT_ROOT / "reports/int8_candidates.json")
    args = parser.parse_args()
    print(cpu_name())
    params = load_params(args.params)
    with tempfile.TemporaryDirectory() as workdir:
        rows = [row for bundle in args.bundles for row in measure(bundle, params, Path(workdir))]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"cpu": cpu_name(), "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
