"""CLI commands of the serving layer: ``catsdogs serve`` and ``catsdogs predict``.

Imports of uvicorn, onnxruntime and prometheus_client stay inside the commands: ``--help`` stays fast, and
PROMETHEUS_MULTIPROC_DIR must be set before prometheus_client is first imported.
"""

from __future__ import annotations

import atexit
import csv
import errno
import json
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

import typer

from catsdogs.core.transforms import IMAGE_SUFFIXES

ModelOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Bundle directory or MLflow URI (models:/catsdogs@champion). Default: models/."),
]
BackendOpt = Annotated[
    str | None, typer.Option(help="auto | onnx | onnx-int8 | openvino | openvino-bf16 (auto: the bundle's default).")
]


def _normalise_model(model: str) -> str:
    # A relative directory on the command line means relative to where the user is, not the project root.
    return model if model.startswith("models:/") else str(Path(model).expanduser().resolve())


def setup_multiprocess_dir(workers: int) -> Path | None:
    """Prometheus multiprocess directory for several workers: the user's (wiped) or a fresh temporary one."""
    from catsdogs.serve.metrics import MULTIPROC_ENV

    given = os.environ.get(MULTIPROC_ENV)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        # Files of a previous run would be added to this run's counters.
        for stale in path.glob("*.db"):
            stale.unlink()
        return path
    if workers <= 1:
        return None
    path = Path(tempfile.mkdtemp(prefix="catsdogs-prometheus-"))
    os.environ[MULTIPROC_ENV] = str(path)
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def _fail(message: str) -> NoReturn:
    """The CLI's answer to a mistake: one line on stderr, exit status 2, no traceback."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def check_port_free(host: str, port: int) -> None:
    """Fail with one line if the port is taken (uvicorn would log a bind traceback and exit 1)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is not "in use"
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                _fail(
                    f"port {port} on {host} is already in use: pick another with --port N (or PORT=N / CATSDOGS_PORT=N)"
                )
            _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


def check_model_present(model_path: str) -> None:
    """Fail fast on a bundle directory that is not there, rather than serve 'not ready' for ever."""
    if model_path.startswith("models:/"):
        return  # resolved from the registry by the server
    if not (Path(model_path) / "model.json").is_file():
        _fail(
            f"no model bundle at {model_path} (expected a directory with model.json): check --model, "
            "or pass --wait-for-model if it is still being written"
        )


def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind (default 0.0.0.0, CATSDOGS_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000, CATSDOGS_PORT).")] = None,
    model: ModelOpt = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (default 1, CATSDOGS_WORKERS).")] = None,
    backend: BackendOpt = None,
    wait_for_model: Annotated[
        bool,
        typer.Option(
            "--wait-for-model",
            help="Start even if the model is not there yet; /ready is 503 until it appears (CATSDOGS_WAIT_FOR_MODEL).",
        ),
    ] = False,
) -> None:
    """Serve the model over HTTP: API, web page at /ui, docs at /docs, metrics at /metrics."""
    from pydantic import ValidationError

    from catsdogs.serve.settings import Settings

    # Workers are fresh processes that build their own Settings: pass the options through the environment.
    overrides = {"HOST": host, "PORT": port, "WORKERS": workers, "BACKEND": backend}
    overrides["MODEL_PATH"] = _normalise_model(model) if model else None
    overrides["WAIT_FOR_MODEL"] = "true" if wait_for_model else None
    for key, value in overrides.items():
        if value is not None:
            os.environ[f"CATSDOGS_{key}"] = str(value)
    try:
        settings = Settings()
    except ValidationError as exc:
        errors = "; ".join(f"CATSDOGS_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
        _fail(f"invalid setting: {errors}")
    if not settings.wait_for_model:
        check_model_present(settings.model_path)
    check_port_free(settings.host, settings.port)
    setup_multiprocess_dir(settings.workers)

    import uvicorn

    from catsdogs.serve import supervisor
    from catsdogs.serve.logging import configure_logging, uvicorn_log_config

    configure_logging(settings.log_format, settings.log_level)
    config = uvicorn.Config(
        "catsdogs.serve.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="auto",  # uvloop when installed (uvicorn[standard])
        # httptools plus a header deadline, header size and count limits, and a drain that loses no request
        http="catsdogs.serve.drain:DrainingHttpToolsProtocol",
        timeout_keep_alive=settings.keepalive_timeout_s,  # type: ignore[arg-type]  # a float works
        access_log=False,  # replaced by our structured access log
        log_config=uvicorn_log_config(settings.log_format, settings.log_level),
        server_header=False,
        timeout_graceful_shutdown=settings.shutdown_timeout_s,  # type: ignore[arg-type]  # after the drain delay
    )
    supervisor.run(config)  # uvicorn.run, with the parent's copy of the listener closed at shutdown


def _collect(paths: list[Path]) -> list[Path | dict[str, Any]]:
    """In argument order: image files to classify, or an error row for an argument that gives none."""
    entries: list[Path | dict[str, Any]] = []
    for p in paths:
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                entries.append(_error_row(p, "no_images", f"no image files in this folder (looked for {_suffixes()})"))
            entries += found
        elif p.is_file():
            entries.append(p)
        else:
            entries.append(_error_row(p, "not_found", "no such file or folder"))
    return entries


def _suffixes() -> str:
    return ", ".join(sorted(IMAGE_SUFFIXES))


def _error_row(path: Path, code: str, message: str) -> dict[str, Any]:
    return {"file": str(path), "error": code, "message": message}


def _classify(predictor: Any, files: list[Path], batch_size: int) -> list[dict[str, Any]]:
    """One row per file, in order; an unreadable file gets an error row and the rest still run."""
    from catsdogs.inference.predictor import Prediction

    rows: list[dict[str, Any]] = []
    for i in range(0, len(files), batch_size):
        chunk = files[i : i + batch_size]
        payloads: dict[int, bytes] = {}
        unreadable: dict[int, dict[str, Any]] = {}
        for j, f in enumerate(chunk):
            try:
                payloads[j] = f.read_bytes()
            except OSError as exc:  # permissions, vanished since listing
                unreadable[j] = _error_row(f, "unreadable", exc.strerror or str(exc))
        results = dict(zip(payloads, predictor.predict_bytes(list(payloads.values())), strict=True))
        for j, f in enumerate(chunk):
            r = results.get(j)
            if r is None:
                rows.append(unreadable[j])
            elif isinstance(r, Prediction):
                row = {"file": str(f), "prediction": r.label, "confidence": r.confidence, **r.probabilities}
                row |= {"is_cat_or_dog": r.is_cat_or_dog, "pet_score": r.pet_score, "uncertain": r.uncertain}
                if r.looks_like:
                    row["looks_like"] = r.looks_like
                if r.reason:  # not a cat or a dog, or not sure
                    row["note"] = r.reason
                rows.append(row)
            else:
                rows.append(_error_row(f, r.reason, r.message))
    return rows


def _summary(rows: list[dict[str, Any]]) -> str:
    done = [r for r in rows if "error" not in r]
    pets = [r for r in done if r.get("is_cat_or_dog", True)]
    counts = {label: sum(r["prediction"] == label for r in pets) for label in sorted({r["prediction"] for r in pets})}
    if len(pets) < len(done):
        counts["not a cat or a dog"] = len(done) - len(pets)
    per_label = ", ".join(f"{n} {label}" for label, n in counts.items())
    failed = len(rows) - len(done)
    text = f"classified {len(done)} image{'s' if len(done) != 1 else ''}" + (f" ({per_label})" if per_label else "")
    return text + (f"; {failed} failed (see the error column)" if failed else "")


def predict(
    paths: Annotated[list[Path], typer.Argument(help="Image files and/or directories (searched recursively).")],
    output_format: Annotated[
        Literal["table", "csv", "json"], typer.Option("--format", "-f", help="table | csv | json.")
    ] = "table",
    model: ModelOpt = None,
    backend: BackendOpt = None,
    batch_size: Annotated[int, typer.Option(min=1, max=256, help="Images per model run.")] = 32,
    pet_threshold: Annotated[
        float | None,
        typer.Option(
            min=0.0, max=1.0, help="Pet score under which an image is 'not a cat or a dog' (default: the bundle's)."
        ),
    ] = None,
) -> None:
    """Classify images on this machine with the same Predictor as the API. Exit code 1 if any file failed.

    A missing or unreadable path is reported in its own row; the other images are still classified.
    A summary line goes to stderr, so csv/json on stdout stay clean.
    """
    from catsdogs.core.paths import MODELS_DIR
    from catsdogs.inference.predictor import ModelLoadError, Predictor

    entries = _collect(paths)
    files = [e for e in entries if isinstance(e, Path)]
    if not files:
        problems = "; ".join(f"{e['file']}: {e['message']}" for e in entries if isinstance(e, dict))
        typer.secho(
            f"error: nothing to classify ({problems}); pass image files or folders of them",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(2)
    try:
        predictor = Predictor.load(
            _normalise_model(model) if model else MODELS_DIR, backend=backend or "auto", pet_threshold=pet_threshold
        )
    except ModelLoadError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    classified = iter(_classify(predictor, files, batch_size))  # one row per file, in order
    rows = [next(classified) if isinstance(e, Path) else e for e in entries]
    classes = list(predictor.class_names)
    if output_format == "json":
        typer.echo(json.dumps(rows, indent=2))
    elif output_format == "csv":
        fields = ["file", "prediction", "confidence", *classes, "is_cat_or_dog", "pet_score", "looks_like", "uncertain"]
        fields += ["note"]
        fields += ["error", "message"]
        writer = csv.DictWriter(sys.stdout, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    else:
        _print_table(rows, classes, predictor.version, predictor.backend)
    failed = any("error" in r for r in rows)
    typer.secho(_summary(rows), err=True, fg=typer.colors.YELLOW if failed else None)
    if failed:
        raise typer.Exit(1)


def _print_table(rows: list[dict[str, Any]], classes: list[str], version: str, backend: str) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"catsdogs model {version} ({backend})")
    table.add_column("file", overflow="fold")
    table.add_column("prediction")
    table.add_column("confidence", justify="right")
    for c in classes:
        table.add_column(f"p({c})", justify="right")
    notes = any("error" in r or "note" in r for r in rows)
    if notes:
        table.add_column("note", overflow="fold")
    for r in rows:
        if "error" in r:
            cells = [escape(r["file"]), "[red]error[/red]", "", *([""] * len(classes))]
            cells.append(f"[red]{escape(r['error'])}[/red]: {escape(r['message'])}")
        else:
            label = r["prediction"]
            if not r.get("is_cat_or_dog", True):
                label = f"[yellow]not a pet?[/yellow] ({label})"
            cells = [escape(r["file"]), label, f"{r['confidence']:.3f}", *(f"{r[c]:.3f}" for c in classes)]
            if notes:
                cells.append(escape(r.get("note") or ""))
        table.add_row(*cells)
    Console().print(table)


def register(app: typer.Typer) -> None:
    """Attach the serving commands to the main CLI."""
    app.command("serve")(serve)
    app.command("predict")(predict)
