"""The ``catsdogs`` app: the command groups of ``catsdogs.cli`` in the order ``--help`` lists them."""

from __future__ import annotations

import typer
from typer.core import TyperCommand

from catsdogs.cli import data, release, train
from catsdogs.cli.common import SERVING_PANEL, TRAINING_PANEL, Command, Group
from catsdogs.cli.score import register as register_scoring
from catsdogs.serve.commands import register as register_serving

app = typer.Typer(
    name="catsdogs",
    help="Cats vs Dogs: data, training, evaluation, export, quality gate, serving.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=Group,
)
app.add_typer(data.app, name="data", rich_help_panel=TRAINING_PANEL)
for _command in (
    train.train,
    release.evaluate,
    release.tune_inference,
    release.export,
    release.validate,
    release.calibrate,
    release.distill,
    release.teacher,
    release.robustness,
    release.model_card,
):
    app.command(cls=Command, rich_help_panel=TRAINING_PANEL)(_command)

# `serve`, `predict` and `score` are registered by their own modules, and get the same quiet help.
register_serving(app)
register_scoring(app)  # `score`: Ray Data batch scoring (catsdogs.inference.score)
for _info in app.registered_commands:
    if _info.cls in (None, TyperCommand):
        _info.cls = Command
    _info.rich_help_panel = _info.rich_help_panel or SERVING_PANEL
