"""Control characters from outside the process never reach a terminal raw: console log
lines (structlog's ConsoleRenderer), the console span tree and JSON lines."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode

import obskit
from obskit._terminal import escape_block, escape_controls
from obskit._traces.console_tree import ConsoleTreeExporter
from tests.conftest import wsgi_request

#: Every kind of character that must not reach a terminal raw: C0 (with ESC, CR, LF,
#: TAB), DEL, C1 (with CSI, NEL), the line and paragraph separators, a bidi override.
CONTROLS = [chr(c) for c in range(0x20)] + ["\x7f"] + [chr(c) for c in range(0x80, 0xA0)]
CONTROLS += ["\u2028", "\u2029", "\u202e"]
#: Text that would clear the screen, colour the rest red and forge a second log line.
HOSTILE = "\x1b[2J\x1b[31m\x9b1m\u2028\r\n1999-01-01T00:00:00.000000Z [info     ] forged"
FORGED_START = "1999-01-01"
#: The start of a console line: its timestamp (a block line starts with spaces).
LINE_START = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z |  ")
_RAW = re.compile("[" + "".join(re.escape(c) for c in CONTROLS if c != "\n") + "]")


def _raw_controls(text: str) -> list[str]:
    return _RAW.findall(text)


def test_escape_controls_escapes_every_control_character_and_nothing_else() -> None:
    """C0, DEL, C1, U+2028/2029 and bidi controls become visible escapes; other text
    (including backslashes and non-ASCII letters) is unchanged."""
    escaped = escape_controls("".join(CONTROLS))
    assert _raw_controls(escaped) == []
    assert "\n" not in escaped
    assert escape_controls("a\nb\r\tc\x1b[0m\x9b\u2028") == "a\\nb\\r\\tc\\x1b[0m\\x9b\\u2028"
    plain = "C:\\path\\ café ✓"
    assert escape_controls(plain) is plain
    assert escape_block("Traceback\n  File x\nValueError: a\x1b") == (
        "  Traceback\n    File x\n  ValueError: a\\x1b"
    )


def _console_lines(out: str) -> list[str]:
    lines = out.splitlines()
    assert _raw_controls(out) == []
    assert all(LINE_START.match(line) for line in lines), lines
    assert not any(line.startswith(FORGED_START) for line in lines)
    return lines


@pytest.mark.parametrize("framework", ["flask", "django"])
def test_a_request_path_cannot_forge_console_lines(
    framework: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A path with ESC, CSI, CR, LF and U+2028 (as a server decodes %1b...): the access
    line (and Django's "Not Found" line) show it escaped, on one line."""
    if framework == "flask":
        from tests.reliability.apps import create_flask_app

        app: Any = create_flask_app(log_format="console")
    else:
        from tests.django_setup import setup_django

        setup_django()
        from django.core.handlers.wsgi import WSGIHandler

        obskit.init(service_name="django-console", log_format="console")
        app = WSGIHandler()
    capsys.readouterr()
    # PATH_INFO holds the path's bytes as latin-1 characters (PEP 3333).
    status, _, _ = wsgi_request(app, f"/nowhere{HOSTILE}".encode().decode("latin-1"))
    assert status == 404
    lines = _console_lines(capsys.readouterr().out)
    access = [line for line in lines if "[obskit.access]" in line]
    assert len(access) == 1
    assert "/nowhere\\x1b[2J\\x1b[31m" in access[0]
    assert "\\r\\n1999-01-01" in access[0]


def _log_everything(log: Any) -> None:
    log.info(f"event {HOSTILE}", value=HOSTILE, number=3, **{f"key{HOSTILE}": "v"})
    log.info("a header value", header={"x-note": HOSTILE})
    try:
        raise ValueError(f"message {HOSTILE}")
    except ValueError:
        log.exception("failed")
    logging.getLogger("third.party").warning("record %s", HOSTILE)


@pytest.mark.parametrize("colors", [False, True])
def test_console_log_fields_keys_values_and_tracebacks_are_escaped(
    colors: bool, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Event text, keys, values, nested values, an exception's message and a stdlib
    record's arguments: escaped in console output, with or without colours (the only raw
    ESC left with colours is the renderer's own styling, never the logged text)."""
    if colors:
        monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    obskit.init(service_name="console", log_format="auto" if colors else "console")
    capsys.readouterr()
    _log_everything(obskit.get_logger("app"))
    out = capsys.readouterr().out
    assert escape_controls(HOSTILE) in out
    assert HOSTILE not in out
    assert "\x1b[2J" not in out
    assert "\x1b[31m\x9b" not in out
    if colors:
        assert "\x1b[" in out  # structlog's styles: colours really were on
        out = re.sub(r"\x1b\[[0-9;]*m", "", out)  # ...which are all that is raw
    lines = _console_lines(out)
    assert len([line for line in lines if not line.startswith("  ")]) == 4
    # The traceback keeps its lines (the message's too), each escaped and indented.
    traceback_lines = [line for line in lines if line.startswith("  ")]
    assert traceback_lines[0] == "  Traceback (most recent call last):"
    message, forged = escape_block(f"ValueError: message {HOSTILE}").split("\n")
    assert message in traceback_lines
    assert forged in traceback_lines


def test_json_lines_escape_every_control_character_in_keys_and_values(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A JSON line is printable ASCII whatever its fields hold (JSON escapes them), and
    parses back to the same text."""
    obskit.init(service_name="json")
    capsys.readouterr()
    text = "".join(CONTROLS) + HOSTILE
    obskit.get_logger("app").info(text, **{text: text})
    logging.getLogger("third.party").warning("record %s", text)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    for line in lines:
        assert all(" " <= char <= "~" for char in line), line
    structured, record = (json.loads(line) for line in lines)
    assert structured["event"] == text
    assert structured[text] == text
    assert record["event"] == f"record {text}"


def test_console_span_tree_escapes_span_names_and_status_descriptions() -> None:
    """A span name and an error description holding control characters stay on their
    line of the waterfall, escaped."""
    out = io.StringIO()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(ConsoleTreeExporter(out)))
    tracer = provider.get_tracer("escaping")
    with (
        tracer.start_as_current_span(f"GET /x{HOSTILE}"),
        tracer.start_as_current_span("child") as child,
    ):
        child.set_status(Status(StatusCode.ERROR, f"ValueError: {HOSTILE}"))
    text = out.getvalue()
    assert _raw_controls(text) == []
    lines = text.splitlines()
    assert len(lines) == 3  # the header, the root, the child
    assert lines[2].endswith(f"✗ ValueError: {escape_controls(HOSTILE)}")
    assert lines[1].startswith("GET /x\\x1b[2J")
