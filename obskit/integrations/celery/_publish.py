"""Sending a task: a PRODUCER span and the trace context in the message headers.

Every way of sending a task (``delay``, ``apply_async``, ``send_task``, canvas,
``retry``, beat) goes through ``Celery.send_task``, which obskit wraps; inside it Celery
sends its ``before_task_publish`` signal with the message headers about to go to the
broker. There obskit starts the span ``send {task}`` (kind PRODUCER, a child of the
current span: the request or task that sends it) and writes the configured propagators'
headers (``traceparent``, ``tracestate``, ``baggage``) for that span into the message
headers; the wrapper ends the span when ``send_task`` returns, or as an error when it
raised: the caller gets its exception unchanged, and the span its ``error.type`` (not
the exception's text, which may quote the broker's URL). (Ending it there, rather than
on ``after_task_publish``, spares every task a signal dispatch.)

A message published some other way (``app.amqp.send_task_message`` called directly)
gets no span of its own, but carries the current context on.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.trace import SpanKind, Status, StatusCode

from obskit._fast import propagation, spans
from obskit._lifecycle import internal_errors as _internal_errors
from obskit._lifecycle import library_hooks as _library_hooks
from obskit._lifecycle import runtime as _runtime
from obskit.integrations.celery._conventions import (
    COMPONENT,
    NAME,
    SYSTEM,
    TASK_NAME,
    error_type,
    inject,
)


class _Sending:
    """One ``send_task`` call in flight: the span its publish started, if any."""

    __slots__ = ("span",)

    def __init__(self) -> None:
        self.span: Any = None


_sending: ContextVar[_Sending | None] = ContextVar("obskit_celery_sending", default=None)
#: Span names by task name (bounded: beyond it, names are made per message).
_names: dict[str, str] = {}
_NAMES_MAX = 1024


def send_task(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """``Celery.send_task``: ends the PRODUCER span its publish started (as an error if
    sending raised)."""
    if not _library_hooks.enabled(NAME):
        return wrapped(*args, **kwargs)
    sending = _Sending()
    token = _sending.set(sending)
    try:
        result = wrapped(*args, **kwargs)
    except BaseException as error:
        _sending.reset(token)
        if sending.span is not None:
            _end(sending, error)
        raise
    _sending.reset(token)
    if sending.span is not None:
        _end(sending, None)
    return result


def before_publish(
    sender: Any = None,
    headers: Any = None,
    routing_key: Any = None,
    exchange: Any = None,
    **_: Any,
) -> None:
    """``before_task_publish``: start the PRODUCER span, put its context in the headers."""
    if not _library_hooks.enabled(NAME):
        return
    telemetry = _runtime._current
    if telemetry is None or telemetry.tracer is None or not isinstance(headers, dict):
        return
    try:
        context = otel_context.get_current()
        sending = _sending.get()
        if sending is None or sending.span is not None:
            # Not inside Celery.send_task (nothing would end a span): pass the context on.
            propagation.global_textmap().inject(headers, context=context)
            return
        task = headers.get("task") or sender
        name = str(task)
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
            TASK_NAME: name,
        }
        destination = routing_key or exchange
        if isinstance(destination, str) and destination:
            attributes["messaging.destination.name"] = destination
        message_id = headers.get("id")
        if isinstance(message_id, str):
            attributes["messaging.message.id"] = message_id
        span_name = _names.get(name)
        if span_name is None:
            span_name = f"send {name}"
            if len(_names) < _NAMES_MAX:
                _names[name] = span_name
        tracer = telemetry.tracer
        span = spans.start_span(
            tracer,
            span_name,
            kind=SpanKind.PRODUCER,
            context=context,
            attributes=attributes,
            trusted=spans.plain_fit(tracer, attributes),
        )
        sending.span = span
        inject(telemetry, headers, context, span)
    except Exception as error:
        _internal_errors.report(COMPONENT, error)


def _end(sending: _Sending, error: BaseException | None) -> None:
    span, sending.span = sending.span, None
    try:
        if error is not None and span.is_recording():
            kind = error_type(error)  # (not its text: a broker's error may quote its URL)
            span.set_status(Status(StatusCode.ERROR, kind))
            span.set_attribute("error.type", kind)
        spans.end_span(span)
    except Exception as internal:
        _internal_errors.report(COMPONENT, internal)
