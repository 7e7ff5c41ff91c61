"""The log-line accelerators (``log_lines``, ``bound_context``) write exactly the lines
structlog's documented API writes, and turn themselves off when structlog changes."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog
from opentelemetry import trace

import obskit
from obskit._fast import log_lines as _lines
from obskit._fast import status
from obskit._logs import pipeline as _pipeline

TIMESTAMP = re.compile(r'"timestamp": "\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z"')
SPAN = trace.NonRecordingSpan(trace.SpanContext(trace_id=0xABC, span_id=0x12, is_remote=False))
#: The three ways a line can be made: everything accelerated; accelerators off (the
#: public path production takes with OBSKIT_FAST_PATHS=0); and every processor of the
#: chains run one by one through structlog (no inlining at all).
WAYS = ("accelerated", "public", "chain")


class _Boom:
    def __str__(self) -> str:
        raise ValueError("no text")

    def __repr__(self) -> str:
        return "<Boom>"


def _calls() -> list[Callable[[], None]]:
    """Log calls covering bound, contextvar, colliding, exception, stack and extra fields."""
    log = obskit.get_logger("fast.path")
    bound = log.bind(order=7, nested={"a": [1, 2.5, None]}, text="caf\xe9 \u2603 \U0001f600")
    named = structlog.get_logger("fast.structlog")
    bridged = logging.getLogger("fast.bridged")

    def failing() -> None:
        try:
            raise KeyError("missing \u2603")
        except KeyError as error:
            log.exception("failed", attempt=2)
            bound.error("failed again", exc_info=error)
            named.warning("structlog failed", exc_info=True)
            bridged.exception("bridged failure", extra={"attempt": 2})

    return [
        lambda: log.info("plain"),
        lambda: log.info("args %s and %d", "x", 3),
        lambda: log.warning("kw", items=3, level="ignored", logger="override"),
        lambda: log.error("collides", timestamp="mine", trace_id="mine", **{"service.name": "x"}),
        lambda: bound.info("bound", order=8),
        lambda: bound.debug("non-ASCII \u00e9\u4e2d\U0001f600", key="\ud800 lone surrogate"),
        lambda: log.info(None, only="kw"),
        lambda: log.info("field named like an argument", method_name="m", event_kw=1),
        lambda: log.info("hostile", value=_Boom(), circle=[{1, 2}], key={(1, 2): 3}),
        lambda: log.info("stack", stack_info=True),
        lambda: log.info("no stack", stack_info=False),
        lambda: log.log(logging.WARNING, "via log()", n=1),
        lambda: log.critical("huge", blob="x" * 40000, short="kept"),  # over the cap
        lambda: named.info("structlog.get_logger", items=1),
        lambda: named.bind(user="u").info("structlog bound"),
        lambda: bridged.info("bridged %s", "arg", extra={"items": 3, "_private": 1}),
        lambda: bridged.warning("bridged plain \u2603"),
        lambda: bridged.info("big", extra={"blob": "x" * 40000}),
        failing,
    ]


def _render(way: str) -> list[str]:
    """Every call's lines, in a span and outside, with fields bound to the context."""
    status.decide(way == "accelerated")
    assert status.enabled("log_lines") is status.enabled("bound_context") is (way == WAYS[0])
    shared = _pipeline.pipeline()
    saved = shared.structlog_snapshot, shared.record_snapshot
    lines: list[str] = []
    shared.writer.capture = lines
    if way == "chain":
        shared.structlog_snapshot = shared.record_snapshot = None
    try:
        structlog.contextvars.bind_contextvars(request_id="r-1", order=0)
        structlog.contextvars.bind_contextvars(gone=1)
        structlog.contextvars.unbind_contextvars("gone")
        for call in _calls():
            call()
            with trace.use_span(SPAN):
                call()
        structlog.contextvars.clear_contextvars()
        for call in _calls():  # and with nothing bound (the accelerated merge is skipped)
            call()
    finally:
        structlog.contextvars.clear_contextvars()
        shared.writer.capture = None
        shared.structlog_snapshot, shared.record_snapshot = saved
    return [TIMESTAMP.sub('"timestamp": "T"', line) for line in lines]


@pytest.fixture
def initialised(spans: Callable[..., Any]) -> Iterator[None]:
    """obskit initialised with JSON logs at DEBUG, service fields and a small line cap."""
    structlog.contextvars.clear_contextvars()  # (whatever an earlier test left bound)
    spans(service_name="shop", service_version="2.1", log_max_line_bytes=4096, log_level="debug")
    yield
    status.decide(True)


def test_accelerated_lines_equal_the_public_paths_lines_byte_for_byte(initialised: None) -> None:
    """Every line (fields, order, values, ids, exceptions, stacks, truncation, records) is
    the same bytes accelerated, through the public path, and through the bare chain."""
    rendered = {way: _render(way) for way in WAYS}
    accelerated = rendered["accelerated"]
    assert len(accelerated) == 3 * (len(_calls()) + 3)
    for way in WAYS[1:]:
        assert rendered[way] == accelerated, way
    events = [json.loads(line) for line in accelerated]
    assert sum(event.get("trace_id") == f"{0xABC:032x}" for event in events) == len(events) // 3
    assert sum(event.get("request_id") == "r-1" for event in events) == 2 * len(events) // 3
    assert any(event.get("truncated") for event in events)
    assert any("KeyError: 'missing" in event.get("exception.stacktrace", "") for event in events)
    assert all(line.isascii() for line in accelerated)


@pytest.mark.parametrize("on", [True, False], ids=["on", "off"])
def test_a_stack_ends_at_the_apps_call(spans: Callable[..., Any], on: bool) -> None:
    """stack_info=True: the stack's last frame is the line that logged, on either path."""
    spans(service_name="shop", fast_paths=on)
    shared = _pipeline.pipeline()
    lines: list[str] = []
    shared.writer.capture = lines
    try:
        obskit.get_logger("shop").info("where", stack_info=True)  # the last frame
    finally:
        shared.writer.capture = None
    stack = json.loads(lines[0])["stack"].splitlines()
    assert stack[-2].endswith("in test_a_stack_ends_at_the_apps_call")
    assert stack[-1].strip().startswith('obskit.get_logger("shop").info("where"')
    assert not any("obskit/_" in frame for frame in stack)


def test_both_accelerators_are_on_for_the_installed_structlog(spans: Callable[..., Any]) -> None:
    """Their checks pass on the structlog installed (CI runs the floor, 24.1, and the newest)."""
    spans(service_name="shop", fast_paths=True)
    by_path = {item.path: item for item in status.statuses()}
    assert (by_path["log_lines"].enabled, by_path["log_lines"].reason) == (True, "on")
    assert (by_path["bound_context"].enabled, by_path["bound_context"].reason) == (True, "on")
    assert _lines._check_lines() is None
    assert _lines._check_bound() is None


def test_the_checks_leave_no_trace_in_structlog_or_the_callers_context() -> None:
    """The probe's variable is gone from structlog's registry; nothing bound leaks out."""
    registry = structlog.contextvars._CONTEXT_VARS
    names = set(registry)
    structlog.contextvars.bind_contextvars(mine=1)
    try:
        assert _lines._check_bound() is None
        assert _lines._check_lines() is None
        assert set(registry) == names | {"structlog_mine"}
        assert structlog.contextvars.get_contextvars() == {"mine": 1}
    finally:
        structlog.contextvars.clear_contextvars()


@pytest.mark.parametrize("on", [True, False], ids=["on", "off"])
def test_bound_field_entry_points_answer_as_structlogs_functions(on: bool) -> None:
    """nothing_bound / merge_bound / clear_bound_fields, on and off, in this thread and in
    another one (which sees none of this thread's fields)."""
    status.decide(on)
    assert status.enabled("bound_context") is on
    structlog.contextvars.clear_contextvars()
    assert _lines.nothing_bound()
    structlog.contextvars.bind_contextvars(a=1, b="two")
    structlog.contextvars.unbind_contextvars("a")
    assert not _lines.nothing_bound()
    event: dict[str, Any] = {"b": "kept"}
    _lines.merge_bound(event)
    assert event == {"b": "kept"}  # a bound field never overrides a passed one
    event = {}
    _lines.merge_bound(event)
    assert event == {"b": "two"}
    elsewhere: list[bool] = []
    thread = threading.Thread(target=lambda: elsewhere.append(_lines.nothing_bound()))
    thread.start()
    thread.join()
    assert elsewhere == [True]
    _pipeline.request_started()
    assert _lines.nothing_bound()
    assert structlog.contextvars.get_contextvars() == {}
    event = {}
    _lines.merge_bound(event)
    assert event == {}


def _a_structlog_that_builds_the_event_dict_event_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulate a structlog release whose ``_process_event`` puts ``event`` first."""
    original = structlog.BoundLoggerBase._process_event

    def process_event(self: Any, method_name: str, event: Any, event_kw: Any) -> Any:
        first = {} if event is None else {"event": event}
        return original(self, method_name, None, {**first, **event_kw})

    monkeypatch.setattr(structlog.BoundLoggerBase, "_process_event", process_event)


def test_a_changed_structlog_turns_log_lines_off_and_its_lines_serve_the_contract(
    spans: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When structlog builds lines differently from what the accelerator was written for,
    its check says so, it stays off (with that reason), and structlog's own rendering
    writes every field of the contract."""
    _a_structlog_that_builds_the_event_dict_event_first(monkeypatch)
    spans(service_name="shop", service_version="2.1", fast_paths=True)
    by_path = {item.path: item for item in status.statuses()}
    assert not by_path["log_lines"].enabled
    assert by_path["log_lines"].reason.startswith("a probe line differs: structlog's ")
    assert by_path["bound_context"].enabled  # the other one is unaffected
    by_path = {item.path: item for item in status.decide(True)}  # decided again: still off
    assert not by_path["log_lines"].enabled
    shared = _pipeline.pipeline()
    lines: list[str] = []
    shared.writer.capture = lines
    try:
        obskit.bind(request_id="r-2")
        with trace.use_span(SPAN):
            obskit.get_logger("shop.cart").info("in a span", items=3)
            try:
                raise ValueError("bad \u2603")
            except ValueError:
                structlog.get_logger("lib").exception("failed")
    finally:
        structlog.contextvars.clear_contextvars()
        shared.writer.capture = None
    first, second = (json.loads(line) for line in lines)
    assert list(first)[:3] == ["logger", "event", "items"]  # structlog's order: its line
    assert first == {
        "event": "in a span",
        "logger": "shop.cart",
        "items": 3,
        "request_id": "r-2",
        "level": "info",
        "timestamp": first["timestamp"],
        "trace_id": f"{0xABC:032x}",
        "span_id": f"{0x12:016x}",
        "service.name": "shop",
        "service.version": "2.1",
    }
    assert TIMESTAMP.fullmatch(f'"timestamp": "{first["timestamp"]}"')
    assert second["logger"] == "lib"
    assert second["level"] == "error"
    assert second["exception.type"] == "ValueError"
    assert second["exception.message"] == "bad \u2603"
    assert "ValueError: bad" in second["exception.stacktrace"]


def _a_structlog_that_keeps_context_variables_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulate a structlog release whose ``bind_contextvars`` no longer registers its
    variables in ``_CONTEXT_VARS`` (merge/get/clear find them by name, as now)."""
    own: dict[str, contextvars.ContextVar[Any]] = {}

    def bind_contextvars(**fields: Any) -> dict[str, contextvars.Token[Any]]:
        tokens = {}
        for key, value in fields.items():
            name = structlog.contextvars.STRUCTLOG_KEY_PREFIX + key
            variable = own.setdefault(name, contextvars.ContextVar(name, default=Ellipsis))
            tokens[key] = variable.set(value)
        return tokens

    monkeypatch.setattr(structlog.contextvars, "bind_contextvars", bind_contextvars)


def test_a_changed_contextvars_registry_turns_bound_context_off_and_bound_fields_stay(
    spans: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Had the accelerator stayed on, it would have missed fields bound the new way (the
    line would lose them); its check sees that, it is off with the reason, and the
    public path merges and clears them."""
    _a_structlog_that_keeps_context_variables_elsewhere(monkeypatch)
    spans(service_name="shop", fast_paths=True)
    by_path = {item.path: item for item in status.statuses()}
    assert not by_path["bound_context"].enabled
    assert by_path["bound_context"].reason == (
        "bind_contextvars does not keep its variables in _CONTEXT_VARS"
    )
    shared = _pipeline.pipeline()
    lines: list[str] = []
    shared.writer.capture = lines
    try:
        obskit.bind(request_id="r-3")
        assert not _lines.nothing_bound()
        obskit.get_logger("shop").info("bound")
        logging.getLogger("shop.stdlib").warning("bound too")
        _pipeline.request_started()  # the next request on this thread starts clean
        obskit.get_logger("shop").info("cleared")
        _lines._apply_bound(True)  # what the accelerator would have done: lose the field
        obskit.bind(request_id="r-4")
        obskit.get_logger("shop").info("lost")
    finally:
        _lines._apply_bound(False)
        structlog.contextvars.clear_contextvars()
        shared.writer.capture = None
    events = [json.loads(line) for line in lines]
    assert [event.get("request_id") for event in events] == ["r-3", "r-3", None, None]


def test_the_switch_turns_both_off_and_the_access_line_follows(spans: Callable[..., Any]) -> None:
    """fast_paths=False: both off with the switch's reason; the access logger is then
    not rendered here, so the access line goes through the logger."""
    spans(service_name="shop", fast_paths=False)
    by_path = {item.path: item for item in status.statuses()}
    for path in ("log_lines", "bound_context"):
        assert (by_path[path].enabled, by_path[path].reason) == (False, status.SWITCHED_OFF)
    from obskit._http import access_line

    shared = _pipeline.pipeline()
    assert not _lines.renders_plain(access_line.access_log, shared)
    status.decide(True)
    assert _lines.renders_plain(access_line.access_log, shared)
    structlog.contextvars.bind_contextvars(user="u")
    try:
        assert not _lines.renders_plain(access_line.access_log, shared)
    finally:
        structlog.contextvars.clear_contextvars()
