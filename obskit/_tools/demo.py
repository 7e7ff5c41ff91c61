"""``obskit demo``: a small instrumented app, a few requests, and one request's three
signals joined by its trace id — the waterfall, the log lines, the exemplar.

Needs no external service: the app runs on 127.0.0.1 (Flask if installed, else a
plain WSGI app, so the base install is enough), spans and log lines are kept in
memory, and the metrics are read from the app's own ``/metrics``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any, TextIO
from wsgiref.simple_server import WSGIRequestHandler, make_server

import obskit
from obskit import testing
from obskit._traces.console_tree import render_trace

log = obskit.get_logger("obskit.demo")


@obskit.traced
def load_order(order_id: int) -> dict[str, Any]:
    with obskit.span("db.query", **{"db.operation.name": "SELECT"}):
        time.sleep(0.004)
    log.info("order loaded", order_id=order_id)
    return {"id": order_id, "total": 42.5}


@obskit.traced
def charge_card(order: dict[str, Any]) -> None:
    time.sleep(0.008)
    log.info("card charged", amount=order["total"])


def _checkout(order_id: int) -> dict[str, Any]:
    order = load_order(order_id)
    charge_card(order)
    return {"paid": order_id}


def _slow() -> dict[str, Any]:
    with obskit.span("compute-report"):
        time.sleep(0.25)
    return {"report": "done"}


def _fail() -> dict[str, Any]:
    log.warning("about to fail on purpose")
    raise RuntimeError("the demo's failing request")


def flask_app() -> Any:
    from flask import Flask

    app = Flask("obskit_demo")
    app.add_url_rule("/", "index", lambda: {"hello": "obskit"})
    app.add_url_rule("/orders/<int:order_id>/pay", "pay", _checkout, methods=["POST"])
    app.add_url_rule("/slow", "slow", _slow)
    app.add_url_rule("/fail", "fail", _fail)
    return obskit.instrument_flask(app)


def wsgi_app() -> Callable[..., Iterable[bytes]]:
    """The same routes without Flask, instrumented with obskit's HTTP core directly."""
    from obskit._http.server_request import ServerRequest, current_telemetry

    def route(method: str, path: str) -> tuple[str | None, Callable[[], dict[str, Any]] | None]:
        parts = path.strip("/").split("/")
        if path == "/":
            return "/", lambda: {"hello": "obskit"}
        if len(parts) == 3 and parts[0] == "orders" and parts[1].isdigit() and method == "POST":
            return "/orders/<int:order_id>/pay", lambda: _checkout(int(parts[1]))
        if path == "/slow":
            return "/slow", _slow
        if path == "/fail":
            return "/fail", _fail
        return None, None

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO", "/"), environ.get("REQUEST_METHOD", "GET")
        if path == "/metrics":
            served: Iterable[bytes] = obskit.metrics_wsgi_app()(environ, start_response)
            return served
        state = ServerRequest(current_telemetry(), method, path, environ)
        template, handler = route(method, path)
        state.route = template
        token = state.attach()
        error: BaseException | None = None
        try:
            if handler is None:
                status, body = 404, {"error": "not found"}
            else:
                try:
                    status, body = 200, handler()
                except Exception as raised:
                    error = raised
                    log.exception("request failed")
                    status, body = 500, {"error": "internal"}
            extra = state.response_headers(status)
            start_response(
                f"{status} {'OK' if status == 200 else 'ERROR'}",
                [("Content-Type", "application/json"), *extra],
            )
            if error is not None:
                state.record_exception(error)
            state.finish()
            return [json.dumps(body).encode()]
        finally:
            state.detach(token)

    return app


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def run(serve: bool = False, out: TextIO | None = None) -> int:
    """Run the demo; return the exit code."""
    out = out or sys.stdout
    colors = out.isatty()
    with testing.capture(
        service_name="obskit-demo", strict=False, log_level="info", sequential_ids=False
    ) as captured:
        try:
            app: Any = flask_app()
            kind = "Flask"
        except ImportError:
            app, kind = wsgi_app(), "a plain WSGI app (Flask is not installed)"
        server = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
        port = server.server_address[1]
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        base = f"http://127.0.0.1:{port}"
        try:
            trace_id = _drive(base)
            _show(captured, base, trace_id, kind, colors, out)
            if serve:
                _serve(base, out)
        finally:
            server.shutdown()
            server.server_close()
    return 0


def _request(url: str, method: str = "GET") -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            reply.read()
            return reply.status, dict(reply.headers)
    except urllib.error.HTTPError as failed:
        failed.read()
        return failed.code, dict(failed.headers)


def _drive(base: str) -> str:
    """Send the demo's requests; return the trace id of the checkout request."""
    _request(f"{base}/")
    _, headers = _request(f"{base}/orders/42/pay", "POST")
    _request(f"{base}/slow")
    _request(f"{base}/fail")
    _request(f"{base}/nowhere")
    return headers["traceresponse"].split("-")[1]


def _show(
    captured: testing.Capture, base: str, trace_id: str, kind: str, colors: bool, out: TextIO
) -> None:
    bold = (lambda text: f"\x1b[1m{text}\x1b[0m") if colors else (lambda text: text)
    spans = [s for s in captured.spans if testing.Capture.trace_id(s) == trace_id]
    out.write(f"obskit demo: {kind} on {base}; sent 5 requests (one slow, one failing, one 404).\n")
    out.write(f"Here is one of them, POST /orders/42/pay, by its trace id {trace_id}:\n\n")
    out.write(bold("1. The trace (what the collector would receive), as a waterfall:\n"))
    out.write(render_trace(spans, colors=colors))
    out.write(
        "\n" + bold("2. Its log lines (JSON on stdout in production), all with this trace_id:\n")
    )
    for line in captured.logs:
        if line.get("trace_id") == trace_id:
            out.write(json.dumps(line) + "\n")
    out.write("\n" + bold("3. The latency histogram on /metrics, with this trace's exemplar:\n"))
    request = urllib.request.Request(
        f"{base}/metrics", headers={"Accept": "application/openmetrics-text"}
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        exposition = reply.read().decode()
    for line in exposition.splitlines():
        if trace_id in line:
            out.write(line + "\n")
    others = [s for s in captured.spans if s.status.status_code.name == "ERROR"]
    out.write(
        f"\n{len(captured.spans)} spans, {len(captured.logs)} log lines recorded; "
        f"{len(others)} span(s) marked as errors (the failing request).\n"
        "Run `obskit demo --serve` to keep the app running and explore it.\n"
    )
    out.flush()


def _serve(base: str, out: TextIO) -> None:
    from obskit._logs import pipeline as _pipeline

    _pipeline.pipeline().writer.capture = None  # from now on, log lines go to stdout
    out.write(
        f"\nServing: {base}/  {base}/slow  {base}/fail  {base}/metrics  "
        f"(POST {base}/orders/1/pay). Ctrl-C to stop.\n"
    )
    out.flush()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
