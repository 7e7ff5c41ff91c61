"""Two real services, one trace: A (Flask under gunicorn, 2 workers) writes a book to B
(Django under gunicorn) through each HTTP client library obskit instruments. The OTLP
receiver gets A's SERVER span → A's CLIENT span → B's SERVER span → B's database spans;
B's log line carries A's trace id; A's /metrics has the outgoing-call histogram with
that trace's exemplar."""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.receivers import OtlpHttpReceiver, ReceivedSpan
from tests.servers import Server, trace_id_of

SERVER, CLIENT = 2, 3  # OTLP span kinds
LIBRARIES = ["requests", "httpx", "urllib3", "urllib", "aiohttp"]
BIND = ("--bind", "127.0.0.1:{port}")
SHOP = "tests.apps.caller_app:create_app()"


def _post(url: str) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(url, data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=30) as reply:
        return reply.status, dict(reply.headers)


def _wait_for_chains(receiver: OtlpHttpReceiver, trace_ids: set[str]) -> list[ReceivedSpan]:
    """The received spans once every trace has both services' SERVER spans and A's
    CLIENT span (the services export in their own time), or after 30 s."""
    deadline = time.monotonic() + 30
    while True:
        spans = receiver.spans
        seen = {(s.trace_id, s.kind, s.resource["service.name"] == "shop") for s in spans}
        wanted = {(t, kind, ours) for t in trace_ids for kind, ours in _LINKS}
        if wanted <= seen or time.monotonic() > deadline:
            return spans
        time.sleep(0.1)


_LINKS = ((SERVER, True), (CLIENT, True), (SERVER, False), (CLIENT, False))


@pytest.mark.slow
def test_a_request_across_two_services_is_one_trace_through_every_client_library(
    tmp_path: Path, django_server: Callable[..., Server], http_receiver: OtlpHttpReceiver
) -> None:
    """For each library: one trace id from A's server span down to B's SQL, with each
    span's parent the span before it; B's "book created" line carries it; A's client
    histogram's exemplar names it."""
    for library in LIBRARIES:
        pytest.importorskip(library if library != "urllib" else "urllib.request")
    books = django_server("gunicorn+hooks")
    shop = Server(
        tmp_path,
        ["gunicorn", "-c", "examples/gunicorn.conf.py", "-w", "2", *BIND, SHOP],
        {
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "shop-multiproc"),
            "OTEL_EXPORTER_OTLP_ENDPOINT": http_receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "BOOKS_URL": books.url,
        },
        ready_path="/health",
    )
    try:
        traces = {}
        for library in LIBRARIES:
            status, headers = _post(f"{shop.url}/order/{library}")
            assert status == 200
            traces[library] = trace_id_of(headers)
        spans = _wait_for_chains(http_receiver, set(traces.values()))
        for library, trace_id in traces.items():
            chain = [span for span in spans if span.trace_id == trace_id]
            (a_server,) = [
                s for s in chain if s.kind == SERVER and s.resource["service.name"] == "shop"
            ]
            (a_client,) = [
                s for s in chain if s.kind == CLIENT and s.resource["service.name"] == "shop"
            ]
            (b_server,) = [
                s for s in chain if s.kind == SERVER and s.resource["service.name"] != "shop"
            ]
            queries = [
                s for s in chain if s.kind == CLIENT and s.resource["service.name"] != "shop"
            ]
            assert a_server.name == "POST /order/<library>", library
            assert a_client.name == "POST", library
            assert a_client.attributes["server.port"] == int(books.url.rsplit(":", 1)[1])
            assert a_client.attributes["http.response.status_code"] == 201
            assert b_server.name == "POST catalog/book/new", library
            assert a_client.parent_span_id == a_server.span_id, library
            assert b_server.parent_span_id == a_client.span_id, library
            assert queries, library
            assert all(q.attributes["db.system.name"] == "sqlite" for q in queries)
            assert {q.parent_span_id for q in queries} == {b_server.span_id}, library
        created = [line for line in books.lines() if line.get("event") == "book created"]
        assert sorted(line["trace_id"] for line in created) == sorted(traces.values())
        exposition = shop.scrape()
        exemplars = re.findall(
            r'^http_client_request_duration_seconds_bucket\{.*\} \S+ # \{.*trace_id="(\w+)"',
            exposition,
            re.M,
        )
        assert traces[LIBRARIES[-1]] in exemplars
    finally:
        shop.stop()
