"""Running a task: a CONSUMER span continuing the sender's trace, the task metrics.

Where the task runs (a prefork child, a thread, the solo worker, or the caller with
``task.apply()``/eager mode), Celery's signals bracket it: ``task_prerun`` starts the
span ``process {task}`` (kind CONSUMER) as a child of the context the message headers
carry (or of the current span when they carry none: an eager call), and makes it
current, so the task's own spans are its children and every log line the task writes
carries its ``trace_id``; ``task_failure`` and ``task_retry``, sent in between, say how
it ends; ``task_postrun`` ends the span, observes
``obskit_task_duration_seconds{task, outcome}`` with the span's exemplar and counts
``obskit_tasks_total{task, outcome}``.

Outcomes: ``ok``, ``error`` (status ERROR, ``error.type``, an ``exception`` event;
status UNSET for an exception listed in the task's ``throws``, which Celery treats as
expected), ``retry`` (a ``celery.retry`` event; the retry is sent as a new message, with
a PRODUCER span of its own under this one), ``time_limit`` (the soft limit's
``SoftTimeLimitExceeded`` escaped the task; a ``celery.time_limit`` event),
``rejected``, ``ignored``.

Two outcomes are only known to the worker's main process, where no task runs:

- **revoked** (``task_revoked``): a task revoked before it started, one that expired,
  or one terminated while running (its process is killed: its own span is lost). A
  CONSUMER span continuing the task's trace, with a ``celery.revoked`` event and
  ``obskit.cancelled=true`` (a cancellation, not an error); counted, not timed.
- **hard time limit** (Celery's ``Request.on_timeout``, which it documents as the
  handler of a request's time limits): the process running the task is killed, so the
  main process records the task's CONSUMER span (from the time the task started, status
  ERROR, ``error.type`` and a ``celery.time_limit`` event) and its duration.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry.trace import SpanKind, Status, StatusCode, get_current_span

from obskit._fast import spans
from obskit._lifecycle import internal_errors as _internal_errors
from obskit._lifecycle import library_hooks as _library_hooks
from obskit._lifecycle import runtime as _runtime
from obskit._traces.decorator import CANCELLED_ATTRIBUTE
from obskit.integrations.celery._conventions import (
    COMPONENT,
    NAME,
    OUTCOME_OF_STATE,
    REQUEST_GETTER,
    RETRIES,
    STATE,
    SYSTEM,
    TASK_NAME,
    TIME_LIMIT,
    error_type,
    extract,
    task_metrics,
)

#: The exception classes of Celery's time limits, set by :func:`know_time_limits`.
_time_limits: tuple[type[BaseException], ...] = ()
_perf_counter_ns = time.perf_counter_ns


def know_time_limits(*classes: type[BaseException]) -> None:
    """The exceptions that mean a time limit stopped the task (Celery's own)."""
    global _time_limits
    _time_limits = classes


class _Run:
    """One task running in this context: its span and what its signals said so far."""

    __slots__ = ("context_token", "name", "outcome", "span", "started", "task_id", "var_token")

    def __init__(self, task_id: str, name: str, span: Any) -> None:
        self.task_id = task_id
        self.name = name
        self.span = span
        #: Set by task_failure/task_retry; else the final state decides.
        self.outcome: str | None = None
        self.context_token: Any = None
        self.var_token: Any = None
        self.started = 0


_running: ContextVar[_Run | None] = ContextVar("obskit_celery_running", default=None)
#: Span names by task name (bounded: beyond it, names are made per task).
_names: dict[str, str] = {}
_NAMES_MAX = 1024


def _span_name(name: str) -> str:
    found = _names.get(name)
    if found is None:
        found = f"process {name}"
        if len(_names) < _NAMES_MAX:
            _names[name] = found
    return found


def prerun(sender: Any = None, task_id: Any = None, task: Any = None, **_: Any) -> None:
    """``task_prerun``: start the CONSUMER span and make it current."""
    if not _library_hooks.enabled(NAME):
        return
    telemetry = _runtime._current
    if telemetry is None or telemetry.tracer is None or task is None:
        return
    try:
        request = task.request
        name = str(task.name)
        task_id = str(task_id)
        parent = extract(telemetry, request)
        if parent is None:  # no context in the message: an eager call, or an untraced sender
            parent = otel_context.get_current()
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.message.id": task_id,
            TASK_NAME: name,
        }
        delivery = request.delivery_info
        if isinstance(delivery, dict):
            destination = delivery.get("routing_key")
            if isinstance(destination, str) and destination:
                attributes["messaging.destination.name"] = destination
        retries = request.retries
        if type(retries) is int and retries > 0:
            attributes[RETRIES] = retries
        tracer = telemetry.tracer
        span = spans.start_span(
            tracer,
            _span_name(name),
            kind=SpanKind.CONSUMER,
            context=parent,
            attributes=attributes,
            trusted=spans.plain_fit(tracer, attributes),
        )
        run = _Run(task_id, name, span)
        run.context_token = spans.attach(spans.with_span(parent, span))
        run.var_token = _running.set(run)
        run.started = _perf_counter_ns()
    except Exception as error:
        _internal_errors.report(COMPONENT, error)


def _current_run(task_id: Any) -> _Run | None:
    run = _running.get()
    return run if run is not None and run.task_id == task_id else None


def failure(sender: Any = None, task_id: Any = None, exception: Any = None, **_: Any) -> None:
    """``task_failure``: the task raised (or its soft time limit stopped it)."""
    run = _current_run(task_id)
    if run is None or not isinstance(exception, BaseException):
        return  # (Celery 5.7+ also sends it from the main process for a hard time limit)
    try:
        limited = bool(_time_limits) and isinstance(exception, _time_limits)
        run.outcome = TIME_LIMIT if limited else "error"
        span = run.span
        if not span.is_recording():
            return
        kind = error_type(exception)
        span.record_exception(exception, escaped=True)
        span.set_attribute("error.type", kind)
        if limited:
            span.add_event("celery.time_limit", {"celery.time_limit.kind": "soft"})
        expected = getattr(sender, "throws", ())
        if not (isinstance(expected, tuple) and expected and isinstance(exception, expected)):
            span.set_status(Status(StatusCode.ERROR, f"{type(exception).__name__}: {exception}"))
    except Exception as error:
        _internal_errors.report(COMPONENT, error)


def retry(sender: Any = None, request: Any = None, reason: Any = None, **_: Any) -> None:
    """``task_retry``: the task asked to run again (a new message is sent)."""
    run = _current_run(getattr(request, "id", None))
    if run is None:
        return
    try:
        run.outcome = "retry"
        span = run.span
        if span.is_recording():
            attributes: dict[str, Any] = {}
            cause = getattr(reason, "exc", None)
            if isinstance(cause, BaseException):
                attributes["exception.type"] = error_type(cause)
            span.add_event("celery.retry", attributes)
    except Exception as error:
        _internal_errors.report(COMPONENT, error)


def postrun(task_id: Any = None, state: Any = None, **_: Any) -> None:
    """``task_postrun``: end the span, restore the context, record the metrics."""
    run = _current_run(task_id)
    if run is None:
        return
    try:
        elapsed = (_perf_counter_ns() - run.started) / 1e9
        outcome = run.outcome or OUTCOME_OF_STATE.get(state, "other")
        span = run.span
        ids, flags, valid = spans.identity(span)
        spans.finish_span(span, None, {STATE: str(state)})
        exemplar = {"trace_id": ids[1], "span_id": ids[2]} if flags & 1 and valid else None
        task_metrics().record(run.name, outcome, elapsed, exemplar)
    except Exception as error:
        _internal_errors.report(COMPONENT, error)
    finally:
        _leave(run)


def _leave(run: _Run) -> None:
    """Restore the context the task started in."""
    try:
        spans.detach(run.context_token)
        _running.reset(run.var_token)
    except Exception as error:  # (a token of another context: the variable is that one's)
        _internal_errors.report(COMPONENT, error)


def revoked(
    sender: Any = None,
    request: Any = None,
    terminated: Any = None,
    signum: Any = None,
    expired: Any = None,
    **_: Any,
) -> None:
    """``task_revoked`` (in the worker's main process): record the revoked task."""
    if not _library_hooks.enabled(NAME):
        return
    try:
        name = getattr(sender, "name", None) or getattr(request, "task", None) or "unknown"
        event: dict[str, Any] = {
            "celery.revoked.terminated": bool(terminated),
            "celery.revoked.expired": bool(expired),
        }
        if terminated and signum is not None:
            event["celery.revoked.signal"] = int(signum)
        record_elsewhere(
            str(name),
            getattr(request, "id", None),
            request,
            REQUEST_GETTER,
            "REVOKED",
            started=None,
            event=("celery.revoked", event),
        )
    except Exception as error:
        _internal_errors.report(COMPONENT, error)


def on_timeout(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """Celery's ``Request.on_timeout(soft, timeout)`` (in the worker's main process):
    after Celery handled it, record a task its hard time limit stopped."""
    result = wrapped(*args, **kwargs)
    if _library_hooks.enabled(NAME):
        try:
            soft = args[0] if args else kwargs.get("soft")
            timeout = args[1] if len(args) > 1 else kwargs.get("timeout")
            if not soft:
                _hard_time_limit(instance, timeout)
        except Exception as error:
            _internal_errors.report(COMPONENT, error)
    return result


def _hard_time_limit(request: Any, timeout: Any) -> None:
    limit = _time_limits[-1] if _time_limits else TimeoutError
    event: dict[str, Any] = {"celery.time_limit.kind": "hard"}
    if isinstance(timeout, (int, float)):
        event["celery.time_limit.seconds"] = float(timeout)
    started = getattr(request, "time_start", None)
    record_elsewhere(
        str(request.task_name),
        request.id,
        request.request_dict,
        None,
        "FAILURE",
        started=started if isinstance(started, (int, float)) else None,
        event=("celery.time_limit", event),
        error=limit(timeout),
    )


def record_elsewhere(
    name: str,
    task_id: Any,
    carrier: Any,
    getter: Any,
    state: str,
    started: float | None,
    event: tuple[str, dict[str, Any]],
    error: BaseException | None = None,
) -> None:
    """A task's CONSUMER span and metrics, recorded by a process that did not run it (or
    not to its end): started at ``started`` (epoch seconds; None: now, and not timed)."""
    telemetry = _runtime._current
    if telemetry is None or telemetry.tracer is None:
        return
    parent = propagate.extract(carrier, getter=getter) if getter else propagate.extract(carrier)
    if not get_current_span(parent).get_span_context().is_valid:
        parent = otel_context.Context()  # (a root: the main process has no current task)
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        TASK_NAME: name,
        STATE: state,
    }
    if isinstance(task_id, str):
        attributes["messaging.message.id"] = task_id
    outcome = TIME_LIMIT if error is not None else OUTCOME_OF_STATE[state]
    if outcome == "revoked":
        attributes[CANCELLED_ATTRIBUTE] = True
    now = time.time()
    start_ns = int((started if started is not None else now) * 1e9)
    span = telemetry.tracer.start_span(
        _span_name(name),
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes=attributes,
        start_time=start_ns,
    )
    span.add_event(*event)
    if error is not None:
        span.record_exception(error, escaped=True)
        span.set_attribute("error.type", error_type(error))
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
    ids, flags, valid = spans.identity(span)
    span.end()
    exemplar = {"trace_id": ids[1], "span_id": ids[2]} if flags & 1 and valid else None
    seconds = max(0.0, now - started) if started is not None else None
    task_metrics().record(name, outcome, seconds, exemplar)
