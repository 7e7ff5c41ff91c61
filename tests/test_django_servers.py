"""The Django test project under real servers: gunicorn (WSGI, 2 workers; with obskit's
hooks too), uvicorn (ASGI)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.receivers import OtlpHttpReceiver
from tests.servers import Server, trace_id_of


def _by_trace(spans: list[Any]) -> dict[str, list[Any]]:
    grouped: dict[str, list[Any]] = {}
    for span in spans:
        grouped.setdefault(span.trace_id, []).append(span)
    return grouped


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["gunicorn", "uvicorn"])
def test_requests_export_linked_spans_and_correlated_lines(
    kind: str, django_server: Callable[..., Server], http_receiver: OtlpHttpReceiver
) -> None:
    """Real requests: server span → traced child → SQL span at the receiver; the stdout
    lines of each request carry its trace id."""
    server = django_server(kind)
    requests = {}
    for n in range(10):
        status, headers, _ = server.get(f"/catalog/?request_id=q{n}")
        assert status == 200
        requests[f"q{n}"] = trace_id_of(headers)
    grouped = _by_trace(http_receiver.wait_for_traces(set(requests.values()), 3))
    for trace_id in requests.values():
        spans = {span.name: span for span in grouped[trace_id]}
        server_span = spans["GET catalog/"]
        shelf = spans["tests.djangoproj.catalog.views.shelf"]
        query = spans["SELECT catalog_book"]
        assert shelf.parent_span_id == server_span.span_id
        assert query.parent_span_id == shelf.span_id
        assert query.attributes["db.system.name"] == "sqlite"
    server.stop()
    lines = server.lines()
    for request_id, trace_id in requests.items():
        mine = [line for line in lines if line.get("request_id") == request_id]
        assert [line["event"] for line in mine] == ["listing books", "GET /catalog/ 200"]
        assert {line["trace_id"] for line in mine} == {trace_id}


@pytest.mark.slow
def test_async_view_under_uvicorn_runs_on_the_event_loop_thread(
    django_server: Callable[..., Server],
) -> None:
    """Under ASGI the async view runs on the server's event loop (MainThread), not in a
    worker thread: the middleware chain stays async."""
    server = django_server("uvicorn")
    status, headers, body = server.get("/catalog/async/ping?request_id=a1")
    assert status == 200
    assert b'"thread": "MainThread"' in body
    server.stop()
    lines = [line for line in server.lines() if line.get("request_id") == "a1"]
    assert [line["event"] for line in lines] == ["async ping", "GET /catalog/async/ping 200"]
    assert {line["trace_id"] for line in lines} == {trace_id_of(headers)}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["gunicorn", "uvicorn"])
def test_concurrent_load_never_leaks_ids_between_requests(
    kind: str, django_server: Callable[..., Server]
) -> None:
    """200 requests over 8 client threads (sync and async views mixed): every line of a
    request carries only that request's trace id."""
    server = django_server(kind)

    def call(n: int) -> tuple[str, str]:
        path = "/catalog/async/ping" if n % 2 else "/catalog/"
        status, headers, _ = server.get(f"{path}?request_id=c{n}")
        assert status == 200
        return f"c{n}", trace_id_of(headers)

    with ThreadPoolExecutor(max_workers=8) as pool:
        expected = dict(pool.map(call, range(200)))
    server.stop()
    lines = [line for line in server.lines() if "request_id" in line]
    assert len(lines) == 2 * 200
    assert [line for line in lines if line["trace_id"] != expected[line["request_id"]]] == []
