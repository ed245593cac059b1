"""The accuracy/latency frontier of bundles, measured in one run: val accuracy, model ms, training time.

Usage:
    python scripts/frontier.py NAME=BUNDLE[:TRAIN_DIR] [...] [--test NAME,...]
        [--json reports/frontier.json] [--plot reports/frontier.png] [--int8 reports/int8_candidates.json]
    python scripts/frontier.py --replot [--int8 ...]   # the plot again from --json, nothing measured

Per bundle, on its default (served) backend:
- val accuracy: the val split's files as uploaded bytes through ``Predictor.predict_bytes``, as /predict
  sees them (the split of params.yaml's prepared data);
- test accuracy only for the bundles named in ``--test`` (the ones shipped or offered; the others are
  chosen on val and never see test here);
- model-only p50, batch 1, the server's threads: ``Predictor.latency_ms`` 300 runs after 20 warm-ups, in
  two rounds that alternate the bundles, so a busy machine affects them alike;
- training minutes from ``TRAIN_DIR/run.json`` (default: the bundle's own ``train.output_dir``):
  epoch loop plus caching the frozen trunk, or the distillation's steps.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from catsdogs.core.config import load_params
from catsdogs.core.cpus import cpu_name
from catsdogs.core.paths import PROJECT_ROOT
from catsdogs.data.prepare import CLASSES, ensure_prepared, raw_source, read_manifest
from catsdogs.inference.predictor import Prediction, Predictor

GOAL_MS, FLOOR = 2.5, 0.99


def split_files(params_file: Path, split: str) -> tuple[list[bytes], np.ndarray]:
    """A split's files as uploaded bytes, and their labels."""
    params = load_params(params_file)
    prepared = ensure_prepared(params, fallback_dir=params.path(params.train.output_dir) / "prepared")
    source = raw_source(prepared, params.base_dir)
    records = [r for r in read_manifest(prepared / "manifest.csv") if r.split == split]
    return [(source / r.path).read_bytes() for r in records], np.asarray([CLASSES.index(r.label) for r in records])


def accuracy(predictor: Predictor, images: list[bytes], labels: np.ndarray) -> float:
    predicted = []
    for i in range(0, len(images), 64):
        for answer in predictor.predict_bytes(images[i : i + 64]):
            assert isinstance(answer, Prediction), answer
            predicted.append(predictor.class_names.index(answer.label))
    return float((np.asarray(predicted) == labels).mean())


def training_minutes(bundle: Path, train_dir: Path | None) -> float | None:
    if train_dir is None:
        out = json.loads((bundle / "model.json").read_text()).get("params", {}).get("train", {}).get("output_dir")
        train_dir = PROJECT_ROOT / out if out else None
    run = train_dir / "run.json" if train_dir else None
    if run is None or not run.is_file():
        return None
    meta = json.loads(run.read_text())
    return round((meta.get("train_seconds", 0) + meta.get("setup_seconds", 0)) / 60, 1)


def parse_candidate(text: str) -> tuple[str, Path, Path | None]:
    name, _, rest = text.partition("=")
    bundle, _, train = rest.partition(":")
    if not name or not bundle:
        raise SystemExit(f"{text!r}: expected NAME=BUNDLE[:TRAIN_DIR]")
    return name, Path(bundle), Path(train) if train else None


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    candidates = [parse_candidate(c) for c in args.candidates]
    shipped = set(filter(None, args.test.split(",")))
    val = split_files(args.params, "val")
    test = split_files(args.params, "test") if shipped else None
    rows = []
    for name, bundle, train_dir in candidates:
        predictor = Predictor.load(bundle)
        row = {"name": name, "bundle": str(bundle), "backend": predictor.backend,
               "image_size": predictor.image_size, "val_accuracy": round(accuracy(predictor, *val), 4),
               "test_accuracy": round(accuracy(predictor, *test), 4) if test and name in shipped else None,
               "train_minutes": training_minutes(bundle, train_dir), "model_ms_p50": []}  # fmt: skip
        print(json.dumps(row), flush=True)
        rows.append(row)
    for _ in range(2):  # alternate the bundles: a noisy neighbour slows them alike
        for row in rows:
            predictor = Predictor.load(row["bundle"])
            row["threads"] = predictor.threads
            row["model_ms_p50"].append(round(predictor.latency_ms(runs=args.runs, warmup=20)["p50"], 2))
            print(row["name"], row["model_ms_p50"], flush=True)
    return rows


def int8_points(path: Path | None) -> list[tuple[float, float]]:
    """(ms, val %) of the INT8 variants in ``scripts/int8_candidates.py``'s report, if given."""
    rows = json.loads(path.read_text())["rows"] if path else []
    return [(min(r["model_ms_p50"]), 100 * r["val_accuracy"]) for r in rows if r["variant"].startswith("int8")]


def plot(rows: list[dict[str, Any]], path: Path, int8: list[tuple[float, float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in rows:
        ms = min(row["model_ms_p50"])
        ax.scatter(ms, 100 * row["val_accuracy"], color="tab:blue")
        ax.annotate(row["name"], (ms, 100 * row["val_accuracy"]), textcoords="offset points", xytext=(5, 4))
    for i, (ms, acc) in enumerate(int8):
        ax.scatter(ms, acc, color="tab:orange", marker="x", label="OpenVINO INT8 (NNCF)" if i == 0 else None)
    ax.axhline(100 * FLOOR, color="tab:red", linestyle="--", label="99 % floor (test)")
    ax.axvline(GOAL_MS, color="tab:green", linestyle="--", label=f"{GOAL_MS} ms goal")
    ax.set_xlabel("model-only p50, batch 1, ms (served backend)")
    ax.set_ylabel("val accuracy, % (served backend, uploaded bytes)")
    ax.set_title("Accuracy / latency frontier (scripts/frontier.py)")
    ax.legend(loc="lower right")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("candidates", nargs="*", metavar="NAME=BUNDLE[:TRAIN_DIR]")
    parser.add_argument("--test", default="", help="comma-separated names also measured on the test split")
    parser.add_argument("--params", type=Path, default=PROJECT_ROOT / "params.yaml")
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--json", type=Path, default=PROJECT_ROOT / "reports/frontier.json")
    parser.add_argument("--plot", type=Path, default=PROJECT_ROOT / "reports/frontier.png")
    parser.add_argument("--int8", type=Path, help="overlay the INT8 variants of scripts/int8_candidates.py")
    parser.add_argument("--replot", action="store_true", help="only draw --plot again from --json")
    args = parser.parse_args()
    if args.replot:
        rows = json.loads(args.json.read_text())["rows"]
    elif not args.candidates:
        parser.error("name at least one NAME=BUNDLE[:TRAIN_DIR] (or --replot)")
    else:
        print(cpu_name())
        rows = measure(args)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"cpu": cpu_name(), "rows": rows}, indent=2) + "\n")
        print(f"wrote {args.json}")
    plot(rows, args.plot, int8_points(args.int8))
    print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
