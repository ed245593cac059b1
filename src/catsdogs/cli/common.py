"""What every command shares: the quiet help text, params loading, one-line errors, the training-stack check.

Heavy imports (torch, mlflow) happen inside the commands so ``--help`` stays fast
and the serving image, which has no training stack, can still run ``serve``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

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


class Command(_QuietHelp, TyperCommand):
    pass


class Group(_QuietHelp, TyperGroup):
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


def from_params(key: str) -> dict[str, Any]:
    return {"show_default": f"params.yaml {key}"}


ParamsOpt = Annotated[Path | None, typer.Option("--params", help="params.yaml to read (default: the project's).")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging and full tracebacks.")]


def setup_logging(verbose: bool = False) -> None:
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


def fail(message: str, code: int = 2) -> NoReturn:
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
        fail(f"{FULL_ENV_HINT} (`catsdogs {command}` needs {', '.join(missing)}, which this venv lacks)")


def missing_training_module(exc: ImportError) -> str | None:
    """The training-stack package an ImportError is about, or None when it is something else (a bug)."""
    name = (getattr(exc, "name", None) or "").split(".")[0]
    return name if name in TRAINING_STACK else None


@contextmanager
def user_errors(command: str, verbose: bool = False) -> Iterator[None]:
    """Turn the set-up mistakes a new user makes into one line with the fix; bugs keep their traceback."""
    from pydantic import ValidationError

    try:
        yield
    except ImportError as exc:
        missing = missing_training_module(exc)
        if missing is None or verbose:
            raise
        fail(f"{FULL_ENV_HINT} (`catsdogs {command}` needs {missing!r}, which this venv lacks)")
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors())
        fail(f"invalid setting ({problems}); fix params.yaml or the flag")
    except FileNotFoundError as exc:
        if verbose:
            raise
        fail(f"{exc}; add -v for the full traceback" if "catsdogs" not in str(exc) else str(exc))


def read_params(params: Path | None, overrides: dict[str, Any] | None = None) -> Any:
    """Validated params; a --params file that does not exist is a mistake, not a request for the defaults."""
    from catsdogs.core.config import load_params

    if params is not None and not params.is_file():
        fail(f"--params {params} does not exist; omit it to use the project's params.yaml")
    return load_params(params, overrides)


def require_source(src: Path, flag: str) -> None:
    if not src.is_dir():
        fail(f"data folder {src} does not exist ({flag}); {DATA_HINT}")


def require_checkpoint(checkpoint: Path | None, p: Any) -> Path:
    path = checkpoint.resolve() if checkpoint else p.path(p.train.output_dir) / "best.pt"
    if not path.is_file():
        fail(f"no checkpoint at {path}: train one first with `catsdogs train`, or pass --checkpoint FILE")
    return path
