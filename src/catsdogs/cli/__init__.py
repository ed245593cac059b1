"""The ``catsdogs`` command line: one module per command group, assembled in ``catsdogs.cli.main``."""

from catsdogs.cli.main import app

__all__ = ["app"]
