"""The docs: the generated configuration page is current, and the snippets run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from obskit._config.reference_page import render
from tests.servers import run_python

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_configuration_page_is_generated_from_the_settings_table() -> None:
    """docs/configuration.md equals what the settings table renders (regenerate if not)."""
    page = (DOCS / "configuration.md").read_text(encoding="utf-8")
    assert page == render(), "run: python -m obskit._config.reference_page docs/configuration.md"


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


def test_testing_page_snippets_run() -> None:
    """The testing page's fixture example passes against a matching app, and the
    capture() example runs as written."""
    from flask import Flask

    import obskit
    from obskit.testing import capture

    fixture_example, capture_example = _python_blocks("testing.md")
    namespace: dict[str, object] = {}
    exec(compile(fixture_example, "testing.md-fixture", "exec"), namespace)

    @obskit.traced(name="shop.payments.charge")
    def charge() -> None:
        pass

    app = Flask("shop")

    @app.post("/orders/<int:order_id>/pay")
    def pay(order_id: int) -> dict[str, int]:
        charge()
        return {"paid": order_id}

    obskit.instrument_flask(app)

    class BufferedClient:
        def post(self, path: str) -> object:
            return app.test_client().post(path, buffered=True)

    with capture() as telemetry:
        namespace["test_checkout_is_observable"](BufferedClient(), telemetry)  # type: ignore[operator]
    exec(compile(capture_example, "testing.md-capture", "exec"), {"__name__": "__snippet__"})


def test_grafana_dashboard_queries_only_metrics_obskit_exports() -> None:
    """Every metric selector in docs/grafana-dashboard.json is a sample obskit exposes."""
    import json

    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text(encoding="utf-8"))
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(expressions) >= 8
    used = {name for expr in expressions for name in re.findall(r"([a-z_][a-z0-9_]*)\{", expr)}
    # A process that exercises HTTP, @traced, the database layer and the exporter.
    script = """
import obskit, sys
from opentelemetry import trace
from obskit.testing import capture
from examples.flask_app import create_app
from obskit._lifecycle import self_stats as _self_stats
app = create_app()
with capture() as telemetry:
    app.test_client().get("/post/1", buffered=True)
    _self_stats.add("obskit_dropped", signal="traces", reason="queue_full")
    _self_stats.add("obskit_export_errors", signal="traces", reason="failure")
    _self_stats.add("obskit_internal_errors", component="demo")
    from obskit.integrations.django.db import _histogram  # what Django's queries feed
    _histogram().labels("sqlite", "SELECT").observe(0.01)
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse
    families = parse(telemetry.metrics.text())
    names = {sample.name for family in families for sample in family.samples}
print(" ".join(sorted(names)))
"""
    result = run_python(script, check=True)
    exposed = set(result.stdout.split())
    assert used <= exposed, used - exposed
