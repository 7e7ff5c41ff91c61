"""Correlated logs: every line one JSON object with the current span's ids and obskit's fields."""

from __future__ import annotations

import asyncio
import datetime
import decimal
import io
import json
import logging
import re
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import obskit
from obskit._lifecycle import internal_errors as _internal_errors
from tests.servers import run_python

ROOT = Path(__file__).resolve().parents[1]
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def _lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def _ids(span: trace.Span) -> tuple[str, str]:
    context = span.get_span_context()
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


@pytest.fixture
def shop(spans: Callable[..., InMemorySpanExporter]) -> InMemorySpanExporter:
    """obskit initialised (JSON logs) with an in-memory exporter capturing finished spans."""
    return spans(service_name="shop", service_version="2.1", environment="test")


def test_lines_in_nested_spans_carry_that_spans_ids(
    shop: InMemorySpanExporter, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each line's trace_id/span_id equal the ids of the span current when it was written."""
    capsys.readouterr()
    log = obskit.get_logger("shop.cart")
    tracer = trace.get_tracer("t")
    log.info("outside")
    with tracer.start_as_current_span("outer"):
        log.info("in outer")
        with tracer.start_as_current_span("inner"):
            log.info("in inner", items=3)
        log.info("back in outer")
    outside, in_outer, in_inner, back = _lines(capsys)
    finished = {span.name: span for span in shop.get_finished_spans()}
    assert "trace_id" not in outside
    assert "span_id" not in outside
    for line, name in [(in_outer, "outer"), (in_inner, "inner"), (back, "outer")]:
        assert (line["trace_id"], line["span_id"]) == _ids(finished[name])
    assert in_inner["items"] == 3
    assert in_inner["logger"] == "shop.cart"
    assert in_inner["level"] == "info"
    assert in_inner["event"] == "in inner"
    assert TIMESTAMP.fullmatch(in_inner["timestamp"])
    assert in_inner["service.name"] == "shop"
    assert in_inner["service.version"] == "2.1"
    assert in_inner["deployment.environment.name"] == "test"


def test_unsampled_spans_still_give_ids(capsys: pytest.CaptureFixture[str]) -> None:
    """With a sampling ratio of 0 the span is not recorded, yet lines still correlate."""
    obskit.init(traces_sampler="traceidratio", traces_sampler_arg=0)
    capsys.readouterr()
    with trace.get_tracer("t").start_as_current_span("dropped") as span:
        assert not span.get_span_context().trace_flags.sampled
        obskit.get_logger().warning("unsampled")
    (line,) = _lines(capsys)
    assert (line["trace_id"], line["span_id"]) == _ids(span)


def test_third_party_logging_records_render_the_same_way(
    shop: InMemorySpanExporter, capsys: pytest.CaptureFixture[str]
) -> None:
    """A `logging` record (with exc_info and extra) is one JSON line with the same fields."""
    capsys.readouterr()
    with trace.get_tracer("t").start_as_current_span("request") as span:
        try:
            {}["missing"]
        except KeyError:
            logging.getLogger("thirdparty").warning(
                "lookup of %s failed", "missing", exc_info=True, extra={"attempt": 2}
            )
        logging.getLogger("urllib3.connectionpool").info("Starting new HTTP connection")
    warning, info = _lines(capsys)
    assert warning["event"] == "lookup of missing failed"
    assert warning["logger"] == "thirdparty"
    assert warning["level"] == "warning"
    assert warning["attempt"] == 2
    assert (warning["trace_id"], warning["span_id"]) == _ids(span)
    assert warning["service.name"] == "shop"
    assert TIMESTAMP.fullmatch(warning["timestamp"])
    assert warning["exception.type"] == "KeyError"
    assert warning["exception.message"] == "'missing'"
    assert "Traceback (most recent call last)" in warning["exception.stacktrace"]
    assert info["logger"] == "urllib3.connectionpool"
    assert info["trace_id"] == warning["trace_id"]


def test_exceptions_render_as_structured_fields(
    shop: InMemorySpanExporter, capsys: pytest.CaptureFixture[str]
) -> None:
    """log.exception() and exc_info=<exception> give exception.* fields, on one line."""
    capsys.readouterr()
    log = obskit.get_logger("t")
    try:
        raise ValueError("bad\nvalue")
    except ValueError as error:
        log.exception("failed")
        caught = error
    log.error("again", exc_info=caught)
    first, second = _lines(capsys)
    for line in (first, second):
        assert line["exception.type"] == "ValueError"
        assert line["exception.message"] == "bad\nvalue"
        assert 'raise ValueError("bad\\nvalue")' in line["exception.stacktrace"]
        assert line["level"] == "error"


def test_structlog_get_logger_goes_through_the_same_pipeline(
    shop: InMemorySpanExporter, capsys: pytest.CaptureFixture[str]
) -> None:
    """Libraries calling structlog.get_logger(name) get the same fields and ids."""
    capsys.readouterr()
    with trace.get_tracer("t").start_as_current_span("s") as span:
        structlog.get_logger("lib.module").info("from structlog", k="v")
    (line,) = _lines(capsys)
    assert line["logger"] == "lib.module"
    assert (line["trace_id"], line["span_id"]) == _ids(span)
    assert line["service.name"] == "shop"


def test_bound_fields_appear_until_unbound(capsys: pytest.CaptureFixture[str]) -> None:
    """obskit.bind() adds fields to later lines of this context; unbind() removes them."""
    obskit.init()
    capsys.readouterr()
    log = obskit.get_logger("t")
    obskit.bind(request_id="r-1", user="u")
    log.info("one")
    obskit.unbind("user")
    log.info("two")
    obskit.context.clear()
    log.info("three")
    one, two, three = _lines(capsys)
    assert (one["request_id"], one["user"]) == ("r-1", "u")
    assert two["request_id"] == "r-1"
    assert "user" not in two
    assert "request_id" not in three


def test_level_filters_obskit_and_stdlib_loggers(capsys: pytest.CaptureFixture[str]) -> None:
    """Below log_level nothing is written, from obskit loggers or from `logging`."""
    obskit.init(log_level="warning")
    capsys.readouterr()
    obskit.get_logger("t").info("hidden")
    logging.getLogger("lib").info("hidden too")
    obskit.get_logger("t").warning("shown")
    logging.getLogger("lib").error("shown too")
    assert [line["event"] for line in _lines(capsys)] == ["shown", "shown too"]


def test_loggers_made_before_init_follow_init(capsys: pytest.CaptureFixture[str]) -> None:
    """A module-level logger created before init() gets the service fields once it runs."""
    early = obskit.get_logger("early")
    early.info("before")
    obskit.init(service_name="late")
    early.info("after")
    lines = [line for line in _lines(capsys) if line["logger"] == "early"]
    assert "service.name" not in lines[0]
    assert lines[1]["service.name"] == "late"


@pytest.mark.parametrize(
    ("label", "value"),
    [
        ("object", object()),
        ("bytes", b"\xff\x00binary"),
        ("set", {1, 2}),
        ("datetime", datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)),
        ("decimal", decimal.Decimal("1.10")),
        ("nan", float("nan")),
        ("inf", float("inf")),
        ("tuple-keys", {(1, 2): "x", None: 1}),
        ("deep", "nested"),
        ("circular", "circular"),
        ("bad-repr", "bad-repr"),
        ("huge", "x" * 10_000_000),
        ("many", {f"k{i}": i for i in range(10_000)}),
    ],
)
def test_hostile_values_never_raise_and_stay_valid_json(
    label: str, value: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Values JSON cannot encode still give one valid JSON line within the size cap."""

    class BadRepr:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

        __str__ = __repr__

    if label == "deep":
        for _ in range(100):
            value = {"d": value}
    elif label == "circular":
        value = {"a": 1}
        value["self"] = value
    elif label == "bad-repr":
        value = BadRepr()
    obskit.init(strict=True)  # strict: any internal error would raise here
    capsys.readouterr()
    obskit.get_logger("t").info("hostile", value=value)
    logging.getLogger("lib").warning("hostile", extra={"value": value})
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) == 2
    for line in lines:
        assert len(line.encode()) <= 16384
        parsed = json.loads(line)
        assert parsed["event"] == "hostile"
    if label == "huge":
        assert json.loads(lines[0])["truncated"] is True
    if label == "nan":
        assert json.loads(lines[0])["value"] == "nan"


def test_line_cap_is_configurable_and_keeps_the_ids(capsys: pytest.CaptureFixture[str]) -> None:
    """An oversized event is cut to log_max_line_bytes, keeping level, logger and ids."""
    obskit.init(log_max_line_bytes=2048)
    capsys.readouterr()
    with trace.get_tracer("t").start_as_current_span("s") as span:
        obskit.get_logger("t").info("big " * 10_000, extra="y" * 5_000, small=1)
    (line,) = capsys.readouterr().out.splitlines()
    assert len(line) <= 2048
    parsed = json.loads(line)
    assert parsed["truncated"] is True
    assert parsed["trace_id"] == _ids(span)[0]
    assert parsed["event"].startswith("big big")
    assert parsed["event"].endswith("...[truncated]")
    assert parsed["level"] == "info"


def test_format_arguments_that_fail_do_not_raise(capsys: pytest.CaptureFixture[str]) -> None:
    """A bad %-format in a log call is counted as an internal error, not raised."""
    obskit.init()
    before = _internal_errors.internal_errors().get("logs", 0)
    obskit.get_logger("t").info("%d items", "not-a-number")
    assert _internal_errors.internal_errors()["logs"] == before + 1


class _BrokenStream(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_broken_stdout_does_not_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    """EPIPE on stdout drops the line and counts it; the caller never sees an error."""
    obskit.init(strict=True)
    monkeypatch.setattr(sys, "stdout", _BrokenStream())
    before = _internal_errors.internal_errors().get("log_write", 0)
    obskit.get_logger("t").info("lost")
    logging.getLogger("lib").error("lost too")
    assert _internal_errors.internal_errors()["log_write"] == before + 2


def test_console_format_shows_a_short_trace_id_without_colours_off_a_tty(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """log_format=console prints human lines with 8 hex digits of the trace id."""
    obskit.init(log_format="console")
    capsys.readouterr()
    with trace.get_tracer("t").start_as_current_span("s") as span:
        obskit.get_logger("t").info("hello console", n=1)
    out = capsys.readouterr().out
    assert "hello console" in out
    assert f"trace={_ids(span)[0][:8]}" in out
    assert "\x1b[" not in out


def test_reinit_does_not_duplicate_lines_and_shutdown_restores_root_handlers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Re-init keeps one bridge handler; shutdown() puts back the previous root handlers."""
    root = logging.getLogger()
    mine = logging.StreamHandler(io.StringIO())
    root.addHandler(mine)
    try:
        before = root.handlers[:]
        level = root.level
        obskit.init(service_name="a")
        obskit.init(service_name="b")
        obskit.init(service_name="b", log_level="debug")
        capsys.readouterr()
        logging.getLogger("lib").warning("once")
        assert [line["event"] for line in _lines(capsys)] == ["once"]
        assert len(root.handlers) == 1
        assert mine not in root.handlers
        obskit.shutdown()
        assert root.handlers == before
        assert root.level == level
        logging.getLogger("lib").warning("to my handler")
        assert "to my handler" in mine.stream.getvalue()  # type: ignore[attr-defined]
    finally:
        root.removeHandler(mine)


def test_log_stdlib_false_leaves_the_root_logger_alone() -> None:
    """With log_stdlib=False, obskit does not touch the root handlers or level."""
    root = logging.getLogger()
    before, level = root.handlers[:], root.level
    obskit.init(log_stdlib=False, log_level="debug")
    assert root.handlers == before
    assert root.level == level


def test_interleaved_tasks_and_threads_never_see_each_others_ids(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """1000 asyncio tasks and 8 threads, each in its own span with its own request_id:
    every line carries exactly its own writer's ids."""
    obskit.init()
    capsys.readouterr()
    tracer = trace.get_tracer("t")
    log = obskit.get_logger("t")
    expected: dict[str, tuple[str, str]] = {}
    lock = threading.Lock()

    async def task(n: int) -> None:
        with tracer.start_as_current_span(f"task-{n}") as span:
            obskit.bind(request_id=f"task-{n}")
            with lock:
                expected[f"task-{n}"] = _ids(span)
            for step in range(3):
                log.info("step", step=step)
                await asyncio.sleep(0)

    async def many() -> None:
        await asyncio.gather(*(task(n) for n in range(1000)))

    def thread(n: int) -> None:
        with tracer.start_as_current_span(f"thread-{n}") as span:
            obskit.bind(request_id=f"thread-{n}")
            with lock:
                expected[f"thread-{n}"] = _ids(span)
            for step in range(50):
                log.info("step", step=step)
                logging.getLogger("lib").info("stdlib step")

    threads = [threading.Thread(target=thread, args=(n,)) for n in range(8)]
    for worker in threads:
        worker.start()
    asyncio.run(many())
    for worker in threads:
        worker.join()
    lines = _lines(capsys)
    assert len(lines) == 1000 * 3 + 8 * 100
    wrong = [
        line
        for line in lines
        if (line["trace_id"], line["span_id"]) != expected[line["request_id"]]
    ]
    assert wrong == []


def test_context_helpers_carry_ids_into_threads(capsys: pytest.CaptureFixture[str]) -> None:
    """wrap() and obskit.context.ThreadPoolExecutor carry trace ids and bound fields;
    a plain thread has neither (and never someone else's)."""
    obskit.init()
    capsys.readouterr()
    log = obskit.get_logger("t")

    def work(label: str) -> None:
        log.info(label)
        obskit.bind(leaked="yes")  # must stay inside this task

    with trace.get_tracer("t").start_as_current_span("parent") as span:
        obskit.bind(request_id="r-9")
        try:
            wrapped = threading.Thread(target=obskit.context.wrap(work), args=("wrapped",))
            wrapped.start()
            wrapped.join()
            plain = threading.Thread(target=work, args=("plain",))
            plain.start()
            plain.join()
            with obskit.context.ThreadPoolExecutor(max_workers=1) as pool:
                pool.submit(work, "pooled-1").result()
                pool.submit(work, "pooled-2").result()
        finally:
            obskit.unbind("request_id")  # the test's thread runs the next tests
    lines = {line["event"]: line for line in _lines(capsys)}
    for label in ("wrapped", "pooled-1", "pooled-2"):
        assert (lines[label]["trace_id"], lines[label]["span_id"]) == _ids(span)
        assert lines[label]["request_id"] == "r-9"
        assert "leaked" not in lines[label]
    assert "trace_id" not in lines["plain"]
    assert "request_id" not in lines["plain"]


def test_real_process_stdout_is_one_json_object_per_line() -> None:
    """In a real process, stdout holds only JSON lines, each parseable on its own."""
    code = textwrap.dedent(
        """
        import logging, obskit
        from opentelemetry import trace
        obskit.init(service_name="proc")
        log = obskit.get_logger("proc")
        with trace.get_tracer("t").start_as_current_span("work"):
            log.info("multi\\nline\\nevent", data={"k": [1, 2]})
            logging.getLogger("werkzeug").info('127.0.0.1 - - "GET / HTTP/1.1" 200 -')
            try:
                1 / 0
            except ZeroDivisionError:
                log.exception("failed")
        """
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    by_event = {line["event"]: line for line in lines}
    assert by_event["multi\nline\nevent"]["data"] == {"k": [1, 2]}
    assert by_event["failed"]["exception.type"] == "ZeroDivisionError"
    ids = {by_event[e]["trace_id"] for e in ("multi\nline\nevent", "failed")}
    ids.add(by_event['127.0.0.1 - - "GET / HTTP/1.1" 200 -']["trace_id"])
    assert len(ids) == 1
    assert all(line["service.name"] == "proc" for line in lines)
