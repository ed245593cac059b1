"""``python -m catsdogs``: the same CLI as the ``catsdogs`` console script."""

from catsdogs.cli import app

if __name__ == "__main__":
    app()
