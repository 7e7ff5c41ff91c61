"""The access line written directly is byte for byte the line the log chain renders."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog
from opentelemetry import trace

from obskit._fast import log_lines as _lines
from obskit._fast import status
from obskit._http import access_line as _access_line
from obskit._logs import pipeline as _pipeline
from obskit._logs import processors

TIMESTAMP = "2026-11-28T12:00:00.123456Z"

#: (method, route, path, status, duration us, client address): plain and hostile values.
CASES: list[tuple[str, str, str, int | None, int, str | None]] = [
    ("GET", "/hello/<name>", "/hello/world", 200, 1234, None),
    ("POST", "/items", "/items", 201, 0, "10.0.0.7"),
    ("_OTHER", "<unmatched>", "/nowhere", 404, 12345678, ""),
    ("GET", "/q", '/q"uote\\back\nslash\ttab\x00nul\x1f', 500, 35, None),
    ("GET", "/é", "/caf\xe9/\u2603/\U0001f600/\ud800", 200, 7000, "::1"),
    ("HEAD", "/r", "/" + "x" * 300, None, 1, "2001:db8::1"),
    ("GET", "/big", "/" + "y" * 10_000, 200, 1000, None),  # over the cap: truncated by the chain
    ("DELETE", "/a/<int:id>", "/a/1", 599, 99999999999, '"quoted"'),
    ('get"\\', "/m", "/m", 200, 2500, None),  # not a normalised method: the chain renders it
    ("GET", "/t", "/t", 200, 62, None),
    ("GET", "/u", "/u", 200, 187346, None),
    ("GET", "/v", "/v", 200, 10**15, None),  # over the formatted range: the chain renders it
]


@pytest.fixture
def lines(spans: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """obskit initialised (service fields, 4 KiB lines), a fixed clock, lines captured."""
    structlog.contextvars.clear_contextvars()  # (whatever an earlier test left bound)
    spans(service_name="shop", service_version="2.1", environment="prod", log_max_line_bytes=4096)
    for module in (_access_line, _lines, processors):  # (lines the logger writes, too)
        monkeypatch.setattr(module, "utc_now_iso", lambda: TIMESTAMP)
    shared = _pipeline.pipeline()
    captured: list[str] = []
    shared.writer.capture = captured
    yield captured
    shared.writer.capture = None


def _chain_line(case: tuple[str, str, str, int | None, int, str | None]) -> str:
    """The line ``get_logger("obskit.access").info(...)`` renders through the chain."""
    method, route, path, status, duration, client = case
    fields: dict[str, Any] = {
        "http.request.method": method,
        "http.route": route,
        "url.path": path,
        "http.response.status_code": status,
        "duration_ms": duration / 1000,
    }
    if client:
        fields["client.address"] = client
    shared = _pipeline.pipeline()
    captured: list[str] = []
    saved, shared.writer.capture = shared.writer.capture, captured
    snapshot, shared.structlog_snapshot = shared.structlog_snapshot, None  # the chain itself
    chain = list(shared.structlog_chain)

    def stamp(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        event["timestamp"] = TIMESTAMP
        return event

    shared.structlog_chain[:] = [stamp if p is processors.add_timestamp else p for p in chain]
    try:
        _access_line.access_log.info(f"{method} {path} {status}", **fields)
    finally:
        shared.writer.capture, shared.structlog_snapshot = saved, snapshot
        shared.structlog_chain[:] = chain
    (line,) = captured
    return line


def _spans() -> list[trace.Span]:
    sampled = trace.NonRecordingSpan(
        trace.SpanContext(0xABC, 0x12, False, trace.TraceFlags(trace.TraceFlags.SAMPLED))
    )
    unsampled = trace.NonRecordingSpan(trace.SpanContext(0xDEF, 0x34, False))
    return [trace.INVALID_SPAN, sampled, unsampled]


@pytest.mark.parametrize("case", CASES, ids=[f"case{n}" for n in range(len(CASES))])
def test_direct_line_equals_the_chain_line(lines: list[str], case: Any) -> None:
    """Same fields, order, escaping, numbers and ids, with and without a current span."""
    for span in _spans():
        with trace.use_span(span):
            lines.clear()
            _access_line.write(*case)
            (direct,) = lines
            assert direct == _chain_line(case)
            event = json.loads(direct)
            if len(case[2]) < 4000:
                assert event["url.path"] == case[2]
                assert event["service.name"] == "shop"
                assert ("trace_id" in event) is span.get_span_context().is_valid


def test_cached_line_templates_stay_exact(
    lines: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Per (method, route, status) templates: percent signs in routes, paths and fields,
    more distinct routes than are kept, and new service fields after a reconfigure."""
    status.decide(True)  # templates are made while the log-line accelerator is on
    monkeypatch.setattr(_access_line, "_TEMPLATES_MAX", 3)
    cases: list[tuple[str, str, str, int | None, int, str | None]] = [
        ("GET", "/p/%s/%%/%d", "/p/%s/%%/%d%", 200, 1500, "10.0.0.1%s"),
        *[("GET", f"/r{n}", f"/r{n}", 200 + n, 250, None) for n in range(6)],
        ("GET", "/p/%s/%%/%d", "/p/%s/%%/%d%", 200, 1500, "10.0.0.1%s"),  # cached
    ]
    for case in cases:
        lines.clear()
        _access_line.write(*case)
        assert lines == [_chain_line(case)]
    assert len(_access_line._templates[2]) == 3  # the cap: later keys are rebuilt per line
    _pipeline.pipeline().configure(
        fields={"service.name": "100%s"}, renderer="json", max_bytes=4096
    )
    lines.clear()
    _access_line.write(*cases[0])
    assert lines == [_chain_line(cases[0])]
    assert json.loads(lines[0])["service.name"] == "100%s"


def test_a_status_that_is_not_an_int_uses_the_chain(lines: list[str]) -> None:
    """``True`` equals 1 as a cache key but renders as ``true``: never from a template."""
    _access_line.write("GET", "/b", "/b", 1, 1000, None)
    _access_line.write("GET", "/b", "/b", True, 1000, None)
    assert lines[1] == _chain_line(("GET", "/b", "/b", True, 1000, None))
    assert '"http.response.status_code": true' in lines[1]


def test_milliseconds_text_is_the_repr_of_the_quotient() -> None:
    """Over random microsecond counts of every magnitude below 10**12, and the edges."""
    rng = random.Random(10)
    values = [0, 1, 9, 10, 99, 100, 999, 1000, 1001, 1500, 2000, 10**12 - 1]
    values += [rng.randrange(10 ** rng.randint(1, 12)) for _ in range(200_000)]
    for value in values:
        assert _access_line.milliseconds_text(value) == repr(value / 1000), value


def test_the_request_span_given_is_the_one_on_the_line(lines: list[str]) -> None:
    """Requests pass their span's context: its ids, not those of whatever span is current."""
    invalid, sampled, unsampled = _spans()
    with trace.use_span(unsampled):
        _access_line.write(*CASES[0], context=sampled.get_span_context())
        _access_line.write(*CASES[0], context=invalid.get_span_context())
    with trace.use_span(sampled):
        assert lines[0] == _chain_line(CASES[0])
    with trace.use_span(invalid):
        assert lines[1] == _chain_line(CASES[0])


@pytest.mark.parametrize("on", [True, False], ids=["accelerated", "public"])
def test_the_direct_path_is_taken_for_plain_requests_while_log_lines_is_on(
    lines: list[str], monkeypatch: pytest.MonkeyPatch, on: bool
) -> None:
    """Without bound fields the logger is not called at all (the measured fast path),
    as long as the log-line accelerator is on; off, the logger writes the line."""
    status.decide(on)
    called: list[str] = []

    def info(event: str, **fields: Any) -> None:
        called.append(event)

    monkeypatch.setattr(_access_line.access_log, "info", info)
    _access_line.write(*CASES[0])
    if on:
        assert called == []
        assert json.loads(lines[0])["http.route"] == "/hello/<name>"
    else:
        assert called == ["GET /hello/world 200"]


def test_bound_fields_go_through_the_chain(lines: list[str]) -> None:
    """obskit.bind()/structlog contextvars are merged by the chain: still on the line."""
    structlog.contextvars.bind_contextvars(request_id="r-7")
    try:
        _access_line.write(*CASES[1])
        assert lines == [_chain_line(CASES[1])]
        assert json.loads(lines[0])["request_id"] == "r-7"
    finally:
        structlog.contextvars.clear_contextvars()
    lines.clear()
    _access_line.write(*CASES[1])  # unbound again: the direct path, without the field
    assert "request_id" not in json.loads(lines[0])


@pytest.mark.parametrize("on", [True, False], ids=["accelerated", "public"])
def test_request_started_clears_like_clear_contextvars(lines: list[str], on: bool) -> None:
    """What the request start uses to drop the previous request's bound fields."""
    status.decide(on)
    structlog.contextvars.bind_contextvars(a=1, b=2)
    assert not _lines.nothing_bound()
    _pipeline.request_started()
    assert _lines.nothing_bound()
    assert structlog.contextvars.get_contextvars() == {}


def test_a_configured_field_named_like_an_access_field_uses_the_chain() -> None:
    """Service fields never override the access fields: such a config is not formatted here."""
    shared = _pipeline.Pipeline()
    shared.configure(fields={"http.route": "x"}, renderer="json", max_bytes=4096)
    assert _access_line._fields_tail(shared.fields) is None
    shared.configure(fields={"service.name": 'a"b'}, renderer="json", max_bytes=4096)
    assert _access_line._fields_tail(shared.fields) == ', "service.name": "a\\"b"'


def test_console_output_and_levels_are_honoured(
    spans: Callable[..., Any],
) -> None:
    """Console format renders through the chain; a level above info writes nothing."""
    spans(log_format="console")
    shared = _pipeline.pipeline()
    captured: list[str] = []
    shared.writer.capture = captured
    try:
        _access_line.write(*CASES[0])
        assert len(captured) == 1
        assert not captured[0].startswith("{")
        shared.level = _pipeline.LEVELS["warning"]
        _access_line.write(*CASES[0])
        assert len(captured) == 1
    finally:
        shared.writer.capture = None
