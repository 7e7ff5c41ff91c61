"""The docs: the generated configuration page is current, and the snippets run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from obskit._reference import render

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_configuration_page_is_generated_from_the_settings_table() -> None:
    """docs/configuration.md equals what the settings table renders (regenerate if not)."""
    page = (DOCS / "configuration.md").read_text(encoding="utf-8")
    assert page == render(), "run: python -m obskit._reference docs/configuration.md"


def _python_blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(encoding="utf-8"), re.S)


@pytest.mark.parametrize("page", ["quickstart.md"])
def test_python_snippets_run(page: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Every Python block of the page runs as written."""
    blocks = _python_blocks(page)
    assert blocks
    for block in blocks:
        exec(compile(block, f"{page}-snippet", "exec"), {"__name__": "__snippet__"})
    assert '"span": "charge-card"' in capsys.readouterr().err
