"""What the Celery spans and metrics are called, and how a task's trace context travels.

One place for what the producer and worker sides share: OpenTelemetry's messaging
semantic conventions (``messaging.system="celery"``, ``messaging.operation.type``
``send``/``process``, ``messaging.destination.name``, ``messaging.message.id``), the
task outcomes, the two metrics ``obskit_task_duration_seconds{task, outcome}`` (a
histogram with a ``trace_id`` exemplar) and ``obskit_tasks_total{task, outcome}`` (a
counter), both under obskit's series cap, and the message headers' trace context.

The context is written and read by the configured propagators. When those are W3C's
alone (``tracecontext``, with or without ``baggage``) and the context carries no
``tracestate`` and no baggage, the one ``traceparent`` header is written and read here
directly, in its canonical form (``00-<trace id>-<span id>-<flags>``), with the same
result as the propagators' and a fraction of their work; anything else goes through
them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from opentelemetry import baggage
from opentelemetry import context as otel_context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, get_current_span

from obskit._fast import propagation, spans
from obskit._metrics.registry import (
    MetricStore,
    ObskitCounter,
    ObskitHistogram,
    label_values,
    observe_trusted,
    store,
)

#: The component name of obskit's internal errors in this integration.
COMPONENT = "celery"
#: The instrumentation's name (``disabled_instrumentations``).
NAME = "celery"
SYSTEM = "celery"
DURATION = "obskit_task_duration_seconds"
OUTCOMES = "obskit_tasks_total"

#: A task's outcome (the ``outcome`` label) by the state Celery ends it in.
OUTCOME_OF_STATE = {
    "SUCCESS": "ok",
    "FAILURE": "error",
    "RETRY": "retry",
    "REJECTED": "rejected",
    "IGNORED": "ignored",
    "REVOKED": "revoked",
}
#: The outcome of a task stopped by its soft or hard time limit.
TIME_LIMIT = "time_limit"

#: Span attributes this integration adds beyond the semantic conventions.
TASK_NAME = "celery.task.name"
STATE = "celery.state"
RETRIES = "celery.retries"


def error_type(error: BaseException) -> str:
    """``error.type``: the exception's qualified class name (built-in ones without
    ``builtins.``)."""
    kind = type(error)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


class RequestGetter(Getter[Any]):
    """Reads propagation headers from a task's request (``task.request``): a worker
    makes each message header an attribute of it; ``task.apply(headers=...)`` keeps
    them in ``request.headers``."""

    def get(self, carrier: Any, key: str) -> list[str] | None:
        value = getattr(carrier, key, None)
        if value is None:
            headers = getattr(carrier, "headers", None)
            if not isinstance(headers, dict):
                return None
            value = headers.get(key)
        if isinstance(value, str):
            return [value]
        if isinstance(value, Iterable) and not isinstance(value, (bytes, dict)):
            return [item for item in value if isinstance(item, str)] or None
        return None

    def keys(self, carrier: Any) -> list[str]:
        return []


REQUEST_GETTER = RequestGetter()
#: A W3C ``traceparent`` header in its canonical version-00 form.
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_EMPTY = otel_context.Context()


def _w3c_alone(telemetry: Any) -> bool:
    """Whether the installed propagators are W3C's alone, with ``tracecontext``."""
    return telemetry.w3c_propagator is propagation.global_textmap() and (
        "tracecontext" in telemetry.settings.propagators
    )


def inject(telemetry: Any, headers: dict[str, Any], context: Any, span: Any) -> None:
    """Write the trace context of ``span`` (started in ``context``) into ``headers``."""
    if _w3c_alone(telemetry):
        ids, flags, valid = spans.identity(span)
        if valid and not ids[0].trace_state and not baggage.get_all(context):
            headers["traceparent"] = f"00-{ids[1]}-{ids[2]}-{flags:02x}"
            return
    propagation.global_textmap().inject(headers, context=spans.with_span(context, span))


def extract(telemetry: Any, request: Any) -> Any:
    """The context a task's request (``task.request``) carries, or None if it carries
    no valid span context."""
    if _w3c_alone(telemetry):
        value = getattr(request, "traceparent", None)
        if (
            type(value) is str
            and getattr(request, "tracestate", None) is None
            and getattr(request, "baggage", None) is None
        ):
            found = _TRACEPARENT.fullmatch(value)
            if found is not None:
                trace_id = int(found.group(1), 16)
                span_id = int(found.group(2), 16)
                if trace_id and span_id:
                    flags = TraceFlags(int(found.group(3), 16))
                    remote = SpanContext(trace_id, span_id, is_remote=True, trace_flags=flags)
                    return spans.with_span(_EMPTY, NonRecordingSpan(remote))
    extracted = propagation.global_textmap().extract(request, getter=REQUEST_GETTER)
    return extracted if get_current_span(extracted).get_span_context().is_valid else None


class TaskMetrics:
    """The task histogram and counter, defined once in obskit's registry."""

    def __init__(self, metrics: MetricStore) -> None:
        self.duration: ObskitHistogram = metrics.define(
            "histogram",
            ObskitHistogram,
            DURATION,
            "Duration of Celery tasks run by this worker, by outcome.",
            ("task", "outcome"),
            None,
            buckets=metrics.buckets,
        )
        self.finished: ObskitCounter = metrics.define(
            "counter",
            ObskitCounter,
            OUTCOMES,
            "Celery tasks this worker finished, by outcome (revoked ones included).",
            ("task", "outcome"),
            None,
        )
        #: Children by label values; real series only (an overflow series is looked up
        #: each time, so it stays counted).
        self._timed: dict[tuple[str, str], Any] = {}
        self._counted: dict[tuple[str, str], Any] = {}

    def record(
        self, task: str, outcome: str, seconds: float | None, exemplar: dict[str, str] | None
    ) -> None:
        """Count one finished task; time it too unless ``seconds`` is None (a task that
        never ran makes no histogram series)."""
        key = (task, outcome)
        if seconds is not None:
            timed = self._timed.get(key)
            if timed is None:
                timed = self.duration.labels(task, outcome)
                if label_values(timed) == key:
                    self._timed[key] = timed
            observe_trusted(timed, seconds, exemplar)
        counted = self._counted.get(key)
        if counted is None:
            counted = self.finished.labels(task, outcome)
            if label_values(counted) == key:
                self._counted[key] = counted
        counted.inc()


_cached: tuple[MetricStore, TaskMetrics] | None = None


def task_metrics() -> TaskMetrics:
    """The task metrics of the current metric store (defined on first use)."""
    global _cached
    cached = _cached
    metrics = store()
    if cached is None or cached[0] is not metrics:
        cached = _cached = (metrics, TaskMetrics(metrics))
    return cached[1]
