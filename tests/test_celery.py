"""Celery in this process, with Celery's own code paths and no broker server: a task sent
through the in-memory transport (``memory://``) gets a PRODUCER span and the trace
context in its message headers; run from that message (``task.apply`` with its headers,
through Celery's tracer and signals) it gets a CONSUMER span continuing the trace,
current while it runs. The real worker, prefork children and redis are in
test_celery_worker.py."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

import obskit
import obskit.testing
from obskit._lifecycle import internal_errors
from tests.servers import run_python

try:
    import celery  # noqa: F401 - the module under test's library
except ImportError:  # (CI installs it: there a missing Celery fails the run)
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("celery is not installed (pip install 'celery[redis]')", allow_module_level=True)
from celery import Celery
from celery.utils.log import get_task_logger
from kombu.exceptions import OperationalError
from opentelemetry.trace import SpanKind, StatusCode

app = Celery("tests.test_celery", broker="memory://", backend="cache+memory://")
task_log = get_task_logger(__name__)


class Expected(Exception):
    """An error the task declares in ``throws``."""


@app.task
def add(x: int, y: int) -> int:
    with obskit.span("add.compute"):
        obskit.get_logger("tests.celery").info("obskit line")
        structlog.get_logger("tests.celery.structlog").info("structlog line")
        __import__("logging").getLogger("tests.celery.stdlib").warning("stdlib line")
        task_log.warning("task logger line")
    return x + y


@app.task(throws=(Expected,))
def expected() -> None:
    raise Expected("a known outcome")


@app.task
def broken() -> None:
    raise KeyError("missing")


def _receive() -> Any:
    """The message the last send put on the default queue (memory transport)."""
    with app.connection_for_read() as connection:
        queue = connection.SimpleQueue("celery")
        try:
            message = queue.get(timeout=5)
            message.ack()
            return message
        finally:
            queue.close()


@pytest.fixture
def telemetry() -> Iterator[obskit.testing.Capture]:
    with obskit.testing.capture() as captured:
        yield captured
    assert "celery" not in internal_errors.internal_errors()


def test_a_sent_task_continues_the_senders_trace_where_it_runs(
    telemetry: obskit.testing.Capture,
) -> None:
    """Sent inside a span: a PRODUCER span `send {task}` under it with the messaging
    attributes and its traceparent in the message headers; run from that message: a
    CONSUMER span `process {task}` under the PRODUCER, the parent of the task's own span,
    and the task's log lines (obskit, structlog, stdlib, Celery's task logger) carry the
    trace id."""
    with obskit.span("request") as request:
        sent = add.delay(1, 2)
    message = _receive()
    send = telemetry.span("send tests.test_celery.add")
    assert send.kind == SpanKind.PRODUCER
    assert send.parent is not None
    assert send.parent.span_id == request.get_span_context().span_id
    assert dict(send.attributes or {}) == {
        "messaging.system": "celery",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": "celery",
        "messaging.message.id": sent.id,
        "celery.task.name": "tests.test_celery.add",
    }
    trace = telemetry.trace_id(send)
    assert message.headers["traceparent"] == f"00-{trace}-{send.context.span_id:016x}-01"

    assert add.apply((1, 2), task_id=sent.id, headers=message.headers).get() == 3
    process = telemetry.span("process tests.test_celery.add")
    assert process.kind == SpanKind.CONSUMER
    assert process.parent is not None
    assert process.parent.span_id == send.context.span_id
    assert process.attributes is not None
    assert process.attributes["messaging.operation.type"] == "process"
    assert process.attributes["messaging.message.id"] == sent.id
    assert process.attributes["celery.state"] == "SUCCESS"
    assert [span.name for span in telemetry.children(process)] == ["add.compute"]
    lines = {line["event"]: line for line in telemetry.logs if line.get("trace_id") == trace}
    assert {"obskit line", "structlog line", "stdlib line", "task logger line"} <= set(lines)
    assert telemetry.metrics.value("obskit_tasks_total", task="tests.test_celery.add") == 1
    (exemplar,) = telemetry.metrics.exemplars(
        "obskit_task_duration_seconds_bucket", task="tests.test_celery.add", outcome="ok"
    )
    assert exemplar == {"trace_id": trace, "span_id": f"{process.context.span_id:016x}"}


@app.task
def read_baggage() -> str | None:
    from opentelemetry import baggage

    value = baggage.get_baggage("tenant")
    return None if value is None else str(value)


def test_tracestate_and_baggage_travel_with_the_task(telemetry: obskit.testing.Capture) -> None:
    """Sent under a caller's context with a `tracestate` and baggage: the message carries
    both headers beside `traceparent`, and the task runs with the same trace state on
    its span and the same baggage in its context."""
    from opentelemetry import baggage, propagate
    from opentelemetry import context as otel_context

    caller = propagate.extract(
        {
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "tracestate": "vendor=opaque",
        }
    )
    token = otel_context.attach(baggage.set_baggage("tenant", "acme", context=caller))
    try:
        sent = read_baggage.delay()
    finally:
        otel_context.detach(token)
    message = _receive()
    assert message.headers["tracestate"] == "vendor=opaque"
    assert message.headers["baggage"] == "tenant=acme"
    result = read_baggage.apply(task_id=sent.id, headers=message.headers)
    assert result.get() == "acme"
    process = telemetry.span("process tests.test_celery.read_baggage")
    assert process.context is not None
    assert process.context.trace_state.get("vendor") == "opaque"
    assert telemetry.trace_id(process) == "0af7651916cd43dd8448eb211c80319c"


def test_a_message_published_outside_send_task_carries_the_current_context(
    telemetry: obskit.testing.Capture,
) -> None:
    """A message published through Celery's lower layer (`app.amqp.send_task_message`,
    not `send_task`): no PRODUCER span (nothing would end it), but its headers carry the
    current span's context on."""
    from uuid import uuid4

    with obskit.span("outer") as outer, app.producer_or_acquire() as producer:
        message = app.amqp.create_task_message(str(uuid4()), add.name, (1, 2), {})
        app.amqp.send_task_message(producer, add.name, message)
    received = _receive()
    context = outer.get_span_context()
    assert received.headers["traceparent"] == (
        f"00-{context.trace_id:032x}-{context.span_id:016x}-01"
    )
    assert [span.name for span in telemetry.spans] == ["outer"]


def test_a_task_called_in_process_is_a_child_of_the_current_span(
    telemetry: obskit.testing.Capture,
) -> None:
    """task.apply() (eager) inside a span: its CONSUMER span is that span's child."""
    with obskit.span("caller") as caller:
        add.apply((2, 2))
    process = telemetry.span("process tests.test_celery.add")
    assert process.parent is not None
    assert process.parent.span_id == caller.get_span_context().span_id


def test_failures_are_errors_unless_the_task_expects_them(
    telemetry: obskit.testing.Capture,
) -> None:
    """A task that raises: status ERROR, error.type, an exception event, outcome error;
    one raising an exception it lists in `throws`: the same, but status UNSET."""
    broken.apply()
    expected.apply()
    failed = telemetry.span("process tests.test_celery.broken")
    assert failed.status.status_code == StatusCode.ERROR
    assert failed.attributes is not None
    assert failed.attributes["error.type"] == "KeyError"
    assert [event.name for event in failed.events] == ["exception"]
    known = telemetry.span("process tests.test_celery.expected")
    assert known.status.status_code == StatusCode.UNSET
    assert known.attributes is not None
    assert known.attributes["error.type"] == "tests.test_celery.Expected"
    for task in ("broken", "expected"):
        name = f"tests.test_celery.{task}"
        assert telemetry.metrics.value("obskit_tasks_total", task=name, outcome="error") == 1


def test_a_send_that_fails_ends_its_span_as_an_error_and_raises_unchanged(
    telemetry: obskit.testing.Capture,
) -> None:
    """The broker refuses the message: the caller gets the broker's own exception, and
    the PRODUCER span ends with status ERROR and that exception's class as error.type."""
    unreachable = Celery("unreachable", broker="redis://127.0.0.1:1/0")
    unreachable.conf.broker_transport_options = {"max_retries": 0}  # (refused at once)

    @unreachable.task
    def lost() -> None: ...

    with pytest.raises(OperationalError) as raised:
        lost.apply_async(retry=False)
    send = telemetry.span(f"send {lost.name}")
    assert send.status.status_code == StatusCode.ERROR
    assert send.attributes is not None
    kind = type(raised.value)
    assert send.attributes["error.type"] == f"{kind.__module__}.{kind.__qualname__}"


def test_nothing_is_recorded_or_sent_when_the_instrumentation_is_off() -> None:
    """disabled_instrumentations=celery: no span, no header, no metric; after shutdown
    the same."""
    with obskit.testing.capture(disabled_instrumentations=["celery"]) as telemetry:
        with obskit.span("request"):
            add.delay(1, 1)
        message = _receive()
        add.apply((1, 1), headers=message.headers)
        assert [span.name for span in telemetry.spans] == ["request", "add.compute"]
        assert "traceparent" not in message.headers
        assert telemetry.metrics.value("obskit_tasks_total", task="tests.test_celery.add") == 0
    add.delay(1, 1)
    assert "traceparent" not in _receive().headers
    assert add.apply((1, 1)).get() == 2


def test_importing_obskit_or_calling_init_imports_nothing_of_celery() -> None:
    """`import obskit` and `init()` import neither Celery nor obskit's Celery module; the
    module is imported when Celery is."""
    result = run_python(
        """
        import sys
        import obskit
        obskit.init(service_name="no-celery", traces_exporter="none")
        print(sorted(name for name in sys.modules if "celery" in name))
        import celery
        print("obskit.integrations.celery" in sys.modules)
        """,
        check=True,
    )
    assert result.stdout.splitlines()[-2:] == ["[]", "True"]


def test_the_celery_pages_example_app_logs_with_its_tasks_trace_id() -> None:
    """docs/celery.md's tasks.py, run as written: its task, called in-process, writes a
    log line carrying the trace id of its `process` span."""
    import re
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "celery.md").read_text()
    (snippet, *_) = re.findall(r"```python\n(.*?)```", page, re.S)
    code = snippet + (
        "\nfrom opentelemetry import trace\n"
        "seen = []\n"
        "from celery import signals\n"
        "signals.task_prerun.connect(lambda **_: seen.append("
        "format(trace.get_current_span().get_span_context().trace_id, '032x')), weak=False)\n"
        "send_receipt.apply((7,))\n"
        "print('trace', seen[0])\n"
    )
    result = run_python(code, {"OBSKIT_LOG_FORMAT": "json"}, check=True)
    trace = result.stdout.split("trace ")[-1].strip()
    (line,) = [line for line in result.stdout.splitlines() if '"receipt sent"' in line]
    assert f'"trace_id": "{trace}"' in line
    assert '"order_id": 7' in line


@pytest.mark.parametrize(
    "headers",
    [
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"},
        {"traceparent": "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01"},
        {"traceparent": "00-00000000000000000000000000000000-b7ad6b7169203331-01"},
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01"},
        {"traceparent": "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        {"traceparent": "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-later"},
        {"traceparent": " 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        {
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "tracestate": "vendor=opaque",
        },
        {
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "baggage": "a=b",
        },
        {},
    ],
)
def test_a_workers_request_gives_the_parent_the_propagators_would(
    headers: dict[str, str],
) -> None:
    """A request as a worker builds it (each message header an attribute): the parent
    context read from it is the one the configured propagators extract, for canonical,
    invalid and unusual `traceparent` values, with `tracestate` and with baggage."""
    from celery.app.task import Context
    from opentelemetry import baggage, propagate
    from opentelemetry.trace import get_current_span

    from obskit.integrations.celery._conventions import REQUEST_GETTER, extract

    handle = obskit.init(service_name="celery-extract", traces_exporter="none", metrics_port=0)
    request = Context({"id": "task-id", "task": "t", **headers})
    found = extract(handle, request)
    expected = propagate.extract(request, getter=REQUEST_GETTER)
    wanted = get_current_span(expected).get_span_context()
    if not wanted.is_valid:
        assert found is None
        return
    assert found is not None
    assert get_current_span(found).get_span_context() == wanted
    assert dict(baggage.get_all(found)) == dict(baggage.get_all(expected))


def test_a_new_child_stops_compacting_once_its_time_is_spent(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """compact_gone starts no compaction after LOCK_WAIT: a child must report for work
    within Celery's 4 s, and the files left are read as they are meanwhile and compacted
    by the next child. (The compaction itself is replaced by one that takes a whole
    LOCK_WAIT, as when the directory lock is held elsewhere; the real one is exercised
    by the worker tests.)"""
    import time

    from obskit._metrics import multiprocess
    from obskit.integrations.celery import _worker

    dead = [10_000_001, 10_000_002, 10_000_003]  # beyond any pid_max: never alive
    for pid in dead:
        (tmp_path / f"counter_{pid}.db").write_bytes(b"")
    compacted: list[int] = []

    def slow_compaction(path: str, pid: int) -> None:
        compacted.append(pid)
        time.sleep(multiprocess.LOCK_WAIT)

    monkeypatch.setattr(multiprocess, "LOCK_WAIT", 0.2)
    monkeypatch.setattr(multiprocess, "compact", slow_compaction)
    _worker.compact_gone(str(tmp_path))
    assert compacted == [dead[0]]
    monkeypatch.setattr(multiprocess, "LOCK_WAIT", 60.0)
    monkeypatch.setattr(multiprocess, "compact", lambda path, pid: compacted.append(pid))
    _worker.compact_gone(str(tmp_path))
    assert compacted == [dead[0], *dead]
