"""``obskit demo``: a small instrumented app, a few requests, and one request's three
signals joined by its trace id — the waterfall, the log lines, the exemplar.

Needs no external service: the app runs on 127.0.0.1 (Flask if installed, else a
plain WSGI app, so the base install is enough), spans and log lines are kept in
memory, and the metrics are read from obskit's own ``/metrics`` server (on a free local
port here; 9464 in a service).

For a person first: the output fits the terminal's width (``COLUMNS`` wins; a long
name or field is cut with ``…``), the trace id is highlighted, log lines and exemplars
are shown condensed, and only the raw lines a machine reads (JSON, OpenMetrics) are as
wide as they are, under a "Raw, ..." label. Colours only on a terminal and never with
``NO_COLOR``; a reader that goes away (``obskit demo | head``) ends the demo quietly.
``--serve`` then prints each new request's waterfall and log lines as it ends.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sqlite3
import sys
import tempfile
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any, TextIO
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from opentelemetry.sdk.trace import ReadableSpan

import obskit
from obskit import testing
from obskit._terminal import escape_controls
from obskit._traces.waterfall import render

log = obskit.get_logger("obskit.demo")


#: Where the demo's "payments service" answers and its database file (set by ``_run``).
_where: dict[str, str] = {}


@obskit.traced
def load_order(order_id: int) -> dict[str, Any]:
    with sqlite3.connect(_where["db"]) as db:  # a real query: obskit records its span
        row = db.execute("SELECT total FROM orders WHERE id = ?", (order_id,)).fetchone()
    total = row[0] if row else 19.9
    log.info("order loaded", order_id=order_id)
    return {"id": order_id, "total": total}


@obskit.traced
def charge_card(order: dict[str, Any]) -> None:
    """A call to another service (the payments route, over HTTP): its trace goes along."""
    body = json.dumps({"order": order["id"], "amount": order["total"]}).encode()
    request = urllib.request.Request(f"{_where['base']}/payments", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=10) as reply:
        reply.read()
    log.info("card charged", amount=order["total"])


def _payment() -> dict[str, Any]:
    """The payments service: writes the payment to its database."""
    with sqlite3.connect(_where["db"]) as db:
        db.execute("INSERT INTO payments (amount) VALUES (?)", (42.5,))
    log.info("payment stored")
    return {"stored": True}


def _checkout(order_id: int) -> dict[str, Any]:
    order = load_order(order_id)
    charge_card(order)
    return {"paid": order_id}


def build_report(seconds: float) -> int:
    """The slow request's work: CPU spent right here, where the profiler finds it."""
    deadline = time.perf_counter() + seconds
    rows = 0
    while time.perf_counter() < deadline:
        rows += sum(range(200))
    return rows


def _slow() -> dict[str, Any]:
    with obskit.span("compute-report"):
        build_report(SLOW_SECONDS)
    return {"report": "done"}


def _fail() -> dict[str, Any]:
    log.warning("about to fail on purpose")
    raise RuntimeError("the demo's failing request")


def flask_app() -> Any:
    from flask import Flask

    app = Flask("obskit_demo")
    app.add_url_rule("/", "index", lambda: {"hello": "obskit"})
    app.add_url_rule("/orders/<int:order_id>/pay", "pay", _checkout, methods=["POST"])
    app.add_url_rule("/payments", "payments", _payment, methods=["POST"])
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
        if path == "/payments" and method == "POST":
            return "/payments", _payment
        if path == "/slow":
            return "/slow", _slow
        if path == "/fail":
            return "/fail", _fail
        return None, None

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO", "/"), environ.get("REQUEST_METHOD", "GET")
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


#: The requests the demo sends: (method, path, what it is).
_REQUESTS = (
    ("GET", "/", "a hello"),
    ("POST", "/orders/42/pay", "a checkout"),
    ("GET", "/slow", "a slow report"),
    ("GET", "/fail", "a failing one"),
    ("GET", "/nowhere", "a 404"),
)
NEXT_STEPS = "https://obskit.readthedocs.io/quickstart/"
#: How long GET /slow works, and the demo's stuck_after and profile_slow_span: the
#: watchdog logs it while it runs and the profiler names its hot frame.
SLOW_SECONDS = 0.5
STUCK_AFTER = 0.25


def run(serve: bool = False, out: TextIO | None = None) -> int:
    """Run the demo; return the exit code."""
    out = out or sys.stdout
    try:
        return _run(serve, out)
    except BrokenPipeError:
        # The reader went away (`obskit demo | head`): stop quietly, as a filter does.
        _quiet(out)
        return 0


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


def _database(directory: str) -> str:
    """The demo's database: an ``orders`` row to load and a ``payments`` table to fill."""
    path = os.path.join(directory, "demo.sqlite3")
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, total REAL)")
        db.execute("CREATE TABLE payments (id INTEGER PRIMARY KEY, amount REAL)")
        db.execute("INSERT INTO orders (id, total) VALUES (42, 42.5)")
    return path


def _run(serve: bool, out: TextIO) -> int:
    style = Style.for_stream(out)
    with tempfile.TemporaryDirectory(prefix="obskit-demo-") as directory:
        _where["db"] = _database(directory)
        return _run_app(serve, out, style)


def _run_app(serve: bool, out: TextIO, style: Style) -> int:
    metrics_port = _free_port()
    metrics = f"http://127.0.0.1:{metrics_port}/metrics"
    with testing.capture(
        service_name="obskit-demo",
        strict=False,
        log_level="info",
        sequential_ids=False,
        metrics_port=metrics_port,
        metrics_addr="127.0.0.1",
        stuck_after=STUCK_AFTER,
        profiles=True,
        profile_hz=200,
        profile_slow_span=STUCK_AFTER,
    ) as captured:
        try:
            app: Any = flask_app()
            kind = "served by Flask"
        except ImportError:
            app = wsgi_app()
            kind = "a plain WSGI app (with Flask installed, the demo uses Flask)"
        # Threads: the checkout calls the payments route of the same server.
        server = make_server("127.0.0.1", 0, app, _ThreadingServer, handler_class=_Quiet)
        port = server.server_address[1]
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        base = f"http://127.0.0.1:{port}"
        _where["base"] = base
        try:
            checkout, failing, slow = _drive(base)
            _wait_for_requests(captured, len(_REQUESTS) + 1)  # (+ the payments call)
            _show(captured, base, metrics, (checkout, failing, slow), kind, style, out)
            if serve:
                _serve(captured, base, metrics, style, out)
        finally:
            server.shutdown()
            server.server_close()
    return 0


def _free_port() -> int:
    """A port nothing listens on now, on 127.0.0.1 (for the demo's metrics server)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _quiet(out: TextIO) -> None:
    """Point stdout at /dev/null so that flushing it at exit raises nothing either."""
    try:
        if out is sys.stdout:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
    except (OSError, ValueError):
        pass


class Style:
    """How the demo dresses its text: the width it fits and whether it uses colours.

    Colours only on a terminal, and never when ``NO_COLOR`` is set (no-color.org). The
    width is the terminal's (``COLUMNS`` wins), at least 60 and at most 120 columns.
    """

    def __init__(self, tty: bool, colors: bool, width: int) -> None:
        self.tty = tty
        self.colors = colors
        self.width = width

    @classmethod
    def for_stream(cls, out: TextIO) -> Style:
        try:
            tty = out.isatty()
        except Exception:
            tty = False
        colors = tty and not os.environ.get("NO_COLOR")
        width = shutil.get_terminal_size((80, 24)).columns
        return cls(tty, colors, max(60, min(width, 120)))

    def _dress(self, code: str, text: str) -> str:
        return f"{code}{text}\x1b[0m" if self.colors else text

    def bold(self, text: str) -> str:
        return self._dress("\x1b[1m", text)

    def dim(self, text: str) -> str:
        return self._dress("\x1b[2m", text)

    def trace(self, trace_id: str) -> str:
        """The trace id that joins the signals: bold yellow, wherever it appears."""
        return self._dress("\x1b[1;33m", trace_id)

    def level(self, level: str, text: str) -> str:
        codes = {"warning": "\x1b[33m", "error": "\x1b[31m", "critical": "\x1b[31m"}
        return self._dress(codes[level], text) if level in codes else text

    def paragraph(self, text: str, indent: str = "") -> str:
        """``text`` wrapped to the width (URLs and ids are never broken)."""
        return (
            textwrap.fill(
                text,
                self.width,
                initial_indent=indent,
                subsequent_indent=indent,
                break_long_words=False,
                break_on_hyphens=False,
            )
            + "\n"
        )

    def fit(self, text: str) -> str:
        """One line cut to the width (``…`` marks the cut)."""
        return text if len(text) <= self.width else text[: self.width - 1] + "…"

    def mark(self, text: str, trace_id: str) -> str:
        """``text`` with every occurrence of ``trace_id`` highlighted."""
        return text.replace(trace_id, self.trace(trace_id)) if self.colors else text


def _request(url: str, method: str = "GET") -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            reply.read()
            return reply.status, dict(reply.headers)
    except urllib.error.HTTPError as failed:
        failed.read()
        return failed.code, dict(failed.headers)


def _drive(base: str) -> tuple[str, str, str]:
    """Send the demo's requests; return the trace ids of the checkout, the failure and
    the slow one."""
    ids = {}
    for method, path, _ in _REQUESTS:
        _, headers = _request(f"{base}{path}", method)
        ids[path] = headers.get("traceresponse", "00-?-").split("-")[1]
    return ids["/orders/42/pay"], ids["/fail"], ids["/slow"]


def _wait_for_requests(captured: testing.Capture, count: int) -> None:
    """Wait (at most 2 s) until the server has ended every request's span: a client has
    its answer a moment before the server is done with the request."""
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        if sum(1 for span in captured.spans if _is_root(span)) >= count:
            return
        time.sleep(0.01)


def _is_root(span: ReadableSpan) -> bool:
    return span.parent is None or span.parent.is_remote


def _show(
    captured: testing.Capture,
    base: str,
    metrics: str,
    traces: tuple[str, str, str],
    kind: str,
    style: Style,
    out: TextIO,
) -> None:
    trace_id, failing, slow = traces
    sent = ", ".join(what for _, _, what in _REQUESTS[:-1]) + " and " + _REQUESTS[-1][2]
    out.write(
        style.paragraph(
            f"obskit demo: a small shop app on {base}, {kind}, instrumented by obskit."
            " Nothing leaves this process: no collector or other service is needed."
        )
    )
    out.write(style.paragraph(f"It sent the app {len(_REQUESTS)} requests: {sent}."))
    out.write("\n")
    intro = (
        "Every signal of a request carries its trace id. The checkout request"
        f" (POST /orders/42/pay) has trace id {trace_id}:"
    )
    out.write(style.mark(style.paragraph(intro), trace_id) + "\n")
    out.write(style.bold("1. Its trace, as a waterfall (what a collector receives):") + "\n")
    out.write(_waterfall(captured, trace_id, style))
    out.write("\n" + style.bold("2. Its log lines, each with this trace_id:") + "\n")
    records = _logs(captured, trace_id)
    out.write(_log_lines(records, style))
    out.write(style.dim("   Raw, as obskit writes them to stdout (JSON, one per line):") + "\n")
    for record in records:
        out.write(style.mark(json.dumps(record), trace_id) + "\n")
    out.write(
        "\n" + style.bold("3. Its latency on /metrics, with this trace id as the exemplar:") + "\n"
    )
    exemplars = _exemplar_lines(metrics, trace_id)
    out.write(_exemplars(exemplars, style))
    out.write(
        style.paragraph(
            "An exemplar is the link from a latency graph (Grafana) to this very trace.",
            indent="   ",
        )
    )
    out.write(style.dim("   Raw, as Prometheus scrapes them (OpenMetrics):") + "\n")
    for line in exemplars:
        out.write(style.mark(line, trace_id) + "\n")
    out.write("\n" + style.bold("4. The failing request, GET /fail, and its log lines:") + "\n")
    out.write(_waterfall(captured, failing, style))
    out.write(_log_lines(_logs(captured, failing), style))
    out.write("\n" + style.bold("5. The slow request, GET /slow: where its time went:") + "\n")
    out.write(_waterfall(captured, slow, style))
    out.write(_slow_request(captured, slow, style))
    errors = [s for s in captured.spans if s.status.status_code.name == "ERROR"]
    out.write(
        f"\nRecorded {len(captured.spans)} spans and {len(captured.logs)} log lines;"
        f" {len(errors)} span{'s' * (len(errors) != 1)} marked as an error.\n\n"
    )
    out.write(style.bold("Next:") + "\n")
    out.write("  obskit demo --serve     keep this app running and watch each request\n")
    out.write("  pip install 'obskit-sdk[flask]', then follow the quickstart:\n")
    out.write(f"  {NEXT_STEPS}\n")
    out.flush()


def _slow_request(captured: testing.Capture, trace_id: str, style: Style) -> str:
    """The watchdog's lines about the slow request (with the innermost line of the stack
    they show) and the hot frames the profiler recorded on its span."""
    text = style.paragraph(
        f"Still running after {STUCK_AFTER} s (the demo's stuck_after), it was logged with"
        " its stack by the watchdog:",
        indent="   ",
    )
    for record in _logs(captured, trace_id):
        if record.get("event") != "stuck span":
            continue
        shown = {key: record.get(key) for key in ("timestamp", "level", "event")}
        shown.update({key: record.get(key) for key in ("span.name", "running_ms", "thread.name")})
        text += _log_line(shown, style) + "\n"
        where = str(record.get("stack", "")).rstrip().splitlines()[-2:]
        text += "".join(
            style.dim(style.fit("      " + escape_controls(line))) + "\n" for line in where
        )
    for span in captured.spans:
        if testing.Capture.trace_id(span) != trace_id:
            continue
        for event in span.events:
            if event.name != "profile.hot_frames":
                continue
            attributes = dict(event.attributes or {})
            text += style.paragraph(
                f"The profiler sampled span {span.name!r} {attributes.get('profile.samples')}"
                " times; its hottest frames (span event profile.hot_frames):",
                indent="   ",
            )
            hot = attributes.get("profile.hot_frames")
            for frame in list(hot if isinstance(hot, (list, tuple)) else ())[:3]:
                text += style.fit("     " + escape_controls(str(frame))) + "\n"
    return text


def _waterfall(captured: testing.Capture, trace_id: str, style: Style) -> str:
    """The waterfall of ``trace_id``'s spans, fitted to the width."""
    spans = [span for span in captured.spans if testing.Capture.trace_id(span) == trace_id]
    return render(spans, colors=style.colors, width=style.width, highlight=style.trace)


def _logs(captured: testing.Capture, trace_id: str) -> list[dict[str, Any]]:
    return [record for record in captured.logs if record.get("trace_id") == trace_id]


def _log_lines(records: list[dict[str, Any]], style: Style) -> str:
    return "".join(_log_line(record, style) + "\n" for record in records)


#: Fields every line has, shown by the condensed view in its own way or not at all.
_STANDARD = frozenset(
    {"timestamp", "level", "event", "logger", "trace_id", "span_id", "service.name"}
)


def _log_line(record: dict[str, Any], style: Style) -> str:
    """A log line for a person: time, level, message, its own fields; cut to the width."""
    level = str(record.get("level", ""))
    fields = []
    for key, value in record.items():
        if key in _STANDARD or key.startswith(("http.", "url.", "exception.")):
            continue
        fields.append(f"{key}={value}")
    when, event = str(record.get("timestamp", ""))[11:23], str(record.get("event", ""))
    text = "  ".join([when, f"{level:<7}", event, *fields])
    line = style.level(level, style.fit("  " + escape_controls(text)))
    if "exception.type" in record:  # under it, where the message starts
        error = f"{record['exception.type']}: {record.get('exception.message', '')}"
        line += "\n" + style.level(
            level, style.fit(" " * (len(when) + 13) + escape_controls(error))
        )
    return line


_EXEMPLAR = re.compile(r"^(\w+)_bucket\{(.*)\} \S+ # \{[^}]*\} (\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def _exemplar_lines(metrics: str, trace_id: str) -> list[str]:
    """The exposition lines that carry ``trace_id``'s exemplar, as scraped."""
    request = urllib.request.Request(metrics, headers={"Accept": "application/openmetrics-text"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        exposition = reply.read().decode()
    # Label values are the app's text: escaped, so they cannot drive the terminal.
    return [escape_controls(line) for line in exposition.splitlines() if trace_id in line]


#: Labels shown first in the condensed view (the rest follow in exposition order).
_FIRST_LABELS = ("http_request_method", "http_route", "function")


def _exemplars(lines: list[str], style: Style) -> str:
    """The exemplars for a person: per histogram, the observed latency and the labels."""
    text, last = "", ""
    for line in lines:
        found = _EXEMPLAR.match(line)
        if found is None:
            text += style.fit("  " + line) + "\n"
            continue
        name, labels, value = found.groups()
        pairs = dict(_LABEL.findall(labels))
        bucket = pairs.pop("le", "?")
        order = sorted(
            pairs, key=lambda key: _FIRST_LABELS.index(key) if key in _FIRST_LABELS else 9
        )
        if name != last:
            text += style.fit(f"   {name}:") + "\n"
            last = name
        shown = " ".join(pairs[key] for key in order)
        text += style.fit(f"  {float(value) * 1000:8.1f} ms  {shown}  (bucket le={bucket})") + "\n"
    return text


def _serve(captured: testing.Capture, base: str, metrics: str, style: Style, out: TextIO) -> None:
    out.write(
        f"\nServing {base} until Ctrl-C. Try:\n"
        f"  curl -X POST {base}/orders/1/pay\n"
        f"  curl {base}/slow    curl {base}/fail\n"
        f"  curl {metrics}    (obskit's metrics port: 9464 in a service)\n"
    )
    if style.tty:
        out.write("Each request's waterfall and log lines appear here.\n")
    else:  # not a person: the log lines as a log shipper would read them
        from obskit._logs import pipeline as _pipeline

        _pipeline.pipeline().writer.capture = None
        out.write("The app's log lines follow (JSON, one per line).\n")
    out.flush()
    try:
        if style.tty:
            _watch(captured, style, out)
        else:
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass


def _watch(captured: testing.Capture, style: Style, out: TextIO) -> None:
    """Print each request's waterfall and log lines when its server span ends.

    A request whose trace came with it (a ``traceparent``) is shown a moment after it
    ends, unless a request of this app that started the trace ends meanwhile (the
    checkout's call to the payments route): then the whole trace is shown once."""
    seen = len(captured.spans)
    waiting: dict[str, float] = {}  # trace id -> when its remote-parented request ended
    while True:
        time.sleep(0.2)
        spans = captured.spans
        due = [trace for trace, ended in waiting.items() if time.monotonic() - ended > 1.0]
        for span in spans[seen:]:
            if span.parent is None:
                due.append(testing.Capture.trace_id(span))
            elif span.parent.is_remote:
                waiting.setdefault(testing.Capture.trace_id(span), time.monotonic())
        for trace_id in dict.fromkeys(due):
            waiting.pop(trace_id, None)
            out.write("\n" + _waterfall(captured, trace_id, style))
            out.write(_log_lines(_logs(captured, trace_id), style))
            out.flush()
        seen = len(spans)
        if seen > 10_000:  # a long session: forget what was shown
            captured.clear()
            seen = 0
