"""``catsdogs data``: download the Kaggle images and prepare them into a split manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from catsdogs.cli.common import (
    Command,
    Group,
    ParamsOpt,
    VerboseOpt,
    fail,
    from_params,
    read_params,
    require_source,
    require_training_stack,
    setup_logging,
    user_errors,
)

app = typer.Typer(help="Download and prepare the raw images.", no_args_is_help=True, cls=Group)


@app.command("download", cls=Command)
def data_download(
    dest: Annotated[Path | None, typer.Option(help="Where to put the data (default: <project>/data/raw).")] = None,
    source: Annotated[
        str, typer.Option(help="'competition' (dogs-vs-cats), 'dataset' (PetImages layout) or 'all'.")
    ] = ("competition"),
    verbose: VerboseOpt = False,
) -> None:
    """Download the Kaggle data (needs KAGGLE_USERNAME/KAGGLE_KEY or ~/.kaggle/kaggle.json)."""
    from catsdogs.core.paths import DATA_DIR, PROJECT_ROOT
    from catsdogs.data.download import DownloadError, download

    require_training_stack("data download", ("kaggle",))
    setup_logging(verbose)
    with user_errors("data download", verbose):
        try:
            paths = download(dest or DATA_DIR / "raw", source)
        except DownloadError as exc:
            fail(str(exc))
    for p in paths:
        typer.echo(f"downloaded to {p}")
    # Join up with prepare/train, which read data.source in params.yaml (the one definition DVC tracks).
    for train_dir in (p / "train" for p in paths if (p / "train").is_dir()):
        shown = train_dir.relative_to(PROJECT_ROOT) if train_dir.is_relative_to(PROJECT_ROOT) else train_dir
        typer.echo(f"next: set data.source: {shown} in params.yaml, then `dvc repro` (or catsdogs data prepare, train)")


@app.command("prepare", cls=Command)
def data_prepare(
    source: Annotated[
        Path | None,
        typer.Option(help="Raw image folder (Kaggle flat or Cat/ Dog/ layout).", **from_params("data.source")),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Output folder for manifest.csv and stats.json.", **from_params("data.prepared_dir")),
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Use a class-balanced subset of N images.")] = None,
    params: ParamsOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Validate, de-duplicate and split the raw images into a manifest (raw data is never modified)."""
    import json
    from dataclasses import asdict

    setup_logging(verbose)
    require_training_stack("data prepare", ("tqdm",))
    with user_errors("data prepare", verbose):
        p = read_params(params, {"data.limit": limit})
        src = source.resolve() if source else p.path(p.data.source)
        require_source(src, "--source or data.source")
        from catsdogs.data.prepare import prepare

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
