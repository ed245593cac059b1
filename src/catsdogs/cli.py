"""The ``catsdogs`` command line. Each command only wires a stage module together.

Heavy imports (torch, mlflow) happen inside the commands so ``--help`` stays fast
and the serving image, which has no training stack, can still run ``serve``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="catsdogs",
    help="Cats vs Dogs: data, training, evaluation, export, quality gate, serving.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Download and prepare the raw images.", no_args_is_help=True)
app.add_typer(data_app, name="data")

ParamsOpt = Annotated[Path | None, typer.Option("--params", help="params.yaml to read (default: the project's).")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")]


def _setup_logging(verbose: bool = False) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(show_path=False, rich_tracebacks=False)],
        force=True,
    )
    for noisy in ("alembic", "urllib3", "git", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@data_app.command("download")
def data_download(
    dest: Annotated[Path | None, typer.Option(help="Where to put the data (default: <project>/data/raw).")] = None,
    source: Annotated[
        str, typer.Option(help="'competition' (dogs-vs-cats), 'dataset' (PetImages layout) or 'all'.")
    ] = ("competition"),
    verbose: VerboseOpt = False,
) -> None:
    """Download the Kaggle data (needs KAGGLE_USERNAME/KAGGLE_KEY or ~/.kaggle/kaggle.json)."""
    from catsdogs.download import DownloadError, download
    from catsdogs.paths import DATA_DIR

    _setup_logging(verbose)
    try:
        paths = download(dest or DATA_DIR / "raw", source)
    except DownloadError as exc:
        _fail(str(exc))
    for p in paths:
        typer.echo(f"downloaded to {p}")


@data_app.command("prepare")
def data_prepare(
    source: Annotated[Path | None, typer.Option(help="Raw image folder (Kaggle flat or Cat/ Dog/ layout).")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder for manifest.csv and stats.json.")] = None,
    limit: Annotated[int | None, typer.Option(help="Use a class-balanced subset of N images.")] = None,
    params: ParamsOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Validate, de-duplicate and split the raw images into a manifest (raw data is never modified)."""
    import json
    from dataclasses import asdict

    from catsdogs.config import load_params
    from catsdogs.data import prepare

    _setup_logging(verbose)
    p = load_params(params, {"data.limit": limit})
    src = source.resolve() if source else p.path(p.data.source)
    if not src.is_dir():
        _fail(f"data source {src} does not exist; run `catsdogs data download` or pass --source DIR")
    stats = prepare(
        src,
        out.resolve() if out else p.path(p.data.prepared_dir),
        val_fraction=p.data.val_fraction,
        test_fraction=p.data.test_fraction,
        seed=p.data.seed,
        limit=p.data.limit,
        progress=True,
    )
    typer.echo(json.dumps(asdict(stats), indent=2))


@app.command()
def train(
    epochs: Annotated[int | None, typer.Option(help="Number of epochs.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size.")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate (AdamW, one-cycle cosine).")] = None,
    image_size: Annotated[int | None, typer.Option(help="Input size in pixels (square).")] = None,
    model: Annotated[
        str | None, typer.Option(help="Architecture: efficientnet_lite0 | resnet_small | simple_cnn.")
    ] = None,
    recipe: Annotated[str | None, typer.Option(help="full | linear_probe (frozen pretrained backbone).")] = None,
    dropout: Annotated[float | None, typer.Option(help="Dropout before the classifier (the seed's: 0.5).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Raw image folder; prepares a manifest for it first.")] = None,
    limit: Annotated[int | None, typer.Option(help="Train on a class-balanced subset of N images.")] = None,
    output_dir: Annotated[Path | None, typer.Option(help="Where checkpoints and run outputs go.")] = None,
    bf16: Annotated[str | None, typer.Option(help="auto | on | off.")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint in output_dir.")] = False,
    register: Annotated[
        bool, typer.Option(help="Register the model in the MLflow registry (alias challenger).")
    ] = True,
    params: ParamsOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Train a model, tracked in MLflow, registered as `catsdogs` with alias `challenger`."""
    from catsdogs.config import load_params
    from catsdogs.runtime import reexec_with_malloc_tunables
    from catsdogs.train import run_training

    reexec_with_malloc_tunables()
    _setup_logging(verbose)
    p = load_params(
        params,
        {
            "train.epochs": epochs,
            "train.batch_size": batch_size,
            "train.lr": lr,
            "model.image_size": image_size,
            "model.name": model,
            "train.recipe": recipe,
            "model.dropout": dropout,
            "data.source": str(data_dir.resolve()) if data_dir else None,
            "data.limit": limit,
            "train.output_dir": str(output_dir.resolve()) if output_dir else None,
            "train.bf16": bf16,
            "train.device": device,
        },
    )
    result = run_training(p, resume=resume, register=register)
    typer.echo(
        f"best val_accuracy={result.best_val_accuracy:.4f} (epoch {result.best_epoch}); "
        f"checkpoint {result.checkpoint}; mlflow run {result.run_id}"
    )


@app.command()
def evaluate(
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint (default: best.pt of the training run).")] = None,
    output: Annotated[Path | None, typer.Option(help="Metrics JSON (default: reports/metrics.json).")] = None,
    params: ParamsOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Test-split accuracy, precision, recall, F1, ROC-AUC, confusion matrix and plots."""
    import json

    from catsdogs.config import load_params
    from catsdogs.evaluate import run_evaluation
    from catsdogs.runtime import reexec_with_malloc_tunables

    reexec_with_malloc_tunables()
    _setup_logging(verbose)
    metrics = run_evaluation(load_params(params), checkpoint=checkpoint, output=output)
    typer.echo(json.dumps(metrics, indent=2))


@app.command("tune-inference")
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

    from rich.console import Console
    from rich.table import Table

    from catsdogs.config import load_params
    from catsdogs.evaluate import best_setting, recommend, sweep_inference
    from catsdogs.runtime import reexec_with_malloc_tunables

    reexec_with_malloc_tunables()
    _setup_logging(verbose)
    try:
        size_list = [int(s) for s in sizes.split(",") if s.strip()]
    except ValueError:
        _fail(f"--sizes must be comma-separated integers, got {sizes!r}")
    if not size_list or any(not 32 <= n <= 1024 for n in size_list):
        _fail(f"--sizes must list sizes between 32 and 1024 pixels, got {sizes!r}")
    tta_list = [t.strip() for t in tta.split(",") if t.strip()]
    if bad := [t for t in tta_list if t not in ("none", "flip")]:
        _fail(f"unknown --tta value(s) {bad}; choose none and/or flip")
    p = load_params(params)
    rows = sweep_inference(p, size_list, tta_list, checkpoint=checkpoint)
    best, pick = best_setting(rows), recommend(rows)
    out = output or p.path("reports/inference_sweep.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"split": "val", "rows": rows, "best": best, "recommended": pick}, indent=2) + "\n")

    table = Table(title=f"validation split ({rows[0]['n']} images)")
    for col in ("image_size", "tta", "accuracy", "log_loss", "relative_cost", ""):
        table.add_column(col, justify="right")
    current = (p.inference.image_size, p.inference.tta)
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
    typer.echo(
        f"recommended (cheapest within one standard error of the best): image_size={pick['image_size']} "
        f"tta={pick['tta']}; set it under `inference:` in params.yaml (bold row = current). Wrote {out}"
    )


@app.command()
def export(
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint (default: best.pt of the training run).")] = None,
    output_dir: Annotated[Path | None, typer.Option(help="Bundle folder (default: models/).")] = None,
    quantize: Annotated[bool | None, typer.Option(help="Also build a static INT8 model.")] = None,
    params: ParamsOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Export to ONNX (+ INT8 if it keeps accuracy) with a parity check against PyTorch."""
    import json

    from catsdogs.config import load_params
    from catsdogs.export import run_export
    from catsdogs.runtime import reexec_with_malloc_tunables

    reexec_with_malloc_tunables()
    _setup_logging(verbose)
    p = load_params(params, {"export.quantize": quantize})
    report = run_export(p, checkpoint=checkpoint, output_dir=output_dir)
    typer.echo(json.dumps(report, indent=2))


@app.command()
def validate(
    model_dir: Annotated[Path | None, typer.Option(help="Bundle to gate (default: models/).")] = None,
    promote: Annotated[bool, typer.Option(help="On success, set the registry alias `champion`.")] = True,
    params: ParamsOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Quality gate: accuracy threshold, ONNX parity and latency budget; exit 1 with the reason on failure."""
    from catsdogs.config import load_params
    from catsdogs.validate import run_gate

    _setup_logging(verbose)
    result = run_gate(load_params(params), model_dir=model_dir, promote=promote)
    for check in result.checks:
        mark = "PASS" if check.passed else "FAIL"
        typer.echo(f"[{mark}] {check.name}: {check.detail}")
    if not result.passed:
        _fail("quality gate failed: " + "; ".join(c.detail for c in result.checks if not c.passed), code=1)
    typer.echo("quality gate passed" + (f"; alias champion -> version {result.promoted}" if result.promoted else ""))


@app.command()
def calibrate(
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint (default: best.pt of the training run).")] = None,
    params: ParamsOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Fit on val: the temperature, the not-a-cat-or-dog threshold and the not-sure threshold."""
    import json
    from dataclasses import asdict

    from catsdogs.calibrate import run_calibration
    from catsdogs.config import load_params
    from catsdogs.runtime import reexec_with_malloc_tunables

    reexec_with_malloc_tunables()
    _setup_logging(verbose)
    typer.echo(json.dumps(asdict(run_calibration(load_params(params), checkpoint=checkpoint)), indent=2))


@app.command()
def robustness(
    model_dir: Annotated[Path | None, typer.Option(help="Bundle to test (default: models/).")] = None,
    output: Annotated[Path | None, typer.Option(help="Results JSON (default: reports/robustness.json).")] = None,
    params: ParamsOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Test-split accuracy of a bundle under corruptions (JPEG q20, blur, low light, grayscale, rotation, crop)."""
    import json

    from catsdogs.config import load_params
    from catsdogs.robustness import run_robustness

    _setup_logging(verbose)
    p = load_params(params)
    typer.echo(json.dumps(run_robustness(p, model_dir=model_dir, output=output), indent=2))


@app.command("model-card")
def model_card(
    model_dir: Annotated[Path | None, typer.Option(help="Bundle (default: models/).")] = None,
    params: ParamsOpt = None,
) -> None:
    """Write MODEL_CARD.md into the bundle from model.json and the reports."""
    from catsdogs.card import write_model_card
    from catsdogs.config import load_params

    p = load_params(params)
    typer.echo(f"wrote {write_model_card(p, model_dir or p.path(p.export.output_dir))}")


# --- serving commands (catsdogs.serve) ----------------------------------------------
# `serve` and `predict` are registered here by the serving layer.
from catsdogs.serve.commands import register as _register_serving  # noqa: E402

_register_serving(app)
