"""Flask's development server (`flask run`): its request lines leave the log to obskit's
access line, and its other lines carry no colour codes into the JSON."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from pathlib import Path

import pytest
from flask import Flask

import obskit
from obskit.integrations.flask import DevServerLines
from tests.servers import Server


@pytest.mark.slow
def test_flask_run_writes_obskits_access_line_only_and_no_colour_codes(tmp_path: Path) -> None:
    """Under `flask run`, a 200 and a 404 each give one obskit.access line and no
    Werkzeug request line; no JSON line carries an escape sequence."""
    server = Server(
        tmp_path,
        ["flask", "--app", "examples.flask_app:create_app()", "run", "--port", "{port}"],
        env={},
        ready_path="/post/1",
    )
    try:
        server.get("/post/5")
        with contextlib.suppress(OSError):  # the 404
            server.get("/nowhere")
        # The server thread writes a request's access line after its reply has gone out:
        # wait for it (bounded) before stopping the server.
        deadline = time.monotonic() + 10
        while "GET /nowhere 404" not in server.stdout_path.read_text():
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        server.stop()
    raw = server.stdout_path.read_text()
    lines = [json.loads(line) for line in raw.splitlines() if line.startswith("{")]
    access = [line["event"] for line in lines if line["logger"] == "obskit.access"]
    assert "GET /post/5 200" in access
    assert "GET /nowhere 404" in access
    werkzeug = [line for line in lines if line["logger"] == "werkzeug"]
    assert werkzeug, "the development server's start-up lines are kept"
    assert not [line for line in werkzeug if '"GET ' in line["event"]]
    assert "\\u001b" not in raw
    assert "\x1b" not in raw


def test_the_filter_keeps_request_lines_when_obskit_writes_no_access_line() -> None:
    """With http_access_log off, Werkzeug's request line stays (without colours); the
    filter is installed once however many apps are instrumented."""
    obskit.init(http_access_log=False, traces_exporter="none")
    obskit.instrument_flask(Flask("one"))
    obskit.instrument_flask(Flask("two"))
    filters = [f for f in logging.getLogger("werkzeug").filters if isinstance(f, DevServerLines)]
    assert len(filters) == 1
    record = logging.LogRecord(
        "werkzeug",
        logging.INFO,
        __file__,
        1,
        '127.0.0.1 - - [06/Dec/2026 12:00:00] "%s" %s %s',
        ("\x1b[33mGET /x HTTP/1.1\x1b[0m", "404", "-"),
        None,
    )
    assert filters[0].filter(record)
    assert record.getMessage() == '127.0.0.1 - - [06/Dec/2026 12:00:00] "GET /x HTTP/1.1" 404 -'
    obskit.init(traces_exporter="none")  # access lines on: the request line is dropped
    assert not filters[0].filter(record)


class _Kept(logging.Handler):
    """Keeps the messages that pass the ``werkzeug`` logger's filters."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.parametrize("access_log", [True, False], ids=["access-line", "no-access-line"])
def test_werkzeugs_own_server_request_line_is_the_one_the_filter_drops(access_log: bool) -> None:
    """Werkzeug's development server (the one `flask run` starts) serving an instrumented
    app: its request line for a request is dropped while obskit writes the access line,
    and reaches the logger (without colours) when it does not."""
    import threading
    import urllib.request

    from werkzeug.serving import make_server

    obskit.init(http_access_log=access_log, traces_exporter="none")
    app = Flask("dev")
    app.add_url_rule("/hello", "hello", lambda: "hi")
    obskit.instrument_flask(app)
    kept = _Kept()
    werkzeug_log = logging.getLogger("werkzeug")
    werkzeug_log.addHandler(kept)
    server = make_server("127.0.0.1", 0, app)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/hello"
        with urllib.request.urlopen(url, timeout=10) as reply:
            assert reply.read() == b"hi"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        werkzeug_log.removeHandler(kept)
    request_lines = [message for message in kept.messages if '"GET /hello HTTP/1.1" 200' in message]
    assert len(request_lines) == (0 if access_log else 1), kept.messages
    assert not [message for message in kept.messages if "\x1b" in message]
