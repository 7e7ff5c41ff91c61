"""The Flask integration on the *installed* Flask: the things that differ between Flask
versions must not change what obskit records.

CI runs this module (with the other Flask tests) on Flask 2.3 (the declared floor),
3.0, 3.1 and the next release's development wheels. Between them: 3.2 merged the
application and request contexts (``flask.globals._cv_request`` is gone) and passes
the context to ``process_response``; how an already-pushed app context is reused, how
``stream_with_context`` keeps the request, and how the test client preserves the
context have all changed. obskit uses only Flask's and Werkzeug's public API.
"""

from __future__ import annotations

import ast
import io
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from flask import (
    Flask,
    Request,
    Response,
    current_app,
    g,
    got_request_exception,
    redirect,
    request,
    send_file,
    stream_with_context,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import obskit
from obskit.integrations import flask as integration
from tests.conftest import openmetrics, wsgi_request
from tests.servers import run_python

FLASK_VERSION = metadata.version("flask")
WERKZEUG_VERSION = metadata.version("werkzeug")


def _redirect_status() -> int:
    """The status of ``flask.redirect()`` by default: 302, and 303 from Flask 3.2."""
    with Flask(__name__).app_context():
        return redirect("/").status_code


#: What the tests' apps answer for ``redirect(...)`` on the installed Flask.
REDIRECT = _redirect_status()
log = obskit.get_logger(__name__)


def _app() -> Flask:
    """A small app: a route with a converter, a redirect, a failure, three kinds of
    streamed body (``stream_with_context``, a plain generator, ``send_file``)."""
    app = Flask("versions")

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> dict[str, Any]:
        log.info("item", item_id=item_id)
        return {"id": item_id, "g": sorted(g)}

    @app.get("/old/<int:item_id>")
    def old(item_id: int) -> Any:
        return redirect(f"/items/{item_id}")

    @app.get("/fail")
    def fail() -> str:
        raise RuntimeError("view failed")

    @app.get("/stream/context")
    def with_context() -> Response:
        def chunks() -> Iterator[str]:
            for n in range(int(request.args.get("n", "3"))):  # the request, while streaming
                log.info("chunk", n=n)
                time.sleep(0.01)
                yield f"{request.path} {n}\n"

        return Response(stream_with_context(chunks()), mimetype="text/plain")

    @app.get("/stream/plain")
    def plain() -> Response:
        def chunks() -> Iterator[str]:
            for n in range(3):
                log.info("chunk", n=n)
                time.sleep(0.01)
                yield f"plain {n}\n"

        return Response(chunks(), mimetype="text/plain")

    @app.get("/stream/file")
    def file() -> Response:
        return send_file(io.BytesIO(b"file body\n" * 3), mimetype="text/plain")

    return obskit.instrument_flask(app)


def _server_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]


def _trace_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return format(span.context.trace_id, "032x")


def _lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def _active() -> float:
    family = openmetrics()["http_server_active_requests"]
    return float(sum(s.value for s in family.samples if s.labels["http_request_method"] == "GET"))


@pytest.fixture
def exporter(spans: Callable[..., InMemorySpanExporter]) -> InMemorySpanExporter:
    return spans(service_name="versions", log_format="json")


def test_the_integration_imports_only_public_flask_and_werkzeug_names() -> None:
    """Every name obskit's Flask module imports from Flask or Werkzeug is public: no
    underscore in the module path nor in the name."""
    tree = ast.parse(Path(integration.__file__).read_text())
    imported: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported += [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
    framework = [name for name in imported if name.split(".")[0] in ("flask", "werkzeug")]
    assert framework  # what the check is about is there
    assert [name for name in framework if any(p.startswith("_") for p in name.split("."))] == []


def test_instrumenting_sets_only_the_documented_middleware_hook() -> None:
    """``instrument_flask`` replaces ``app.wsgi_app`` (Flask's documented place for WSGI
    middleware) and nothing else on the app or its class; it registers one
    ``after_request`` function and one ``got_request_exception`` receiver."""
    app = Flask("hooks")
    before = dict(vars(app))
    class_before = dict(vars(Flask))
    hooks = list(app.after_request_funcs.get(None, []))
    obskit.instrument_flask(app)
    after = vars(app)
    changed = {name for name in after if name not in before or after[name] is not before[name]}
    assert changed == {"wsgi_app"}
    assert dict(vars(Flask)) == class_before
    assert app.extensions["obskit"]
    assert len(app.after_request_funcs[None]) == len(hooks) + 1
    assert bool(got_request_exception.has_receivers_for(app))
    obskit.instrument_flask(app)  # again: nothing more
    assert len(app.after_request_funcs[None]) == len(hooks) + 1


def test_requests_are_served_with_flasks_private_context_names_hidden() -> None:
    """In a fresh interpreter where every private name of ``flask.globals`` is removed
    before obskit's Flask module is imported, requests are still named, counted and
    logged: obskit reads no Flask internals, at import or per request."""
    result = run_python(
        """
        import json
        import flask, flask.globals, flask.testing
        private = [n for n in vars(flask.globals) if n[0] == "_" and n[:2] != "__"]
        assert private  # there is something to hide
        for name in private:
            delattr(flask.globals, name)
        import obskit
        obskit.init(service_name="hidden", log_format="json", traces_exporter="none")
        app = flask.Flask("hidden")

        @app.get("/items/<int:item_id>")
        def item(item_id):
            return {"id": item_id}

        obskit.instrument_flask(app)
        assert app.test_client().get("/items/3").json == {"id": 3}
        """,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    (access,) = [line for line in lines if line["logger"] == "obskit.access"]
    assert access["http.route"] == "/items/<int:item_id>"


def test_a_request_inside_an_already_pushed_app_context(
    exporter: InMemorySpanExporter, capsys: pytest.CaptureFixture[str]
) -> None:
    """A request served while the app's context is already pushed (Flask < 3.2 reuses
    it for the request, 3.2 pushes its own): named by its route, its log lines carry
    its trace id, and the outer context is as it was afterwards."""
    app = _app()
    client = app.test_client()
    capsys.readouterr()
    with app.app_context():
        g.marker = "outer"
        assert client.get("/items/3", buffered=True).status_code == 200
        assert g.marker == "outer"
        assert current_app._get_current_object() is app  # type: ignore[attr-defined]
    with app.test_request_context("/elsewhere"):
        assert client.get("/items/4", buffered=True).status_code == 200
        assert request.path == "/elsewhere"
    first, second = _server_spans(exporter)
    assert first.name == second.name == "GET /items/<int:item_id>"
    lines = _lines(capsys)
    assert [line["trace_id"] for line in lines] == [_trace_id(first)] * 2 + [_trace_id(second)] * 2
    assert _active() == 0.0


def test_the_test_clients_preserved_context(exporter: InMemorySpanExporter) -> None:
    """``with app.test_client()`` keeps the request's context after the response (how
    it does so differs by version): the request is already recorded, and the context
    is still the request's until the block ends."""
    app = _app()
    with app.test_client() as client:
        assert client.get("/items/5?x=1").status_code == 200
        assert request.path == "/items/5"
        (span,) = _server_spans(exporter)
        assert span.name == "GET /items/<int:item_id>"
        assert (span.attributes or {})["http.response.status_code"] == 200
    assert _active() == 0.0


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/stream/context?n=3", b"/stream/context 0\n/stream/context 1\n/stream/context 2\n"),
        ("/stream/plain", b"plain 0\nplain 1\nplain 2\n"),
        ("/stream/file", b"file body\n" * 3),
    ],
    ids=["stream_with_context", "generator", "send_file"],
)
def test_a_streamed_body_ends_the_request_after_its_last_chunk(
    path: str, body: bytes, exporter: InMemorySpanExporter, capsys: pytest.CaptureFixture[str]
) -> None:
    """A streamed body (``stream_with_context``, which keeps Flask's request, a plain
    generator, ``send_file``): the request is in flight until the server has read the
    last chunk and closed the body; chunk log lines carry its trace id."""
    app = _app()
    capsys.readouterr()
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path.split("?")[0],
        "QUERY_STRING": path.partition("?")[2],
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": io.StringIO(),
        "wsgi.url_scheme": "http",
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }
    statuses: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], *exc: Any) -> Any:
        statuses.append(status)

    iterable = app(environ, start_response)
    assert _server_spans(exporter) == []  # nothing produced yet
    assert _active() == 1.0
    try:
        assert b"".join(iterable) == body
    finally:
        iterable.close()  # type: ignore[attr-defined]
    assert statuses == ["200 OK"]
    (span,) = _server_spans(exporter)
    assert span.name == f"GET {path.split('?')[0]}"
    assert _active() == 0.0
    chunks = [line for line in _lines(capsys) if line["event"] == "chunk"]
    assert {line["trace_id"] for line in chunks} <= {_trace_id(span)}
    if path != "/stream/file":
        assert len(chunks) == 3


def test_the_test_client_buffered_unbuffered_and_following_redirects(
    exporter: InMemorySpanExporter,
) -> None:
    """A response built in memory is recorded when the app returns it, before the test
    client's caller reads the body; a redirect followed by the client is two requests."""
    app = _app()
    client = app.test_client()
    response = client.get("/items/6")  # not buffered, not read yet
    assert [s.name for s in _server_spans(exporter)] == ["GET /items/<int:item_id>"]
    assert response.json == {"id": 6, "g": []}
    response = client.get("/old/6", follow_redirects=True)
    assert response.status_code == 200
    assert [s.name for s in _server_spans(exporter)][1:] == [
        "GET /old/<int:item_id>",
        "GET /items/<int:item_id>",
    ]
    assert [(s.attributes or {})["http.response.status_code"] for s in _server_spans(exporter)] == [
        200,
        REDIRECT,
        200,
    ]


def test_a_view_exception_propagated_by_flask_is_the_users_own(
    exporter: InMemorySpanExporter,
) -> None:
    """With ``PROPAGATE_EXCEPTIONS`` (as in testing) the view's exception reaches the
    caller unchanged (the same object, raised from the view); the request is recorded
    as a 500 with the exception on its span."""
    app = _app()
    app.config["PROPAGATE_EXCEPTIONS"] = True
    with pytest.raises(RuntimeError) as raised:
        app.test_client().get("/fail")
    assert str(raised.value) == "view failed"
    assert raised.traceback[-1].name == "fail"
    (span,) = _server_spans(exporter)
    assert span.name == "GET /fail"
    assert span.status.status_code is StatusCode.ERROR
    assert [event.name for event in span.events] == ["exception"]
    samples = openmetrics()["http_server_request_duration_seconds"].samples
    assert {s.labels["http_response_status_code"] for s in samples} == {"500"}
    assert _active() == 0.0


def test_a_request_class_that_keeps_itself_out_of_the_environ(
    exporter: InMemorySpanExporter,
) -> None:
    """An app whose request class does not put itself in the WSGI environ (Werkzeug's
    ``populate_request=False``) is still named by its route templates."""

    class QuietRequest(Request):
        def __init__(self, environ: Any, populate_request: bool = True, shallow: bool = False):
            super().__init__(environ, populate_request=False, shallow=shallow)

    app = _app()
    app.request_class = QuietRequest
    assert wsgi_request(app, "/items/7")[0] == 200
    assert wsgi_request(app, "/nowhere")[0] == 404
    assert [s.name for s in _server_spans(exporter)] == ["GET /items/<int:item_id>", "GET"]


def test_a_request_nested_in_a_request_of_the_same_app(exporter: InMemorySpanExporter) -> None:
    """A view that calls its own app (through the test client) while it is serving a
    request: each request is named by its own route, and the outer one, which streams,
    is still seen to stream (in flight while its chunks are produced)."""
    app = _app()

    @app.get("/outer")
    def outer() -> Response:
        inner = current_app.test_client().get("/items/8", buffered=True)
        return Response(stream_with_context(iter([inner.data, f"{_active()}".encode()])))

    status, _, body = wsgi_request(app, "/outer")
    assert status == 200
    assert body.endswith(b"}\n1.0")  # the inner answer, then: the outer is in flight
    inner, outer_span = _server_spans(exporter)
    assert (inner.name, outer_span.name) == ("GET /items/<int:item_id>", "GET /outer")
    assert _active() == 0.0


def test_an_unrecorded_request_nested_in_a_recorded_one(
    spans: Callable[..., InMemorySpanExporter],
) -> None:
    """A view that calls an excluded path of its own app, which fails: the failure is
    the inner request's, not recorded on the outer request's span."""
    exporter = spans(service_name="versions", http_excluded_paths=["/fail"])
    app = _app()

    @app.get("/outer")
    def outer() -> str:
        return str(current_app.test_client().get("/fail", buffered=True).status_code)

    assert wsgi_request(app, "/outer")[2] == b"500"
    (span,) = _server_spans(exporter)
    assert span.name == "GET /outer"
    assert span.events == ()
    assert span.status.status_code is StatusCode.UNSET


def test_an_async_view_runs_in_the_requests_span(
    exporter: InMemorySpanExporter, capsys: pytest.CaptureFixture[str]
) -> None:
    """An ``async def`` view (Flask runs it through asgiref, ``flask[async]``): its log
    lines carry the request's trace id."""
    pytest.importorskip("asgiref")
    app = _app()

    @app.get("/async/<int:n>")
    async def later(n: int) -> dict[str, int]:
        log.info("async view", n=n)
        return {"n": n}

    capsys.readouterr()
    assert app.test_client().get("/async/2", buffered=True).json == {"n": 2}
    (span,) = _server_spans(exporter)
    assert span.name == "GET /async/<int:n>"
    (line,) = [line for line in _lines(capsys) if line["event"] == "async view"]
    assert line["trace_id"] == _trace_id(span)


@pytest.fixture
def served() -> Iterator[Callable[[Flask], str]]:
    """Serve an app with Werkzeug's threaded WSGI server on 127.0.0.1: its base URL."""
    from werkzeug.serving import make_server

    started: list[Any] = []

    def serve(app: Flask) -> str:
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        started.append((server, thread))
        return f"http://127.0.0.1:{server.server_port}"

    yield serve
    for server, thread in started:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _fetch(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), error.read()


def test_a_real_wsgi_server(exporter: InMemorySpanExporter, served: Callable[[Flask], str]) -> None:
    """Through Werkzeug's threaded server over real sockets: a route, a 404, a streamed
    (chunked) body and a failing view are each recorded with the status sent, and each
    ``traceresponse`` header names its request's span."""
    base = served(_app())
    results = {
        path: _fetch(base + path)
        for path in ("/items/9", "/nowhere", "/stream/context?n=2", "/fail")
    }
    assert [status for status, _, _ in results.values()] == [200, 404, 200, 500]
    assert results["/stream/context?n=2"][2] == b"/stream/context 0\n/stream/context 1\n"
    deadline = time.monotonic() + 5
    while (len(_server_spans(exporter)) < 4 or _active() != 0.0) and time.monotonic() < deadline:
        time.sleep(0.01)  # the server thread ends the streamed request after its reply
    by_name = {span.name: span for span in _server_spans(exporter)}
    names = ["GET /items/<int:item_id>", "GET", "GET /stream/context", "GET /fail"]
    for (_, headers, _), name in zip(results.values(), names, strict=True):
        context = by_name[name].context
        assert context is not None
        assert headers["traceresponse"] == f"00-{context.trace_id:032x}-{context.span_id:016x}-01"
    assert sorted(by_name) == sorted(names)
    assert by_name["GET /fail"].status.status_code is StatusCode.ERROR
    assert (by_name["GET"].attributes or {})["http.response.status_code"] == 404
    assert _active() == 0.0


def test_the_installed_versions_are_in_the_supported_window() -> None:
    """The Flask under test is one obskit supports (``flask>=2.3``), with its Werkzeug."""
    major, minor = (int(part) for part in FLASK_VERSION.split(".")[:2])
    assert (major, minor) >= (2, 3), FLASK_VERSION
    assert int(WERKZEUG_VERSION.split(".")[0]) >= 2, WERKZEUG_VERSION
