"""CLI commands of the serving layer: `serve` and `predict` (placeholder until implemented)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Attach the serving commands to the main CLI."""
