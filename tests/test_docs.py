"""The docs: the generated configuration page is current, the snippets run, every page
builds with content, the pictures are real, and user pages speak to users."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from obskit._config.reference_page import render

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


def test_quickstart_snippets_run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The quickstart's app runs as written and, with OTEL_TRACES_EXPORTER=console, a
    request prints its trace: the request's span with the traced call under it."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    namespace: dict[str, object] = {"__name__": "__snippet__"}
    (block,) = _python_blocks("quickstart.md")  # (gunicorn.conf.py is a titled block)
    exec(compile(block, "quickstart.md-snippet", "exec"), namespace)
    app = namespace["app"]
    response = app.test_client().post("/orders/42/pay", buffered=True)  # type: ignore[attr-defined]
    assert response.get_json() == {"ok": True}
    tree = capsys.readouterr().err
    assert "\nPOST /orders/<int:order_id>/pay " in tree
    assert "\n  __snippet__.charge " in tree


def test_quickstart_is_the_readmes() -> None:
    """The docs' quickstart app is the README's, and both install the Flask extra."""
    readme = (DOCS.parent / "README.md").read_text(encoding="utf-8")
    assert re.findall(r"```python\n(.*?)```", readme, re.S) == _python_blocks("quickstart.md")
    assert "pip install 'obskit-sdk[flask]'" in (DOCS / "quickstart.md").read_text()
    assert "OTEL_TRACES_EXPORTER=console flask --app app run" in readme


def test_index_snippet_runs() -> None:
    """The home page's ten lines build an app whose traced view answers."""
    namespace: dict[str, object] = {"__name__": "__snippet__"}
    (block,) = _python_blocks("index.md")
    exec(compile(block, "index.md-snippet", "exec"), namespace)
    app = namespace["app"]
    response = app.test_client().post("/orders/3/pay", buffered=True)  # type: ignore[attr-defined]
    assert response.get_json() == {"ok": True}
    assert len(block.strip().splitlines()) <= 14


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


# --- the site: pages, pictures, words --------------------------------------------------

PICTURES = DOCS / "pictures"


def _nav_pages() -> list[str]:
    """Every page mkdocs.yml's nav lists."""
    text = (DOCS.parent / "mkdocs.yml").read_text(encoding="utf-8")
    nav = text[text.index("\nnav:") :]
    return re.findall(r"^\s+- [^:]+: (\S+\.md)$", nav, re.M)


def _load_pictures_script() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_pictures", PICTURES / "make_pictures.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_nav_page_and_every_image_exists() -> None:
    """Every page the nav lists exists, and every image a page or the README shows is a
    file in the repository."""
    pages = _nav_pages()
    assert "quickstart.md" in pages
    assert "grafana.md" in pages
    for page in pages:
        assert (DOCS / page).is_file(), page
    for source in [*DOCS.glob("*.md"), DOCS.parent / "README.md"]:
        text = source.read_text(encoding="utf-8")
        for target in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text):
            assert (source.parent / target).is_file(), (source.name, target)


def test_the_pictures_are_svg_of_what_the_pages_say() -> None:
    """The checked-in pictures are SVG documents showing obskit's own output: the demo's
    waterfall, log lines and exemplars; the quickstart's log line, trace and access line;
    the flame graph of examples/report_job.py."""
    import xml.etree.ElementTree as ElementTree

    def words(name: str) -> str:
        root = ElementTree.parse(PICTURES / name).getroot()
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
        return " ".join(
            "".join(text.itertext()).replace("\u00a0", " ")
            for text in root.iter("{http://www.w3.org/2000/svg}text")
        )

    demo = words("demo.svg")
    for shown in (
        "1. Its trace",
        "POST /orders/<int:order_id>/pay",
        "2. Its log lines",
        "3. Its latency on /metrics",
        "4. The failing request",
    ):
        assert shown in demo, shown
    # (a frame's label is cut to its width; its tooltip, a <title>, names it whole)
    flames = "".join(ElementTree.parse(PICTURES / "flamegraph.svg").getroot().itertext())
    for shown in ("load_rows", "parse_rows", "render_report", "main"):
        assert shown in flames, shown
    quickstart = words("quickstart.svg")
    for shown in (
        "card charged",
        "POST /orders/<int:order_id>/pay",
        "app.charge",
        "POST /orders/42/pay 200",
    ):
        assert shown in quickstart, shown


def test_terminal_text_becomes_svg_with_its_colours_and_columns() -> None:
    """The picture script draws each run of one style at its column, with its colour
    and weight, spaces kept, and cuts lines at the width."""
    script = _load_pictures_script()
    svg = script.ansi_to_svg("ab \x1b[1;31mred\x1b[0m  c\n" + "x" * 30, "t", columns=20)
    assert '<tspan x="14.0">ab\u00a0</tspan>' in svg
    assert '<tspan x="37.4" fill="#f47067" font-weight="bold">red</tspan>' in svg
    assert "x" * 19 + "…" in svg
    import xml.etree.ElementTree as ElementTree

    ElementTree.fromstring(svg)


@pytest.mark.slow
def test_the_pictures_script_makes_them_from_real_runs(tmp_path: Path) -> None:
    """`python docs/pictures/make_pictures.py OUTDIR` runs the demo and the quickstart
    on a terminal and writes their pictures, and the flame graph of a profiled job."""
    result = subprocess.run(
        [sys.executable, str(PICTURES / "make_pictures.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for name in ("demo.svg", "quickstart.svg"):
        text = (tmp_path / name).read_text(encoding="utf-8")
        assert text.startswith("<svg ")
        assert "trace\u00a0" in text
    assert "render_report" in (tmp_path / "flamegraph.svg").read_text(encoding="utf-8")


def test_grafana_page_describes_every_panel() -> None:
    """docs/grafana.md links the dashboard file and names each of its panels."""
    import json

    page = (DOCS / "grafana.md").read_text(encoding="utf-8")
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text(encoding="utf-8"))
    assert "](grafana-dashboard.json)" in page
    for panel in dashboard["panels"]:
        assert f"| {panel['title']} |" in page, panel["title"]


def test_user_pages_carry_no_work_history() -> None:
    """No issue numbers, commit ids or notes about the project's own work on the pages
    users read (the changelog and the architecture page are for that)."""
    internal = re.compile(
        r"\(#\d+\)|\btarget #\d+|\bissue #?\d+|\b(?:last|this|earlier|previous)(?: \w+)?"
        r" sessions?\b|\b(?:at|after|up to) [0-9a-f]{7}\b|will be re-measured|provisional"
    )
    pages = [
        DOCS / page for page in _nav_pages() if page not in ("changelog.md", "architecture.md")
    ]
    for source in [*pages, DOCS.parent / "README.md"]:
        found = internal.findall(source.read_text(encoding="utf-8"))
        assert not found, (source.name, found)


@pytest.mark.slow
def test_the_site_builds_and_every_page_has_content(tmp_path: Path) -> None:
    """`mkdocs build --strict` passes; every nav page is rendered with its text, and
    every image a rendered page shows is in the site."""
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=DOCS.parent,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for page in _nav_pages():
        built = site / ("index.html" if page == "index.md" else page[:-3] + "/index.html")
        html = built.read_text(encoding="utf-8")
        article = html[html.index("<article") : html.index("</article>")]
        text = re.sub(r"<[^>]+>", " ", article)
        assert len(text.split()) > 30, page
        for source in re.findall(r'<img [^>]*src="([^"]+)"', article):
            assert (built.parent / source).resolve().is_file(), (page, source)
