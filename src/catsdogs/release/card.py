"""MODEL_CARD.md, written from the bundle's model.json and the pipeline's reports (never by hand)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from catsdogs.core.config import Params


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def write_model_card(params: Params, bundle: Path) -> Path:
    meta = _read(bundle / "model.json")
    if not meta:
        raise FileNotFoundError(f"no model.json in {bundle}: run `catsdogs export` first")
    reports = params.path("reports")
    sections = [
        _model(meta),
        _data(_read(params.path(params.data.prepared_dir) / "stats.json")),
        _training(meta | {"run": _read(params.path(params.train.output_dir) / "run.json")}),
        _test(meta, _read(reports / "metrics.json")),
        _robustness(_read(reports / "robustness.json"), _read(reports / "robustness_previous.json")),
        _not_a_pet(_read(reports / "robustness.json"), _read(reports / "pet_score_candidates.json")),
        _reproduce(meta),
        LIMITS,
    ]
    path = bundle / "MODEL_CARD.md"
    path.write_text(f"# Model card: catsdogs {meta['version']}\n\n" + "\n\n".join(s for s in sections if s) + "\n")
    return path


def _model(meta: dict[str, Any]) -> str:
    pre = meta["preprocess"]
    size = pre["image_size"]
    th = meta.get("thresholds") or {}
    lat = meta["export"]["latency_ms"]
    return f"""Binary image classifier: is the pet in the photo a **cat** or a **dog** — and is it a cat or a dog at all?

## Model
- Architecture: `{meta["architecture"]}` ({meta["parameters"]:,} parameters), input {size}x{size} RGB, squash-resized
  (bilinear), normalised with mean {pre["mean"]} / std {pre["std"]}; test-time augmentation `{meta["tta"]}`.
- Outputs: {", ".join(f"`{o}`" for o in meta.get("outputs", ["logits"]))}. Logits are divided by the temperature
  {meta["calibration"]["temperature"]} fitted on val, inside the graph: served probabilities are calibrated.
- Not a cat or a dog: `pet_score` below {_num(th.get("pet_score"))} (operators may set `CATSDOGS_PET_THRESHOLD`; see the
  curve below). {_pet_method(meta.get("pet_score"))}
  Not sure: calibrated confidence below {_num(th.get("unsure_below"))}. Both thresholds chosen on val (params.yaml `calibration`).
- Files: `model.onnx` (fp32){", `model.int8.onnx` (static INT8)" if meta["files"].get("onnx_int8") else ""}, `model.pt`, `model.json`.
  Default backend `{meta["default_backend"]}`. Model-only latency, batch 1, p50/p95 ms on the export machine:
  {", ".join(f"{k} {v['p50']}/{v['p95']}" for k, v in lat.items())}.{_bf16(meta["export"])}"""


def _bf16(report: dict[str, Any]) -> str:
    bf16 = report.get("openvino-bf16")
    if not bf16:
        return ""
    return f"""
  OpenVINO bf16 (native bf16 on the export machine) against f32 on val: {100 * bf16["val_changed_answers"]:.2f} % of
  labels or not-a-pet verdicts changed, {100 * bf16["val_changed_unsure"]:.2f} % "not sure" flags; test accuracy
  {100 * bf16["accuracy"]:.2f} %: {"kept" if bf16["kept"] else "discarded"} (budget `export.bf16_max_changed_answers`)."""


def _data(stats: dict[str, Any]) -> str:
    rows = "\n".join(
        f"| {s} | {c['cat']:,} | {c['dog']:,} | {c['cat'] + c['dog']:,} |" for s, c in stats.get("counts", {}).items()
    )
    return f"""## Data
Kaggle "Dogs vs. Cats" training set (Asirra; 200x200 redistribution): {stats.get("found", "?")} files,
{stats.get("kept", "?")} kept after validation and content de-duplication ({stats.get("duplicates_removed", "?")} duplicates
removed). Split by content hash, no duplicate across splits:

| split | cat | dog | total |
|---|---:|---:|---:|
{rows}"""


def _training(meta: dict[str, Any]) -> str:
    t, p = meta.get("training") or {}, meta["params"]
    tp = p["train"]
    minutes = f"{t['train_seconds'] / 60:.1f} min" if t.get("train_seconds") is not None else "n/a"
    return f"""## Training
- Recipe `{tp["recipe"]}`, pretrained {p["model"].get("pretrained")}: epochs {tp["epochs"]} (ran {t.get("epochs_run")}, best
  epoch {t.get("best_epoch")} by `{tp["early_stopping"]}`), batch {tp["batch_size"]}, AdamW lr {tp["lr"]}, weight decay
  {tp["weight_decay"]}, dropout {p["model"]["dropout"]}. Best val accuracy {t.get("best_val_accuracy")}.
- Hardware: {t.get("device")}, {t.get("world_size")} process(es) x {t.get("threads")} threads; epoch loop {minutes}{_setup(meta.get("run") or {})}.
- Lineage: training commit `{meta["git_commit"]}`, data (manifest sha256) `{meta["data_hash"]}`, MLflow run
  `{meta["mlflow_run_id"]}`. Bundle sha256 `{meta["sha256"]["bundle"]}`."""


def _num(x: Any) -> str:
    return f"{x:.4f}" if isinstance(x, float) else str(x)


def _setup(t: dict[str, Any]) -> str:
    if not t.get("setup_seconds"):
        return ""
    return f", plus {t['setup_seconds'] / 60:.1f} min caching the frozen trunk ({t.get('setup_images_per_s')} img/s)"


def _test(meta: dict[str, Any], m: dict[str, Any]) -> str:
    if not m:
        return ""
    cal, nc = m.get("calibration", {}), m.get("not_cat_or_dog", {})
    exp = meta["export"]
    int8 = exp.get("int8")
    rows = "\n".join(f"| {k} | {m[k]:.4f} |" for k in ("accuracy", "precision", "recall", "f1", "roc_auc"))
    return f"""## Test split ({m.get("n_test")} images, evaluated once)
| metric | value |
|---|---:|
{rows}

- ONNX fp32 test accuracy {exp["onnx"]["accuracy"]:.4f} (max |p_onnx - p_torch| {exp["onnx"]["max_prob_diff_vs_torch"]:.1e}).
  {f"INT8: test {int8['accuracy']:.4f}, val drop {int8['val_accuracy_drop'] * 100:.2f} points, {'kept' if int8['kept'] else 'discarded'}." if int8 else ""}
- Calibration (15-bin ECE / NLL on test): before {cal.get("ece_before")} / {cal.get("nll_before")}, after temperature
  scaling {cal.get("ece_after")} / {cal.get("nll_after")}. "Not sure" on {cal.get("unsure_share", 0):.1%} of test
  images; accuracy on the rest {cal.get("accuracy_when_sure")}.
- Not a cat or a dog (PyTorch fp32 graph): {nc.get("false_rejection", 0):.2%} of the test split's cats and dogs turned
  away; {nc.get("detection", 0):.1%} of the held-out non-pet images caught (served-backend figures per source below)."""


def _robustness(new: dict[str, Any], old: dict[str, Any]) -> str:
    if not new:
        return ""
    head = "| corruption | this model |" + (f" previous ({old.get('model')}) |" if old else "")
    sep = "|---|---:|" + ("---:|" if old else "")
    rows = "\n".join(
        f"| {k} | {v:.4f} |" + (f" {old['accuracy'].get(k, float('nan')):.4f} |" if old else "")
        for k, v in new["accuracy"].items()
    )
    return f"""## Robustness (test split, {new["n"]} images, served backend; `catsdogs robustness`)
{head}
{sep}
{rows}"""


def _pet_method(pet: dict[str, Any] | str | None) -> str:
    if not isinstance(pet, dict):
        return f"The score: {pet}." if pet else ""
    terms = " + ".join(f"{w:.3f} x {e}" for w, e in zip(pet["weights"], pet["evidence"], strict=True))
    return (
        f"The score: sigmoid({terms} {pet['bias']:+.3f}), from the untouched ImageNet head ({pet['method']}).\n"
        "  `looks_like` names the head's best class that is not a cat or a dog, in a plain word."
    )


def _not_a_pet(robustness: dict[str, Any], candidates: dict[str, Any]) -> str:
    nc = robustness.get("not_cat_or_dog")
    if not nc:
        return ""
    rows = "\n".join(
        f"| {name} | {'pet' if r['pet'] else 'not a pet'} | {'fitted' if r['fit'] else 'held out'} | {r['n']} | "
        f"{'turned away' if r['pet'] else 'caught'} {r['rate']:.1%} | {', '.join(r['looks_like'][:3])} | {r['note']} |"
        for name, r in nc["by_set"].items()
    )
    curve = "\n".join(
        f"| {p['threshold']:g} | {p['false_rejection_kaggle_test']:.2%} | {p['false_rejection_all_pets']:.2%} | "
        f"{p['detection_held_out']:.1%} |"
        for p in nc["curve"]
    )
    return f"""## Not a cat or a dog (served backend `{nc["backend"]}`, threshold {nc["threshold"]:.4f}; `catsdogs robustness`)
Per source and kind: for cats and dogs the share turned away (false rejection), for everything else the share
caught (detection). "fitted": the pet score's regression saw these (outlier exposure); only held-out rows are
honest estimates. Goals: at most 1 % of cats and dogs turned away from any source, 95 % of non-pets caught.

| set | kind | fit | images | rate | looks like (top 3) | note |
|---|---|---|---:|---:|---|---|
{rows}

Choosing another threshold (`CATSDOGS_PET_THRESHOLD`): false rejection against detection of the held-out sets
(`reports/pet_threshold_curve.png`).

| threshold | Kaggle test turned away | all held-out pets turned away | held-out non-pets caught |
|---:|---:|---:|---:|
{curve}
{_candidates(candidates)}"""


def _candidates(c: dict[str, Any]) -> str:
    if not c:
        return ""
    rows = "\n".join(
        f"| {name} | {r['val_false_rejection']:.2%} | {r['variations_false_rejection']:.2%} | "
        f"{r['nonpet_held_detection']:.1%} | {r['package_detection']:.1%} | {r['wheel_detection']:.1%} |"
        for name, r in c["candidates"].items()
    )
    return f"""
Why this score (`python scripts/pet_score_candidates.py`, threshold of each at {c["max_false_rejection"]:.1%} of
held-out val cats and dogs turned away; detection on held-out sets):

| candidate | val turned away | varied uploads turned away | non-pet folder caught | package photos caught | foolbox samples caught |
|---|---:|---:|---:|---:|---:|
{rows}

{c["conclusion"]}"""


def _reproduce(meta: dict[str, Any]) -> str:
    return """## Reproduce
```bash
make init
.venv/bin/dvc repro   # prepare -> train -> calibrate -> evaluate -> export -> robustness -> model card
.venv/bin/catsdogs validate
```"""


LIMITS = """## Intended use and limits
For sorting pet photos on an adoption platform. The classifier only knows cats and dogs; the pet score
flags most other images (blank, noise, text, people, vehicles, landscapes, other animals), but an animal
that ImageNet confuses with a cat or a dog (a fox, a wolf, a plush toy, a 32 px thumbnail) can still get an
answer. No real full-size photos of horses or farm animals ship in any package this project can install,
so detection on them is not measured here (the held-out foolbox ImageNet samples hold birds and insects). Kaggle photos are mostly amateur
photos of one animal; several animals, drawings or heavy filters are less reliable. Monitor the rate of
"not a cat or a dog" and "not sure" answers in production."""
