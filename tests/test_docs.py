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


def _run_blocks(page: str) -> None:
    blocks = _python_blocks(page)
    assert blocks
    for block in blocks:
        exec(compile(block, f"{page}-snippet", "exec"), {"__name__": "__snippet__"})


def test_quickstart_snippets_run(capsys: pytest.CaptureFixture[str]) -> None:
    """Every Python block of the quickstart runs as written and prints its span."""
    _run_blocks("quickstart.md")
    assert "\ncharge-card " in capsys.readouterr().err


def test_logs_snippets_run_and_print_what_the_page_shows(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The logs page's examples run, and their lines have the fields the page shows."""
    import json

    _run_blocks("logs.md")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    charged = next(line for line in lines if line["event"] == "card charged")
    retrying = next(line for line in lines if line["event"] == "retrying")
    assert charged["trace_id"] == retrying["trace_id"]
    assert charged["request_id"] == retrying["request_id"] == "r-42"
    assert {line.get("item") for line in lines if line["event"] == "processing"} == {1, 2}


def test_traced_snippet_runs_and_links_its_spans(capsys: pytest.CaptureFixture[str]) -> None:
    """The @traced page's example runs; its spans nest under the manual span."""
    _run_blocks("traced.md")
    tree = capsys.readouterr().err
    assert tree.count("trace ") == 1  # one trace, printed once as a tree
    for line in ("\ncheckout ", "\n  __snippet__.Cart.total ", "\n    __snippet__.price "):
        assert line in tree
    assert "\n  billing.charge " in tree


def test_metrics_snippet_runs_and_exposes_an_exemplar() -> None:
    """The metrics page's example runs and its histogram observation has an exemplar."""
    from tests.conftest import openmetrics

    _run_blocks("metrics.md")
    samples = openmetrics()["checkout_duration_seconds"].samples
    assert any(sample.exemplar is not None for sample in samples)


def test_flask_snippet_runs_and_instruments_the_app() -> None:
    """The Flask page's example builds an instrumented app that answers with a trace id."""
    namespace: dict[str, object] = {"__name__": "__snippet__"}
    (block,) = _python_blocks("flask.md")
    exec(compile(block, "flask.md-snippet", "exec"), namespace)
    app = namespace["app"]
    response = app.test_client().get("/post/3", buffered=True)  # type: ignore[attr-defined]
    assert response.get_json() == {"id": 3}
    assert response.headers["traceresponse"].startswith("00-")


def test_readme_quickstart_runs() -> None:
    """The README's quickstart builds an instrumented app whose traced call answers."""
    readme = (DOCS.parent / "README.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"```python\n(.*?)```", readme, re.S)
    namespace: dict[str, object] = {"__name__": "__readme__"}
    exec(compile(block, "README-quickstart", "exec"), namespace)
    app = namespace["app"]
    response = app.test_client().post("/orders/7/pay", buffered=True)  # type: ignore[attr-defined]
    assert response.get_json() == {"ok": True}
    assert "traceresponse" in response.headers
