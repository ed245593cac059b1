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
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
import torch

from catsdogs.core.config import load_params
from catsdogs.core.cpus import cpu_name
from catsdogs.core.paths import PROJECT_ROOT
from catsdogs.core.transforms import PreprocessConfig, create_transform
from catsdogs.data.loaders import load_split
from catsdogs.data.prepare import ensure_prepared
from catsdogs.inference.backends import latency_ms


def split_inputs(params_file: Path, meta: dict[str, Any], split: str, n: int | None = None):
    """A split as the bundle's model input (N, 3, S, S), every ``step``-th image when ``n`` is given."""
    params = load_params(params_file)
    prepared = ensure_prepared(params, fallback_dir=params.path(params.train.output_dir) / "prepared")
    pre = meta["preprocess"]
    data = load_split(params, prepared, PreprocessConfig(image_size=pre["image_size"]), split)
    step = max(1, len(data.labels) // n) if n else 1
    pixels = np.ascontiguousarray(data.pixels[::step][:n])
    cfg = PreprocessConfig(image_size=pre["image_size"], mean=tuple(pre["mean"]), std=tuple(pre["std"]))
    return create_transform(cfg).batch(torch.from_numpy(pixels)).numpy(), data.labels[::step][:n]


class _Session:
    """The two methods ``latency_ms`` calls, over an OpenVINO compiled model."""

    def __init__(self, compiled: Any):
        self._request = compiled.create_infer_request()

    def get_inputs(self) -> list[Any]:
        return [argparse.Namespace(name=0)]

    def run(self, _names: Any, feeds: dict[Any, np.ndarray]) -> Any:
        return self._request.infer(feeds)


def compile_model(core: Any, model: Any, precision: str) -> Any:
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": 2, "INFERENCE_PRECISION_HINT": precision}
    return core.compile_model(model, "CPU", config | {"ENABLE_CPU_PINNING": False})


def outputs(compiled: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Logits (N, C) and pet scores (N,) over ``x`` in batches of 64."""
    request, logits, pet = compiled.create_infer_request(), [], []
    for i in range(0, len(x), 64):
        out = request.infer({0: x[i : i + 64]})
        logits.append(out[compiled.output(0)].copy())
        pet.append(out[compiled.output(1)].copy())
    return np.concatenate(logits), np.concatenate(pet)


def variant(name: str, compiled: Any, x: np.ndarray, y: np.ndarray, thr: float, ref: Any = None) -> dict[str, Any]:
    logits, pet = outputs(compiled, x)
    row = {"variant": name, "val_accuracy": round(float((logits.argmax(1) == y).mean()), 4)}
    row["val_rejected"] = round(float((pet < thr).mean()), 4)
    if ref is not None:
        row["changed_label"] = round(float((logits.argmax(1) != ref[0].argmax(1)).mean()), 4)
        row["changed_pet_verdict"] = round(float(((pet >= thr) != (ref[1] >= thr)).mean()), 4)
    row["model_ms_p50"] = [latency_ms(_Session(compiled), x[:1], runs=200, warmup=20)["p50"] for _ in range(2)]
    print(json.dumps(row), flush=True)
    return row | {"_outputs": (logits, pet)}


def measure(bundle: Path, params_file: Path) -> list[dict[str, Any]]:
    import nncf

    meta = json.loads((bundle / "model.json").read_text())
    x, y = split_inputs(params_file, meta, "val")
    calibration = nncf.Dataset(list(split_inputs(params_file, meta, "train", 300)[0]), lambda image: image[None])
    core, thr = ov.Core(), meta["thresholds"]["pet_score"]
    model = core.read_model(str(bundle / "model.onnx"))
    rows = [variant("f32", compile_model(core, model, "f32"), x, y, thr)]
    ref = rows[0]["_outputs"]
    rows.append(variant("bf16", compile_model(core, model, "bf16"), x, y, thr, ref))
    for preset in ("performance", "mixed"):
        # fast bias correction fails on this graph's scalar outputs (NNCF 3.4: "iteration over a 0-d tensor")
        q = nncf.quantize(model, calibration, preset=nncf.QuantizationPreset(preset), subset_size=300,
                          fast_bias_correction=False)  # fmt: skip
        for rest in ("bf16", "f32"):
            rows.append(variant(f"int8 {preset}, rest {rest}", compile_model(core, q, rest), x, y, thr, ref))
    return [{"bundle": str(bundle)} | {k: v for k, v in r.items() if k != "_outputs"} for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="+", type=Path)
    parser.add_argument("--params", type=Path, default=PROJECT_ROOT / "params.yaml")
    parser.add_argument("--json", type=Path, default=PROJECT_ROOT / "reports/int8_candidates.json")
    args = parser.parse_args()
    print(cpu_name())
    rows = [row for bundle in args.bundles for row in measure(bundle, args.params)]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"cpu": cpu_name(), "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
