"""``catsdogs score``: the thin command over ``catsdogs.inference.score`` (Ray Data batch scoring)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer

SCORE_PANEL = "Batch scoring (the ray extra)"


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def score(
    sources: Annotated[
        list[Path], typer.Argument(help="Folders (searched recursively), images, lists of paths (.txt), .zip or .tar.")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Parquet dataset folder; re-runs resume into it.")],
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Bundle directory or MLflow URI. Default: models/.")
    ] = None,
    backend: Annotated[str, typer.Option(help="auto | onnx | onnx-int8 | openvino | openvino-bf16.")] = "auto",
    address: Annotated[
        str | None,
        typer.Option(
            envvar="RAY_ADDRESS", help="Ray cluster: auto (on a node) or the head's HOST:6379. Default: local."
        ),
    ] = None,
    num_cpus: Annotated[int | None, typer.Option(min=1, help="CPUs of the local Ray (default: all).")] = None,
    actors: Annotated[int | None, typer.Option(min=1, help="Scoring actors (default: CPUs / threads).")] = None,
    threads: Annotated[int, typer.Option(min=1, help="Inference threads (and Ray CPUs) per actor.")] = 1,
    batch_size: Annotated[int, typer.Option(min=1, max=1024, help="Images per model run.")] = 32,
    checkpoint_rows: Annotated[int, typer.Option(min=1, help="Rows per written part (what a kill can lose).")] = 1000,
) -> None:
    """Score a photo archive with Ray Data into a parquet folder: one row per file, bad files as error rows.

    A re-run skips the files already scored by the same model version (same path and sha256).
    """
    from catsdogs.core.paths import MODELS_DIR
    from catsdogs.inference.predictor import BACKENDS, ModelLoadError

    if backend not in BACKENDS:
        _fail(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    try:
        import ray.data  # noqa: F401  # the optional extra: say so before any work
    except ImportError:
        _fail("batch scoring needs Ray: pip install 'catsdogs[ray]' (make init installs it)")
    from catsdogs.inference.score import ScoreError, run_score

    chosen = model if model and model.startswith("models:/") else str(Path(model or MODELS_DIR).expanduser().resolve())
    # ray.data configures its loggers when imported (above): adjust them after
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # per-dataset INFO lines
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "bars disabled": ours is drawn
    try:
        with _progress() as advance:
            summary = run_score(
                sources, output, model=chosen, backend=backend, address=address, num_cpus=num_cpus,
                actors=actors, threads=threads, batch_size=batch_size, checkpoint_rows=checkpoint_rows,
                on_progress=advance,
            )  # fmt: skip
    except (ScoreError, ModelLoadError) as exc:
        _fail(str(exc))
    except ConnectionError as exc:
        hint = "a cluster with token authentication also needs RAY_AUTH_MODE=token and its token (RAY_AUTH_TOKEN)"
        _fail(f"cannot reach the Ray cluster at {address}: {exc}; {hint}")
    except KeyboardInterrupt:
        typer.secho(f"interrupted: the parts written so far stay in {output}; run again to resume", err=True)
        raise typer.Exit(130) from None
    _report(summary)


def _report(summary: Any) -> None:
    errors = f", {summary.errors} errors (see the error column)" if summary.errors else ""
    typer.secho(
        f"scored {summary.scored} of {summary.files} files{errors}; skipped {summary.skipped} already scored by "
        f"model {summary.model_version}; {summary.images_per_second:.1f} images/s; wrote {summary.parts} parts to "
        f"{summary.output}",
        err=True,
    )


class _progress:
    """A rich progress bar on stderr, drawn from the first ``on_progress(done, total)`` (the context value) on."""

    def __enter__(self) -> Any:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        self.bar = Progress(
            "scoring", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=Console(stderr=True)
        )
        self.task = self.bar.add_task("score", total=None)

        def advance(done: int, total: int) -> None:
            if not self.bar.live.is_started:
                self.bar.start()
            self.bar.update(self.task, completed=done, total=total)

        return advance

    def __exit__(self, *exc: object) -> None:
        if self.bar.live.is_started:  # a stopped bar that never started still prints an empty line
            self.bar.stop()


def register(app: typer.Typer) -> None:
    app.command("score", rich_help_panel=SCORE_PANEL)(score)
