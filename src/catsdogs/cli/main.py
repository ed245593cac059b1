"""The ``catsdogs`` command line. Each command only wires a stage module together.

Heavy imports (torch, mlflow) happen inside the commands so ``--help`` stays fast
and the serving image, which has no training stack, can still run ``serve``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

TRAINING_PANEL = "Data and training (full environment: make init)"
SERVING_PANEL = "Serving (works in the serving-only venv of make run)"
# Packages of the `train` extra: missing in the serving-only venv that `make run` creates.
TRAINING_STACK = frozenset({"torch", "tqdm", "mlflow", "sklearn", "matplotlib", "onnx", "onnxscript", "dvc", "kaggle"})
FULL_ENV_HINT = "training needs the full environment: run `make init`"
DATA_HINT = (
    "get the Kaggle images with `catsdogs data download` and set data.source in params.yaml to "
    "data/raw/dogs-vs-cats/train, or point --data-dir/--source at your own cat/dog folder"
)
# Metavars for the help text: typer's default `<int>`/`<bool>` labels are noise.
_METAVARS = {"<int>": "N", "<int range>": "N", "<float>": "X", "<str>": "TEXT", "<path>": "PATH"}


class _QuietHelp:
    """Quiet help: flags show no type, values a short metavar, and options read from params.yaml their value."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if param.metavar is not None or param.param_type_name != "option":
                continue
            if param.is_flag:
                param.metavar = ""
            else:
                label = param.display_type(ctx)
                bare = label.strip("<>")
                param.metavar = _METAVARS.get(label, bare if "|" in bare else bare.upper())
        return params

    def format_help(self, ctx: Any, formatter: Any) -> None:
        for param in self.get_params(ctx):
            shown = getattr(param, "show_default", None)
            if isinstance(shown, str) and shown.startswith("params.yaml "):
                param.show_default = False
                param.help = f"{param.help} ({_params_default(shown.removeprefix('params.yaml '))})"
        super().format_help(ctx, formatter)  # type: ignore[misc]


class _Command(_QuietHelp, TyperCommand):
    pass


class _Group(_QuietHelp, TyperGroup):
    pass


def _params_default(dotted: str) -> str:
    """`default: 30, from params.yaml train.epochs`: what the command uses when the flag is not given."""
    try:
        from catsdogs.core.config import load_params

        node: Any = load_params()
        for key in dotted.split("."):
            node = getattr(node, key)
    except Exception:  # a broken params.yaml must not break --help; the command itself reports it
        return f"default: params.yaml {dotted}"
    return f"default: {'none' if node is None else node}, from params.yaml {dotted}"


def _from_params(key: str) -> dict[str, Any]:
    return {"show_default": f"params.yaml {key}"}


app = typer.Typer(
    name="catsdogs",
    help="Cats vs Dogs: data, training, evaluation, export, quality gate, serving.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=_Group,
)
data_app = typer.Typer(help="Download and prepare the raw images.", no_args_is_help=True, cls=_Group)
app.add_typer(data_app, name="data", rich_help_panel=TRAINING_PANEL)
train_command = app.command(cls=_Command, rich_help_panel=TRAINING_PANEL)

ParamsOpt = Annotated[Path | None, typer.Option("--params", help="params.yaml to read (default: the project's).")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging and full tracebacks.")]


def _setup_logging(verbose: bool = False) -> None:
    from rich.console import Console
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        datefmt="[%X]",
        # stderr: stdout carries the JSON/CSV results that scripts parse
        handlers=[RichHandler(console=Console(stderr=True), show_path=False, rich_tracebacks=False)],
        force=True,
    )
    for noisy in ("alembic", "urllib3", "git", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _fail(message: str, code: int = 2) -> None:
    """One line on stderr and exit (2: a usage or set-up mistake the message says how to fix)."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def require_training_stack(command: str, modules: tuple[str, ...] = ("torch", "tqdm", "mlflow")) -> None:
    """Fail first, in one line, when this venv is the serving-only one (`make run`): nothing else matters then."""
    import importlib.util

    def absent(module: str) -> bool:
        try:
            return importlib.util.find_spec(module) is None
        except ImportError:  # a broken install, or an import hook refusing it: not usable either
            return True

    if missing := [m for m in modules if absent(m)]:
        _fail(f"{FULL_ENV_HINT} (`catsdogs {command}` needs {', '.join(missing)}, which this venv lacks)")


def missing_training_module(exc: ImportError) -> str | None:
    """The training-stack package an ImportError is about, or None when it is something else (a bug)."""
    name = (getattr(exc, "name", None) or "").split(".")[0]
    return name if name in TRAINING_STACK else None


@contextmanager
def _user_errors(command: str, verbose: bool = False) -> Iterator[None]:
    """Turn the set-up mistakes a new user makes into one line with the fix; bugs keep their traceback."""
    from pydantic import ValidationError

    try:
        yield
    except ImportError as exc:
        missing = missing_training_module(exc)
        if missing is None or verbose:
            raise
        _fail(f"{FULL_ENV_HINT} (`catsdogs {command}` needs {missing!r}, which this venv lacks)")
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors())
        _fail(f"invalid setting ({problems}); fix params.yaml or the flag")
    except FileNotFoundError as exc:
        if verbose:
            raise
        _fail(f"{exc}; add -v for the full traceback" if "catsdogs" not in str(exc) else str(exc))


def _load(params: Path | None, overrides: dict[str, Any] | None = None) -> Any:
    """Validated params; a --params file that does not exist is a mistake, not a request for the defaults."""
    from catsdogs.core.config import load_params

    if params is not None and not params.is_file():
        _fail(f"--params {params} does not exist; omit it to use the project's params.yaml")
    return load_params(params, overrides)


def _require_source(src: Path, flag: str) -> None:
    if not src.is_dir():
        _fail(f"data folder {src} does not exist ({flag}); {DATA_HINT}")


def _require_checkpoint(checkpoint: Path | None, p: Any) -> Path:
    path = checkpoint.resolve() if checkpoint else p.path(p.train.output_dir) / "best.pt"
    if not path.is_file():
        _fail(f"no checkpoint at {path}: train one first with `catsdogs train`, or pass --checkpoint FILE")
    return path


def _check_model_name(name: str) -> None:
    """Before any data is decoded: a typo must not cost a prepare + cache run."""
    from catsdogs.models.architectures import MODELS  # imports torch: the ImportError path covers the serving venv

    if name not in MODELS:
        _fail(f"unknown model {name!r}; choose one of: {', '.join(sorted(MODELS))} (--model or model.name)")


@data_app.command("download", cls=_Command)
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
    _setup_logging(verbose)
    with _user_errors("data download", verbose):
        try:
            paths = download(dest or DATA_DIR / "raw", source)
        except DownloadError as exc:
            _fail(str(exc))
    for p in paths:
        typer.echo(f"downloaded to {p}")
    # Join up with prepare/train, which read data.source in params.yaml (the one definition DVC tracks).
    for train_dir in (p / "train" for p in paths if (p / "train").is_dir()):
        shown = train_dir.relative_to(PROJECT_ROOT) if train_dir.is_relative_to(PROJECT_ROOT) else train_dir
        typer.echo(f"next: set data.source: {shown} in params.yaml, then `dvc repro` (or catsdogs data prepare, train)")


@data_app.command("prepare", cls=_Command)
def data_prepare(
    source: Annotated[
        Path | None,
        typer.Option(help="Raw image folder (Kaggle flat or Cat/ Dog/ layout).", **_from_params("data.source")),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Output folder for manifest.csv and stats.json.", **_from_params("data.prepared_dir")),
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Use a class-balanced subset of N images.")] = None,
    params: ParamsOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Validate, de-duplicate and split the raw images into a manifest (raw data is never modified)."""
    import json
    from dataclasses import asdict

    _setup_logging(verbose)
    require_training_stack("data prepare", ("tqdm",))
    with _user_errors("data prepare", verbose):
        p = _load(params, {"data.limit": limit})
        src = source.resolve() if source else p.path(p.data.source)
        _require_source(src, "--source or data.source")
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


@train_command
def train(
    epochs: Annotated[int | None, typer.Option(help="Number of epochs.", **_from_params("train.epochs"))] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size.", **_from_params("train.batch_size"))] = None,
    lr: Annotated[
        float | None, typer.Option(help="Peak learning rate (AdamW, one-cycle cosine).", **_from_params("train.lr"))
    ] = None,
    image_size: Annotated[
        int | None, typer.Option(help="Input size in pixels (square).", **_from_params("model.image_size"))
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="Architecture: efficientnet_lite0 | resnet_small | simple_cnn.", **_from_params("model.name")
        ),
    ] = None,
    recipe: Annotated[
        str | None,
        typer.Option(help="full | cached_features (frozen pretrained lower part).", **_from_params("train.recipe")),
    ] = None,
    dropout: Annotated[
        float | None, typer.Option(help="Dropout before the classifier.", **_from_params("model.dropout"))
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Raw image folder; prepares a manifest for it first.", **_from_params("data.source")),
    ] = None,
    limit: Annotated[
        int | None, typer.Option(help="Train on a class-balanced subset of N images.", **_from_params("data.limit"))
    ] = None,
    output_dir: Annotated[
        Path | None, typer.Option(help="Where checkpoints and run outputs go.", **_from_params("train.output_dir"))
    ] = None,
    bf16: Annotated[str | None, typer.Option(help="auto | on | off.", **_from_params("train.bf16"))] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda.", **_from_params("train.device"))] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint in output_dir.")] = False,
    register: Annotated[
        bool, typer.Option(help="Register the model in the MLflow registry (alias challenger).")
    ] = True,
    params: ParamsOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Train a model, tracked in MLflow, registered as `catsdogs` with alias `challenger`.

    Every option left out takes its value from params.yaml (shown as the default).
    """
    require_training_stack("train")
    with _user_errors("train", verbose):
        p = _load(
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
        _require_source(p.path(p.data.source), "--data-dir or data.source")
        _check_model_name(p.model.name)
        from catsdogs.training.runtime import reexec_with_malloc_tunables
        from catsdogs.training.train import run_training

        reexec_with_malloc_tunables()
        _setup_logging(verbose)
        result = run_training(p, resume=resume, register=register)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for the job
        typer.echo(
            f"best val_accuracy={result.best_val_accuracy:.4f} (epoch {result.best_epoch}); "
            f"checkpoint {result.checkpoint}; mlflow run {result.run_id}"
        )


@train_command
def evaluate(
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint (default: best.pt of the training run).")] = None,
    output: Annotated[Path | None, typer.Option(help="Metrics JSON (default: reports/metrics.json).")] = None,
    params: ParamsOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Test-split accuracy, precision, recall, F1, ROC-AUC, confusion matrix and plots."""
    import json

    require_training_stack("evaluate")
    with _user_errors("evaluate", verbose):
        p = _load(params)
        ckpt = _require_checkpoint(checkpoint, p)
        _require_source(p.path(p.data.source), "data.source in params.yaml")
        from catsdogs.release.evaluate import run_evaluation
        from catsdogs.training.runtime import reexec_with_malloc_tunables

        reexec_with_malloc_tunables()
        _setup_logging(verbose)
        metrics = run_evaluation(p, checkpoint=ckpt, output=output)
    typer.echo(json.dumps(metrics, indent=2))


def _parse_sweep(sizes: str, tta: str) -> tuple[list[int], list[str]]:
    try:
        size_list = [int(s) for s in sizes.split(",") if s.strip()]
    except ValueError:
        _fail(f"--sizes must be comma-separated integers, got {sizes!r}")
    if not size_list or any(not 32 <= n <= 1024 for n in size_list):
        _fail(f"--sizes must list sizes between 32 and 1024 pixels, got {sizes!r}")
    tta_list = [t.strip() for t in tta.split(",") if t.strip()]
    if bad := [t for t in tta_list if t not in ("none", "flip")]:
        _fail(f"unknown --tta value(s) {bad}; choose none and/or flip")
    return size_list, tta_list


@app.command("tune-inference", cls=_Command, rich_help_panel=TRAINING_PANEL)
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
    with _user_errors("tune-inference", verbose):
        p = _load(params)
        ckpt = _require_checkpoint(checkpoint, p)
        _require_source(p.path(p.data.source), "data.source in params.yaml")
        from catsdogs.release.evaluate import best_setting, recommend, sweep_inference
        from catsdogs.training.runtime import reexec_with_malloc_tunables

        reexec_with_malloc_tunables()
        _setup_logging(verbose)
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


@train_command
def export(
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint (default: best.pt of the training run).")] = None,
    output_dir: Annotated[
        Path | None,
        typer.Option(
            help="Bundle folder. The default replaces the shipped model.", **_from_params("export.output_dir")
        ),
    ] = None,
    quantize: Annotated[
        bool | None, typer.Option(help="Also build a static INT8 model.", **_from_params("export.quantize"))
    ] = None,
    params: ParamsOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Export to ONNX (+ INT8 if it keeps accuracy) with a parity check against PyTorch."""
    import json

    require_training_stack("export")
    with _user_errors("export", verbose):
        p = _load(params, {"export.quantize": quantize})
        ckpt = _require_checkpoint(checkpoint, p)
        _require_source(p.path(p.data.source), "data.source in params.yaml")
        from catsdogs.release.export import run_export
        from catsdogs.training.runtime import reexec_with_malloc_tunables

        reexec_with_malloc_tunables()
        _setup_logging(verbose)
        report = run_export(p, checkpoint=ckpt, output_dir=output_dir)
    typer.echo(json.dumps(report, indent=2))


@train_command
def validate(
    model_dir: Annotated[Path | None, typer.Option(help="Bundle to gate (default: models/).")] = None,
    promote: Annotated[bool, typer.Option(help="On success, set the registry alias `champion`.")] = True,
    params: ParamsOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Quality gate: accuracy threshold, ONNX parity and latency budget; exit 1 with the reason on failure."""
    _setup_logging(verbose)
    require_training_stack("validate")
    with _user_errors("validate", verbose):
        p = _load(params)
        _require_source(p.path(p.data.source), "data.source in params.yaml")
        from catsdogs.release.validate import run_gate

        result = run_gate(p, model_dir=model_dir, promote=promote)
    for check in result.checks:
        mark = "PASS" if check.passed else "FAIL"
        typer.echo(f"[{mark}] {check.name}: {check.detail}")
    if not result.passed:
        _fail("quality gate failed: " + "; ".join(c.detail for c in result.checks if not c.passed), code=1)
    typer.echo("quality gate passed" + (f"; alias champion -> version {result.promoted}" if result.promoted else ""))


@train_command
def calibrate(
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint (default: best.pt of the training run).")] = None,
    params: ParamsOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Fit on val: the temperature, the not-a-cat-or-dog threshold and the not-sure threshold."""
    import json
    from dataclasses import asdict

    require_training_stack("calibrate")
    with _user_errors("calibrate", verbose):
        p = _load(params)
        ckpt = _require_checkpoint(checkpoint, p)
        _require_source(p.path(p.data.source), "data.source in params.yaml")
        from catsdogs.release.calibrate import run_calibration
        from catsdogs.training.runtime import reexec_with_malloc_tunables

        reexec_with_malloc_tunables()
        _setup_logging(verbose)
        cal = run_calibration(p, checkpoint=ckpt)
    typer.echo(json.dumps(asdict(cal), indent=2))


@train_command
def distill(
    params: ParamsOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Distil the trained model into a faster student (params.yaml `distill`) and compare the two."""
    import json

    require_training_stack("distill")
    with _user_errors("distill", verbose):
        p = _load(params)
        _require_checkpoint(None, p)
        _require_source(p.path(p.data.source), "data.source in params.yaml")
        from catsdogs.release.distill import run_distill
        from catsdogs.training.runtime import reexec_with_malloc_tunables

        reexec_with_malloc_tunables()
        _setup_logging(verbose)
        report = run_distill(p)
    typer.echo(json.dumps({k: report["student"][k] for k in ("test_accuracy", "latency_ms")}, indent=2))


@train_command
def robustness(
    model_dir: Annotated[Path | None, typer.Option(help="Bundle to test (default: models/).")] = None,
    output: Annotated[Path | None, typer.Option(help="Results JSON (default: reports/robustness.json).")] = None,
    params: ParamsOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Test-split accuracy of a bundle under corruptions (JPEG q20, blur, low light, grayscale, rotation, crop)."""
    import json

    _setup_logging(verbose)
    with _user_errors("robustness", verbose):
        p = _load(params)
        _require_source(p.path(p.data.source), "data.source in params.yaml")
        from catsdogs.inference.predictor import ModelLoadError
        from catsdogs.release.robustness import run_robustness

        try:
            result = run_robustness(p, model_dir=model_dir, output=output)
        except ModelLoadError as exc:
            _fail(str(exc))
    typer.echo(json.dumps(result, indent=2))


@train_command
def model_card(
    model_dir: Annotated[Path | None, typer.Option(help="Bundle (default: models/).")] = None,
    params: ParamsOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Write MODEL_CARD.md into the bundle from its model.json and the pipeline's reports."""
    with _user_errors("model-card", verbose):
        p = _load(params)
        from catsdogs.release.card import write_model_card

        path = write_model_card(p, model_dir or p.path(p.export.output_dir))
    typer.echo(f"wrote {path}")


# --- serving commands (catsdogs.serve) ----------------------------------------------
# `serve` and `predict` are registered here by the serving layer.
from catsdogs.serve.commands import register as _register_serving  # noqa: E402

_register_serving(app)
for _info in app.registered_commands:  # the serving commands get the same quiet help
    if _info.cls in (None, TyperCommand):
        _info.cls = _Command
    _info.rich_help_panel = _info.rich_help_panel or SERVING_PANEL
