"""The Flask middleware reads request headers in place and skips context extraction only
when there is nothing to extract; both are equivalent to the dict + extract() they replace."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from typing import Any

import pytest
from flask import (
    Blueprint,
    Flask,
    Response,
    after_this_request,
    got_request_exception,
    stream_with_context,
)
from flask.ctx import AppContext
from opentelemetry import baggage, propagate
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

import obskit
from obskit._fast import spans as _spans
from obskit._http import server_request as _server_request
from obskit._http.server_request import EnvironHeaders
from tests.conftest import openmetrics, wsgi_request

ENVIRON: dict[str, Any] = {
    "REQUEST_METHOD": "GET",
    "PATH_INFO": "/",
    "CONTENT_TYPE": "application/json",
    "CONTENT_LENGTH": "12",
    "HTTP_HOST": "shop.example:8080",
    "HTTP_USER_AGENT": "curl/8",
    "HTTP_X_REQUEST_ID": "abc",
    "HTTP_TRACEPARENT": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "wsgi.url_scheme": "http",
}


def _as_dict(environ: dict[str, Any]) -> dict[str, str]:
    """The mapping the integrations built before: HTTP_* by lower-case name, plus
    content-type and content-length (as Django's request.headers has them)."""
    headers = {
        key[5:].replace("_", "-").lower(): value
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }
    for name, key in (("content-type", "CONTENT_TYPE"), ("content-length", "CONTENT_LENGTH")):
        if environ.get(key):
            headers[name] = environ[key]
    return headers


@pytest.mark.parametrize("environ", [ENVIRON, {**ENVIRON, "CONTENT_TYPE": ""}, {}])
def test_environ_headers_read_like_the_dict(environ: dict[str, Any]) -> None:
    """Lookups, membership, iteration and length agree with the dict built from the environ."""
    view, expected = EnvironHeaders(environ), _as_dict(environ)
    names = ["host", "user-agent", "x-request-id", "traceparent", "content-type", "baggage"]
    for name in [*names, "content-length", "x_request_id", "HOST", ""]:
        assert view.get(name) == expected.get(name), name
        assert (name in view) is (name in expected), name
        if name in expected:
            assert view[name] == expected[name]
        else:
            with pytest.raises(KeyError):
                view[name]
    assert dict(view) == expected
    assert len(view) == len(expected)
    assert 3 not in view


def _app() -> Flask:
    app = Flask("paths")

    @app.get("/bag")
    def bag() -> dict[str, Any]:
        return {"baggage": dict(baggage.get_all())}

    return obskit.instrument_flask(app)


def test_baggage_alone_is_still_extracted(spans: Callable[..., InMemorySpanExporter]) -> None:
    """No traceparent but a baggage header: extraction runs (a new root, with the baggage)."""
    exporter = spans(service_name="paths")
    client = _app().test_client()
    answer = client.get("/bag", headers={"baggage": "tenant=acme"}, buffered=True)
    assert answer.json == {"baggage": {"tenant": "acme"}}
    assert client.get("/bag", buffered=True).json == {"baggage": {}}
    server = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert len(server) == 2
    assert all(s.parent is None for s in server)


class _Recording(TextMapPropagator):
    """A non-W3C propagator (like b3): it must see every request, headers or not."""

    def __init__(self) -> None:
        self.carriers: list[Any] = []

    def extract(self, carrier: Any, context: Any = None, getter: Any = None) -> Any:
        self.carriers.append(dict(carrier))
        return Context() if context is None else context

    def inject(self, carrier: Any, context: Any = None, setter: Any = None) -> None:
        pass

    @property
    def fields(self) -> set[str]:
        return {"x-b3-traceid"}


def test_other_propagators_always_extract(spans: Callable[..., InMemorySpanExporter]) -> None:
    """With a propagator other than tracecontext/baggage, extract() runs for every request."""
    spans(service_name="paths")
    recording = _Recording()
    saved = propagate.get_global_textmap()
    propagate.set_global_textmap(recording)
    try:
        client = _app().test_client()
        client.get("/bag", headers={"X-B3-TraceId": "80f198ee56343ba864fe8b2a57d3eff7"})
        client.get("/bag")
    finally:
        propagate.set_global_textmap(saved)
    assert len(recording.carriers) == 2
    assert recording.carriers[0]["x-b3-traceid"] == "80f198ee56343ba864fe8b2a57d3eff7"
    handle = obskit._lifecycle.runtime.current()
    assert handle is not None
    assert handle.w3c_propagator is propagate.get_global_textmap()  # obskit's own again


def _active(method: str = "GET") -> float:
    """http_server_active_requests{http_request_method=method} as /metrics shows it."""
    family = openmetrics()["http_server_active_requests"]
    values = [s.value for s in family.samples if s.labels["http_request_method"] == method]
    return values[0] if values else 0.0


def test_active_requests_count_requests_in_flight(
    spans: Callable[..., InMemorySpanExporter],
) -> None:
    """The gauge is 1 while a request (and a streamed body) is in flight, 0 after each."""
    spans(service_name="paths")
    app = Flask("active")

    @app.get("/now")
    def now() -> str:
        return str(_active())

    @app.get("/stream")
    def stream() -> Response:
        return Response(stream_with_context(f"{_active()}\n" for _ in range(2)))

    @app.post("/fail")
    def fail() -> str:
        raise RuntimeError("boom")

    obskit.instrument_flask(app)
    assert wsgi_request(app, "/now")[2] == b"1.0"
    assert _active() == 0.0
    assert wsgi_request(app, "/stream")[2] == b"1.0\n1.0\n"
    assert _active() == 0.0
    client = app.test_client()
    assert client.post("/fail", buffered=True).status_code == 500
    assert _active("POST") == 0.0


def test_an_app_overriding_process_response_keeps_it(
    spans: Callable[..., InMemorySpanExporter],
) -> None:
    """An app class overriding ``process_response`` (Flask's documented override point;
    from Flask 3.2 it takes the context first) still has it run once per request, its
    header sent; a buffered and a streamed response are timed and counted as before."""
    exporter = spans(service_name="paths")
    calls: list[str] = []

    def process(response: Response) -> Response:
        calls.append(response.status)
        response.headers["X-Shop"] = "1"
        return response

    if "ctx" in inspect.signature(Flask.process_response).parameters:

        class ShopFlask(Flask):
            def process_response(  # type: ignore[override,unused-ignore]
                self, ctx: AppContext, response: Response
            ) -> Response:
                return process(super().process_response(ctx, response))  # type: ignore[arg-type,call-arg,unused-ignore]

    else:

        class ShopFlask(Flask):  # type: ignore[no-redef]
            def process_response(self, response: Response) -> Response:  # type: ignore[override,unused-ignore]
                return process(super().process_response(response))  # type: ignore[call-arg,unused-ignore]

    app = ShopFlask("override")

    @app.get("/now")
    def now() -> str:
        return "now"

    @app.get("/stream")
    def stream() -> Response:
        return Response(stream_with_context(f"{_active()}\n" for _ in range(2)))

    obskit.instrument_flask(app)
    obskit.instrument_flask(app)  # a second call wraps nothing twice
    status, headers, body = wsgi_request(app, "/now")
    assert (status, body, headers["X-Shop"]) == (200, b"now", "1")
    # Still in flight while its chunks are produced: it was seen to stream.
    status, headers, body = wsgi_request(app, "/stream")
    assert (status, body, headers["X-Shop"]) == (200, b"1.0\n1.0\n", "1")
    assert calls == ["200 OK", "200 OK"]
    names = [span.name for span in exporter.get_finished_spans()]
    assert names == ["GET /now", "GET /stream"]
    assert _active() == 0.0


def test_the_apps_own_after_request_functions_run_once_each(
    spans: Callable[..., InMemorySpanExporter],
) -> None:
    """obskit's ``after_request`` function sits among the app's own (registered before
    and after ``instrument_flask``, a blueprint's, ``after_this_request``): each of
    them runs once per request and its header is sent, and the response obskit sees
    streaming is timed to its last chunk."""
    exporter = spans(service_name="paths")
    calls: list[str] = []
    app = Flask("hooks")
    shop = Blueprint("shop", __name__)

    @shop.get("/items/<int:item_id>")
    def item(item_id: int) -> Response:
        @after_this_request
        def once(response: Response) -> Response:
            calls.append("this-request")
            response.headers["X-Once"] = "1"
            return response

        return Response(stream_with_context(f"{_active()}\n" for _ in range(item_id)))

    @shop.after_request
    def blueprint_hook(response: Response) -> Response:
        calls.append("blueprint")
        response.headers["X-Blueprint"] = "1"
        return response

    @app.after_request
    def before(response: Response) -> Response:
        calls.append("before")
        response.headers["X-Before"] = "1"
        return response

    app.register_blueprint(shop, url_prefix="/shop")
    obskit.instrument_flask(app)

    @app.after_request
    def after(response: Response) -> Response:
        calls.append("after")
        response.headers["X-After"] = "1"
        return response

    status, headers, body = wsgi_request(app, "/shop/items/2")
    assert (status, body) == (200, b"1.0\n1.0\n")  # in flight while streaming
    assert {name: headers[name] for name in ("X-Once", "X-Blueprint", "X-Before", "X-After")} == {
        "X-Once": "1",
        "X-Blueprint": "1",
        "X-Before": "1",
        "X-After": "1",
    }
    assert "traceresponse" in headers
    assert calls == ["this-request", "blueprint", "after", "before"]  # Flask's order
    (span,) = exporter.get_finished_spans()
    assert span.name == "GET /shop/items/<int:item_id>"
    assert _active() == 0.0


@pytest.mark.parametrize("registered", ["before", "after"])
def test_a_raising_after_request_hook_keeps_the_route(
    spans: Callable[..., InMemorySpanExporter], registered: str
) -> None:
    """An ``after_request`` hook that raises turns the answer into a 500, whether Flask
    runs it before obskit's or after (registered after or before ``instrument_flask``):
    the request is still named and counted by its route template, with the error on
    its span, and the user's exception reaches ``got_request_exception`` unchanged."""
    exporter = spans(service_name="paths")
    app = Flask("hook")
    failure = RuntimeError("hook")
    seen: list[BaseException] = []

    @app.get("/orders/<int:order_id>")
    def order(order_id: int) -> str:
        return str(order_id)

    def broken(response: Response) -> Response:
        raise failure

    def receiver(sender: Flask, exception: BaseException, **extra: Any) -> None:
        seen.append(exception)

    if registered == "before":
        app.after_request(broken)
    obskit.instrument_flask(app)
    if registered == "after":
        app.after_request(broken)
    with got_request_exception.connected_to(receiver, app):
        assert wsgi_request(app, "/orders/7")[0] == 500
    assert seen == [failure]
    (span,) = exporter.get_finished_spans()
    assert span.name == "GET /orders/<int:order_id>"
    assert span.attributes["http.route"] == "/orders/<int:order_id>"
    assert span.attributes["http.response.status_code"] == 500
    assert span.status.status_code.name == "ERROR"
    assert span.events[0].attributes["exception.message"] == "hook"
    assert _active() == 0.0


def test_request_attributes_over_the_length_limit_are_truncated_as_by_the_sdk(
    spans: Callable[..., InMemorySpanExporter], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server's attributes are checked once per server, the path and user agent per
    request: any text over OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT sends the span through the
    SDK, which truncates it; texts within the limit are stored as they are."""
    monkeypatch.setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "12")
    exporter = spans(service_name="paths")
    app = _app()
    wsgi_request(app, "/bag")  # all within the limit
    wsgi_request(app, "/bag", headers=[("User-Agent", "a-very-long-agent/1.0")])
    wsgi_request(app, "/bag", headers=[("Host", "a-very-long-host.example:8080")])
    wsgi_request(app, "/bag-with-a-long-path")
    short, agent, host, path = (
        dict(s.attributes or {}) for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER
    )
    assert short["url.path"] == "/bag"
    assert short["server.address"] == "127.0.0.1"
    assert agent["user_agent.original"] == "a-very-long-"
    assert host["server.address"] == "a-very-long-"
    assert host["server.port"] == 8080
    assert path["url.path"] == "/bag-with-a-"
    assert short["http.route"] == "/bag"
    assert "http.route" not in path
    for attributes in (short, agent, host, path):
        assert attributes["http.request.method"] == "GET"
        assert attributes["network.protocol.version"] == "1.1"


def test_requests_copy_their_server_attributes(
    spans: Callable[..., InMemorySpanExporter],
) -> None:
    """A request adds its own attributes to a copy of its server's: nothing it adds (a
    user agent, a query) reaches the next request to the same server, nor the cache."""
    exporter = spans(service_name="paths")
    app = _app()
    wsgi_request(app, "/bag", headers=[("User-Agent", "curl/8")], query="q=1")
    wsgi_request(app, "/bag")
    first, second = (
        dict(s.attributes or {}) for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER
    )
    assert first["user_agent.original"] == "curl/8"
    assert first["url.query"] == "q=[REDACTED]"
    assert "user_agent.original" not in second
    assert "url.query" not in second
    cached, _ = _server_request.server_attributes("http", "127.0.0.1", 80, "1.1")
    assert cached["http.request.method"] == cached["url.path"] == ""  # still to fill in
    assert cached.keys() == second.keys() - {"http.route", "http.response.status_code"}


def test_server_attributes_are_looked_up_once_and_bounded() -> None:
    """One entry per server, made once; a value that is not a plain str or int is flagged
    (the request then goes through the SDK's validation); at most 64 servers are kept."""
    _server_request._server_attributes.clear()
    attributes, longest = _server_request.server_attributes("https", "shop.example", 443, "2")
    assert attributes == {
        "http.request.method": "",
        "url.path": "",
        "url.scheme": "https",
        "server.address": "shop.example",
        "server.port": 443,
        "network.protocol.version": "2",
    }
    assert longest == len("shop.example")
    assert _server_request.server_attributes("https", "shop.example", 443, "2")[0] is attributes
    assert _server_request.server_attributes("http", None, None, None) == (
        {"http.request.method": "", "url.path": "", "url.scheme": "http"},
        4,
    )
    assert _server_request.server_attributes("http", "h", 80, 1.1)[1] is None  # type: ignore[arg-type]
    for n in range(100):
        assert _server_request.server_attributes("http", f"host{n}", 80, None)[0][
            "server.address"
        ] == (f"host{n}")
    assert len(_server_request._server_attributes) == _server_request._SERVERS_MAX


class _OtherContext(SpanContext):
    """A span context that is not the API's own class (its fields read by property)."""


class _OtherSpan(NonRecordingSpan):
    """A span of a type the fast paths do not know (as another SDK could hand out)."""


@pytest.mark.parametrize("flags", [TraceFlags.SAMPLED, TraceFlags.DEFAULT])
def test_a_span_of_another_type_gives_its_ids_everywhere(
    spans: Callable[..., InMemorySpanExporter],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    flags: int,
) -> None:
    """Ids and flags are read by index only from the SDK's own types: a request whose span
    is of another type (here made so by patching obskit's span start; nothing in this
    process hands one out otherwise) carries that span's ids in its traceresponse header,
    access line and (sampled only) exemplar."""
    spans(service_name="paths")
    context = _OtherContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0xF067AA0BA902B7, False, flags)
    monkeypatch.setattr(_spans, "start_span", lambda *args, **kwargs: _OtherSpan(context))
    app = Flask("other")

    @app.get("/other")
    def other() -> str:
        return "ok"

    obskit.instrument_flask(app)
    capsys.readouterr()
    status, headers, _ = wsgi_request(app, "/other")
    trace_id, span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    assert status == 200
    sampled = "01" if flags else "00"
    assert headers["traceresponse"] == f"00-{trace_id}-{span_id}-{sampled}"
    (line,) = [json.loads(text) for text in capsys.readouterr().out.splitlines()]
    assert (line["logger"], line["trace_id"], line["span_id"]) == (
        "obskit.access",
        trace_id,
        span_id,
    )
    samples = openmetrics()["http_server_request_duration_seconds"].samples
    exemplars = [s.exemplar.labels for s in samples if s.exemplar is not None]
    assert exemplars == ([{"trace_id": trace_id, "span_id": span_id}] if flags else [])
