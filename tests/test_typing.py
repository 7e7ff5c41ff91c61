"""obskit's public API keeps user code's types under `mypy --strict`."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_decorated_functions_keep_their_signatures_under_mypy_strict() -> None:
    """mypy --strict accepts tests/typing/check_api.py and rejects each marked misuse."""
    from mypy import api

    stdout, stderr, status = api.run(
        [
            "--strict",
            "--no-incremental",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            str(ROOT / "tests/typing/check_api.py"),
        ]
    )
    assert status == 0, stdout + stderr
