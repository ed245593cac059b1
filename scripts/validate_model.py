#!/usr/bin/env python3
"""Quality gate for CI: same as `catsdogs validate` (exit 1 with the reason on failure)."""

from catsdogs.cli import app

if __name__ == "__main__":
    app(["validate", *__import__("sys").argv[1:]])
