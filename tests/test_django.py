"""Django integration in-process: Django's Client and AsyncClient against tests/djangoproj."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tests.conftest import openmetrics
from tests.django_setup import setup_django

setup_django()

from django.db import connection  # noqa: E402
from django.test import AsyncClient, Client, override_settings  # noqa: E402

import obskit  # noqa: E402
from obskit.integrations.django.apps import ObskitConfig  # noqa: E402
from obskit.integrations.django.db import sanitize  # noqa: E402
from tests.djangoproj.catalog.models import Author, Book  # noqa: E402

DURATION = "http_server_request_duration_seconds"


class Harness:
    def __init__(self, exporter: InMemorySpanExporter, capsys: Any) -> None:
        self.exporter = exporter
        self.client = Client(raise_request_exception=False)
        self._capsys = capsys

    def spans(self, kind: SpanKind | None = None) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if kind is None or s.kind is kind]

    def server_span(self) -> ReadableSpan:
        (span,) = self.spans(SpanKind.SERVER)
        return span

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self._capsys.readouterr().out.splitlines()]


@pytest.fixture
def harness(
    spans: Callable[..., InMemorySpanExporter], capsys: pytest.CaptureFixture[str]
) -> Callable[..., Harness]:
    def make(**settings: Any) -> Harness:
        exporter = spans(**{"service_name": "django-example", **settings})
        capsys.readouterr()
        return Harness(exporter, capsys)

    return make


@pytest.fixture(autouse=True)
def _books() -> None:
    from tests.djangoproj.reviews.models import Review

    Review.objects.all().delete()
    Book.objects.all().delete()
    Author.objects.all().delete()
    herbert = Author.objects.create(name="Herbert")
    Book.objects.create(title="Dune", author=herbert, year=1965)


def _hex(span: ReadableSpan) -> str:
    assert span.context is not None
    return format(span.context.trace_id, "032x")


def test_function_view_span_db_children_and_logs(harness: Callable[..., Harness]) -> None:
    """GET catalog/: SERVER span named by the route, a traced child, SQL child spans with
    db.* attributes, log lines and the access line with the request's ids."""
    h = harness()
    response = h.client.get("/catalog/?page=2", HTTP_USER_AGENT="pytest-agent")
    assert response.status_code == 200
    assert b"Dune (Herbert, 1965)" in response.content
    server = h.server_span()
    assert server.name == "GET catalog/"
    attributes = dict(server.attributes or {})
    assert attributes["http.route"] == "catalog/"
    assert attributes["url.path"] == "/catalog/"
    assert attributes["url.query"] == "page=[REDACTED]"
    assert attributes["http.response.status_code"] == 200
    assert attributes["user_agent.original"] == "pytest-agent"
    assert attributes["server.address"] == "testserver"
    # ServerRequest takes these by position: each in its own attribute.
    assert attributes["url.scheme"] == "http"
    assert attributes["server.port"] == 80
    assert attributes["network.protocol.version"] == "1.1"
    assert "client.address" not in attributes  # only with capture_pii
    shelf = next(s for s in h.spans() if s.name.endswith(".shelf"))
    assert shelf.parent is not None
    assert server.context is not None
    assert shelf.parent.span_id == server.context.span_id
    (query,) = h.spans(SpanKind.CLIENT)
    assert query.parent is not None
    assert query.parent.span_id == shelf.context.span_id  # type: ignore[union-attr]
    assert query.name == "SELECT catalog_book"
    db = dict(query.attributes or {})
    assert db["db.system.name"] == "sqlite"
    assert db["db.operation.name"] == "SELECT"
    assert db["db.collection.name"] == "catalog_book"
    assert "db.namespace" in db
    assert str(db["db.query.text"]).startswith("SELECT")
    lines = h.lines()
    assert [line["event"] for line in lines] == ["listing books", "GET /catalog/ 200"]
    assert {line["trace_id"] for line in lines} == {_hex(server)}
    assert lines[-1]["http.route"] == "catalog/"
    assert response.headers["traceresponse"].split("-")[1] == _hex(server)


def test_second_apps_routes_and_queries_are_traced(harness: Callable[..., Harness]) -> None:
    """The reviews app (another include()): nested route template, INSERT span, logs."""
    h = harness()
    pk = Book.objects.get().pk
    assert h.client.post(f"/reviews/{pk}/new", {"stars": 4}).status_code == 201
    server = h.server_span()
    assert server.name == "POST reviews/<int:book_id>/new"
    operations = {(s.attributes or {})["db.operation.name"] for s in h.spans(SpanKind.CLIENT)}
    assert {"SELECT", "INSERT"} <= operations
    review_line = next(line for line in h.lines() if line["event"] == "review added")
    assert review_line["trace_id"] == _hex(server)


def test_class_based_view_route_includes_the_include_prefix(
    harness: Callable[..., Harness],
) -> None:
    """A DetailView under include("catalog/") is named catalog/book/<int:pk>."""
    h = harness()
    pk = Book.objects.get().pk
    assert h.client.get(f"/catalog/book/{pk}").status_code == 200
    assert h.server_span().name == "GET catalog/book/<int:pk>"
    samples = openmetrics()[DURATION].samples
    routes = {s.labels["http_route"] for s in samples if s.name.endswith("_count")}
    assert routes == {"catalog/book/<int:pk>"}
    exemplars = [s.exemplar for s in samples if s.exemplar is not None]
    assert {e.labels["trace_id"] for e in exemplars} == {_hex(h.server_span())}
    db = {
        (s.labels["db_system_name"], s.labels["db_operation_name"])
        for s in openmetrics()["db_client_operation_duration_seconds"].samples
    }
    assert ("sqlite", "SELECT") in db


def test_async_view_runs_on_the_event_loop_through_the_async_middleware(
    harness: Callable[..., Harness],
) -> None:
    """AsyncClient: the middleware's async path keeps the async view on the loop's thread;
    its span, DB span and log line share the request's trace."""
    h = harness()

    async def call() -> Any:
        return await AsyncClient().get("/catalog/async/ping")

    response = asyncio.run(call())
    assert response.status_code == 200
    assert response.json() == {
        "thread": threading.current_thread().name,
        "loop": True,
        "books": 1,
    }
    server = h.server_span()
    assert server.name == "GET catalog/async/ping"
    lines = h.lines()
    assert [line["event"] for line in lines] == ["async ping", "GET /catalog/async/ping 200"]
    assert {line["trace_id"] for line in lines} == {_hex(server)}


def test_view_exception_is_recorded_and_djangos_500_unchanged(
    harness: Callable[..., Harness],
) -> None:
    """A raising view: Django's 500 page, span ERROR with the exception, and Django's
    own error log line carrying the trace id through obskit's pipeline."""
    with override_settings(MIDDLEWARE=["django.middleware.common.CommonMiddleware"]):
        expected = Client(raise_request_exception=False).get("/catalog/boom")
    h = harness()
    response = h.client.get("/catalog/boom")
    assert response.status_code == 500
    assert response.content == expected.content
    span = h.server_span()
    assert span.name == "GET catalog/boom"
    assert span.status.status_code is StatusCode.ERROR
    assert span.events[0].attributes is not None
    assert span.events[0].attributes["exception.type"] == "RuntimeError"
    django_line = next(line for line in h.lines() if line["logger"] == "django.request")
    assert django_line["trace_id"] == _hex(span)
    assert django_line["exception.type"] == "RuntimeError"
    assert django_line["request"] == "GET /catalog/boom"


def test_returned_503_is_error_and_unmatched_404_collapses(
    harness: Callable[..., Harness],
) -> None:
    """503 → ERROR; unknown URLs → span "GET", <unmatched> series, a correlated warning."""
    h = harness()
    assert h.client.get("/catalog/unavailable").status_code == 503
    for n in range(20):
        assert h.client.get(f"/scan/{n}.php").status_code == 404
    spans = h.spans(SpanKind.SERVER)
    assert spans[0].status.status_code is StatusCode.ERROR
    assert {s.name for s in spans[1:]} == {"GET"}
    routes = {
        s.labels["http_route"] for s in openmetrics()[DURATION].samples if s.name.endswith("_count")
    }
    assert routes == {"catalog/unavailable", "<unmatched>"}
    warnings = [line for line in h.lines() if line["logger"] == "django.request"]
    assert any(line["event"] == "Not Found: /scan/0.php" for line in warnings)
    assert all("trace_id" in line for line in warnings)


def test_streaming_response_ends_after_its_last_chunk(harness: Callable[..., Harness]) -> None:
    """StreamingHttpResponse (sync and async): span ends after the last chunk, chunk logs
    carry the request's ids, nothing stays attached."""
    h = harness()
    response = h.client.get("/catalog/stream?chunks=3&pause=0.05")
    assert h.spans(SpanKind.SERVER) == []  # not finished before the body is sent
    assert b"".join(response.streaming_content) == b"chunk 0\nchunk 1\nchunk 2\n"
    response.close()
    span = h.server_span()
    assert span.end_time is not None
    assert span.start_time is not None
    assert (span.end_time - span.start_time) / 1e9 >= 0.14
    chunk_lines = [line for line in h.lines() if line["event"] == "streaming chunk"]
    assert {line["trace_id"] for line in chunk_lines} == {_hex(span)}
    assert trace.get_current_span() is trace.INVALID_SPAN

    async def consume() -> bytes:
        streamed = await AsyncClient().get("/catalog/astream")
        return b"".join([chunk async for chunk in streamed.streaming_content])

    assert asyncio.run(consume()) == b"chunk 0\nchunk 1\nchunk 2\n"
    names = [s.name for s in h.spans(SpanKind.SERVER)]
    assert names == ["GET catalog/stream", "GET catalog/astream"]


def test_traceparent_continuation_and_malformed_headers(harness: Callable[..., Harness]) -> None:
    """A valid traceparent is continued; malformed ones start new traces with 200 OK."""
    from tests.test_flask import BAD_TRACEPARENTS

    h = harness()
    h.client.get(
        "/catalog/", HTTP_TRACEPARENT="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    )
    span = h.server_span()
    assert _hex(span) == "0af7651916cd43dd8448eb211c80319c"
    assert span.parent is not None
    assert span.parent.span_id == 0xB7AD6B7169203331
    for header in BAD_TRACEPARENTS:
        h.exporter.clear()
        assert h.client.get("/catalog/", HTTP_TRACEPARENT=header).status_code == 200
        fresh = h.server_span()
        assert fresh.parent is None
        assert _hex(fresh) not in header.lower()


def test_metrics_served_by_middleware_and_by_metrics_view(harness: Callable[..., Harness]) -> None:
    """Opted in, the middleware serves /metrics; metrics_view serves it from urls.py;
    neither is traced."""
    h = harness(http_serve_metrics=True)
    h.client.get("/catalog/")
    for path in ("/metrics", "/internal/metrics"):
        response = h.client.get(path, HTTP_ACCEPT="application/openmetrics-text")
        assert response.status_code == 200
        assert b'http_route="catalog/"' in response.content
        assert b"# {span_id=" in response.content
    assert [s.name for s in h.spans(SpanKind.SERVER)] == ["GET catalog/", "GET internal/metrics"]
    gz = h.client.get("/metrics", HTTP_ACCEPT_ENCODING="gzip")
    assert gz["Content-Encoding"] == "gzip"


def test_metrics_are_not_on_the_app_port_by_default(harness: Callable[..., Harness]) -> None:
    """By default the middleware leaves /metrics to the app's URLs (404 here); a
    metrics_view the app routes itself still serves."""
    h = harness()
    h.client.get("/catalog/")
    assert h.client.get("/metrics").status_code == 404
    routed = h.client.get("/internal/metrics")
    assert routed.status_code == 200
    assert b'http_route="catalog/"' in routed.content


def test_excluded_paths_and_db_spans_off(harness: Callable[..., Harness]) -> None:
    """http_excluded_paths skips requests; db_spans=False drops query spans."""
    h = harness(http_excluded_paths=["/catalog/unavailable"], db_spans=False)
    h.client.get("/catalog/unavailable")
    h.client.get("/catalog/")
    assert [s.name for s in h.spans(SpanKind.SERVER)] == ["GET catalog/"]
    assert h.spans(SpanKind.CLIENT) == []


CANARY = "canary-9e8d7c"


def test_secrets_never_reach_spans_logs_or_metrics(harness: Callable[..., Harness]) -> None:
    """Canaries in sensitive headers, query parameters and SQL literals never appear."""
    h = harness(http_capture_request_headers=["authorization", "x-api-key", "x-team"])
    h.client.get(
        f"/catalog/?token={CANARY}&password={CANARY}&page=1",
        HTTP_AUTHORIZATION=f"Bearer {CANARY}",
        HTTP_X_API_KEY=CANARY,
        HTTP_X_TEAM="books",
        HTTP_COOKIE=f"sessionid={CANARY}",
    )
    h.client.get(f"/nowhere?secret={CANARY}")
    with obskit.span("raw-sql"), connection.cursor() as cursor:
        cursor.execute(f"SELECT id FROM catalog_book WHERE title = '{CANARY}' AND year = 1965")
    server = h.spans(SpanKind.SERVER)[0]
    attributes = dict(server.attributes or {})
    assert attributes["http.request.header.authorization"] == ("[REDACTED]",)
    assert attributes["http.request.header.x-team"] == ("books",)
    assert attributes["url.query"] == "token=[REDACTED]&password=[REDACTED]&page=[REDACTED]"
    raw = next(
        s
        for s in h.spans(SpanKind.CLIENT)
        if "WHERE title" in str((s.attributes or {})["db.query.text"])
    )
    assert (raw.attributes or {})["db.query.text"] == (
        "SELECT id FROM catalog_book WHERE title = ? AND year = ?"
    )
    everything = json.dumps([dict(s.attributes or {}) for s in h.spans()])
    everything += json.dumps(h.lines())
    everything += h.client.get(
        "/metrics", HTTP_ACCEPT="application/openmetrics-text"
    ).content.decode()
    assert CANARY not in everything


def test_sql_literals_are_parameterised() -> None:
    """sanitize() replaces string and number literals, keeps identifiers and placeholders."""
    assert sanitize("SELECT a1, 'x''y' FROM t2 WHERE n = 42 AND f = -1.5 AND p = %s") == (
        "SELECT a1, ? FROM t2 WHERE n = ? AND f = ? AND p = %s"
    )


def test_bound_fields_are_cleared_between_requests(harness: Callable[..., Harness]) -> None:
    """request_id bound by one request is gone in the next."""
    h = harness()
    h.client.get("/catalog/?request_id=first")
    h.client.get("/catalog/")
    lines = h.lines()
    assert lines[0]["request_id"] == "first"
    assert lines[1]["request_id"] == "first"  # the first request's access line
    assert "request_id" not in lines[2]
    assert "request_id" not in lines[3]


def test_app_config_reports_bad_settings_by_their_obskit_key() -> None:
    """A bad settings.OBSKIT value fails start-up naming settings.OBSKIT['key']."""
    import django.apps

    obskit.shutdown()
    config = django.apps.apps.get_app_config("obskit")
    with (
        override_settings(OBSKIT={"traces_sampler": "sometimes"}),
        pytest.raises(obskit.ConfigError, match=r"from settings\.OBSKIT\['traces_sampler'\]"),
    ):
        config.ready()
    with override_settings(OBSKIT={"service_name": "from-settings"}):
        config.ready()
    from obskit._lifecycle import runtime as _runtime

    current = _runtime.current()
    assert current is not None
    assert current.settings.service_name == "from-settings"
    assert isinstance(config, ObskitConfig)


def test_requests_pass_through_when_obskit_is_not_initialised() -> None:
    """With obskit shut down, the middleware adds nothing."""
    obskit.shutdown()
    response = Client().get("/catalog/")
    assert response.status_code == 200
    assert "traceresponse" not in response.headers


@pytest.mark.parametrize("instrumented", [False, True], ids=["plain", "instrumented"])
def test_project_functional_behaviour_is_unchanged(
    instrumented: bool, spans: Callable[..., InMemorySpanExporter]
) -> None:
    """The project's own flows behave the same with and without obskit's middleware."""
    middleware = ["django.middleware.common.CommonMiddleware"]
    if instrumented:
        spans()
        middleware.insert(0, "obskit.integrations.django.ObskitMiddleware")
    else:
        obskit.shutdown()
    with override_settings(MIDDLEWARE=middleware):
        client = Client(raise_request_exception=False)
        created = client.post(
            "/catalog/book/new", {"title": "Emma", "author": "Austen", "year": 1815}
        )
        assert created.status_code == 201
        pk = created.json()["id"]
        assert b"<h1>Emma</h1><p>Austen</p>" in client.get(f"/catalog/book/{pk}").content
        assert b"Emma (Austen, 1815)" in client.get("/catalog/").content
        assert client.get("/catalog/book/new").status_code == 405
        assert client.get("/catalog/book/99999").status_code == 404
        assert client.get("/catalog/boom").status_code == 500
        assert client.get("/catalog/").headers.get("traceresponse") is None or instrumented
        streamed = client.get("/catalog/stream?pause=0")
        assert b"".join(streamed.streaming_content) == b"chunk 0\nchunk 1\nchunk 2\n"
        streamed.close()

        async def ping() -> Any:
            return await AsyncClient().get("/catalog/async/ping")

        assert asyncio.run(ping()).json()["books"] == 2
        assert client.post(f"/reviews/{pk}/new", {"stars": 5}).status_code == 201
        assert client.post(f"/reviews/{pk}/new", {"stars": 2}).status_code == 201
        listing = client.get(f"/reviews/{pk}/").content
        assert listing.index(b"5 stars") < listing.index(b"2 stars")
        assert client.post("/reviews/99999/new", {"stars": 1}).status_code == 404
    time.sleep(0)


def test_django_docs_snippets_run() -> None:
    """The Django page's settings and urls.py snippets are valid as written."""
    from tests.test_docs import _python_blocks

    settings_block, urls_block = _python_blocks("django.md")
    namespace: dict[str, Any] = {}
    exec(compile(settings_block, "django.md-settings", "exec"), namespace)
    assert "obskit.integrations.django" in namespace["INSTALLED_APPS"]
    assert namespace["MIDDLEWARE"][0] == "obskit.integrations.django.ObskitMiddleware"
    obskit.init(**namespace["OBSKIT"])
    exec(compile(urls_block, "django.md-urls", "exec"), namespace)
    (pattern,) = namespace["urlpatterns"]
    assert str(pattern.pattern) == "internal/metrics"


def test_client_address_only_with_pii_capture(harness: Callable[..., Harness]) -> None:
    """client.address appears on the span and access line only when capture_pii is on."""
    h = harness(capture_pii=True)
    assert h.client.get("/catalog/", REMOTE_ADDR="203.0.113.9").status_code == 200
    assert (h.server_span().attributes or {})["client.address"] == "203.0.113.9"
    assert h.lines()[-1]["client.address"] == "203.0.113.9"
