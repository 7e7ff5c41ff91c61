"""ASGI integration in process: a real FastAPI app (routers, mounts, dependencies,
streaming, WebSocket, background tasks, sync endpoints) served through httpx's
ASGITransport, or driven with the ASGI messages a server sends (disconnects, WebSocket,
lifespan): spans, RED metrics, access lines, context, redaction, the /metrics opt-in."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from opentelemetry.sdk.trace import ReadableSpan  # noqa: E402
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402
from starlette.websockets import WebSocketDisconnect  # noqa: E402

import obskit  # noqa: E402
import obskit.testing  # noqa: E402
from obskit.integrations.asgi import ObskitMiddleware  # noqa: E402
from tests.apps import fastapi_app  # noqa: E402

DURATION = "http_server_request_duration_seconds"
APP_LOGGERS = frozenset({"tests.apps.fastapi_app", "obskit.access"})
#: What every test starts obskit with: httpx's own instrumentation off, so the test
#: client sends no traceparent of its own (the server span is then a root).
SETTINGS: dict[str, Any] = {
    "disabled_instrumentations": ("httpx",),
    "service_name": "fastapi-example",
}


@pytest.fixture
def captured() -> Iterator[obskit.testing.Capture]:
    with obskit.testing.capture(sequential_ids=False, **SETTINGS) as capture:
        yield capture


def call(app: Any, method: str, path: str, **kwargs: Any) -> Any:
    """One request through httpx's ASGITransport (the app's lifespan not run)."""

    async def go() -> Any:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            response = await c.request(method, path, **kwargs)
            await asyncio.sleep(0.05)  # background tasks and asyncio tasks finish
            return response

    return asyncio.run(go())


def get(app: Any, path: str, **kwargs: Any) -> Any:
    return call(app, "GET", path, **kwargs)


def server_spans(capture: obskit.testing.Capture) -> list[ReadableSpan]:
    return [s for s in capture.spans if s.kind is SpanKind.SERVER]


def ids(span: ReadableSpan) -> tuple[str, str]:
    assert span.context is not None
    return format(span.context.trace_id, "032x"), format(span.context.span_id, "016x")


def app_lines(capture: obskit.testing.Capture) -> list[dict[str, Any]]:
    """The log lines of the app and obskit's access lines (not httpx's or asyncio's)."""
    return [line for line in capture.logs if line.get("logger") in APP_LOGGERS]


async def drive(
    app: Any, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]]
) -> tuple[list[dict[str, Any]], BaseException | None]:
    """Run ``app`` on ``scope`` as a server does; the messages it sent, and what it raised."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    try:
        await asyncio.wait_for(app(scope, receive, send), timeout=10)
    except BaseException as error:
        return sent, error
    return sent, None


def http_scope(path: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 50000),
        **extra,
    }


@pytest.fixture
def app() -> Any:
    return obskit.instrument_asgi(fastapi_app.create_app())


def test_matched_route_span_metrics_access_line_and_child(
    captured: obskit.testing.Capture, app: Any
) -> None:
    """A request to a router's route: one SERVER span "GET /items/{item_id}" with the
    semantic-convention attributes, a child @traced span, a histogram observation with
    its exemplar, traceresponse, and log lines that all carry the request's ids."""
    response = get(app, "/items/7?x=1", headers={"user-agent": "pytest-agent"})
    assert response.status_code == 200
    assert response.json() == {"id": 7, "name": "item 7"}
    (server,) = server_spans(captured)
    assert server.name == "GET /items/{item_id}"
    assert dict(server.attributes or {}) == {
        "http.request.method": "GET",
        "url.path": "/items/7",
        "url.scheme": "http",
        "url.query": "x=[REDACTED]",
        "server.address": "testserver",
        "user_agent.original": "pytest-agent",
        "network.protocol.version": "1.1",
        "http.route": "/items/{item_id}",
        "http.response.status_code": 200,
    }
    assert server.status.status_code is StatusCode.UNSET
    assert server.parent is None
    (child,) = captured.children(server)
    assert child.name == "tests.apps.fastapi_app.load_item"
    trace_id, span_id = ids(server)
    lines = app_lines(captured)
    assert [line["event"] for line in lines] == ["reading item", "loading item", "GET /items/7 200"]
    assert {line["trace_id"] for line in lines} == {trace_id}
    access = lines[-1]
    assert access["logger"] == "obskit.access"
    assert access["span_id"] == span_id
    assert access["http.route"] == "/items/{item_id}"
    assert access["url.path"] == "/items/7"
    assert "x=" not in str(access)
    assert (
        captured.metrics.increase(
            f"{DURATION}_count",
            http_request_method="GET",
            http_route="/items/{item_id}",
            http_response_status_code="200",
        )
        == 1
    )
    exemplars = captured.metrics.exemplars(f"{DURATION}_bucket", http_route="/items/{item_id}")
    assert [e["trace_id"] for e in exemplars] == [trace_id]
    assert response.headers["traceresponse"] == f"00-{trace_id}-{span_id}-01"


@pytest.mark.parametrize(
    ("path", "route", "status"),
    [
        ("/", "/", 200),
        ("/api/v1/things/abc", "/api/v1/things/{thing_id}", 200),  # nested routers' prefixes
        ("/admin/users/5", "/admin/users/{user_id}", 200),  # a mounted FastAPI sub-app
        ("/items/x", "/items/{item_id}", 422),  # a validation error keeps its route
        ("/nope", None, 404),
        ("/admin/nope", None, 404),  # unmatched inside a mount
    ],
)
def test_route_templates_name_spans_and_series(
    captured: obskit.testing.Capture, app: Any, path: str, route: str | None, status: int
) -> None:
    """Spans and metric series are named by the template (routers' prefixes and mounts
    included) and never by the raw path; unmatched requests share ``<unmatched>``."""
    assert get(app, path).status_code == status
    (server,) = server_spans(captured)
    assert server.name == (f"GET {route}" if route else "GET")
    assert (server.attributes or {}).get("http.route") == route
    assert server.status.status_code is StatusCode.UNSET  # 4xx is the client's error
    labels = {"http_route": route or "<unmatched>", "http_response_status_code": str(status)}
    assert captured.metrics.increase(f"{DURATION}_count", **labels) == 1


def test_405_is_named_by_the_route_that_matched_its_path(
    captured: obskit.testing.Capture, app: Any
) -> None:
    """A method the route does not take (405) is still that route's request."""
    assert call(app, "DELETE", "/items/3").status_code == 405
    (server,) = server_spans(captured)
    assert server.name == "DELETE /items/{item_id}"


def test_a_method_outside_the_standard_ones_names_its_span_http(
    captured: obskit.testing.Capture, app: Any
) -> None:
    """PURGE: the span is named ``HTTP {route}`` (the semantic conventions' name for a
    method they do not know), ``http.request.method`` and the series' label are
    ``_OTHER`` (bounded), the original is kept in ``http.request.method_original``."""
    assert call(app, "PURGE", "/items/3").status_code == 405
    (server,) = server_spans(captured)
    assert server.name == "HTTP /items/{item_id}"
    attributes = server.attributes or {}
    assert attributes["http.request.method"] == "_OTHER"
    assert attributes["http.request.method_original"] == "PURGE"
    labels = {"http_request_method": "_OTHER", "http_route": "/items/{item_id}"}
    assert captured.metrics.increase(f"{DURATION}_count", **labels) == 1
    assert call(app, "PURGE", "/nowhere").status_code == 404
    assert server_spans(captured)[-1].name == "HTTP"


def test_sync_endpoint_and_dependency_log_lines_carry_the_trace(
    captured: obskit.testing.Capture, app: Any
) -> None:
    """A sync endpoint runs in the threadpool with the request's context: its lines, its
    @traced child and the dependency's bound request_id belong to the request."""
    response = get(app, "/items/4/sync", headers={"x-request-id": "req-4"})
    assert response.status_code == 200
    (server,) = server_spans(captured)
    trace_id, _ = ids(server)
    (child,) = captured.children(server)
    assert child.name == "tests.apps.fastapi_app.load_item"
    lines = app_lines(captured)
    assert [line["event"] for line in lines] == [
        "reading item in a thread",
        "loading item",
        "GET /items/4/sync 200",
    ]
    assert {line["trace_id"] for line in lines} == {trace_id}
    assert {line.get("request_id") for line in lines} == {"req-4"}


def test_background_tasks_and_asyncio_tasks_keep_the_request_trace(
    captured: obskit.testing.Capture, app: Any
) -> None:
    """BackgroundTasks (sync and async) run after the response and an asyncio task the
    handler started: their log lines carry the request's trace id; the request ends
    (access line, duration) with its response, before them."""
    response = call(app, "POST", "/items/9/audit", headers={"x-request-id": "req-9"})
    assert response.status_code == 200
    (server,) = server_spans(captured)
    trace_id, _ = ids(server)
    lines = app_lines(captured)
    events = [line["event"] for line in lines]
    assert events[:2] == ["audit queued", "POST /items/9/audit 200"]
    assert set(events[2:]) == {"audit written", "notification sent", "side job done"}
    assert {line["trace_id"] for line in lines} == {trace_id}
    assert next(line for line in lines if line["event"] == "audit written")["request_id"] == "req-9"


def test_exception_is_recorded_and_reraised_unchanged(
    captured: obskit.testing.Capture, app: Any
) -> None:
    """An exception escaping an async or sync endpoint: the client gets FastAPI's 500,
    the span has the exception and status ERROR, the series says 500, and the server
    sees the very exception object the endpoint raised."""
    for path, kind in (("/fail", RuntimeError), ("/fail-sync", ValueError)):
        sent, raised = asyncio.run(drive(app, http_scope(path), _request_then_wait()))
        assert isinstance(raised, kind)
        assert sent[0]["status"] == 500
    failed = server_spans(captured)
    assert [s.name for s in failed] == ["GET /fail", "GET /fail-sync"]
    for span, kind in zip(failed, (RuntimeError, ValueError), strict=True):
        assert span.status.status_code is StatusCode.ERROR
        (event,) = span.events
        assert event.name == "exception"
        assert (event.attributes or {})["exception.type"] == kind.__name__
        assert (span.attributes or {})["http.response.status_code"] == 500
    assert captured.metrics.increase(f"{DURATION}_count", http_response_status_code="500") == 2


def test_returned_5xx_is_an_error_without_exception(
    captured: obskit.testing.Capture, app: Any
) -> None:
    """A 503 the endpoint returns: span status ERROR, no exception event."""
    assert get(app, "/unavailable").status_code == 503
    (server,) = server_spans(captured)
    assert server.status.status_code is StatusCode.ERROR
    assert not server.events


def test_streaming_response_ends_after_its_last_chunk(
    captured: obskit.testing.Capture, app: Any
) -> None:
    """A StreamingResponse: the chunks are produced in the request's context and the
    request ends after the last one (access line last, span covering every pause)."""
    response = get(app, "/stream?chunks=3&pause=0.05")
    assert response.text == "chunk 0\nchunk 1\nchunk 2\n"
    (server,) = server_spans(captured)
    trace_id, _ = ids(server)
    assert server.end_time is not None
    assert server.start_time is not None
    assert server.end_time - server.start_time >= 150_000_000  # three pauses of 50 ms
    lines = app_lines(captured)
    assert [line["event"] for line in lines] == [
        "streaming chunk",
        "streaming chunk",
        "streaming chunk",
        "GET /stream 200",
    ]
    assert {line["trace_id"] for line in lines} == {trace_id}


def _request_then_wait(
    disconnect: asyncio.Event | None = None,
) -> Callable[[], Awaitable[dict[str, Any]]]:
    """A server's ``receive``: the request (no body), then ``http.disconnect`` once
    ``disconnect`` is set (never, without one)."""
    given = False

    async def receive() -> dict[str, Any]:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": b"", "more_body": False}
        if disconnect is None:
            await asyncio.Event().wait()
        else:
            await disconnect.wait()
        return {"type": "http.disconnect"}

    return receive


def test_client_disconnect_mid_stream_is_cancelled_not_an_error(
    captured: obskit.testing.Capture, app: Any
) -> None:
    """The client goes away after the first chunk: the stream stops, the request ends
    then, its span is not an error but ``obskit.cancelled=true`` and keeps the 200 it
    had sent."""
    fastapi_app.stopped_streams.clear()
    gone = asyncio.Event()

    async def run() -> tuple[list[dict[str, Any]], BaseException | None]:
        async def disconnect_after_first_chunk() -> None:
            while not any(m.get("body") for m in sent_so_far):
                await asyncio.sleep(0.005)
            gone.set()

        sent_so_far: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent_so_far.append(message)

        watcher = asyncio.create_task(disconnect_after_first_chunk())
        try:
            await asyncio.wait_for(
                app(http_scope("/stream", query_string=b"chunks=50&pause=0.02"), receive, send),
                timeout=10,
            )
        finally:
            await watcher
        return sent_so_far, None

    receive = _request_then_wait(gone)
    sent, _ = asyncio.run(run())
    assert sent[0]["status"] == 200
    assert fastapi_app.stopped_streams
    assert fastapi_app.stopped_streams[0] < 50
    (server,) = server_spans(captured)
    assert server.status.status_code is StatusCode.UNSET
    assert not server.events
    assert (server.attributes or {})["obskit.cancelled"] is True
    assert (server.attributes or {})["http.response.status_code"] == 200
    assert captured.metrics.increase(f"{DURATION}_count", http_route="/stream") == 1


def test_cancelled_request_before_its_response_has_no_status(
    captured: obskit.testing.Capture,
) -> None:
    """A request the server cancels while the endpoint waits (the client went away): the
    CancelledError passes through unchanged, the span is cancelled, not an error, and the
    series has no status (``0``)."""
    entered = asyncio.Event()

    async def waits(scope: Any, receive: Any, send: Any) -> None:
        entered.set()
        await asyncio.sleep(30)

    app = obskit.instrument_asgi(waits)

    async def run() -> bool:
        task = asyncio.create_task(app(http_scope("/wait"), _request_then_wait(), _ignore))
        await entered.wait()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return True
        return False

    assert asyncio.run(run())
    (server,) = server_spans(captured)
    assert server.status.status_code is StatusCode.UNSET
    assert (server.attributes or {})["obskit.cancelled"] is True
    assert "http.response.status_code" not in (server.attributes or {})
    assert captured.metrics.increase(f"{DURATION}_count", http_response_status_code="0") == 1


async def _ignore(message: Any) -> None:
    return None


@pytest.mark.parametrize(
    ("mode", "continued"), [("continue", True), ("restart", False), ("ignore", False)]
)
def test_incoming_traceparent_per_trace_context_incoming(mode: str, continued: bool) -> None:
    """``trace_context_incoming``: continue the caller's trace, restart it (a new trace
    linked to the caller's) or ignore it, as for Flask and Django."""
    caller = "0af7651916cd43dd8448eb211c80319c"
    with obskit.testing.capture(
        sequential_ids=False, trace_context_incoming=mode, **SETTINGS
    ) as capture:
        app = obskit.instrument_asgi(fastapi_app.create_app())
        get(app, "/", headers={"traceparent": f"00-{caller}-b7ad6b7169203331-01"})
        (server,) = server_spans(capture)
        trace_id, _ = ids(server)
        assert (trace_id == caller) is continued
        links = [format(link.context.trace_id, "032x") for link in server.links]
        assert links == ([caller] if mode == "restart" else [])


def _websocket_messages(*texts: str) -> Callable[[], Awaitable[dict[str, Any]]]:
    queue = [
        {"type": "websocket.connect"},
        *[{"type": "websocket.receive", "text": text} for text in texts],
        {"type": "websocket.disconnect", "code": 1000},
    ]

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(0)
        return queue.pop(0)

    return receive


def _websocket_scope(path: str, **headers: str) -> dict[str, Any]:
    return {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "scheme": "ws",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver")]
        + [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()],
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 50001),
        "subprotocols": [],
    }


def test_websocket_connection_gets_one_span_and_its_lines_the_trace(
    captured: obskit.testing.Capture, app: Any
) -> None:
    """A WebSocket connection: its messages pass through unchanged, one SERVER span
    "WS /ws/{room}" from handshake to close continues the caller's trace, the handler's
    lines carry it, a client close is not an error, and no HTTP metrics or access line."""
    caller = "1af7651916cd43dd8448eb211c80319c"
    scope = _websocket_scope("/ws/lobby", traceparent=f"00-{caller}-b7ad6b7169203331-01")
    sent, raised = asyncio.run(drive(app, scope, _websocket_messages("hi", "there")))
    assert isinstance(raised, WebSocketDisconnect)  # the handler's own, passed through
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.send"]
    assert [m.get("text") for m in sent[1:]] == ["lobby: hi", "lobby: there"]
    (span,) = server_spans(captured)
    assert span.name == "WS /ws/{room}"
    trace_id, _ = ids(span)
    assert trace_id == caller
    assert span.status.status_code is StatusCode.UNSET
    attributes = dict(span.attributes or {})
    assert attributes["http.route"] == "/ws/{room}"
    assert attributes["network.protocol.name"] == "websocket"
    assert attributes["url.path"] == "/ws/lobby"
    lines = app_lines(captured)
    assert [line["event"] for line in lines] == ["joined", "message", "message", "left"]
    assert {line["trace_id"] for line in lines} == {trace_id}
    assert captured.metrics.increase(f"{DURATION}_count") == 0


def test_websocket_handler_exception_is_an_error(
    captured: obskit.testing.Capture, app: Any
) -> None:
    """An exception escaping a WebSocket handler: the connection's span records it."""
    _, raised = asyncio.run(drive(app, _websocket_scope("/ws/x"), _websocket_messages("boom")))
    assert isinstance(raised, RuntimeError)
    (span,) = server_spans(captured)
    assert span.status.status_code is StatusCode.ERROR
    assert [event.name for event in span.events] == ["exception"]


def test_lifespan_passes_through_untouched(captured: obskit.testing.Capture) -> None:
    """The lifespan scope reaches the app's startup and shutdown unchanged; no span."""
    events: list[str] = []
    from contextlib import asynccontextmanager

    from fastapi import FastAPI

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        events.append("startup")
        yield
        events.append("shutdown")

    app = obskit.instrument_asgi(FastAPI(lifespan=lifespan))
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    sent, raised = asyncio.run(
        drive(app, {"type": "lifespan", "asgi": {"version": "3.0"}}, receive)
    )
    assert raised is None
    assert [m["type"] for m in sent] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]
    assert events == ["startup", "shutdown"]
    assert captured.spans == []


def test_metrics_are_served_on_the_app_port_only_by_opt_in() -> None:
    """``http_metrics_path`` on the app's port: 404 by default; with ``http_serve_metrics``
    obskit's metrics (OpenMetrics with exemplars when asked), not recorded as a request."""
    with obskit.testing.capture(sequential_ids=False, **SETTINGS) as capture:
        app = obskit.instrument_asgi(fastapi_app.create_app())
        assert get(app, "/metrics").status_code == 404
    with obskit.testing.capture(sequential_ids=False, http_serve_metrics=True, **SETTINGS) as cap:
        app = obskit.instrument_asgi(fastapi_app.create_app())
        get(app, "/items/1")
        cap.clear()
        response = get(app, "/metrics", headers={"accept": "application/openmetrics-text"})
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/openmetrics-text")
        assert 'http_route="/items/{item_id}"' in response.text
        exemplar_lines = [
            line
            for line in response.text.splitlines()
            if line.startswith(f"{DURATION}_bucket") and " # {" in line
        ]
        assert exemplar_lines
        assert all("trace_id=" in line for line in exemplar_lines)
        assert cap.spans == []
    assert capture.spans  # the 404 was a request like any other


def test_excluded_paths_get_no_telemetry(app: Any) -> None:
    """A path in ``http_excluded_paths``: no span (not even FastAPI's own), no series,
    no access line; the app still answers."""
    with obskit.testing.capture(
        sequential_ids=False, http_excluded_paths=("/health",), **SETTINGS
    ) as capture:
        assert get(app, "/health").json() == {"status": "ok"}
        assert capture.spans == []
        assert app_lines(capture) == []
        assert capture.metrics.increase(f"{DURATION}_count") == 0


def test_secrets_never_reach_spans_logs_or_metrics(
    captured: obskit.testing.Capture, app: Any
) -> None:
    """A token in the query string and in an Authorization header: redacted in
    ``url.query``, absent from the access line and the metric labels."""
    get(app, "/items/1?token=s3cr3t&page=2", headers={"authorization": "Bearer s3cr3t"})
    (server,) = server_spans(captured)
    assert (server.attributes or {})["url.query"] == "token=[REDACTED]&page=[REDACTED]"
    assert "s3cr3t" not in str(app_lines(captured))
    assert "s3cr3t" not in captured.metrics.text()
    assert "s3cr3t" not in str(dict(server.attributes or {}))


def test_instrumenting_twice_and_an_instrumented_mounted_app_record_once(
    captured: obskit.testing.Capture,
) -> None:
    """instrument_asgi twice on an app, and on a sub-app mounted in an instrumented app:
    the same app object comes back, and each request has one SERVER span, named from the
    outermost app."""
    from fastapi import FastAPI

    sub = FastAPI()

    @sub.get("/ping/{n}")
    async def ping(n: int) -> int:
        return n

    outer = FastAPI()
    outer.mount("/sub", obskit.instrument_asgi(sub))
    assert obskit.instrument_asgi(outer) is outer
    assert obskit.instrument_asgi(outer) is outer
    assert isinstance(outer, FastAPI)
    assert get(outer, "/sub/ping/3").json() == 3
    (server,) = server_spans(captured)
    assert server.name == "GET /sub/ping/{n}"


def test_requests_before_init_pass_through(capsys: pytest.CaptureFixture[str]) -> None:
    """An app instrumented before ``obskit.init()``: requests are served, nothing recorded."""
    app = obskit.instrument_asgi(fastapi_app.create_app())
    response = get(app, "/items/2")
    assert response.status_code == 200
    assert "traceresponse" not in response.headers


def test_a_middleware_that_copies_the_scope_still_gets_the_route_named(
    captured: obskit.testing.Capture,
) -> None:
    """A user middleware passing a copy of the scope down (so the route the router picked
    is not in obskit's scope): the request is matched against the app's routes instead."""
    app = fastapi_app.create_app()

    @app.middleware("http")
    async def passthrough(request: Any, call_next: Any) -> Any:
        return await call_next(request)

    class Copying:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await self.inner(dict(scope), receive, send)

    app.add_middleware(Copying)
    obskit.instrument_asgi(app)
    get(app, "/admin/users/8")
    get(app, "/items/8")
    assert [s.name for s in server_spans(captured)] == [
        "GET /admin/users/{user_id}",
        "GET /items/{item_id}",
    ]


def test_plain_starlette_app_routes_mounts_and_static_mounts(
    captured: obskit.testing.Capture,
) -> None:
    """A Starlette app (no FastAPI): Route templates with converters, a Mount with routes
    and parameters, a Mount of a routeless ASGI app (``/files/{path:path}``)."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    async def page(request: Any) -> PlainTextResponse:
        return PlainTextResponse("page")

    async def files(scope: Any, receive: Any, send: Any) -> None:
        await PlainTextResponse("file")(scope, receive, send)

    app = Starlette(
        routes=[
            Route("/pages/{n:int}", page),
            Mount("/t/{tenant}", routes=[Route("/docs/{name}", page)]),
            Mount("/files", app=files),
        ]
    )
    assert obskit.instrument_asgi(app) is app
    for path in ("/pages/3", "/t/acme/docs/readme", "/files/a/b.txt", "/pages/x"):
        get(app, path)
    assert [s.name for s in server_spans(captured)] == [
        "GET /pages/{n:int}",
        "GET /t/{tenant}/docs/{name}",
        "GET /files/{path:path}",
        "GET",
    ]


def test_bare_asgi_callable_is_wrapped_and_names_routes_it_is_told(
    captured: obskit.testing.Capture,
) -> None:
    """A bare ASGI callable comes back wrapped in ObskitMiddleware: unmatched unless a
    ``route`` function names the request's template."""

    async def bare(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    wrapped = obskit.instrument_asgi(bare)
    assert isinstance(wrapped, ObskitMiddleware)
    assert obskit.instrument_asgi(wrapped) is wrapped
    named = obskit.instrument_asgi(bare, route=lambda scope: "/users/{id}")
    assert get(wrapped, "/users/1").text == "ok"
    assert get(named, "/users/2").headers["traceresponse"]
    assert [s.name for s in server_spans(captured)] == ["GET", "GET /users/{id}"]


def test_middleware_added_inside_a_starlette_app_names_routes(
    captured: obskit.testing.Capture,
) -> None:
    """``app.add_middleware(ObskitMiddleware)`` in a Starlette app: recorded inside the
    app's error handling, routes named through the router the scope carries."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    async def page(request: Any) -> PlainTextResponse:
        return PlainTextResponse("page")

    app = Starlette(routes=[Mount("/v1", routes=[Route("/things/{thing_id}", page)])])
    app.add_middleware(ObskitMiddleware)
    get(app, "/v1/things/t")
    assert [s.name for s in server_spans(captured)] == ["GET /v1/things/{thing_id}"]


def test_the_docs_snippet_runs_and_instruments_the_app(capsys: pytest.CaptureFixture[str]) -> None:
    """docs/asgi.md's app runs as written: a request is named by its route template."""
    import re
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "asgi.md").read_text()
    (block,) = re.findall(r"```python\n(.*?)```", page, re.S)
    namespace: dict[str, Any] = {"__name__": "__snippet__"}
    exec(compile(block, "asgi.md-snippet", "exec"), namespace)
    response = get(namespace["app"], "/items/5")
    assert response.json() == {"id": 5}
    lines = [line for line in capsys.readouterr().out.splitlines() if "obskit.access" in line]
    assert len(lines) == 1
    assert '"http.route": "/items/{item_id}"' in lines[0]
