"""The quality gate CI runs before a model may ship.

It runs the bundle through ``Predictor`` — exactly what the API serves (decode -> resize -> normalise
-> ONNX Runtime, the bundle's default backend) — on the held-out test split, and fails with the reason
when accuracy, ONNX/PyTorch parity or single-image latency misses its threshold in ``params.yaml``.
On success the registry alias ``champion`` moves to the local version that holds exactly this bundle
(found by content hash, registered if missing): never a version number from another machine.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from catsdogs.core.config import Params
from catsdogs.data.prepare import CLASSES, ensure_prepared, raw_source, read_manifest
from catsdogs.inference.predictor import ModelLoadError, Prediction, Predictor

log = logging.getLogger(__name__)


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


@dataclass
class GateResult:
    checks: list[Check] = field(default_factory=list)
    promoted: str | None = None

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)


def test_images(params: Params) -> tuple[list[bytes], np.ndarray]:
    """The test split's files as uploaded bytes, and their labels."""
    prepared = ensure_prepared(params, fallback_dir=params.path(params.train.output_dir) / "prepared")
    source = raw_source(prepared, params.base_dir)
    records = [r for r in read_manifest(prepared / "manifest.csv") if r.split == "test"][: params.gate.sample]
    if not records:
        raise ValueError(f"the test split in {prepared} is empty")
    return [(source / r.path).read_bytes() for r in records], np.asarray([CLASSES.index(r.label) for r in records])


def run_gate(params: Params, *, model_dir: Path | None = None, promote: bool = True) -> GateResult:
    bundle = model_dir or params.path(params.export.output_dir)
    result = GateResult()
    try:
        predictor = Predictor.load(bundle)
    except ModelLoadError as exc:
        result.checks.append(Check("bundle", False, f"{exc} (run `catsdogs export` first)"))
        return result
    images, labels = test_images(params)
    answers = served_answers(predictor, images)
    result.checks += [accuracy_check(predictor, answers, labels, params.gate.min_accuracy)]
    result.checks += [false_rejection_check(predictor, answers, params.gate.max_false_rejection)]
    result.checks += [parity_check(predictor, images[:256], params.gate.max_parity_diff)]
    result.checks += [latency_check(predictor, images[0], params.gate.max_latency_ms)]
    if result.passed and promote:
        from catsdogs.release.registry import promote_bundle

        result.promoted = promote_bundle(bundle, predictor.meta, "champion")
    return result


def served_answers(predictor: Predictor, images: list[bytes]) -> list[Prediction]:
    """What a client is told for each test image (a file that fails to decode fails the gate loudly)."""
    answers: list[Prediction] = []
    for i in range(0, len(images), 64):
        for r in predictor.predict_bytes(images[i : i + 64]):
            if not isinstance(r, Prediction):
                raise ValueError(f"a test image was refused by the bundle: {r.message}")
            answers.append(r)
    return answers


def accuracy_check(predictor: Predictor, answers: list[Prediction], labels: np.ndarray, floor: float) -> Check:
    predicted = [predictor.class_names.index(p.label) for p in answers]
    accuracy = float((np.asarray(predicted) == labels).mean())
    detail = f"test accuracy {accuracy:.4f} on {len(labels)} images ({predictor.backend}) vs threshold {floor:.4f}"
    return Check("accuracy", accuracy >= floor, detail)


def false_rejection_check(predictor: Predictor, answers: list[Prediction], ceiling: float) -> Check:
    """A model that turns real cats and dogs away as "not a cat or a dog" cannot be released."""
    if predictor.pet_threshold is None:
        return Check("false_rejection", True, "the bundle has no pet score: nothing is turned away")
    rejected = float(np.mean([not p.is_cat_or_dog for p in answers]))
    detail = (
        f"{rejected:.2%} of {len(answers)} test cats and dogs answered 'not a cat or a dog' "
        f"(threshold {predictor.pet_threshold:.4f}) vs ceiling {ceiling:.2%}"
    )
    return Check("false_rejection", rejected <= ceiling, detail)


def parity_check(predictor: Predictor, images: list[bytes], max_diff: float) -> Check:
    """The fp32 ONNX graph against the PyTorch weights of the same bundle, on the same inputs."""
    torch_file = predictor.bundle_dir / predictor.meta["files"].get("torch", "model.pt")
    if not torch_file.exists():
        return Check("onnx_parity", False, f"{torch_file.name} missing from the bundle: parity cannot be checked")
    if problem := unreadable_weights(torch_file):
        return Check("onnx_parity", False, problem)
    import torch

    from catsdogs.models.architectures import create_model
    from catsdogs.models.petscore import PetScore
    from catsdogs.models.serving import serving_model
    from catsdogs.training.metrics import softmax

    meta = predictor.meta
    tuned = int(meta.get("params", {}).get("model", {}).get("tuned_blocks", 0))
    model = create_model(meta["architecture"], num_classes=len(predictor.class_names), tuned_blocks=tuned)
    model.load_state_dict(torch.load(torch_file, map_location="cpu", weights_only=True))
    pet = meta.get("pet_score")
    pet = PetScore(pet["weights"], pet["bias"]) if isinstance(pet, dict) else None
    graph = serving_model(model, temperature=meta["calibration"]["temperature"], tta=meta.get("tta", "none"), pet=pet)
    x = np.stack([predictor.preprocess(b) for b in images])
    with torch.no_grad():
        out = graph.scores(torch.from_numpy(x))
    fp32 = predictor if predictor.backend == "onnx" else Predictor.load(predictor.bundle_dir, backend="onnx")
    onnx = fp32.run_scores(x)
    diff = float(np.abs(onnx.probs - softmax(out["logits"].numpy())).max())
    if onnx.pet is not None and "pet_score" in out:  # the pet score is a probability too
        diff = max(diff, float(np.abs(onnx.pet - out["pet_score"].numpy()).max()))
    return Check("onnx_parity", diff <= max_diff, f"max |p_onnx - p_torch| {diff:.2e} vs {max_diff:.0e}")


def latency_check(predictor: Predictor, image: bytes, budget_ms: float, runs: int = 100) -> Check:
    """Model-only, batch-1 p50 on the served backend."""
    p50 = predictor.latency_ms(predictor.preprocess(image)[np.newaxis], runs=runs)["p50"]
    return Check("latency", p50 <= budget_ms, f"single-image p50 {p50:.2f} ms vs budget {budget_ms} ms")


def unreadable_weights(path: Path) -> str | None:
    """Why ``path`` is not a loadable state dict, or None: a corrupt model.pt fails the check, not the gate."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        return f"{path.name} is not this model's weights: {' '.join(str(exc).split())[:200]}"
    return None if isinstance(state, dict) else f"{path.name} is not this model's weights: no state dict"
