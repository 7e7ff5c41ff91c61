"""One database call, whichever layer sees it (Django, SQLAlchemy, a DB-API driver).

:func:`begin` starts timing a call and, inside a trace, a CLIENT span named and
attributed by OpenTelemetry's database conventions; :func:`end` ends the span and
observes ``db_client_operation_duration_seconds{db_system_name, db_operation_name}``
with the span's exemplar. Between the two, a context variable says that a database
call is being recorded here, so the layers underneath it (SQLAlchemy or Django driving
an instrumented driver) pass straight through: one span and one observation per call,
the outermost layer's.

The span carries no exception message (a database's error text quotes the values it
refused): ``error.type`` is the exception's class, ``db.response.status_code`` the
server's SQLSTATE when the driver gives one.
"""

from __future__ import annotations

import time
from asyncio import CancelledError
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.trace import SpanKind, Status, StatusCode, get_current_span

from obskit._db.query_text import CACHED_LENGTH_MAX, Query, describe, describe_script
from obskit._fast import spans
from obskit._lifecycle import internal_errors as _internal_errors
from obskit._lifecycle import runtime as _runtime
from obskit._metrics.registry import (
    MetricStore,
    ObskitHistogram,
    label_values,
    observe_trusted,
    store,
)

HISTOGRAM = "db_client_operation_duration_seconds"
BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)
#: Library / vendor names -> ``db.system.name`` (OpenTelemetry's well-known values).
SYSTEMS = {
    "sqlite": "sqlite",
    "sqlite3": "sqlite",
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "mysql": "mysql",
    "mariadb": "mariadb",
    "oracle": "oracle.db",
    "mssql": "microsoft.sql_server",
}


class Target:
    """Where one connection's (or engine's) calls go: its ``db.system.name`` and its
    attributes (``db.namespace``, ``server.*``), with what each statement sent to it
    looks like in a span, worked out once per SQL text."""

    __slots__ = ("_attributes", "_statements", "_tracer", "_where", "system")

    def __init__(
        self, system: str, where: Mapping[str, Any] | Callable[[], Mapping[str, Any]]
    ) -> None:
        self.system = system
        #: The attributes, or the function that makes them (called once, when needed).
        self._where = where
        self._attributes: Mapping[str, Any] | None = None
        self._tracer: Any = None
        #: SQL text -> (its Query, its span attributes, whether they fit the tracer's
        #: limits as they are); for the tracer in ``_tracer``. Bounded.
        self._statements: dict[str, tuple[Query, dict[str, Any], bool]] = {}

    def attributes(self) -> Mapping[str, Any]:
        """The connection's own span attributes."""
        found = self._attributes
        if found is None:
            where = self._where
            found = self._attributes = dict(where() if callable(where) else where)
        return found

    def statement(self, sql: str, tracer: Any, script: bool) -> tuple[Query, dict[str, Any], bool]:
        """``sql``'s Query, span attributes and whether they fit ``tracer``'s limits."""
        if tracer is not self._tracer:
            self._statements = {}
            self._tracer = tracer
        entry = None if script else self._statements.get(sql)
        if entry is None:
            query = describe_script(sql) if script else describe(sql)
            attributes = dict(self.attributes())
            attributes["db.system.name"] = self.system
            attributes["db.operation.name"] = query.operation
            attributes["db.query.text"] = query.text
            if query.collection:
                attributes["db.collection.name"] = query.collection
            if query.batch_size:
                attributes["db.operation.batch.size"] = query.batch_size
            fits = tracer is not None and spans.plain_fit(tracer, attributes)
            entry = (query, attributes, fits)
            if not script and len(sql) <= CACHED_LENGTH_MAX:
                if len(self._statements) >= _STATEMENTS_MAX:
                    self._statements.clear()
                self._statements[sql] = entry
        return entry


_STATEMENTS_MAX = 256


def postgresql_where(connection: Any) -> Mapping[str, Any]:
    """``db.namespace``, ``server.address`` and ``server.port`` of a psycopg or psycopg2
    connection (from the public ``info`` both drivers give)."""
    info = connection.info
    found: dict[str, Any] = {"db.namespace": str(info.dbname or "")}
    if info.host:
        found["server.address"] = str(info.host)
    if info.port:
        found["server.port"] = int(info.port)
    return found


class DbCall:
    """A database call in flight (from :func:`begin` to :func:`end`)."""

    __slots__ = ("operation", "owner", "span", "started", "system")

    def __init__(self, span: Any, system: str, operation: str, owner: object) -> None:
        self.span = span
        self.system = system
        self.operation = operation
        #: Who began it, for layers whose start and end are separate events.
        self.owner = owner
        self.started = 0.0


#: The call being recorded in this context, if any: the layers under it pass through.
_open: ContextVar[DbCall | None] = ContextVar("obskit_db_call", default=None)


def current() -> DbCall | None:
    """The database call being recorded in this context, if any."""
    return _open.get()


def begin(target: Target, sql: str, owner: object = None, script: bool = False) -> DbCall | None:
    """Start recording one call of ``sql`` (one statement, or a ``script`` of several)
    to ``target``; pair with :func:`end`.

    None — call the database without recording — while obskit is not initialised, with
    ``db_spans`` off, or when a call is already being recorded in this context (an outer
    layer's). The span starts only inside a trace (a valid current span).
    """
    telemetry = _runtime._current
    if telemetry is None or not telemetry.settings.db_spans or _open.get() is not None:
        return None
    try:
        tracer = telemetry.tracer
        query, attributes, fits = target.statement(sql, tracer, script)
        span = None
        if tracer is not None:
            context = otel_context.get_current()  # looked up once, for both questions
            if get_current_span(context).get_span_context().is_valid:
                span = spans.start_span(
                    tracer,
                    query.name,
                    kind=SpanKind.CLIENT,
                    context=context,
                    attributes=attributes,
                    trusted=fits,
                )
        call = DbCall(span, target.system, query.operation, owner)
        _open.set(call)
        call.started = time.perf_counter()
        return call
    except Exception as error:
        _internal_errors.report("db", error)
        return None


def end(call: DbCall, error: BaseException | None = None) -> None:
    """End ``call``: its span (with ``error``'s type if it raised; a cancelled call is
    not an error) and its observation."""
    elapsed = time.perf_counter() - call.started
    _open.set(None)
    try:
        span = call.span
        exemplar = None
        if span is not None:
            if error is not None and not isinstance(error, CancelledError):
                _mark_error(span, error)
            ids, flags, valid = spans.identity(span)
            if flags & 1 and valid:  # 1: TraceFlags.SAMPLED
                exemplar = {"trace_id": ids[1], "span_id": ids[2]}
            spans.end_span(span)
        observe_trusted(_child(call.system, call.operation), elapsed, exemplar)
    except Exception as internal:
        _internal_errors.report("db", internal)


def error_type(error: BaseException) -> str:
    """``error.type``: the exception's fully qualified class name."""
    kind = type(error)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


def _mark_error(span: Any, error: BaseException) -> None:
    span.set_attribute("error.type", error_type(error))
    # psycopg's Error.sqlstate, psycopg2's Error.pgcode: the server's SQLSTATE.
    code = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
    if isinstance(code, str) and code:
        span.set_attribute("db.response.status_code", code)
    span.set_status(Status(StatusCode.ERROR, type(error).__name__))


def run(call: DbCall | None, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``function(*args, **kwargs)`` recorded as ``call`` (unrecorded if None): its
    result or its exception, unchanged."""
    if call is None:
        return function(*args, **kwargs)
    try:
        result = function(*args, **kwargs)
    except BaseException as error:
        end(call, error)
        raise
    end(call)
    return result


async def run_async(
    call: DbCall | None, function: Callable[..., Any], *args: Any, **kwargs: Any
) -> Any:
    """``await function(*args, **kwargs)`` recorded as ``call``: see :func:`run`."""
    if call is None:
        return await function(*args, **kwargs)
    try:
        result = await function(*args, **kwargs)
    except BaseException as error:
        end(call, error)
        raise
    end(call)
    return result


def duration_histogram(metrics: MetricStore | None = None) -> ObskitHistogram:
    """``db_client_operation_duration_seconds{db_system_name, db_operation_name}``."""
    return (metrics or store()).define(
        "histogram",
        ObskitHistogram,
        HISTOGRAM,
        "Duration of database client operations.",
        ("db_system_name", "db_operation_name"),
        None,
        buckets=BUCKETS,
    )


#: (the store, its histogram, children by label values): a call reuses its series
#: without prometheus-client's label checks; the overflow series is not kept.
_cached: tuple[MetricStore, ObskitHistogram, dict[tuple[str, str], Any]] | None = None


def _child(system: str, operation: str) -> Any:
    global _cached
    metrics = store()
    cached = _cached
    if cached is None or cached[0] is not metrics:
        cached = _cached = (metrics, duration_histogram(metrics), {})
    key = (system, operation)
    child = cached[2].get(key)
    if child is None:
        child = cached[1].labels(system, operation)
        if label_values(child) == key:
            cached[2][key] = child
    return child
