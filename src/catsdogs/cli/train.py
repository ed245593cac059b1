"""``catsdogs train``: every option overrides one params.yaml value (left out: the value in params.yaml)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from catsdogs.cli.common import (
    ParamsOpt,
    VerboseOpt,
    from_params,
    read_params,
    require_source,
    require_training_stack,
    setup_logging,
    user_errors,
)

EpochsOpt = Annotated[int | None, typer.Option(help="Number of epochs.", **from_params("train.epochs"))]
BatchSizeOpt = Annotated[int | None, typer.Option(help="Batch size.", **from_params("train.batch_size"))]
LrOpt = Annotated[
    float | None, typer.Option(help="Peak learning rate (AdamW, one-cycle cosine).", **from_params("train.lr"))
]
ImageSizeOpt = Annotated[
    int | None, typer.Option(help="Input size in pixels (square).", **from_params("model.image_size"))
]
ModelOpt = Annotated[
    str | None,
    typer.Option(help="Architecture: efficientnet_lite0 | resnet_small | simple_cnn.", **from_params("model.name")),
]
RecipeOpt = Annotated[
    str | None,
    typer.Option(help="full | cached_features (frozen pretrained lower part).", **from_params("train.recipe")),
]
DropoutOpt = Annotated[
    float | None, typer.Option(help="Dropout before the classifier.", **from_params("model.dropout"))
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(help="Raw image folder; prepares a manifest for it first.", **from_params("data.source")),
]
LimitOpt = Annotated[
    int | None, typer.Option(help="Train on a class-balanced subset of N images.", **from_params("data.limit"))
]
OutputDirOpt = Annotated[
    Path | None, typer.Option(help="Where checkpoints and run outputs go.", **from_params("train.output_dir"))
]
Bf16Opt = Annotated[str | None, typer.Option(help="auto | on | off.", **from_params("train.bf16"))]
DeviceOpt = Annotated[str | None, typer.Option(help="auto | cpu | cuda.", **from_params("train.device"))]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint in output_dir.")]
RegisterOpt = Annotated[bool, typer.Option(help="Register the model in the MLflow registry (alias challenger).")]


def train(
    epochs: EpochsOpt = None,
    batch_size: BatchSizeOpt = None,
    lr: LrOpt = None,
    image_size: ImageSizeOpt = None,
    model: ModelOpt = None,
    recipe: RecipeOpt = None,
    dropout: DropoutOpt = None,
    data_dir: DataDirOpt = None,
    limit: LimitOpt = None,
    output_dir: OutputDirOpt = None,
    bf16: Bf16Opt = None,
    device: DeviceOpt = None,
    resume: ResumeOpt = False,
    register: RegisterOpt = True,
    params: ParamsOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Train a model, tracked in MLflow, registered as `catsdogs` with alias `challenger`.

    Every option left out takes its value from params.yaml (shown as the default).
    """
    require_training_stack("train")
    overrides = {
        "train.epochs": epochs,
        "train.batch_size": batch_size,
        "train.lr": lr,
        "model.image_size": image_size,
        "model.name": model,  # an unknown name fails here, before any data is decoded
        "train.recipe": recipe,
        "model.dropout": dropout,
        "data.source": str(data_dir.resolve()) if data_dir else None,
        "data.limit": limit,
        "train.output_dir": str(output_dir.resolve()) if output_dir else None,
        "train.bf16": bf16,
        "train.device": device,
    }
    with user_errors("train", verbose):
        p = read_params(params, overrides)
        require_source(p.path(p.data.source), "--data-dir or data.source")
        from catsdogs.training.runtime import reexec_with_malloc_tunables
        from catsdogs.training.train import run_training

        reexec_with_malloc_tunables()
        setup_logging(verbose)
        result = run_training(p, resume=resume, register=register)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for the job
        typer.echo(
            f"best val_accuracy={result.best_val_accuracy:.4f} (epoch {result.best_epoch}); "
            f"checkpoint {result.checkpoint}; mlflow run {result.run_id}"
        )
