"""The release commands: evaluate, tune-inference, calibrate, export, validate (the gate), robustness,
model-card and distill. Each only wires a ``catsdogs.release`` module to its options."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from catsdogs.cli.common import (
    ParamsOpt,
    VerboseOpt,
    fail,
    from_params,
    read_params,
    require_checkpoint,
    require_source,
    require_training_stack,
    setup_logging,
    user_errors,
)


def evaluate(
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint (default: best.pt of the training run).")] = None,
    output: Annotated[Path | None, typer.Option(help="Metrics JSON (default: reports/metrics.json).")] = None,
    params: ParamsOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Test-split accuracy, precision, recall, F1, ROC-AUC, confusion matrix and plots."""
    import json

    require_training_stack("evaluate")
    with user_errors("evaluate", verbose):
        p = read_params(params)
        ckpt = require_checkpoint(checkpoint, p)
        require_source(p.path(p.data.source), "data.source in params.yaml")
        from catsdogs.release.evaluate import run_evaluation
        from catsdogs.training.runtime import reexec_with_malloc_tunables

        reexec_with_malloc_tunables()
        setup_logging(verbose)
        metrics = run_evaluation(p, checkpoint=ckpt, output=output)
    typer.echo(json.dumps(metrics, indent=2))


def _parse_sweep(sizes: str, tta: str) -> tuple[list[int], list[str]]:
    try:
        size_list = [int(s) for s in sizes.split(",") if s.strip()]
    except ValueError:
        fail(f"--sizes must be comma-separated integers, got {sizes!r}")
    if not size_list or any(not 32 <= n <= 1024 for n in size_list):
        fail(f"--sizes must list sizes between 32 and 1024 pixels, got {sizes!r}")
    tta_list = [t.strip() for t in tta.split(",") if t.strip()]
    if bad := [t for t in tta_list if t not in ("none", "flip")]:
        fail(f"unknown --tta value(s) {bad}; choose none and/or flip")
    return size_list, tta_list


def tune_inference(
    sizes: Annotated[str, typer.Option(help="Comma-separated inference sizes in pixels.")] = "128,144,160,176",
    tta: Annotated[str, typer.Option(help="Comma-separated test-time augmentations: none, flip.")] = "none,flip",
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint (default: best.pt of the training run).")] = None,
    output: Annotated[Path | None, typer.Option(help="Results JSON (default: reports/inference_sweep.json).")] = None,
    params: ParamsOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Validation accuracy for each inference size x TTA: how `inference.*` in params.yaml is chosen."""
    import json

    size_list, tta_list = _parse_sweep(sizes, tta)
    require_training_stack("tune-inference")
    with user_errors("tune-inference", verbose):
        p = read_params(params)
        ckpt = require_checkpoint(checkpoint, p)
        require_source(p.path(p.data.source), "data.source in params.yaml")
        from catsdogs.release.evaluate import best_setting, recommend, sweep_inference
        from catsdogs.training.runtime import reexec_with_malloc_tunables

        reexec_with_malloc_tunables()
        setup_logging(verbose)
        rows = sweep_inference(p, size_list, tta_list, checkpoint=ckpt)
    best, pick = best_setting(rows), recommend(rows)
    out = output or p.path("reports/inference_sweep.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"split": "val", "rows": rows, "best": best, "recommended": pick}, indent=2) + "\n")
    _print_sweep(rows, best, pick, (p.inference.image_size, p.inference.tta))
    typer.echo(
        f"recommended (cheapest within one standard error of the best): image_size={pick['image_size']} "
        f"tta={pick['tta']}; set it under `inference:` in params.yaml (bold row = current). Wrote {out}"
    )


def _print_sweep(rows: list[dict[str, Any]], best: dict[str, Any], pick: dict[str, Any], current: tuple) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"validation split ({rows[0]['n']} images)")
    for col in ("image_size", "tta", "accuracy", "log_loss", "relative_cost", ""):
        table.add_column(col, justify="right")
    for r in rows:
        note = " ".join(n for n, hit in (("best", r is best), ("recommended", r is pick)) if hit)
        style = "bold" if (r["image_size"], r["tta"]) == current else None
        table.add_row(
            str(r["image_size"]),
            r["tta"],
            f"{r['accuracy']:.4f}",
            f"{r['log_loss']:.4f}",
            f"{r['relative_cost']:.2f}",
            note,
            style=style,
        )
    Console().print(table)


def export(
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint (default: best.pt of the training run).")] = None,
    output_dir: Annotated[
        Path | None,
        typer.Option(help="Bundle folder. The default replaces the shipped model.", **from_params("export.output_dir")),
    ] = None,
    quantize: Annotated[
        bool | None, typer.Option(help="Also build a static INT8 model.", **from_params("export.quantize"))
    ] = None,
    params: ParamsOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Export to ONNX (+ INT8 if it keeps accuracy) with a parity check against PyTorch."""
    import json

    require_training_stack("export")
    with user_errors("export", verbose):
        p = read_params(params, {"export.quantize": quantize})
        ckpt = require_checkpoint(checkpoint, p)
        require_source(p.path(p.data.source), "data.source in params.yaml")
        from catsdogs.release.export import run_export
        from catsdogs.training.runtime import reexec_with_malloc_tunables

        reexec_with_malloc_tunables()
        setup_logging(verbose)
        report = run_export(p, checkpoint=ckpt, output_dir=output_dir)
    typer.echo(json.dumps(report, indent=2))


def validate(
    model_dir: Annotated[Path | None, typer.Option(help="Bundle to gate (default: models/).")] = None,
    promote: Annotated[bool, typer.Option(help="On success, set the registry alias `champion`.")] = True,
    params: ParamsOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Quality gate: accuracy threshold, ONNX parity and latency budget; exit 1 with the reason on failure."""
    setup_logging(verbose)
    require_training_stack("validate")
    with user_errors("validate", verbose):
        p = read_params(params)
        require_source(p.path(p.data.source), "data.source in params.yaml")
        from catsdogs.release.validate import run_gate

        result = run_gate(p, model_dir=model_dir, promote=promote)
    for check in result.checks:
        mark = "PASS" if check.passed else "FAIL"
        typer.echo(f"[{mark}] {check.name}: {check.detail}")
    if not result.passed:
        fail("quality gate failed: " + "; ".join(c.detail for c in result.checks if not c.passed), code=1)
    typer.echo("quality gate passed" + (f"; alias champion -> version {result.promoted}" if result.promoted else ""))


def calibrate(
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint (default: best.pt of the training run).")] = None,
    params: ParamsOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Fit on val: the temperature, the not-a-cat-or-dog threshold and the not-sure threshold."""
    import json
    from dataclasses import asdict

    require_training_stack("calibrate")
    with user_errors("calibrate", verbose):
        p = read_params(params)
        ckpt = require_checkpoint(checkpoint, p)
        require_source(p.path(p.data.source), "data.source in params.yaml")
        from catsdogs.release.calibrate import run_calibration
        from catsdogs.training.runtime import reexec_with_malloc_tunables

        reexec_with_malloc_tunables()
        setup_logging(verbose)
        cal = run_calibration(p, checkpoint=ckpt)
    typer.echo(json.dumps(asdict(cal), indent=2))


def distill(
    params: ParamsOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Distil the trained model into a faster student (params.yaml `distill`) and compare the two."""
    import json

    require_training_stack("distill")
    with user_errors("distill", verbose):
        p = read_params(params)
        require_checkpoint(None, p)
        require_source(p.path(p.data.source), "data.source in params.yaml")
        from catsdogs.release.distill import run_distill
        from catsdogs.training.runtime import reexec_with_malloc_tunables

        reexec_with_malloc_tunables()
        setup_logging(verbose)
        report = run_distill(p)
    typer.echo(json.dumps({k: report["student"][k] for k in ("test_accuracy", "latency_ms")}, indent=2))


def teacher(
    params: ParamsOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Build the teacher (params.yaml `teacher`: more tuned blocks) beside the shipped model, into models/teacher."""
    import json

    require_training_stack("teacher")
    with user_errors("teacher", verbose):
        p = read_params(params)
        require_source(p.path(p.data.source), "data.source in params.yaml")
        from catsdogs.release.teacher import run_teacher
        from catsdogs.training.runtime import reexec_with_malloc_tunables

        reexec_with_malloc_tunables()
        setup_logging(verbose)
        report = run_teacher(p)
    typer.echo(json.dumps({k: report[k] for k in ("test_accuracy", "latency_ms", "bundle")}, indent=2))


def robustness(
    model_dir: Annotated[Path | None, typer.Option(help="Bundle to test (default: models/).")] = None,
    output: Annotated[Path | None, typer.Option(help="Results JSON (default: reports/robustness.json).")] = None,
    params: ParamsOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Test-split accuracy of a bundle under corruptions (JPEG q20, blur, low light, grayscale, rotation, crop)."""
    import json

    setup_logging(verbose)
    with user_errors("robustness", verbose):
        p = read_params(params)
        require_source(p.path(p.data.source), "data.source in params.yaml")
        from catsdogs.inference.predictor import ModelLoadError
        from catsdogs.release.robustness import run_robustness

        try:
            result = run_robustness(p, model_dir=model_dir, output=output)
        except ModelLoadError as exc:
            fail(str(exc))
    typer.echo(json.dumps(result, indent=2))


def model_card(
    model_dir: Annotated[Path | None, typer.Option(help="Bundle (default: models/).")] = None,
    params: ParamsOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Write MODEL_CARD.md into the bundle from its model.json and the pipeline's reports."""
    with user_errors("model-card", verbose):
        p = read_params(params)
        from catsdogs.release.card import write_model_card

        path = write_model_card(p, model_dir or p.path(p.export.output_dir))
    typer.echo(f"wrote {path}")
